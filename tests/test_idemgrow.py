"""rsc._core idemtable: growth and shrink, against a plain-dict model.

The compiled table keeps records and expiry entries in fixed-size blocks and
each index in 256 shards that resize one at a time, so no call copies the
whole table. These runs push both twins across those boundaries (record
blocks of 4096, expiry blocks of 1024, shard tables from empty to thousands
of slots and back) with every operation interleaved, and check every answer
against a model written with dicts. The work one call does is checked through
the compiled table's count of slots moved, not by timing.
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsc._core import _idemtable
from rsc.errors import InvalidArgument

FP_A = b"\x01" + bytes(range(16))
FP_B = b"\x01" + bytes(range(16, 32))
DROPPED = ("dropped",)
ORIGINS = ["a", "b", "c"]


def K(i: int) -> bytes:
    return i.to_bytes(16, "big")


class Rec:
    def __init__(self, key: bytes, fp: bytes, owner: tuple[str, int]) -> None:
        self.key, self.fp, self.owner = key, fp, owner
        self.outcome: Any = None
        self.expires_at: int | None = None
        self.aliases: list[tuple[str, int]] = []
        self.kept = 0

    def snap(self) -> tuple[Any, ...]:
        return (self.key, self.fp, self.owner[0], self.owner[1], self.outcome,
                self.expires_at is not None, self.expires_at, tuple(self.aliases))


class DictModel:
    """The records' rules with a dict per index and a list in completion order."""

    def __init__(self, ttl: int, budget: int | None) -> None:
        self.ttl, self.budget = ttl, budget
        self.records: dict[bytes, Rec] = {}
        self.pairs: dict[tuple[str, int], bytes] = {}
        self.done: list[Rec] = []  # completion order (expiry order); [head:] are still queued
        self.head = 0
        self.passed = 0  # done[head:head + passed] keep no result (the budget walked past them)
        self.last = 0
        self.kept = 0

    def check_and_record(self, key: bytes, fp: bytes, origin: str, task_id: int, now: int) -> Any:
        pair = (origin, task_id)
        rec = self.records.get(key)
        bound = self.pairs.get(pair)
        if rec is None:
            if bound is not None:
                return "CONFLICT"
            self.records[key] = Rec(key, fp, pair)
            self.pairs[pair] = key
            return "NEW"
        if rec.fp != fp or (bound is not None and bound != key):
            return "CONFLICT"
        if bound is None and rec.expires_at is None:
            rec.aliases.append(pair)
            self.pairs[pair] = key
        return ("DUP", rec.snap())

    def complete(self, key: bytes, task_id: int, outcome: Any, now: int, kept_bytes: int = 0) -> Any:
        rec = self.records.get(key)
        if rec is None or rec.expires_at is not None or rec.owner[1] != task_id:
            raise InvalidArgument("refused")
        rec.expires_at = self.last = max(now + self.ttl, self.last)
        rec.outcome = outcome
        rec.kept = kept_bytes
        self.done.append(rec)
        self.kept += kept_bytes
        while self.budget is not None and self.kept > self.budget:  # oldest first, this one included
            old = self.done[self.head + self.passed]
            self.passed += 1
            if old.kept > 0 and self.records.get(old.key) is old:
                self.kept -= old.kept
                old.kept = -1
                old.outcome = DROPPED
        return list(rec.aliases)

    def _remove(self, rec: Rec) -> None:
        del self.records[rec.key]
        for pair in [rec.owner, *rec.aliases]:
            del self.pairs[pair]
        if rec.kept > 0:
            self.kept -= rec.kept

    def discard(self, key: bytes) -> bool:
        rec = self.records.get(key)
        if rec is None:
            return False
        self._remove(rec)
        return True

    def evict_expired(self, now: int, limit: int | None = None) -> int:
        n = 0
        while self.head < len(self.done) and (limit is None or n < limit):
            rec = self.done[self.head]
            live = self.records.get(rec.key) is rec
            assert rec.expires_at is not None
            if live and rec.expires_at > now:
                break
            self.head += 1
            self.passed = max(0, self.passed - 1)
            if live:  # (else discarded before it expired)
                self._remove(rec)
                n += 1
        return n

    def get(self, key: bytes) -> Any:
        rec = self.records.get(key)
        return None if rec is None else rec.snap()

    def owner_of(self, origin: str, task_id: int) -> Any:
        return self.pairs.get((origin, task_id))

    key_of = owner_of  # no redeliveries in these runs

    def next_expiry(self) -> int | None:
        for rec in self.done[self.head:]:
            if self.records.get(rec.key) is rec:
                return rec.expires_at
        return None

    def clear(self) -> None:
        self.records.clear()
        self.pairs.clear()
        self.done.clear()
        self.last = self.kept = self.head = self.passed = 0

    def snapshot(self) -> set[tuple[Any, ...]]:
        return {rec.snap() for rec in self.records.values()}


