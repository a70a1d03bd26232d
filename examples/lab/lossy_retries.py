"""A lossy network: connections reset mid-stream (lost frames) and frames are
replayed; the runtime reconnects and resends under the same idempotency key,
and a lapsed lease is retried on another node. Every spawn still ends once,
and no node runs a key twice.
Run: rsc lab run examples/lab/lossy_retries.py --seed 1
"""

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lossy")
NODES = ["n1", "n2", "n3"]


async def scenario(lab):
    for n in NODES:
        await lab.start_node(n, registry)
    rt = await lab.start_origin("o1")
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = [spawn_remote(r.cx, NODES[i % 3], "work", [i, lab.random.uniform(0, 3)], lease=2.0,
                                on_lease_expired=rsc.lease.retry(3, nodes=NODES))
                   for i in range(40)]
        for i, h in enumerate(handles):
            try:
                assert await h.join() == 2 * i
            except rsc.LeaseExpired:
                pass  # every retry lapsed too: an outcome, if not the hoped-for one
