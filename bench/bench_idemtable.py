"""Idempotency table: compiled vs its pure twin vs the obvious stdlib approach.

The workload is what a node's admission path does (see ``Workload``), as one
endless sequence of requests ``s = 0, 1, 2, ...``, one per microsecond of
virtual time. Request ``s``:

- arrives: ``check_and_record`` with a fresh key (``NEW``);
- finishes ``RUNNING`` requests later: ``complete`` (so ``RUNNING`` tasks run
  at any time; the finished ones stay until the TTL);
- is accompanied by a retry of a random earlier request still in the table
  (a duplicate: the owner resending, answered with the record);
- every ``ALIAS_EVERY`` requests, a duplicate under a new task id reaches a
  running task and becomes an alias (``complete`` then reports it);
- every ``EVICT_EVERY`` requests, ``evict_expired(now)`` removes what expired.

The TTL is ``n`` microseconds, so the table holds ``n`` finished records in
steady state. Each implementation's table is filled once (untimed) and shared
by the tests of its size; each timed round continues the sequence for ``OPS``
requests, so every round starts in the same steady state.
Key and fingerprint objects are fresh per request (as from a decoder), so no
implementation gets another's cached bytes hashes.

An operation is one call on the table, or one record evicted; ``extra_info``
holds ns per operation (best and median round) and traced bytes per finished
record at 100,000 records (keys, fingerprints and task ids as fresh objects
the table keeps or copies; one shared outcome, not counted).

Groups ``idemtable-mixed-100k`` and ``idemtable-mixed-1m`` compare the three
in the same run, each timed in its own stretch of time (the table's
parenthesised figures are the ratios). ``idemtable-interleaved-100k`` and
``-1m`` alternate compiled and twin rounds on the same tables, so both meet the
same machine load; their ``extra_info`` holds the compiled-vs-twin ratio over
the pairs, the figure to quote on a shared machine. Run with
``python -m pytest bench/bench_idemtable.py`` (about a minute).
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import time
import tracemalloc
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from rsc._core import _idemtable, _idemtable_py

STEP_NS = 1_000  # one request per microsecond of virtual time
RUNNING = 64  # requests in flight
ALIAS_EVERY = 32
EVICT_EVERY = 64
ORIGINS = [f"origin-{i}" for i in range(4)]  # one NodeId object per connection
OUTCOME = b"\x93\x00\xa2ok"  # a RESULT payload; shared, not counted in memory
MEMORY_AT = 100_000


class StdlibIdemStore:
    """The obvious approach: a plain dict ``key -> [fingerprint, outcome, expires_at]``.

    Expiry uses a deque of ``(expires_at, key)`` (a full scan per eviction
    would be O(table) and is not worth measuring). No aliases, no
    ``(origin, task_id)`` index, no tombstones, no argument checks: the floor
    a dict-based store starts from.
    """

    NEW = object()
    CONFLICT = object()

    def __init__(self, ttl_ns: int) -> None:
        self.ttl = ttl_ns
        self.records: dict[bytes, list[Any]] = {}
        self.expiry: deque[tuple[int, bytes]] = deque()

    def check_and_record(self, key: bytes, fingerprint: bytes, origin: str, task_id: int, now: int) -> Any:
        entry = self.records.get(key)
        if entry is None:
            self.records[key] = [fingerprint, None, None]
            return self.NEW
        if entry[0] != fingerprint:
            return self.CONFLICT
        return entry

    def complete(self, key: bytes, task_id: int, outcome: Any, now: int) -> list[tuple[str, int]]:
        entry = self.records[key]
        entry[1] = outcome
        entry[2] = expires_at = now + self.ttl
        self.expiry.append((expires_at, key))
        return []

    def evict_expired(self, now: int) -> int:
        removed = 0
        expiry, records = self.expiry, self.records
        while expiry and expiry[0][0] <= now:
            del records[expiry.popleft()[1]]
            removed += 1
        return removed

    def __len__(self) -> int:
        return len(self.records)


IMPLS: dict[str, tuple[Callable[[int], Any], Any]] = {
    "compiled": (_idemtable.IdemTable, _idemtable.NEW),
    "twin": (_idemtable_py.IdemTable, _idemtable_py.NEW),
    "stdlib": (StdlibIdemStore, StdlibIdemStore.NEW),
}


FP_TAG = b"\x01"  # a fingerprint is 17 bytes: its algorithm's tag, then the digest


def _fresh16(blob: bytes, count: int) -> list[bytes]:
    """``count`` distinct 16-byte objects cut from ``blob`` (no cached hashes)."""
    return [blob[i * 16:(i + 1) * 16] for i in range(count)]


def _fresh_fps(blob: bytes, count: int) -> list[bytes]:
    """``count`` distinct 17-byte fingerprints made from ``blob``."""
    return [FP_TAG + blob[i * 16:(i + 1) * 16] for i in range(count)]


class Workload:
    """The request sequence for a table of ``n`` finished records.

    ``keys[s]``/``fps[s]`` belong to request ``s``; ``retry[s]`` is the earlier
    request retried alongside it, with its own fresh key and fingerprint
    objects in ``retry_keys[s]``/``retry_fps[s]``.
    """

    def __init__(self, n: int, ops: int, rounds: int, seed: int = 3) -> None:
        self.n, self.ops, self.rounds = n, ops, rounds
        self.start = n + RUNNING  # the first timed request
        total = self.start + ops * rounds
        rng = random.Random(seed)
        key_blob = rng.randbytes(16 * total)
        fp_blob = rng.randbytes(16 * total)
        self.key_blob, self.fp_blob = key_blob, fp_blob
        self.total = total
        # a request still in the table: finished within the TTL, or running
        self.retry = [0] * total
        for s in range(self.start, total):
            self.retry[s] = rng.randrange(s - n + 1, s)
        self.ttl = n * STEP_NS

    def objects(self) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
        """Fresh key/fingerprint objects for one implementation."""
        keys = _fresh16(self.key_blob, self.total)
        fps = _fresh_fps(self.fp_blob, self.total)
        retry_keys = [b""] * self.total
        retry_fps = [b""] * self.total
        kb, fb = self.key_blob, self.fp_blob
        for s in range(self.start, self.total):
            u = self.retry[s]
            retry_keys[s] = kb[u * 16:(u + 1) * 16]
            retry_fps[s] = FP_TAG + fb[u * 16:(u + 1) * 16]
        return keys, fps, retry_keys, retry_fps

    def fill(self, make: Callable[[int], Any], keys: list[bytes], fps: list[bytes]) -> Any:
        """The history before the first timed request (untimed)."""
        gc.disable()  # keeps collector passes over a million new objects out of setup
        try:
            table = make(self.ttl)
            car, complete = table.check_and_record, table.complete
            for s in range(self.start):
                now = s * STEP_NS
                car(keys[s], fps[s], ORIGINS[s & 3], s, now)
                if s >= RUNNING:
                    done = s - RUNNING
                    complete(keys[done], done, OUTCOME, now)
        finally:
            gc.enable()
        gc.collect()
        # The filled table is long-lived: keep it out of every later collection
        # (this matters for the pure tables; the compiled one holds no tracked
        # objects), so a round's collector work is its own. This spares the pure
        # tables the full collections a long-running process would pay.
        # Undone when the size's state is dropped.
        gc.freeze()
        return table

    def run(
        self, table: Any, new: Any, first: int, keys: list[bytes], fps: list[bytes],
        retry_keys: list[bytes], retry_fps: list[bytes], retry: list[int],
    ) -> tuple[int, int, int]:
        """Requests ``first .. first + ops - 1``; returns (new, duplicates, evicted)."""
        car, complete, evict = table.check_and_record, table.complete, table.evict_expired
        n_new = n_dup = evicted = 0
        for s in range(first, first + self.ops):
            now = s * STEP_NS
            origin = ORIGINS[s & 3]
            if car(keys[s], fps[s], origin, s, now) is new:
                n_new += 1
            done = s - RUNNING
            complete(keys[done], done, OUTCOME, now)
            u = retry[s]
            if car(retry_keys[s], retry_fps[s], ORIGINS[u & 3], u, now) is not new:
                n_dup += 1
            if s % ALIAS_EVERY == 0:
                a = s - RUNNING // 2  # still running
                car(keys[a], fps[a], origin, (1 << 40) + s, now)
            if s % EVICT_EVERY == 0:
                evicted += evict(now)
        return n_new, n_dup, evicted

    def ops_in(self, first: int, evicted: int) -> int:
        last = first + self.ops
        aliases = sum(1 for s in range(first, last) if s % ALIAS_EVERY == 0)
        evicts = sum(1 for s in range(first, last) if s % EVICT_EVERY == 0)
        return 3 * self.ops + aliases + evicts + evicted


def bytes_per_record(make: Callable[[int], Any], n: int) -> float:
    """Traced memory per finished record after ``n`` (the table keeps what it needs)."""
    key_blob, fp_blob = os.urandom(16 * n), os.urandom(16 * n)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = make(10**15)
        car, complete = table.check_and_record, table.complete
        now = 10**15
        for j in range(n):
            key = key_blob[j * 16:(j + 1) * 16]
            car(key, FP_TAG + fp_blob[j * 16:(j + 1) * 16], ORIGINS[j & 3], 10**9 + j, now + j)
            complete(key, 10**9 + j, OUTCOME, now + j)
        del key
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        del table
    finally:
        tracemalloc.stop()
    return used / n


class Contender:
    """One implementation's filled table and its place in the request sequence."""

    def __init__(self, impl: str, wl: Workload) -> None:
        make, self.new = IMPLS[impl]
        self.impl, self.wl = impl, wl
        self.keys, self.fps, self.retry_keys, self.retry_fps = wl.objects()
        self.table = wl.fill(make, self.keys, self.fps)
        self.next = wl.start
        self.ops: list[int] = []  # operations per round run

    def args(self) -> tuple[Any, ...]:
        """The arguments of the next round (and claims its requests)."""
        first = self.next
        self.next += self.wl.ops
        return (self.table, self.new, first, self.keys, self.fps, self.retry_keys, self.retry_fps,
                self.wl.retry)

    def check(self, first: int, out: tuple[int, int, int]) -> None:
        n_new, n_dup, evicted = out
        assert n_new == self.wl.ops and n_dup == self.wl.ops, out
        assert abs(evicted - self.wl.ops) <= EVICT_EVERY, evicted  # one in, one out
        assert abs(len(self.table) - (self.wl.n + RUNNING)) <= EVICT_EVERY
        self.ops.append(self.wl.ops_in(first, evicted))

    def timed_round(self) -> float:
        args = self.args()
        gc.collect()
        t0 = time.perf_counter()
        out = self.wl.run(*args)
        elapsed = time.perf_counter() - t0
        self.check(args[2], out)
        return elapsed


