"""The computations examples/capability_tokens.py runs (``examples.capability_registry:registry``)."""

from __future__ import annotations

from typing import Any

import rsc

registry = rsc.Registry()


@registry.computation("square", codec="msgpack")
def square(cx: Any, x: int) -> int:
    """x * x."""
    return x * x


@registry.computation("sum_of_squares", codec="msgpack")
async def sum_of_squares(cx: Any, req: dict) -> int:
    """Square each of ``req["xs"]`` on ``req["node"]`` and add them up.

    It spawns under the token its own spawn came with, narrowed first to the
    one computation it needs: whatever the caller allowed, this step can run
    nothing but ``square``, and only ``len(xs)`` times."""
    xs = req["xs"]
    narrow = cx.attenuate(computations=["square"], max_uses=len(xs))
    handles = [rsc.spawn_remote(narrow, req["node"], "square", x) for x in xs]
    return sum([await h.join() for h in handles])
