"""Nested remote work: a three-level tree of tasks over four nodes. Each
node is started with ``peers``, so its computations spawn remote work of
their own (through the node's nested runtime, over the lab's network): the
origin's four tasks each spawn two subtrees on other nodes, which each spawn
two leaves. Two faults are drawn (a node cut off, paused or slowed), and in
half the seeds the top region is cancelled at a drawn moment. The oracles
cover every level: each nested spawn gets one outcome, nothing of a closed
region lives on anywhere (its descendants included), every node is quiet.
Run: rsc lab run examples/lab/nested_tree.py --seed 1
"""

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lan")
NODES = ["n1", "n2", "n3", "n4"]


async def scenario(lab):
    for n in NODES:
        await lab.start_node(n, registry, peers=NODES)
    rt = await lab.start_origin("o1")
    lab.chaos(nodes=NODES, origins=["o1"], faults=2, start_s=0.05, end_s=2.0,
              kinds=("partition", "pause", "skew"))
    cancel_at = lab.random.uniform(0.1, 2.5) if lab.random.random() < 0.5 else None
    try:
        async with rsc.region(rt.cx(seed=lab.seed)) as r:
            handles = [spawn_remote(r.cx, NODES[i], "tree", [3, 2, lab.random.uniform(0.1, 1.5), NODES],
                                    lease=2.0) for i in range(4)]
            if cancel_at is not None:
                lab.loop.call_later(cancel_at, r.cancel)
            for h in handles:
                try:
                    assert await h.join() == 4  # its two subtrees of two leaves
                except rsc.RemoteError:
                    pass  # a lapse somewhere below, or the cancel
    except* rsc.RemoteError:
        pass
