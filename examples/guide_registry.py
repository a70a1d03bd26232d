"""The computations the guide's examples run (``examples.guide_registry:registry``).

A node serves only what a registry names: these are the names the example
programs in this folder spawn.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import rsc

registry = rsc.Registry()


@registry.computation("square", codec="msgpack", inline=True)
def square(cx: Any, x: int) -> int:
    """x * x (a plain function of microseconds: called on the node's loop thread)."""
    return x * x


@registry.computation("work", codec="msgpack")
async def work(cx: Any, job: list) -> dict:
    """``[x, seconds]``: wait ``seconds`` on the node's loop, then return
    ``{"node": <the node that ran it>, "value": x * x}``."""
    x, seconds = job
    await asyncio.sleep(seconds)
    return {"node": cx.node, "value": x * x}


@registry.computation("crunch", codec="msgpack")
def crunch(cx: Any, seconds: float) -> int:
    """A plain function that computes for ``seconds`` in the node's thread pool,
    in slices of about 5 ms, and calls ``cx.checkpoint()`` between slices: a
    cancel stops it within one slice (raising ``rsc.Cancelled``), not after the
    node's ``--cancel-grace``. Returns the number of slices it computed."""
    slices = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cx.checkpoint()
        stop = time.monotonic() + 0.005
        while time.monotonic() < stop:
            pass
        slices += 1
    return slices


@registry.computation("tree", codec="msgpack")
async def tree(cx: Any, req: dict) -> dict:
    """One node of a remote tree: ``{"depth": d, "fanout": f, "nodes": [...]}``
    (and ``"leaf_s"``: seconds each leaf waits, 0 by default).

    At depth 0 it is a leaf: it waits ``leaf_s`` and returns ``{"node": <this
    node>, "leaves": 1}``;
    otherwise it spawns ``fanout`` children of depth ``d - 1`` on the other
    nodes of ``nodes`` (through the node's ``--peers`` cluster file), in a
    region of its own (a cancel of this task reaches every descendant), and
    returns its node with its children's answers and their leaf count."""
    depth, fanout, nodes = req["depth"], req["fanout"], req["nodes"]
    if depth == 0:
        await asyncio.sleep(req.get("leaf_s", 0.0))
        return {"node": cx.node, "leaves": 1}
    others = [n for n in nodes if n != cx.node] or nodes
    async with rsc.region(cx) as r:
        handles = [rsc.spawn_remote(r.cx, others[i % len(others)], "tree",
                                    dict(req, depth=depth - 1))
                   for i in range(fanout)]
        children = [await h.join() for h in handles]
    return {"node": cx.node, "children": children, "leaves": sum(c["leaves"] for c in children)}
