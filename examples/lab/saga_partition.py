"""A saga with a partition in the middle: three bookings on three nodes; the
third node is cut off while its step runs, its lease lapses (policy fail),
so the saga compensates the first two, last to first, each exactly once
(compensations retry under the saga's keys: a retried undo never runs twice
on its node). Run: rsc lab run examples/lab/saga_partition.py --seed 1
"""

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lan")


def booking(s, node, item, seconds):
    async def book():
        return await spawn_remote(s.cx, node, "book", [item, seconds], idempotency_key=s.key(),
                                  lease=1.0).join()

    async def unbook(reference):
        return await spawn_remote(s.cx, node, "unbook", item, idempotency_key=s.key(), lease=1.0,
                                  on_lease_expired=rsc.lease.retry(5)).join()

    return book, unbook


async def scenario(lab):
    for n in ("n1", "n2", "n3"):
        await lab.start_node(n, registry)
    rt = await lab.start_origin("o1")
    cut = lab.random.uniform(0.05, 0.6)
    lab.at(cut, lab.partition, ["n3"], ["o1", "n1", "n2"])
    lab.at(cut + lab.random.uniform(1.5, 4.0), lab.heal)
    saga_id = lab.random.getrandbits(64).to_bytes(8, "big")
    try:
        async with rsc.region(rt.cx(seed=lab.seed)) as r:
            async with rsc.saga(r.cx, name="trip", saga_id=saga_id) as s:
                await s.step("flight", *booking(s, "n1", "flight", lab.random.uniform(0, 0.3)))
                await s.step("hotel", *booking(s, "n2", "hotel", lab.random.uniform(0, 0.3)))
                await s.step("car", *booking(s, "n3", "car", lab.random.uniform(0.5, 2.0)))
    except* Exception:
        pass  # the saga aborted: the oracle checks how it compensated