def table_snap(rec: Any) -> tuple[Any, ...] | None:
    if rec is None:
        return None
    return (rec.key, rec.fingerprint, rec.origin, rec.task_id, rec.outcome,
            rec.finished, rec.expires_at, rec.aliases)


def table_answer(mod: ModuleType, out: Any) -> Any:
    if out is mod.NEW:
        return "NEW"
    if out is mod.CONFLICT:
        return "CONFLICT"
    return ("DUP", table_snap(out))


class Run:
    """Drives one table and the model with the same operations."""

    def __init__(self, mod: ModuleType, rng: random.Random, ttl: int, budget: int | None) -> None:
        self.mod, self.rng, self.ttl = mod, rng, ttl
        self.table = mod.IdemTable(ttl, budget, DROPPED)
        self.model = DictModel(ttl, budget)
        self.now = 0
        self.next_key = 0
        self.running: list[tuple[bytes, int]] = []  # (key, owner's task id), not yet completed

    def call(self, name: str, *args: Any) -> Any:
        try:
            got = getattr(self.table, name)(*args)
        except InvalidArgument:
            got = "InvalidArgument"
        try:
            want = getattr(self.model, name)(*args)
        except InvalidArgument:
            want = "InvalidArgument"
        if name == "check_and_record" and got != "InvalidArgument":
            got = table_answer(self.mod, got)
        elif name == "get":
            got = table_snap(got)
        assert got == want, (name, args)
        return got

    def spawn(self) -> None:
        key, tid = K(self.next_key), self.next_key
        self.next_key += 1
        origin = ORIGINS[tid % len(ORIGINS)]
        if self.call("check_and_record", key, FP_A, origin, tid, self.now) == "NEW":
            self.running.append((key, tid))  # (else a random call below took the pair first)

    def mixed_step(self) -> None:
        """One random operation other than a plain spawn."""
        rng, r = self.rng, self.rng.random()
        key = K(rng.randrange(max(1, self.next_key)))
        pair = (rng.choice(ORIGINS), rng.randrange(max(1, self.next_key) + 50))
        if r < 0.30 and self.running:
            i = rng.randrange(len(self.running))
            k, tid = self.running[i]
            self.running[i] = self.running[-1]
            self.running.pop()
            self.call("complete", k, tid, ("out", tid), self.now, rng.choice((0, 0, 10, 300)))
        elif r < 0.40:
            self.call("check_and_record", key, rng.choice((FP_A, FP_A, FP_B)), *pair, self.now)  # dup/alias/conflict
        elif r < 0.50:
            self.call("get", key)
        elif r < 0.60:
            self.call("owner_of", *pair)
        elif r < 0.65:
            self.call("key_of", *pair)
        elif r < 0.70:
            self.call("discard", key)
        elif r < 0.75:
            self.call("complete", key, pair[1], "wrong", self.now)  # mostly refused
        elif r < 0.80:
            self.call("next_expiry")
        elif r < 0.83:
            self.call("evict_expired", self.now, rng.choice((1, 7, 4096)))
        else:
            self.now += rng.randrange(3)

    def check_all(self) -> None:
        assert len(self.table) == len(self.model.records)
        assert {table_snap(rec) for rec in self.table.records()} == self.model.snapshot()
        assert self.table.kept_bytes == self.model.kept
        assert self.table.next_expiry() == self.model.next_expiry()
        for key in list(self.model.records)[:200]:
            assert key in self.table

    def grow(self, n: int, mix: float) -> None:
        for _ in range(n):
            self.spawn()
            if self.rng.random() < mix:
                self.mixed_step()

    def finish_running(self) -> None:
        for key, tid in self.running:
            self.call("complete", key, tid, ("out", tid), self.now)
        self.running.clear()

    def drain(self, limit: int, mix: float) -> None:
        """Evict everything finished in steps of ``limit``, other operations between."""
        self.now += 2 * self.ttl + 1
        while self.call("evict_expired", self.now, limit):
            if self.rng.random() < mix:
                self.mixed_step()


