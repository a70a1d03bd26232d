"""Registries the end-to-end tests run on real nodes (``tests.registries:basic``).

Node processes import this module by name, so keep it free of test-only
imports: only ``rsc`` and the standard library.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from rsc import Registry

basic = Registry()


class Crash(BaseException):
    """A crash outside the error path: the node must deliver it as Panicked."""


@basic.computation("echo")
async def echo(cx: Any, data: bytes) -> bytes:
    return data


@basic.computation("square", codec="msgpack")
def square(cx: Any, x: int) -> int:
    return x * x


@basic.computation("square_inline", codec="msgpack", inline=True)
def square_inline(cx: Any, x: int) -> int:
    """``square`` called on the node's loop thread: returns ``[x * x, thread name]``."""
    import threading

    return [x * x, threading.current_thread().name]


@basic.computation("sleep_ms", codec="msgpack")
async def sleep_ms(cx: Any, ms: int) -> int:
    """Sleeps ``ms`` milliseconds in small steps; cancellable at every step."""
    end = time.monotonic() + ms / 1000
    while (left := end - time.monotonic()) > 0:
        cx.checkpoint()
        await asyncio.sleep(min(0.01, left))
    return ms


@basic.computation("block_sync", codec="msgpack")
def block_sync(cx: Any, seconds: float) -> float:
    """Sync code that runs up to ``seconds`` in a pool thread, checking for
    cancellation every 10 ms; returns how long it ran."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        cx.checkpoint()
        time.sleep(0.01)
    return time.monotonic() - start


@basic.computation("boom", codec="msgpack")
def boom(cx: Any, _: Any) -> None:
    raise ValueError("boom")


@basic.computation("crash", codec="msgpack")
async def crash(cx: Any, _: Any) -> None:
    raise Crash("crash")


@basic.computation("big", codec="msgpack")
def big(cx: Any, n: int) -> bytes:
    """``n`` bytes (a repeating pattern, so corruption would show)."""
    pattern = bytes(range(256))
    return (pattern * (n // 256 + 1))[:n]


@basic.computation("count", codec="msgpack")
def count(cx: Any, req: dict) -> str:
    """Appends ``req["token"]`` and a newline to the file ``req["path"]``, then
    returns the token: the file's line count proves how often it ran."""
    token = str(req["token"])
    fd = os.open(req["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return token


@basic.computation("count_big", codec="msgpack")
def count_big(cx: Any, req: dict) -> bytes:
    """Like ``count`` (appends ``req["token"]`` to ``req["path"]``), but returns
    ``req["n"]`` bytes: the token, padded with its own first byte."""
    count(cx, req)
    token = str(req["token"]).encode()
    return (token + token[:1] * int(req["n"]))[:int(req["n"])]


@basic.computation("positive", codec="msgpack",
                   validate=lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
def positive(cx: Any, v: int) -> int:
    return v


# A registry spec that imports but names no Registry: `tests.registries:not_a_registry`.
not_a_registry = object()


def _mark(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


@basic.computation("observe_async", codec="msgpack")
async def observe_async(cx: Any, req: dict) -> str:
    """Writes "started", then waits; on cancellation writes "cancelled" and re-raises."""
    _mark(req["path"], "started")
    try:
        await asyncio.sleep(req["seconds"])
    except asyncio.CancelledError:
        _mark(req["path"], "cancelled")
        raise
    return "finished"


@basic.computation("observe_sync", codec="msgpack")
def observe_sync(cx: Any, req: dict) -> str:
    """The sync twin of observe_async: blocks in a pool thread until cancelled."""
    _mark(req["path"], "started")
    if cx.wait_cancelled(req["seconds"]):
        _mark(req["path"], "cancelled")
        cx.checkpoint()
    return "finished"


@basic.computation("tree", codec="msgpack")
async def tree(cx: Any, req: dict) -> str:
    """One level of a tree of remote work: marks "started", then (if more
    levels remain) spawns the next level on ``req["nodes"][0]`` inside a region
    and waits on it; the leaf waits forever. Marks "cancelled" on cancellation."""
    import rsc

    level = req["level"]
    _mark(req["marks"][level], "started")
    try:
        if req["nodes"]:
            async with rsc.region(cx) as r:
                child = {**req, "level": level + 1, "nodes": req["nodes"][1:]}
                h = rsc.spawn_remote(r.cx, req["nodes"][0], "tree", child, lease=req.get("lease", 2.0))
                return await h.join()
        await asyncio.sleep(3600)
        return "leaf finished"
    except asyncio.CancelledError:
        _mark(req["marks"][level], "cancelled")
        raise


@basic.computation("relay", codec="msgpack")
async def relay(cx: Any, req: dict) -> Any:
    """Spawn ``square`` of ``req["x"]`` on ``req["node"]`` under this task's own
    capability (narrowed to ``computations=["square"]`` first when
    ``req["narrow"]``) and return its result (nested spawns, capability tokens)."""
    import rsc

    if req.get("narrow"):
        cx = cx.attenuate(computations=["square"])
    return await rsc.spawn_remote(cx, req["node"], "square", req["x"], lease=5.0).join()
