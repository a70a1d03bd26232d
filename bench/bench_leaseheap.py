"""Lease heap: compiled vs its pure twin vs the obvious stdlib approach.

The workload is what an origin's lease watch does (see ``Workload``): every
one-second tick, a tenth of the leases heartbeat (``renew``), a few tasks
start (``add``) or finish (``remove``), and the leases of a few dead tasks run
out (``pop_expired``). A round starts from a freshly filled heap (untimed) and
runs five ticks. Leases last 11 s and are renewed every 10 s, so the garbage
entry a lazy-deletion heap leaves behind on each renew reaches the top a tick
later and is popped within the round (for four ticks of the five), as it would
be in a long-running process: the pure heaps are not flattered by a window too
short for their deferred work to come due.

Groups ``leaseheap-mixed-100k`` and ``leaseheap-mixed-1m`` compare the three
in the same run (the table's parenthesised figures are the ratios). An
operation is a renew, add, remove or lease popped; ``extra_info`` holds ns
per operation and traced bytes per lease, also printed beside the progress
dots. Run with ``python -m pytest bench/bench_leaseheap.py`` (about a minute).
"""

from __future__ import annotations

import gc
import heapq
import itertools
import random
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from rsc._core import _leaseheap, _leaseheap_py

TICK_NS = 1_000_000_000  # one second of virtual time
HEARTBEAT_TICKS = 10  # each healthy lease is renewed every 10 s...
TTL_TICKS = 11  # ...to an 11 s lease
ROUND_TICKS = 5  # a timed round: half a heartbeat period
DEAD_PER_TICK = 1 / 2000  # share of leases whose task dies (stops renewing) per tick
DONE_PER_TICK = 1 / 2000  # share of leases removed because their task finished


class StdlibLeaseHeap:
    """The obvious approach: the heapq docs' priority-queue recipe, plainly.

    Entries are ``[deadline, count, lease_id]`` lists; renew and remove mark
    the old entry removed and leave it in the heap; no argument checks.
    """

    REMOVED = -1

    def __init__(self) -> None:
        self.heap: list[list[int]] = []
        self.entries: dict[int, list[int]] = {}
        self.counter = itertools.count()

    def add(self, lease_id: int, expires_at: int) -> None:
        if lease_id in self.entries:
            raise ValueError(f"lease {lease_id} already present")
        entry = [expires_at, next(self.counter), lease_id]
        self.entries[lease_id] = entry
        heapq.heappush(self.heap, entry)

    def renew(self, lease_id: int, expires_at: int) -> None:
        self.remove(lease_id)
        self.add(lease_id, expires_at)

    def remove(self, lease_id: int) -> None:
        entry = self.entries.pop(lease_id)
        entry[2] = self.REMOVED

    def pop_expired(self, now: int) -> list[int]:
        expired = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            lease_id = heapq.heappop(heap)[2]
            if lease_id != self.REMOVED:
                del self.entries[lease_id]
                expired.append(lease_id)
        return expired

    def __len__(self) -> int:
        return len(self.entries)


IMPLS: dict[str, Callable[[], Any]] = {
    "compiled": _leaseheap.LeaseHeap,
    "twin": _leaseheap_py.LeaseHeap,
    "stdlib": StdlibLeaseHeap,
}


@dataclass
class Tick:
    now: int
    renews: list[tuple[int, int]]
    adds: list[tuple[int, int]]
    removes: list[int]