class SizeState:
    """The workload and filled tables of one size, shared by its tests."""

    def __init__(self, n: int, ops: int, rounds: int) -> None:
        self.wl = Workload(n, ops, rounds)
        self.contenders: dict[str, Contender] = {}

    def contender(self, impl: str) -> Contender:
        if impl not in self.contenders:
            self.contenders[impl] = Contender(impl, self.wl)
        return self.contenders[impl]


_state: dict[int, SizeState] = {}
_results: dict[tuple[str, str], float] = {}
_memory: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _release_state() -> Any:
    yield
    _state.clear()
    gc.unfreeze()
    gc.collect()


def size_state(n: int, ops: int, rounds: int) -> SizeState:
    if n not in _state:
        _state.clear()  # one size at a time: a million-record set of tables is large
        gc.unfreeze()
        gc.collect()
        _state[n] = SizeState(n, ops, rounds)
    return _state[n]


def memory_of(impl: str) -> float:
    if impl not in _memory:
        _memory[impl] = bytes_per_record(IMPLS[impl][0], MEMORY_AT)
    return _memory[impl]


def _mixed(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str, st: SizeState, rounds: int) -> None:
    c = st.contender(impl)
    firsts: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        gc.collect()  # every round starts from the same collector state
        args = c.args()
        firsts.append(args[2])
        return args, {}

    def run(*args: Any) -> tuple[int, int, int]:
        out = st.wl.run(*args)
        c.check(args[2], out)
        return out

    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once as a plain test
        return
    n_ops = statistics.median(c.ops[-rounds:])
    ns_per_op = benchmark.stats.stats.min / n_ops * 1e9
    ns_median = benchmark.stats.stats.median / n_ops * 1e9
    _results[(benchmark.group, impl)] = ns_per_op
    per_record = memory_of(impl)
    info: dict[str, Any] = dict(
        records=st.wl.n,
        ops_per_round=n_ops,
        ns_per_op=round(ns_per_op, 1),
        ns_per_op_median=round(ns_median, 1),
        bytes_per_record=round(per_record, 1),
        bytes_per_record_measured_at=MEMORY_AT,
    )
    if impl == "compiled":
        info["c_bytes_per_record"] = round(c.table._memory_bytes() / len(c.table), 1)
    line = (
        f" {benchmark.group} {impl}: {ns_per_op:.0f} ns/op (best round), {ns_median:.0f} (median), "
        f"{per_record:.0f} bytes/record at {MEMORY_AT:,}"
    )
    compiled_ns = _results.get((benchmark.group, "compiled"))
    if impl != "compiled" and compiled_ns:
        info["x_compiled"] = round(ns_per_op / compiled_ns, 2)
        line += f"; {ns_per_op / compiled_ns:.1f}x the compiled table's time"
    benchmark.extra_info.update(info)
    with capsys.disabled():  # past output capture, next to the progress dots
        print(line)


