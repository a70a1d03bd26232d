"""A registry whose computations do not cooperate with shutdown
(``tests.stuck_registry:registry``), for tests/test_node_lifecycle.py.

Node processes import this module by name: only ``rsc`` and the standard library.
"""

from __future__ import annotations

import time
from typing import Any

from rsc import Registry

registry = Registry()


@registry.computation("block_in_c", codec="msgpack")
def block_in_c(cx: Any, seconds: float) -> float:
    """Blocks its pool thread in one C call (``time.sleep`` releases the GIL
    and resumes after EINTR), so neither its cancel nor the executor's
    asynchronous interrupt can reach it before ``seconds`` are over."""
    time.sleep(seconds)
    return seconds


@registry.computation("square", codec="msgpack")
def square(cx: Any, x: int) -> int:
    return x * x


@registry.computation("hog_loop", codec="msgpack")
async def hog_loop(cx: Any, seconds: float) -> float:
    """Holds the node's loop thread for ``seconds``: an async computation that
    never awaits, sleeping in 50 ms blocking steps (so the loop runs nothing,
    not even its signal handlers, while the main thread keeps running bytecode)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return seconds
