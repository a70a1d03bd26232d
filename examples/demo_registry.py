"""The computations `make demo` runs (``examples.demo_registry:registry``).

A node never receives code: it runs only what a registry like this one names.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import rsc

registry = rsc.Registry()


@registry.computation("square", codec="msgpack")
def square(cx: Any, x: int) -> int:
    """Python values in and out (msgpack codec); runs in the node's thread pool."""
    return x * x


@registry.computation("slow_sum", codec="msgpack")
async def slow_sum(cx: Any, n: int) -> int:
    """Adds 0..n-1, one number every 10 ms, on the node's event loop.
    A cancel reaches it at the next checkpoint (or interrupts the sleep)."""
    total = 0
    for i in range(n):
        cx.checkpoint()
        await asyncio.sleep(0.01)
        total += i
    return total


@registry.computation("hash_block")
def hash_block(cx: Any, data: bytes) -> bytes:
    """Sync, CPU-bound: hashes ``data`` 2,000 times over; checks for a cancel
    every 100 rounds. Raw bytes in and out."""
    digest = data
    for i in range(2_000):
        if i % 100 == 0:
            cx.checkpoint()
        digest = hashlib.sha256(digest).digest()
    return digest


@registry.computation("fail", codec="msgpack")
def fail(cx: Any, why: str) -> None:
    """Always raises: the origin sees RemoteFailed with this message."""
    raise ValueError(f"fail was asked to fail: {why}")