_settings = settings(max_examples=8, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(seed=st.integers(0, 2**32), size=st.sampled_from([5_000, 9_000, 14_000]),
       budget=st.sampled_from([None, 50_000]), limit=st.sampled_from([97, 4096]))
def test_grow_drain_refill_with_every_operation_matches_the_model(
        idemtable_mod: ModuleType, seed: int, size: int, budget: int | None, limit: int) -> None:
    run = Run(idemtable_mod, random.Random(seed), ttl=1_000, budget=budget)
    run.grow(size, mix=0.5)  # past record block and expiry block boundaries, every shard grows
    run.check_all()
    run.finish_running()
    run.drain(limit, mix=0.3)  # shards shrink as the evictions pass them
    run.check_all()
    run.grow(size // 2, mix=0.5)  # reuses freed slots, regrows shards
    run.check_all()
    run.call("clear")
    run.running.clear()
    run.check_all()
    run.grow(size // 3, mix=0.5)  # grows again from nothing after clear
    run.finish_running()
    run.check_all()


def test_twins_agree_across_growth_and_shrink(both_idemtables: tuple[ModuleType, ModuleType]) -> None:
    c_mod, py_mod = both_idemtables
    runs = [Run(mod, random.Random(7), ttl=500, budget=20_000) for mod in (c_mod, py_mod)]
    for run in runs:
        run.grow(12_000, mix=0.6)
        run.finish_running()
        run.drain(1000, mix=0.3)
        run.grow(6_000, mix=0.6)
    c, py = (run.table for run in runs)
    assert {table_snap(r) for r in c.records()} == {table_snap(r) for r in py.records()}
    assert c._debug_counters() == py._debug_counters()


# --- the work of one call is bounded (compiled table) ----------------------------------


def _moved(table: Any) -> int:
    return int(table._moved_slots())


def test_no_call_moves_more_than_a_few_shards() -> None:
    """Each call's growth or shrink work (slots rehashed, pointers copied) stays
    within a few shards' worth while the table grows to 150,000 records, is
    drained by the node's eviction steps and refilled; with one table per
    index a single call would rehash all of it."""
    table = _idemtable.IdemTable(1_000)
    fp = FP_A
    worst = 0
    moved = _moved(table)

    def note() -> None:
        nonlocal worst, moved
        now_moved = _moved(table)
        worst = max(worst, now_moved - moved)
        moved = now_moved

    n = 150_000
    for i in range(n):
        table.check_and_record(K(i), fp, "a", i, 0)
        note()
        table.complete(K(i), i, None, 0)
        note()
    counters = table._growth_counters()
    total_slots = counters["key_slots"] + counters["task_slots"]
    largest = counters["largest_shard"]
    assert counters["record_blocks"] == (n + 4095) // 4096
    assert moved > total_slots // 2  # the indexes did grow, many times over
    # a shard is near its share of the index, and one call moves at most two of them
    assert largest * counters["shards"] <= 2 * max(counters["key_slots"], counters["task_slots"])
    assert worst <= 2 * largest
    grown_worst, worst = worst, 0
    while table.evict_expired(10_000, 4096):  # the node's limit per tick
        note()
    note()
    assert len(table) == 0
    for _ in range(128):  # each call looks at 2 shards of each index, round the 256
        table.evict_expired(10_000, 4096)
        note()
    assert worst <= 4 * largest  # shrink: at most two shards of each index per call
    after = table._growth_counters()
    assert after["key_slots"] + after["task_slots"] < total_slots // 4  # memory did come back
    assert after["queue_blocks"] == 1
    assert grown_worst > 0


def test_a_drained_queue_frees_its_blocks_and_a_full_drain_empties_the_shards() -> None:
    table = _idemtable.IdemTable(10)
    for i in range(5_000):
        table.check_and_record(K(i), FP_A, "a", i, 0)
        table.complete(K(i), i, None, 0)
    assert table._growth_counters()["queue_blocks"] == 5
    full = table._memory_bytes()
    table.evict_expired(10, 2_500)
    assert table._growth_counters()["queue_blocks"] == 3  # the drained ones went (one kept as spare)
    while table.evict_expired(10):
        pass
    for _ in range(128):  # each eviction call looks at 2 shards of each index
        table.evict_expired(10)
    c = table._growth_counters()
    assert (c["key_slots"], c["task_slots"]) == (256, 256)  # every shard back to its shared empty slot
    assert table._memory_bytes() <= full - 5_000 * (8 + 16)  # the index slots went; record blocks stay, for reuse
