"""The computations the shipped lab scenarios run on their nodes.

Plain rsc: a node started with ``rsc node --registry examples.lab.lab_registry:registry``
would serve the same ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rsc import Registry

registry = Registry()


@registry.computation("work", codec="msgpack")
async def work(cx: Any, args: list[Any]) -> Any:
    """``[value, seconds]``: sleeps ``seconds`` (virtual time in the lab), returns ``value * 2``."""
    value, seconds = args
    await asyncio.sleep(seconds)
    return value * 2


@registry.computation("square", codec="msgpack")
def square(cx: Any, x: int) -> int:
    """A sync computation (a thread on a real node; the loop itself in the lab)."""
    return x * x


@registry.computation("book", codec="msgpack")
async def book(cx: Any, args: list[Any]) -> str:
    """A saga step: ``[what, seconds]``."""
    what, seconds = args
    await asyncio.sleep(seconds)
    return f"booked {what}"


@registry.computation("unbook", codec="msgpack")
async def unbook(cx: Any, what: str) -> str:
    """A saga compensation."""
    await asyncio.sleep(0.01)
    return f"released {what}"
