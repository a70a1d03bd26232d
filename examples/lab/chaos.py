"""Everything at once: three nodes, two origins, a network that loses and
replays frames, four faults drawn from the seed (partition, node crash and
restart, pause, clock skew, an origin's leases expired at once) and, in
three seeds of ten, the second origin crashing. Each spawn draws its lease
and its policy (fail, cancel(1 s), retry on any node).
Run: rsc lab run examples/lab/chaos.py --seed 1
"""

import rsc
from rsc import spawn_remote
from rsc.lab import LinkProfile

from lab_registry import registry

LAB = dict(network=LinkProfile(latency_s=0.001, jitter_s=0.003, loss=0.003, duplicate=0.01))
NODES = ["n1", "n2", "n3"]


async def work(lab, rt, n):
    policy = [rsc.lease.fail(), rsc.lease.cancel(1.0), rsc.lease.retry(2, nodes=NODES)]
    try:
        async with rsc.region(rt.cx(seed=lab.seed)) as r:
            hs = [spawn_remote(r.cx, NODES[lab.random.randrange(3)], "work", [i, lab.random.uniform(0, 2)],
                               lease=lab.random.choice([0.5, 1.0, 3.0]),
                               on_lease_expired=lab.random.choice(policy)) for i in range(n)]
            for h in hs:
                try:
                    await h.join()
                except rsc.RemoteError:
                    pass
    except* rsc.RemoteError:
        pass


async def scenario(lab):
    for n in NODES:
        await lab.start_node(n, registry)
    o1 = await lab.start_origin("o1")
    o2 = await lab.start_origin("o2")
    lab.chaos(nodes=NODES, origins=["o1", "o2"], faults=4, end_s=3.0,
              kinds=("partition", "crash", "pause", "skew", "expire_leases"))
    if lab.random.random() < 0.3:
        lab.at(lab.random.uniform(0, 2), lab.crash_origin, "o2")
    t = lab.task("o2", work(lab, o2, 30))
    await work(lab, o1, 30)
    try:
        await t
    except BaseException:
        pass
