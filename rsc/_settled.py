"""An awaitable for a value already there (``RemoteHandle.join`` on a
settled handle).

This module is never compiled: ``settled`` is a native coroutine, which
``await`` runs in place and which returns its value without raising
StopIteration. A compiled coroutine costs several times as much to make
and to await, and most joins of a batch find their handle settled.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


async def settled(value: T) -> T:
    """Return ``value`` when awaited."""
    return value
