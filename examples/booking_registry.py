"""The computations examples/booking_saga.py runs (``examples.booking_registry:registry``).

Every booking and cancellation is appended, with the node's name, to the file
the ``RSC_BOOKINGS`` environment variable names (``bookings.log`` in the
node's working directory by default).
"""

from __future__ import annotations

import os
from typing import Any

import rsc

registry = rsc.Registry()
SOLD_OUT = {"car"}


def _log(cx: Any, line: str) -> None:
    path = os.environ.get("RSC_BOOKINGS") or "bookings.log"
    with open(path, "a") as f:
        f.write(f"{line} on {cx.node}\n")


@registry.computation("book", codec="msgpack")
async def book(cx: Any, item: str) -> str:
    """Book ``item``; returns a booking reference. Some items are sold out."""
    if item in SOLD_OUT:
        raise RuntimeError(f"no {item} left")
    _log(cx, f"booked {item}")
    return f"{item}-ref"


@registry.computation("cancel_booking", codec="msgpack")
async def cancel_booking(cx: Any, reference: str) -> str:
    """Cancel the booking ``reference``."""
    _log(cx, f"cancelled {reference}")
    return f"cancelled {reference}"
