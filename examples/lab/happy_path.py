"""The happy path: 3 nodes on a LAN, one origin, 60 spawns in one region.

Every spawn must succeed with the right value; the oracles check the rest.
Run: rsc lab run examples/lab/happy_path.py --seed 1
"""

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lan")
NODES = ("n1", "n2", "n3")


async def scenario(lab):
    for n in NODES:
        await lab.start_node(n, registry)
    rt = await lab.start_origin("o1")
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = []
        for i in range(60):
            node = NODES[lab.random.randrange(len(NODES))]
            if i % 3:
                handles.append((spawn_remote(r.cx, node, "work", [i, lab.random.uniform(0, 2)]), 2 * i))
            else:
                handles.append((spawn_remote(r.cx, node, "square", i), i * i))
        for h, want in handles:
            got = await h.join()
            assert got == want, (h, got, want)
