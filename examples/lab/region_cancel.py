"""A region cancelled under load: 100 spawns over 3 nodes, then the region is
cancelled at a drawn moment. Every handle must settle (completed or
cancelled) before the region closes; nothing of it may keep running.
Run: rsc lab run examples/lab/region_cancel.py --seed 1
"""

import asyncio

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lan")
NODES = ("n1", "n2", "n3")


async def scenario(lab):
    for n in NODES:
        await lab.start_node(n, registry)
    rt = await lab.start_origin("o1")

    async def load(r):
        for i in range(100):
            spawn_remote(r.cx, NODES[i % 3], "work", [i, lab.random.uniform(0, 2)])
            if lab.random.random() < 0.2:
                await asyncio.sleep(lab.random.uniform(0, 0.05))
        await asyncio.sleep(10)

    try:
        async with rsc.region(rt.cx(seed=lab.seed)) as r:
            r.spawn(lambda cx: load(r))
            await asyncio.sleep(lab.random.uniform(0.0, 1.5))
            r.cancel()
    except* rsc.RemoteError:
        pass  # failures the cancel caused (a cancelled handle nobody joined is not one)