def _interleaved(benchmark: Any, capsys: pytest.CaptureFixture[str], st: SizeState, pairs: int) -> None:
    """Compiled and twin rounds alternate, so both meet the same machine.

    The groups above time each implementation in its own stretch of time; on
    a shared machine a quiet or a busy stretch can flatter either. Here each
    pair of rounds runs back to back (in alternating order) on the same
    steady-state tables, and the ratio is taken over the pairs.
    """
    compiled, twin = st.contender("compiled"), st.contender("twin")
    times: dict[str, list[float]] = {"compiled": [], "twin": []}
    order = [compiled, twin]

    def pair() -> None:
        for c in order:
            times[c.impl].append(c.timed_round())
        order.reverse()

    benchmark.pedantic(pair, rounds=pairs, iterations=1)
    n_ops = statistics.median(compiled.ops[-pairs:])
    per_op = {impl: [t / n_ops * 1e9 for t in ts] for impl, ts in times.items()}
    ratios = sorted(t / c for c, t in zip(per_op["compiled"], per_op["twin"]))
    info = dict(
        records=st.wl.n,
        compiled_ns_per_op_median=round(statistics.median(per_op["compiled"]), 1),
        twin_ns_per_op_median=round(statistics.median(per_op["twin"]), 1),
        compiled_ns_per_op_best=round(min(per_op["compiled"]), 1),
        twin_ns_per_op_best=round(min(per_op["twin"]), 1),
        x_compiled_median_of_pairs=round(statistics.median(ratios), 2),
        x_compiled_best_vs_best=round(min(per_op["twin"]) / min(per_op["compiled"]), 2),
        x_compiled_worst_pair=round(ratios[0], 2),
    )
    benchmark.extra_info.update(info)
    with capsys.disabled():
        print(
            f" {benchmark.group}: compiled {info['compiled_ns_per_op_median']:.0f} ns/op, "
            f"twin {info['twin_ns_per_op_median']:.0f} ns/op (medians); compiled is "
            f"{info['x_compiled_median_of_pairs']:.1f}x faster (median of {pairs} pairs, "
            f"worst pair {info['x_compiled_worst_pair']:.1f}x, best vs best "
            f"{info['x_compiled_best_vs_best']:.1f}x)"
        )


