"""Computations the end-to-end benchmarks run (``bench.registry:registry``).

Node processes import this module by name (``rsc node --registry
bench.registry:registry`` with the repository root as working directory), and
the peers (ProcessPoolExecutor, multiprocessing.Pool, Dask, Ray) pickle the
plain functions below by reference, so keep it free of test-only imports:
only ``rsc`` and the standard library.

The same work runs everywhere: ``noop`` returns its input (``noop_msgpack``
the same for MessagePack values); ``cpu`` runs
``burn(n)``, a pure-Python loop whose ``n`` the benchmark calibrates to about
1 ms on this machine (``calibrate_burn``) and sends as the input, so rsc and
every peer do exactly the same arithmetic, and returns how long that took.

``cpu`` is an *async* computation on purpose: it runs on the node's event
loop, holding that node's only interpreter for its millisecond, and the node
answers the next frame when it returns. A sync computation would run in the
node's thread pool instead: same GIL, so no more parallelism inside a node,
plus a thread hand-off per task. Parallelism comes from running several node
processes, which is what the 1-node vs 2-node figures measure.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rsc import Registry

registry = Registry()


def burn(n: int) -> int:
    """``n`` steps of pure-Python integer arithmetic (holds the GIL throughout)."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate_burn(target_s: float = 0.001) -> int:
    """The ``n`` for which ``burn(n)`` takes about ``target_s`` here.

    Probes ``burn`` at the size it will run at (a much larger ``n`` would
    square into multi-digit ints and run slower per step), three refinements
    of best-of-3 batches of about 20 ms each."""
    n = 5_000
    reps = max(1, round(0.02 / target_s))
    for _ in range(3):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                burn(n)
            best = min(best, (time.perf_counter() - t0) / reps)
        n = max(1, round(n * target_s / best))
    return n


@registry.computation("noop")
async def noop(cx: Any, data: bytes) -> bytes:
    """Returns its input: the cost of the machinery alone."""
    return data


@registry.computation("noop_inline", inline=True)
def noop_inline(cx: Any, data: bytes) -> bytes:
    """``noop`` as a plain function registered ``inline=True``: the node calls it
    on its loop thread, with no asyncio task (what a microseconds-long
    computation should be registered as)."""
    return data


@registry.computation("noop_msgpack", codec="msgpack")
async def noop_msgpack(cx: Any, value: Any) -> Any:
    """``noop`` for MessagePack values: unpacked on the way in, packed on the way out."""
    return value


def timed_burn(n: int) -> bytes:
    """``burn(n)``; returns how long it took, in ns, as decimal bytes.

    The benchmarks add these up: busy time over wall time is how many cores
    the job kept busy, a figure that holds still when the machine's speed
    does not (on a shared VM it wanders by up to 2x over seconds)."""
    t0 = time.perf_counter_ns()
    burn(n)
    return str(time.perf_counter_ns() - t0).encode()


@registry.computation("cpu")
async def cpu(cx: Any, data: bytes) -> bytes:
    """``timed_burn(int(data))`` on the node's loop."""
    return timed_burn(int(data))


@registry.computation("sleep")
async def sleep(cx: Any, data: bytes) -> bytes:
    """Sleeps ``int(data)`` milliseconds (cancellable: an asyncio sleep); returns b""."""
    await asyncio.sleep(int(data) / 1000)
    return b""


# -- the same jobs for the peers (plain functions, pickled by reference) --------------


def peer_noop(data: bytes) -> bytes:
    return data


def peer_cpu(n: int) -> bytes:
    return timed_burn(n)
