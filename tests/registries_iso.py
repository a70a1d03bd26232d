"""Registries for the process-isolation tests (``tests.registries_iso:iso``).

Node processes and their worker processes import this module by name, so
keep it free of test-only imports: only ``rsc`` and the standard library.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

from rsc import Registry

iso = Registry()


@iso.computation("noop_p", isolation="process")
def noop_p(cx: Any, data: bytes) -> bytes:
    return data


@iso.computation("noop_t", isolation="thread")
def noop_t(cx: Any, data: bytes) -> bytes:
    return data


@iso.computation("square_p", codec="msgpack", isolation="process")
def square_p(cx: Any, x: int) -> list:
    """``[x * x, the worker's pid]``."""
    return [x * x, os.getpid()]


@iso.computation("pid_default", codec="msgpack")
def pid_default(cx: Any, _: Any) -> int:
    """The pid of the process that ran it (thread or worker, by the node's --isolation)."""
    return os.getpid()


@iso.computation("pid_async", codec="msgpack")
async def pid_async(cx: Any, _: Any) -> int:
    """The pid of the process that ran it: always the node's (async runs on its loop)."""
    return os.getpid()


@iso.computation("sleep_p", codec="msgpack", isolation="process")
def sleep_p(cx: Any, seconds: float) -> str:
    """Blocks in C, deaf to cancellation."""
    time.sleep(seconds)
    return "slept"


@iso.computation("recv_p", codec="msgpack", isolation="process")
def recv_p(cx: Any, mark: Any) -> bytes:
    """Blocks in a socket read nobody will ever answer; first writes the file
    ``mark`` names, if it names one (so a test knows the read is near)."""
    a, b = socket.socketpair()
    try:
        if mark is not None:
            with open(mark, "w") as f:
                f.write(f"{os.getpid()}\n")
        return a.recv(1)
    finally:
        a.close()
        b.close()


@iso.computation("checkpoint_p", codec="msgpack", isolation="process")
def checkpoint_p(cx: Any, seconds: float) -> int:
    """Cooperative: checks for cancellation every 10 ms; returns its pid."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cx.checkpoint()
        time.sleep(0.01)
    return os.getpid()


@iso.computation("crash_p", codec="msgpack", isolation="process")
def crash_p(cx: Any, how: str) -> None:
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "abort":
        os.abort()
    elif how == "exit":
        os._exit(3)
    time.sleep(5)


@iso.computation("alloc_p", codec="msgpack", memory_limit=64 << 20)
def alloc_p(cx: Any, n: int) -> int:
    """Allocates ``n`` bytes (and touches them); the limit is 64 MiB."""
    block = bytearray(n)
    block[::4096] = b"x" * len(block[::4096])
    return len(block)


@iso.computation("limited_p", codec="msgpack", time_limit=1.0)
def limited_p(cx: Any, seconds: float) -> str:
    time.sleep(seconds)
    return "in time"


@iso.computation("recycled_p", codec="msgpack", max_tasks_per_worker=3)
def recycled_p(cx: Any, _: Any) -> int:
    return os.getpid()


@iso.computation("mark_then_sleep_p", codec="msgpack", isolation="process")
def mark_then_sleep_p(cx: Any, req: dict) -> str:
    """Appends ``req["token"]`` to ``req["path"]``, sleeps ``req["seconds"]``
    (deaf to cancellation), then appends "done": the file shows how often it
    ran and whether a run finished."""
    with open(req["path"], "a") as f:
        f.write(f"{req['token']} {os.getpid()}\n")
    time.sleep(req["seconds"])
    with open(req["path"], "a") as f:
        f.write("done\n")
    return "done"
