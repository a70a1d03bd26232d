#!/usr/bin/env python3
"""Node failover with the retry policy, on a 2-node local cluster.

A task runs on worker-1 under a 1 s lease with ``rsc.lease.retry(1,
nodes=["worker-2"])``. While it runs, worker-1 is killed with SIGKILL: no
goodbye, no result. Its lease stops being renewed; when it lapses the policy
spawns the task again, with the same idempotency key, on worker-2, and
``join`` returns worker-2's answer. ``handle.attempts`` lists where it ran.
Run: python examples/failover.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import rsc  # noqa: E402
from rsc.launch import LocalCluster  # noqa: E402


async def failover(cluster: LocalCluster) -> None:
    async with rsc.Runtime(cluster.nodes) as rt:
        async with rsc.region(rt.cx()) as r:
            h = rsc.spawn_remote(r.cx, "worker-1", "work", [7, 2.0], lease=1.0,
                                 on_lease_expired=rsc.lease.retry(1, nodes=["worker-2"]))
            while h.state != rsc.RemoteTaskState.RUNNING:  # the node acknowledged it
                await asyncio.sleep(0.01)
            cluster.kill("worker-1", signal.SIGKILL)
            print("worker-1 killed with SIGKILL while it ran the task")
            answer = await h.join()
        print(f"answer {answer['value']} from {answer['node']}")
        print("attempts: " + ", ".join(node for node, _ in h.attempts))


def main() -> int:
    with LocalCluster(2, "examples.guide_registry:registry", cwd=ROOT) as cluster:
        asyncio.run(failover(cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())
