"""CPU time per task of each process for the payload sweep's job.

A shared machine moves wall-clock rates by 2-3x between runs; the CPU each
process spends per task moves far less. For each size and kind, one node
(as ``bench_payload.py`` starts it) and this process as the origin (uvloop)
run the sweep's job (``plan``: ``n`` calls with ``window`` in flight, after
the same fill; ``--scale`` times as many calls, for the CPU clock's 10 ms
ticks), ``--rounds`` times; printed per round, then the medians:
user + system ms per task of the origin and of the node, and the minor page
faults per task of each (pages the process touched for the first time).

    python bench/payload_cpu.py --sizes 1MiB 16MiB --kinds bytes --rounds 6 --scale 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_payload import (  # noqa: E402
    MAX_INPUT, SIZE_LABEL, SIZES, fill_calls, plan, rsc_windowed, value,
)
from bench.conftest import bench_cluster, new_loop, runtime_on  # noqa: E402


def cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        t = os.times()
        return t[0] + t[1]
    t = proc.cpu_times()
    return t[0] + t[1]


def faults(pid: int) -> int:
    """Minor page faults of ``pid`` so far (/proc/PID/stat, field 10)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def main() -> None:
    labels = {v: k for k, v in SIZE_LABEL.items()}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["64KiB", "1MiB", "16MiB"], choices=list(labels))
    ap.add_argument("--kinds", nargs="+", default=["bytes", "msgpack"], choices=["bytes", "msgpack"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--scale", type=int, default=10,
                    help="calls per round: the sweep's n times this (CPU times tick in 10 ms)")
    args = ap.parse_args()
    nodes = bench_cluster(1, "bench.registry:registry", extra_args=["--max-input-bytes", str(MAX_INPUT)])
    cluster = next(nodes)
    loop = new_loop()
    rts = runtime_on(loop, cluster.nodes)
    rt = next(rts)
    try:
        node = next(iter(cluster.nodes))
        node_proc = psutil.Process(cluster.pids[node])
        for size in sorted(labels[s] for s in args.sizes):
            assert size in SIZES
            n, window = plan(size)
            n *= args.scale
            for kind in args.kinds:
                data = value(kind, size)
                computation = "noop" if kind == "bytes" else "noop_msgpack"
                loop.run_until_complete(rsc_windowed(rt, node, computation, data,
                                                     fill_calls(size, n), window))
                per_origin, per_node, flt_origin, flt_node = [], [], [], []
                for _ in range(args.rounds):
                    o0, n0 = cpu(None), cpu(node_proc)
                    f0, g0 = faults(os.getpid()), faults(node_proc.pid)
                    loop.run_until_complete(rsc_windowed(rt, node, computation, data, n, window))
                    per_origin.append((cpu(None) - o0) / n * 1e3)
                    per_node.append((cpu(node_proc) - n0) / n * 1e3)
                    flt_origin.append((faults(os.getpid()) - f0) / n)
                    flt_node.append((faults(node_proc.pid) - g0) / n)
                print(f"{SIZE_LABEL[size]:>6} {kind:<8} n={n:<5} origin ms/task "
                      f"{' '.join(f'{x:.3f}' for x in per_origin)}  node "
                      f"{' '.join(f'{x:.3f}' for x in per_node)}")
                print(f"{'':>6} {'':<8} medians: origin {statistics.median(per_origin):.3f} ms "
                      f"{statistics.median(flt_origin):.0f} faults  node "
                      f"{statistics.median(per_node):.3f} ms {statistics.median(flt_node):.0f} faults",
                      flush=True)
    finally:
        for gen in (rts, nodes):
            try:
                next(gen)
            except StopIteration:
                pass
        loop.close()


if __name__ == "__main__":
    main()
