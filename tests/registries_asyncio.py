"""Computations that use asyncio's task machinery from inside (``tests.registries_asyncio:inside``).

On Python 3.12+ a node runs an async computation's first step eagerly, inside
the loop callback that admitted it, and makes its asyncio task wait on the
loop only if it suspends. These computations check, on a real node, that the
task machinery a computation may use still holds: ``asyncio.current_task()``,
``asyncio.timeout()`` and ``asyncio.TaskGroup``, and cancellation.

Node processes import this module by name: only ``rsc`` and the standard library.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from rsc import Registry

inside = Registry()

# What the "parked" computations saw, by their input: read back through "probe".
_seen: dict[str, list[str]] = {}


@inside.computation("identity", codec="msgpack")
async def identity(cx: Any, suspend: bool) -> dict:
    """Its task before and after an optional suspension, as the computation sees it."""
    first = asyncio.current_task()
    if suspend:
        await asyncio.sleep(0)
    second = asyncio.current_task()
    return dict(has_task=first is not None, same=first is second,
                name=first.get_name() if first is not None else None,
                done=first.done() if first is not None else None,
                all_tasks_has_it=first in asyncio.all_tasks())


@inside.computation("timeout", codec="msgpack")
async def timeout(cx: Any, ms: int) -> dict:
    """``asyncio.timeout`` that fires, then one that does not: the task is
    not left cancelling, and the computation goes on after both."""
    fired = False
    try:
        async with asyncio.timeout(ms / 1000):
            await asyncio.sleep(30)
    except TimeoutError:
        fired = True
    async with asyncio.timeout(30):
        await asyncio.sleep(0)
    task = asyncio.current_task()
    return dict(fired=fired, cancelling=task.cancelling() if task is not None else None)


@inside.computation("timeout_at_once", codec="msgpack")
async def timeout_at_once(cx: Any, _: Any) -> dict:
    """A timeout that is already over when its block starts: it fires at the
    block's first suspension."""
    try:
        async with asyncio.timeout(0):
            await asyncio.sleep(1)
    except TimeoutError:
        return dict(fired=True, cancelling=asyncio.current_task().cancelling())  # type: ignore[union-attr]
    return dict(fired=False)


async def _child(x: int) -> int:
    await asyncio.sleep(0.001 * x)
    if x < 0:
        raise ValueError(f"child {x} failed")
    return x * 10


@inside.computation("group", codec="msgpack")
async def group(cx: Any, xs: list) -> Any:
    """A TaskGroup of children: their results, or which of them failed."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_child(x)) for x in xs]
    except ExceptionGroup as eg:
        return dict(failed=sorted(str(e) for e in eg.exceptions))
    return dict(results=[t.result() for t in tasks])


@inside.computation("group_no_children", codec="msgpack")
async def group_no_children(cx: Any, _: Any) -> str:
    """A TaskGroup whose body ends before it ever suspends."""
    async with asyncio.TaskGroup():
        pass
    return "ok"


@inside.computation("parked", codec="msgpack")
async def parked(cx: Any, tag: str) -> str:
    """Suspends until cancelled; notes what happened under ``tag`` (see ``probe``)."""
    seen = _seen.setdefault(tag, [])
    seen.append("started")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        seen.append("cancelled")
        raise
    finally:
        seen.append("finally")
    return "unreachable"


@inside.computation("probe", codec="msgpack")
async def probe(cx: Any, tag: str) -> list:
    """What the ``parked`` computation with input ``tag`` went through."""
    return list(_seen.get(tag, []))


@inside.computation("at_once", codec="msgpack")
async def at_once(cx: Any, x: int) -> list:
    """Never suspends."""
    return [x, asyncio.current_task() is not None]


@inside.computation("fail_at_once", codec="msgpack")
async def fail_at_once(cx: Any, x: int) -> int:
    """Raises in its first step."""
    raise KeyError(x)


@inside.computation("python_version", codec="msgpack")
async def python_version(cx: Any, _: Any) -> list:
    return list(sys.version_info[:2])
