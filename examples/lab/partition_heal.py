"""A partition during the tasks, then heal: the node is cut off from the
origin for a drawn stretch shorter or longer than the lease. Short cuts are
ridden out; long ones lapse the lease, and the retry policy spawns again on
the other node (the first node cancels its orphan when the origin falls
silent). Run: rsc lab run examples/lab/partition_heal.py --seed 1
"""

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lan")


async def scenario(lab):
    for n in ("n1", "n2"):
        await lab.start_node(n, registry)
    rt = await lab.start_origin("o1")
    cut_at = lab.random.uniform(0.1, 1.0)
    lab.at(cut_at, lab.partition, ["n1"], ["o1", "n2"])
    lab.at(cut_at + lab.random.uniform(0.2, 6.0), lab.heal)
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = [spawn_remote(r.cx, "n1", "work", [i, lab.random.uniform(0.5, 4)], lease=2.0,
                                on_lease_expired=rsc.lease.retry(2, nodes=["n2"]))
                   for i in range(20)]
        for i, h in enumerate(handles):
            assert await h.join() == 2 * i
