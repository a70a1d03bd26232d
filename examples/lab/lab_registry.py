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
    """A sync computation (a pool thread on a real node; in the lab, a thread in lockstep with the loop)."""
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


@registry.computation("tree", codec="msgpack")
async def tree(cx: Any, args: list[Any]) -> int:
    """``[depth, fanout, seconds, peers]``: a tree of remote work. A leaf
    sleeps ``seconds`` and counts 1; an inner task spawns ``fanout`` subtrees
    on its peers (never on its own node) in a region of its own and sums them.
    Needs a node started with ``peers``."""
    import rsc

    depth, fanout, seconds, peers = args
    if depth <= 1:
        await asyncio.sleep(seconds)
        return 1
    others = [p for p in peers if p != str(cx.node)]
    async with rsc.region(cx) as r:
        handles = [rsc.spawn_remote(r.cx, others[(i + depth) % len(others)], "tree",
                                    [depth - 1, fanout, seconds, peers], lease=1.0)
                   for i in range(fanout)]
        return sum([await h.join() for h in handles])
