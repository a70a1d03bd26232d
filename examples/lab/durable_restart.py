"""A node with a durable journal crashes and restarts: n1 keeps its
idempotency records on its own disk (``durable=True``, what ``rsc node
--state-dir`` does), crashes while running its tasks and restarts under the
same name. The origin sees a new instance that kept its journal and asks it
again under the same keys: a task that had finished is answered from its
record, one that was running when n1 died is answered Cancelled ("node
restarted while it ran": it may have had effects, so it is not run again).
Then every key is spawned once more on n1: answered from the journal, never
run again. The at_most_once oracle holds across the restart.
Run: rsc lab run examples/lab/durable_restart.py --seed 1
"""

import asyncio

import rsc
from rsc import IdempotencyKey, spawn_remote
from rsc.types import OutcomeKind, unpack_value

from lab_registry import registry

LAB = dict(network="lan")
TASKS = 20


async def run(lab, durable):
    await lab.start_node("n1", registry, durable=durable)
    await lab.start_node("n2", registry)
    rt = await lab.start_origin("o1")
    crash_at = lab.random.uniform(0.05, 1.5)
    lab.at(crash_at, lab.crash, "n1")
    lab.at(crash_at + lab.random.uniform(0.05, 0.8), lab.restart, "n1")
    keys = [IdempotencyKey.from_bytes(lab.random.getrandbits(128).to_bytes(16, "big"))
            for _ in range(TASKS)]
    work = [[i, lab.random.uniform(0.1, 2.0)] for i in range(TASKS)]
    # back to n1 first (it may have kept its journal), on to n2 if it does not accept in time
    policy = rsc.lease.retry(2, nodes=["n2"], same_node_within_s=2.0)
    first = []
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = [spawn_remote(r.cx, "n1", "work", work[i], lease=1.0, idempotency_key=keys[i],
                                on_lease_expired=policy) for i in range(TASKS)]
        for i, h in enumerate(handles):
            try:
                out = await h.outcome()
            except rsc.LeaseExpired:
                first.append(None)
                continue
            first.append(out.kind)
            if out.kind is OutcomeKind.SUCCESS:
                assert unpack_value(out.unwrap()) == 2 * i
            else:  # running when n1 died: not run again
                assert out.kind is OutcomeKind.CANCELLED, out
    while "n1" not in lab.nodes or lab.nodes["n1"].crashed:
        await asyncio.sleep(0.1)
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        again = [spawn_remote(r.cx, "n1", "work", work[i], lease=1.0, idempotency_key=keys[i])
                 for i in range(TASKS)]
        for i, h in enumerate(again):
            out = await h.outcome()
            if out.kind is OutcomeKind.SUCCESS:
                assert unpack_value(out.unwrap()) == 2 * i


async def scenario(lab):
    await run(lab, durable=True)
