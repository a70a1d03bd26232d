"""Instructions per no-op task, counted by callgrind: a speed figure the machine's noise cannot move.

Wall-clock and CPU-time figures on a shared 2-core VM swing by 2x between runs;
an instruction count does not (the same binary, inputs and environment give
the same count whatever else the machine does). This runs one side of a real
rsc pair under ``valgrind --tool=callgrind`` twice, with N1 and N2 no-op tasks,
and prints ``(count(N2) - count(N1)) / (N2 - N1)``: start-up, imports and
shutdown cancel out, what is left is the cost of one task.

    python bench/instructions.py                 # node and origin, pipelined and one in flight
    python bench/instructions.py --side node --mode pipe

``--side node`` runs the node under callgrind and the origin natively in this
process; ``--side origin`` the other way round (this script re-runs itself
under callgrind as the origin). ``pipe`` spawns batches of 1,000 and then
joins them; ``one`` awaits each task before the next. Instructions are
user-space only (no kernel time) and do not show cache misses, so they track
the Python work per task, not the wake-up cost that dominates one-in-flight
latency. It takes about a minute per figure. Needs valgrind (on every machine
here; not a test dependency).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 1000


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _node_cmd(sock: str) -> list[str]:
    return [sys.executable, "-m", "rsc", "node", "--name", "w1", "--listen", "unix:" + sock,
            "--registry", "bench.registry:registry"]


def _callgrind(out: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]


def _total(out: str) -> int:
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals line in {out}")


async def _origin_work(sock: str, n: int, mode: str) -> None:
    import rsc

    async with rsc.Runtime({"w1": "unix:" + sock}, connect_timeout_s=120) as rt:
        cx = rt.cx()
        await rsc.spawn_remote(cx, "w1", "noop", b"x").join()
        for _ in range(n // BATCH):
            if mode == "one":
                for _ in range(BATCH):
                    await rsc.spawn_remote(cx, "w1", "noop", b"x").join()
            else:
                hs = [rsc.spawn_remote(cx, "w1", "noop", b"x") for _ in range(BATCH)]
                for h in hs:
                    await h.join()


def _run_origin(sock: str, n: int, mode: str) -> None:
    import uvloop

    uvloop.run(_origin_work(sock, n, mode))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        _stop(proc)
        raise RuntimeError(f"node did not start: {line!r}")


def count(side: str, mode: str, n: int, tmp: str) -> int:
    """Instructions callgrind counts on ``side`` for a run of ``n`` tasks."""
    sock = os.path.join(tmp, f"w1-{side}-{mode}-{n}.sock")
    out = os.path.join(tmp, f"callgrind-{side}-{mode}-{n}.out")
    if side == "node":
        node = subprocess.Popen(_callgrind(out) + _node_cmd(sock), cwd=ROOT, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            _wait_ready(node)
            _run_origin(sock, n, mode)
        finally:
            _stop(node)  # callgrind writes its file as the node exits
    else:
        node = subprocess.Popen(_node_cmd(sock), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
        try:
            _wait_ready(node)
            subprocess.run(_callgrind(out) + [sys.executable, os.path.abspath(__file__), "--as-origin",
                                              sock, str(n), mode],
                           cwd=ROOT, env=_env(), check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        finally:
            _stop(node)
    return _total(out)


def per_task(side: str, mode: str, n1: int, n2: int) -> float:
    tmp = tempfile.mkdtemp(prefix="rsc-instr-")
    try:
        a = count(side, mode, n1, tmp)
        b = count(side, mode, n2, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (b - a) / (n2 - n1)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--as-origin"]:
        sock, n, mode = argv[1], int(argv[2]), argv[3]
        _run_origin(sock, n, mode)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=["node", "origin", "both"], default="both")
    p.add_argument("--mode", choices=["pipe", "one", "both"], default="both")
    p.add_argument("--n1", type=int, default=1000, help="tasks in the short run (a multiple of 1000)")
    p.add_argument("--n2", type=int, default=3000, help="tasks in the long run (a multiple of 1000)")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed; it counts the instructions", file=sys.stderr)
        return 2
    if args.n1 % BATCH or args.n2 % BATCH or args.n2 <= args.n1:
        p.error(f"--n1 and --n2 must be multiples of {BATCH} with n2 > n1")
    sides = ["node", "origin"] if args.side == "both" else [args.side]
    modes = ["pipe", "one"] if args.mode == "both" else [args.mode]
    for side in sides:
        for mode in modes:
            what = "pipelined" if mode == "pipe" else "one in flight"
            print(f"{side:6} {what:13} {per_task(side, mode, args.n1, args.n2):10,.0f} instructions/task",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
