"""An origin crash: o1 spawns long tasks and dies. Nothing will ever ask for
their results, so each node must notice o1's silence and cancel its orphans
within a lease; o2, alive, must get all of its own outcomes meanwhile.
Run: rsc lab run examples/lab/origin_crash.py --seed 1
"""

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lan")


async def work(lab, rt, n, sleep):
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = [spawn_remote(r.cx, f"n{1 + i % 2}", "work", [i, sleep()], lease=1.0)
                   for i in range(n)]
        for i, h in enumerate(handles):
            assert await h.join() == 2 * i


async def scenario(lab):
    for n in ("n1", "n2"):
        await lab.start_node(n, registry)
    o1 = await lab.start_origin("o1")
    o2 = await lab.start_origin("o2")
    lab.at(lab.random.uniform(0.01, 1.0), lab.crash_origin, "o1")
    doomed = lab.task("o1", work(lab, o1, 20, lambda: lab.random.uniform(2, 30)))
    await work(lab, o2, 20, lambda: lab.random.uniform(0, 3))
    try:
        await doomed
    except BaseException:  # cancelled by the crash (or finished just before it)
        pass
