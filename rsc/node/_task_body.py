"""The coroutine an async computation's asyncio task runs when its first step
is eager (Python 3.12+): it awaits the computation and hands how it ended to
the executor.

This module is never compiled: ``task_body`` is a native coroutine, whose
``await`` of the computation's own (native) coroutine the interpreter runs in
place, its return value passed without a StopIteration. A compiled coroutine
awaits a native one through its ``__await__`` wrapper, and its return raises
StopIteration: together about three times what this costs per task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


async def task_body(fn: Callable[..., Any], cx: Any, data: Any, task: Any,
                    ended: Callable[[Any, Any, BaseException | None], None]) -> None:
    """Run ``fn(cx, data)`` to its end inside this task, then call ``ended(task,
    output, None)``, or ``ended(task, None, exc)`` if it raised. Never raises:
    whatever the computation raises, a ``KeyboardInterrupt`` or ``SystemExit``
    after a suspension too, is reported, not let into the event loop."""
    try:
        out = await fn(cx, data)
    except BaseException as exc:  # noqa: BLE001 - reported as the task's outcome
        ended(task, None, exc)
    else:
        ended(task, out, None)
