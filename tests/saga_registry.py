"""Computations the saga tests run on real nodes (``tests.saga_registry:ledger``).

Each writes one line to a shared ledger file on the node's side, naming the
node, so a test reads what every node did, in the order they did it. Node
processes import this module by name: only ``rsc`` and the standard library.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from rsc import Registry

ledger = Registry()


def _write(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@ledger.computation("book", codec="msgpack")
async def book(cx: Any, req: dict) -> str:
    """Wait ``req.get("delay_s", 0)`` (cancellable), then write ``book ITEM on
    NODE`` to ``req["path"]`` and return ITEM; fail at once if ``req["fail"]``."""
    if req.get("fail"):
        raise RuntimeError(f"no {req['item']} left")
    await asyncio.sleep(float(req.get("delay_s", 0)))
    _write(req["path"], f"book {req['item']} on {cx.node}")
    return str(req["item"])


@ledger.computation("unbook", codec="msgpack")
async def unbook(cx: Any, req: dict) -> str:
    """Like ``book``, writing ``unbook ITEM on NODE``; fails if ``req["fail"]``;
    on the node named ``req["stall_on"]`` it writes ``unbooking ITEM on NODE``
    and then waits for a minute before the real line (to be killed meanwhile)."""
    if req.get("fail"):
        raise RuntimeError(f"cannot unbook {req['item']}")
    if req.get("stall_on") == cx.node:
        _write(req["path"], f"unbooking {req['item']} on {cx.node}")
        await asyncio.sleep(60)
    await asyncio.sleep(float(req.get("delay_s", 0)))
    _write(req["path"], f"unbook {req['item']} on {cx.node}")
    return f"unbooked {req['item']}"
