"""Duplicate delivery: one frame in ten after the handshake arrives twice
(spawns, acks, results, renewals). A node must answer a duplicate spawn from
its idempotency record, never run it again; an origin must drop a second
result. Run: rsc lab run examples/lab/duplicates.py --seed 1
"""

import rsc
from rsc import spawn_remote
from rsc.lab import LinkProfile

from lab_registry import registry

LAB = dict(network=LinkProfile(latency_s=0.001, jitter_s=0.002, duplicate=0.1))


async def scenario(lab):
    for n in ("n1", "n2"):
        await lab.start_node(n, registry)
    rt = await lab.start_origin("o1")
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = [spawn_remote(r.cx, f"n{1 + i % 2}", "work", [i, lab.random.uniform(0, 1)])
                   for i in range(40)]
        for i, h in enumerate(handles):
            assert await h.join() == 2 * i
