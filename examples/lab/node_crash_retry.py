"""A node crash under the retry policy: n1 dies while running its tasks (its
idempotency records die with it) and restarts under the same name later.
The origin sees the lapse, or the restart (a new instance id), and retries
on n2. Run: rsc lab run examples/lab/node_crash_retry.py --seed 1
"""

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lan")


async def scenario(lab):
    for n in ("n1", "n2"):
        await lab.start_node(n, registry)
    rt = await lab.start_origin("o1")
    crash_at = lab.random.uniform(0.05, 2.0)
    lab.at(crash_at, lab.crash, "n1")
    lab.at(crash_at + lab.random.uniform(0.1, 3.0), lab.restart, "n1")
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = [spawn_remote(r.cx, "n1", "work", [i, lab.random.uniform(0.1, 3)], lease=1.0,
                                on_lease_expired=rsc.lease.retry(2, nodes=["n2"]))
                   for i in range(20)]
        for i, h in enumerate(handles):
            assert await h.join() == 2 * i
