#!/usr/bin/env python3
"""rsc in one screen: a 4-node local cluster running named computations.

Run with `make demo`. Every step prints what happened as it happens.
The computations live in examples/demo_registry.py; nodes run only those.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from rsc import (  # noqa: E402
    CancelReason, RemoteCancelled, RemoteFailed, Runtime, UnknownComputation, spawn_remote,
)
from rsc.launch import LocalCluster  # noqa: E402

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:5.2f}s] {msg}", flush=True)


async def demo(nodes: dict[str, str]) -> None:
    names = list(nodes)
    async with Runtime(nodes) as rt:
        cx = rt.cx()  # a context holding the capability to spawn remote work

        # 1. Many named computations, spread round-robin over the nodes.
        t = time.monotonic()
        handles = [spawn_remote(cx, names[i % len(names)], "square", i) for i in range(200)]
        results = await asyncio.gather(*(h.join() for h in handles))
        assert results == [i * i for i in range(200)]
        say(f"200 x square on {len(names)} nodes in {(time.monotonic() - t) * 1000:.0f} ms, all correct: "
            f"square(7)={results[7]}, square(123)={results[123]}, square(199)={results[199]}")

        # 2. A CPU-bound sync computation on every node at once (each in its node's thread pool).
        blocks = {n: spawn_remote(cx, n, "hash_block", n.encode()) for n in names}
        for n, h in blocks.items():
            say(f"hash_block on {n}: {(await h.join()).hex()[:16]}…")

        # 3. Cancel a computation mid-flight; the node delivers Cancelled with our reason.
        slow = spawn_remote(cx, names[0], "slow_sum", 1_000)  # would take ~10 s
        await asyncio.sleep(0.3)
        say(f"slow_sum is {slow.state} on {slow.node}; cancelling it")
        slow.abort(CancelReason.user("the demo changed its mind"))
        try:
            await slow.join()
        except RemoteCancelled as exc:
            say(f"slow_sum observed the cancel -> Cancelled ({exc.reason})")

        # 4. A name no node registered: a typed rejection, nothing runs.
        try:
            await spawn_remote(cx, names[1], "mine_bitcoin", b"").join()
        except UnknownComputation as exc:
            say(f"{type(exc).__name__} (reject code {exc.code}): {exc}")

        # 5. A computation that raises: the error comes back as RemoteFailed.
        try:
            await spawn_remote(cx, names[2], "fail", "on purpose").join()
        except RemoteFailed as exc:
            say(f"RemoteFailed: {exc.message}")

        # 6. Ask every node how it is doing.
        for n in names:
            s = await rt.status(n)
            say(f"status {n}: pid {s['pid']}, accepted {s['accepted']}, completed {s['completed']}, "
                f"failed {s['failed']}, cancelled {s['cancelled']}, rejected {s['rejected']}, "
                f"rss {s['rss_bytes'] / 2**20:.0f} MiB")


def main() -> int:
    say("starting 4 nodes with examples.demo_registry:registry ...")
    cluster = LocalCluster(4, "examples.demo_registry:registry", cwd=ROOT)
    cluster.on_progress = lambda ready, waiting: say(
        f"  {ready[-1]} ready ({len(ready)}/{cluster.n})"
        + (f"; waiting for {', '.join(waiting)}" if waiting else ""))
    cluster.start()
    try:
        for name, addr in cluster.nodes.items():
            say(f"  {name}  pid {cluster.pids[name]:>7}  {addr}")
        asyncio.run(demo(cluster.nodes))
    finally:
        say("shutting the cluster down (SIGTERM to each node, graceful drain) ...")
        n, leftovers = len(cluster.pids), cluster.stop()
    say(f"cluster stopped: {n} nodes exited, sockets and directory removed" if not leftovers
        else f"cluster stopped, but processes {leftovers} survived SIGKILL")
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
