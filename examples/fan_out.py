#!/usr/bin/env python3
"""Fan-out / fan-in over a 3-node local cluster.

Spreads 300 squares over the nodes in one region and adds the answers up
(fan-in by joining every handle), then does the same with tasks that each
wait a little, to show they run side by side on the nodes: 30 tasks of
0.2 s over 3 nodes take about 0.2 s, not 6 s. Last, one task of a fan-out
fails: the region cancels its siblings on their nodes and raises the failure
in an ``ExceptionGroup``, caught with ``except*``.
Run: python examples/fan_out.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import rsc  # noqa: E402
from rsc.launch import LocalCluster  # noqa: E402


async def fan_out(nodes: dict[str, str]) -> None:
    names = sorted(nodes)
    async with rsc.Runtime(nodes) as rt:
        async with rsc.region(rt.cx()) as r:
            handles = [rsc.spawn_remote(r.cx, names[i % len(names)], "square", i) for i in range(300)]
            total = sum([await h.join() for h in handles])
        print(f"sum of 300 squares over {len(names)} nodes: {total}")

        started = time.monotonic()
        async with rsc.region(rt.cx()) as r:
            handles = [rsc.spawn_remote(r.cx, names[i % len(names)], "work", [i, 0.2])
                       for i in range(30)]
            answers = await asyncio.gather(*(h.join() for h in handles))
        took = time.monotonic() - started
        per_node = {n: sum(1 for a in answers if a["node"] == n) for n in names}
        print(f"30 tasks of 0.2 s side by side, per node {per_node}")
        print(f"  they took {took:.1f} s together (one after another: 6 s)")

        try:
            async with rsc.region(rt.cx()) as r:
                slow = [rsc.spawn_remote(r.cx, n, "work", [1, 30.0]) for n in names]
                bad = rsc.spawn_remote(r.cx, names[0], "square", "not a number")
                await bad.join()  # raises RemoteFailed: the region cancels the slow ones
        except* rsc.RemoteFailed as group:
            print(f"one task failed: {group.exceptions[0]}")
        print("its siblings ended " + ", ".join(sorted({str(h.state) for h in slow})))


def main() -> int:
    with LocalCluster(3, "examples.guide_registry:registry", cwd=ROOT) as cluster:
        asyncio.run(fan_out(cluster.nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
