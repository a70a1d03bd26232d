"""The lab benchmark's scenario: 4 nodes, one origin, 200 tasks, faults.

Each seed draws 3 faults (partition, node crash and restart, pause, clock
skew) in the first 3 s; the 200 tasks (async sleeps of up to 2 s and sync
squares) go out in one region under the retry policy, so every fault costs
retries, resends and orphan cancels. Run one seed:
rsc lab run bench/lab_scenario.py --seed 1
"""

import os
import sys

import rsc
from rsc import spawn_remote

# the registry the shipped scenarios use (examples/lab/lab_registry.py)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples", "lab"))
from lab_registry import registry  # noqa: E402

LAB = dict(network="lan")
NODES = ["n1", "n2", "n3", "n4"]


async def scenario(lab):
    for n in NODES:
        await lab.start_node(n, registry)
    rt = await lab.start_origin("o1")
    lab.chaos(nodes=NODES, origins=["o1"], start_s=0.01, end_s=3.0, faults=3,
              kinds=("partition", "crash", "pause", "skew"))
    policy = rsc.lease.retry(3, nodes=NODES)
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = []
        for i in range(200):
            node = NODES[i % 4]
            if i % 4 == 3:
                handles.append(spawn_remote(r.cx, node, "square", i, lease=1.0, on_lease_expired=policy))
            else:
                handles.append(spawn_remote(r.cx, node, "work", [i, lab.random.uniform(0, 2)],
                                            lease=1.0, on_lease_expired=policy))
        for h in handles:
            try:
                await h.join()
            except rsc.RemoteError:
                pass  # a lapse after every retry is an outcome too
