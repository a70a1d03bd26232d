"""Instructions per no-op task, counted by callgrind: a speed figure the machine's noise cannot move.

Wall-clock and CPU-time figures on a shared 2-core VM swing by 2x between runs;
an instruction count does not (the same binary, inputs and environment give
the same count whatever else the machine does). This runs one side of a real
rsc pair under ``valgrind --tool=callgrind`` twice, with N1 and N2 no-op tasks,
and prints ``(count(N2) - count(N1)) / (N2 - N1)``: start-up, imports and
shutdown cancel out, what is left is the cost of one task.

    python bench/instructions.py                 # node and origin, pipelined and one in flight
    python bench/instructions.py --side node --mode pipe
    python bench/instructions.py --side echo-server --side echo-client   # the raw limit
    python bench/instructions.py --json .benchmarks/instructions.json   # also save the counts

The raw echo is measured the same way: ``--side echo-server`` runs
``bench/echo_peer.py``'s server under callgrind and its client natively here,
``--side echo-client`` the other way round, and the count is per request
(one 64-byte frame each way): the floor a node and an origin are compared
with. ``pipe`` sends each batch of 1,000 at once (all in flight) and waits for
the answers; ``one`` awaits each before the next.

``--json PATH`` writes every count (``{"counts": {"node.pipe": ...}}`` and
the run's Python and commit) for ``bench/report.py``, which shows them beside
the speed figures.

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


ECHO = os.path.join(ROOT, "bench", "echo_peer.py")
SIDES = ("node", "origin", "echo-server", "echo-client")
# which process of a pair runs under callgrind for each side, and which natively
SERVER_SIDES = ("node", "echo-server")
ECHO_SIDES = ("echo-server", "echo-client")


def _echo_cmd(sock: str) -> list[str]:
    return [sys.executable, ECHO, sock]


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
    from rsc._core.messages import ACK_BY_RESULT_FEATURE

    async with rsc.Runtime({"w1": "unix:" + sock}, connect_timeout_s=120) as rt:
        if os.environ.get("RSC_INSTR_NO_ACK_BY_RESULT"):  # --no-ack-by-result
            rt.engine.features.pop(ACK_BY_RESULT_FEATURE, None)  # before the first connect
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


async def _echo_client_work(sock: str, n: int, mode: str) -> None:
    from bench.echo_peer import EchoClient

    client = await EchoClient.connect(sock)
    try:
        await client.one_in_flight(1)
        for _ in range(n // BATCH):
            if mode == "one":
                await client.one_in_flight(BATCH, 64)
            else:
                await client.pipelined(BATCH, BATCH, 64)
    finally:
        client.close()


def _use_this_checkout() -> None:
    """Put this checkout first on ``sys.path``: the side run natively in this
    process imports the rsc (and bench) beside this script, as the measured
    side does through PYTHONPATH, not whatever an installed rsc points at (an
    editable install of another checkout would pair a worktree's node with
    that checkout's origin)."""
    if sys.path[:1] != [ROOT]:
        sys.path.insert(0, ROOT)


def _run_origin(sock: str, n: int, mode: str, echo: bool = False) -> None:
    import uvloop

    _use_this_checkout()
    uvloop.run((_echo_client_work if echo else _origin_work)(sock, n, mode))


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
    """Instructions callgrind counts on ``side`` for a run of ``n`` tasks (requests)."""
    sock = os.path.join(tmp, f"w1-{side}-{mode}-{n}.sock")
    out = os.path.join(tmp, f"callgrind-{side}-{mode}-{n}.out")
    echo = side in ECHO_SIDES
    server_cmd = _echo_cmd(sock) if echo else _node_cmd(sock)
    if side in SERVER_SIDES:
        server = subprocess.Popen(_callgrind(out) + server_cmd, cwd=ROOT, env=_env(),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        try:
            _wait_ready(server)
            _run_origin(sock, n, mode, echo)
        finally:
            _stop(server)  # callgrind writes its file as the server exits
    else:
        server = subprocess.Popen(server_cmd, cwd=ROOT, env=_env(), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            _wait_ready(server)
            subprocess.run(_callgrind(out) + [sys.executable, os.path.abspath(__file__), "--as-origin",
                                              sock, str(n), mode] + (["--echo"] if echo else []),
                           cwd=ROOT, env=_env(), check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        finally:
            _stop(server)
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
        _run_origin(sock, n, mode, echo="--echo" in argv[4:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=SIDES + ("both", "all"), action="append",
                   help="node, origin, echo-server, echo-client (repeatable); both: node and "
                        "origin (the default); all: the four")
    p.add_argument("--mode", choices=["pipe", "one", "both"], default="both")
    p.add_argument("--n1", type=int, default=1000, help="tasks in the short run (a multiple of 1000)")
    p.add_argument("--n2", type=int, default=3000, help="tasks in the long run (a multiple of 1000)")
    p.add_argument("--json", default=None, help="also write the counts to this JSON file")
    p.add_argument("--no-ack-by-result", action="store_true",
                   help="the origin does not offer ack_by_result (as an older origin): every "
                        "spawn gets its own SPAWN_ACK")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed; it counts the instructions", file=sys.stderr)
        return 2
    if args.n1 % BATCH or args.n2 % BATCH or args.n2 <= args.n1:
        p.error(f"--n1 and --n2 must be multiples of {BATCH} with n2 > n1")
    sides: list[str] = []
    for side in args.side or ["both"]:
        more = {"both": ["node", "origin"], "all": list(SIDES)}.get(side, [side])
        sides += [s for s in more if s not in sides]
    if args.no_ack_by_result:  # read by _origin_work, here or in the origin's subprocess
        os.environ["RSC_INSTR_NO_ACK_BY_RESULT"] = "1"
    modes = ["pipe", "one"] if args.mode == "both" else [args.mode]
    counts: dict[str, float] = {}
    for side in sides:
        for mode in modes:
            what = "pipelined" if mode == "pipe" else "one in flight"
            unit = "request" if side in ECHO_SIDES else "task"
            counts[f"{side}.{mode}"] = n = per_task(side, mode, args.n1, args.n2)
            print(f"{side:11} {what:13} {n:10,.0f} instructions/{unit}", flush=True)
    if args.json:
        _save(args.json, counts, args)
    return 0


def _save(path: str, counts: dict[str, float], args: argparse.Namespace) -> None:
    """Merge ``counts`` into the JSON at ``path`` (a later run of some sides
    keeps the others' counts, each stamped with its own run)."""
    import json
    import platform
    import time

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    data: dict = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    stamp = {"python": platform.python_version(), "commit": commit, "n1": args.n1, "n2": args.n2,
             "datetime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for key, value in counts.items():
        data.setdefault("counts", {})[key] = round(value)
        data.setdefault("runs", {})[key] = stamp
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