@dataclass
class Workload:
    """A precomputed, deterministic schedule valid for every implementation.

    ``n`` leases at the start: ``n - dead`` healthy ones spread over the
    heartbeat phases, plus ``dead`` leases of already-dead tasks with
    deadlines spread over the TTL, so about ``n * DEAD_PER_TICK`` expire per
    tick. New tasks replace the finished and dead ones, keeping the size
    steady. Renewals arrive spread over the tick, as with a real clock.
    """

    n: int
    initial: list[tuple[int, int]]
    ticks: list[Tick]
    ops: int
    expected_expired: int

    @classmethod
    def build(cls, n: int, ticks: int, seed: int = 2) -> Workload:
        rng = random.Random(seed)
        dead_per_tick = max(1, int(n * DEAD_PER_TICK))
        done_per_tick = max(1, int(n * DONE_PER_TICK))
        n_dead = dead_per_tick * TTL_TICKS
        origin = TTL_TICKS * TICK_NS  # virtual time of tick 0; keeps every time >= 0
        deadline: dict[int, int] = {}  # current deadline of every lease in the heap
        dead: list[int] = []  # leases that will never be renewed again
        # phase p: renewed on ticks t with t % HEARTBEAT_TICKS == p
        buckets: list[list[int]] = [[] for _ in range(HEARTBEAT_TICKS)]
        for lease_id in range(n - n_dead):
            phase = lease_id % HEARTBEAT_TICKS
            buckets[phase].append(lease_id)
            # as if last renewed one heartbeat before its next renewal
            next_renewal = phase or HEARTBEAT_TICKS
            last = origin + (next_renewal - HEARTBEAT_TICKS) * TICK_NS + rng.randrange(TICK_NS)
            deadline[lease_id] = last + TTL_TICKS * TICK_NS
        for lease_id in range(n - n_dead, n):
            deadline[lease_id] = origin + rng.randrange(TTL_TICKS * TICK_NS)
            dead.append(lease_id)
        initial = list(deadline.items())
        next_id = n
        schedule = []
        ops = 0
        for t in range(1, ticks + 1):
            start = origin + t * TICK_NS
            due = buckets[t % HEARTBEAT_TICKS]
            step = TICK_NS // (len(due) + 1)
            renews = []
            for i, lease_id in enumerate(due):
                deadline[lease_id] = start + i * step + TTL_TICKS * TICK_NS
                renews.append((lease_id, deadline[lease_id]))
            removes = []
            for k in range(done_per_tick + dead_per_tick):
                bucket = buckets[rng.randrange(HEARTBEAT_TICKS)]
                j = rng.randrange(len(bucket))
                bucket[j], bucket[-1] = bucket[-1], bucket[j]
                lease_id = bucket.pop()
                if k < done_per_tick:
                    removes.append(lease_id)  # finished: removed from the heap
                    del deadline[lease_id]
                else:
                    dead.append(lease_id)  # died: stays until it expires
            adds = []
            for _ in range(done_per_tick + dead_per_tick):
                buckets[rng.randrange(HEARTBEAT_TICKS)].append(next_id)
                deadline[next_id] = start + rng.randrange(TICK_NS) + TTL_TICKS * TICK_NS
                adds.append((next_id, deadline[next_id]))
                next_id += 1
            schedule.append(Tick(start + TICK_NS - 1, renews, adds, removes))
            ops += len(renews) + len(adds) + len(removes)
        end = schedule[-1].now
        expected = sum(1 for lease_id in dead if deadline[lease_id] <= end)
        ops += expected  # each expired lease popped counts as one operation
        return cls(n, initial, schedule, ops, expected)

    def fill(self, make: Callable[[], Any]) -> Any:
        gc.disable()  # untimed: keeps collector passes over a million new lists out of setup
        try:
            heap = make()
            add = heap.add
            for lease_id, deadline in self.initial:
                add(lease_id, deadline)
        finally:
            gc.enable()
        gc.collect()
        return heap

    def run(self, heap: Any) -> int:
        expired = 0
        renew, add, remove, pop_expired = heap.renew, heap.add, heap.remove, heap.pop_expired
        for tick in self.ticks:
            for lease_id, deadline in tick.renews:
                renew(lease_id, deadline)
            for lease_id, deadline in tick.adds:
                add(lease_id, deadline)
            for lease_id in tick.removes:
                remove(lease_id)
            expired += len(pop_expired(tick.now))
        return expired


def bytes_per_lease(make: Callable[[], Any], n: int) -> float:
    """Traced heap memory per lease after adding ``n`` (ids and times past the small-int cache)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        heap = make()
        for lease_id in range(n):
            heap.add(lease_id + 10**12, 10**15 + lease_id * 1000)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        del heap
    finally:
        tracemalloc.stop()
    return used / n


_workloads: dict[int, Workload] = {}


def workload(n: int) -> Workload:
    if n not in _workloads:
        _workloads[n] = Workload.build(n, ticks=ROUND_TICKS)
    return _workloads[n]


def _mixed(
    benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str, n: int, rounds: int, memory_at: int
) -> None:
    wl = workload(n)
    make = IMPLS[impl]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (wl.fill(make),), {}

    expired = benchmark.pedantic(wl.run, setup=setup, rounds=rounds, iterations=1)
    assert expired == wl.expected_expired
    if benchmark.stats is None:  # --benchmark-disable: ran once as a plain test
        return
    ns_per_op = benchmark.stats.stats.min / wl.ops * 1e9
    per_lease = bytes_per_lease(make, memory_at)
    benchmark.extra_info.update(
        leases=n,
        ops_per_round=wl.ops,
        ns_per_op=round(ns_per_op, 1),
        bytes_per_lease=round(per_lease, 1),
        bytes_per_lease_measured_at=memory_at,
    )
    with capsys.disabled():  # past output capture, next to the progress dots
        print(
            f" {benchmark.group} {impl}: {ns_per_op:.0f} ns/op (best round), "
            f"{per_lease:.1f} bytes/lease at {memory_at:,} leases"
        )


# Rounds: the pure heaps spend seconds per round at 1M, so they run once there;
# the compiled one is cheap enough for several. Tracing memory of a million
# Python objects is slow too, so the pure heaps' bytes/lease come from 100k.


@pytest.mark.parametrize("impl", list(IMPLS))
def test_mixed_100k(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "leaseheap-mixed-100k"
    _mixed(benchmark, capsys, impl, 100_000, rounds=5, memory_at=100_000)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_mixed_1m(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "leaseheap-mixed-1m"
    if impl == "compiled":
        _mixed(benchmark, capsys, impl, 1_000_000, rounds=3, memory_at=1_000_000)
    else:
        _mixed(benchmark, capsys, impl, 1_000_000, rounds=1, memory_at=100_000)
