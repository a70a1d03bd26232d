#!/usr/bin/env python3
"""A travel booking as a saga over a 3-node local cluster.

Each step books one thing on its own node; the car rental fails, so the saga
undoes the hotel and then the flight, each on the node that booked it, with
an idempotency key derived from the saga and the step (a retried undo never
runs twice on its node). Run: python examples/booking_saga.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import rsc  # noqa: E402
from rsc import Runtime, spawn_remote  # noqa: E402
from rsc.launch import LocalCluster  # noqa: E402


def booking(s: rsc.sagas.AsyncSaga, node: str, item: str) -> tuple:
    """One step: book ``item`` on ``node``; its compensation cancels that booking there."""

    async def book() -> str:
        return await spawn_remote(s.cx, node, "book", item, idempotency_key=s.key()).join()

    async def cancel(reference: str) -> str:
        return await spawn_remote(s.cx, node, "cancel_booking", reference,
                                  idempotency_key=s.key(), lease=2.0,
                                  on_lease_expired=rsc.lease.retry(2)).join()

    return book, cancel


async def trip(nodes: dict[str, str]) -> None:
    async with Runtime(nodes) as rt:
        async with rsc.region(rt.cx()) as r:
            async with rsc.saga(r.cx, name="trip") as s:
                flight = await s.step("flight", *booking(s, "worker-1", "flight"))
                print(f"booked {flight}")
                hotel = await s.step("hotel", *booking(s, "worker-2", "hotel"))
                print(f"booked {hotel}")
                await s.step("car", *booking(s, "worker-3", "car"))  # sold out: raises


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "bookings.log")
        with LocalCluster(3, "examples.booking_registry:registry", env={"RSC_BOOKINGS": log}) as c:
            try:
                asyncio.run(trip(c.nodes))
            except ExceptionGroup as group:  # the region's group of what failed
                for err in group.exceptions:
                    print(f"saga aborted: {err}")
        print("what the nodes did, in order:")
        with open(log) as f:
            for line in f:
                print(f"  {line.rstrip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