# Sizes: each fills its tables once per implementation (untimed; seconds for a
# million pure records) and every later round continues the request sequence.
# Many short rounds, compared by their best (groups) or pairwise (interleaved),
# keep the figures steady on a shared 2-core machine. Memory is traced once per
# implementation, at 100,000 records (tracing a million Python objects is slow).
OPS = 10_000
ROUNDS_100K, PAIRS_100K = 20, 15
ROUNDS_1M, PAIRS_1M = 12, 10


def state_100k() -> SizeState:
    return size_state(100_000, OPS, ROUNDS_100K + PAIRS_100K)


def state_1m() -> SizeState:
    return size_state(1_000_000, OPS, ROUNDS_1M + PAIRS_1M)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_mixed_100k(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "idemtable-mixed-100k"
    _mixed(benchmark, capsys, impl, state_100k(), ROUNDS_100K)


def test_interleaved_100k(benchmark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    benchmark.group = "idemtable-interleaved-100k"
    _interleaved(benchmark, capsys, state_100k(), PAIRS_100K)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_mixed_1m(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "idemtable-mixed-1m"
    _mixed(benchmark, capsys, impl, state_1m(), ROUNDS_1M)


def test_interleaved_1m(benchmark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    benchmark.group = "idemtable-interleaved-1m"
    _interleaved(benchmark, capsys, state_1m(), PAIRS_1M)
