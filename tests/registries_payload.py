"""A registry of msgpack echoes, for tests/test_payload_msgpack.py on real nodes.

Node processes import this module by name, so it imports only ``rsc`` and the
standard library.
"""

from __future__ import annotations

from typing import Any

from rsc import Registry

payload = Registry()


@payload.computation("echo_async", codec="msgpack")
async def echo_async(cx: Any, value: Any) -> Any:
    return value


@payload.computation("echo_thread", codec="msgpack", isolation="thread")
def echo_thread(cx: Any, value: Any) -> Any:
    return value


@payload.computation("echo_inline", codec="msgpack", inline=True)
def echo_inline(cx: Any, value: Any) -> Any:
    return value


@payload.computation("echo_process", codec="msgpack", isolation="process")
def echo_process(cx: Any, value: Any) -> Any:
    return value


def _mark(value: Any) -> bool:
    """Accepts a dict with a blob, and marks it: the computation then says
    whether it got the very object the validator saw."""
    if not (isinstance(value, dict) and "blob" in value):
        return False
    value["validated"] = True
    return True


@payload.computation("echo_checked", codec="msgpack", validate=_mark)
async def echo_checked(cx: Any, value: Any) -> Any:
    """``[the blob, whether this is the object the validator accepted]``."""
    return [value["blob"], value.get("validated", False)]


@payload.computation("types_of", codec="msgpack")
async def types_of(cx: Any, value: Any) -> Any:
    """The type name of each item of a list, as the computation gets it."""
    return [type(v).__name__ for v in value]
