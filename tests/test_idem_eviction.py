"""Idempotency records expire on their own schedule (issue 10, "smaller").

The record's expiry is a deadline the driver's timer sees even when no other
timer is armed, and eviction is bounded per tick so a pile-up that comes due
at once is spread over several loop turns.
"""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

import pytest

from rsc import Runtime, spawn_remote
from rsc._engine import node as N
from rsc._engine.deadlines import NO_DEADLINE
from rsc.errors import InvalidArgument
from tests.engine_link import Link

MS = 1_000_000


def _key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def test_evict_expired_limit_removes_at_most_that_many(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(10)
    for i in range(10):
        t.check_and_record(_key(i), b"f" * 17, "o", i, 0)
        t.complete(_key(i), i, ("out", i), 0)
    t.add_tombstone("o", 99, 0)
    assert t.evict_expired(100, 4) == 4
    assert len(t) == 6 and t.next_expiry() is not None and t.next_expiry() <= 100
    assert t.evict_expired(100, 6) == 6
    assert len(t) == 0 and t.tombstone_count == 1  # records first, then tombstones
    assert t.evict_expired(100, 1) == 1 and t.tombstone_count == 0
    assert t.evict_expired(100) == 0
    for bad in (0, -1, 1.5, "3", True):
        with pytest.raises(InvalidArgument):
            t.evict_expired(100, bad)


def test_records_and_tombstones_export(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(10)
    t.check_and_record(_key(1), b"a" * 17, "o", 1, 0)
    t.check_and_record(_key(2), b"b" * 17, "o", 2, 0)
    t.complete(_key(2), 2, (0, b"x", 3), 5)
    t.add_tombstone("p", 7, 6)
    recs = sorted(t.records(), key=lambda r: r.key)
    assert [(r.key, r.fingerprint, r.origin, r.task_id, r.finished, r.outcome, r.expires_at)
            for r in recs] == [(_key(1), b"a" * 17, "o", 1, False, None, None),
                               (_key(2), b"b" * 17, "o", 2, True, (0, b"x", 3), 15)]
    assert t.tombstones() == [("p", 7, 16)]
    t.evict_expired(100)
    assert [r.key for r in t.records()] == [_key(1)] and t.tombstones() == []


def test_engine_records_expiry_is_a_deadline_of_its_own() -> None:
    """With a long lease armed first, a finished record's (earlier) expiry must
    still reach the timer through timers.hint, the only thing EngineTimer reads
    before it re-reads: the idempotency table tells the engine's Deadlines."""
    link = Link(ttl_ns=200 * MS)
    link.connect()
    link.spawn(lease_ms=60_000)
    assert link.node.timers.next_deadline() == link.now + 20_000 * MS  # the renewal, 20 s out
    assert link.node.timers.hint == NO_DEADLINE  # the driver read it
    (task,) = link.started
    link.finish(task)
    assert link.node.timers.hint <= link.now + 200 * MS
    assert link.node.timers.next_deadline() == link.now + 200 * MS  # the record's expiry


def test_engine_evicts_a_pile_up_in_bounded_steps() -> None:
    link = Link(ttl_ns=100 * MS, capacity=3 * N.EVICT_PER_TICK)
    link.connect()
    n = 2 * N.EVICT_PER_TICK + 10
    for _ in range(n):
        link.spawn(flush=False)
    link.flush()
    for task in list(link.started):
        link.node.task_finished(task, 0, b"out", 1, link.now)
    link.collect()
    assert link.node.idempotency_records == n
    link.now += 200 * MS
    sizes = []
    while link.node.idempotency_records:
        link.node.tick(link.now)
        sizes.append(link.node.idempotency_records)
        nxt = link.node.next_deadline()
        if link.node.idempotency_records:
            assert nxt is not None and nxt <= link.now  # due again at once: re-armed straight away
        assert len(sizes) < 10
    assert sizes == [n - N.EVICT_PER_TICK, n - 2 * N.EVICT_PER_TICK, 0]


def test_real_node_with_short_ttl_evicts_with_no_other_timer(cluster: Any) -> None:
    """A node whose only timer is a far renewal (60 s lease) still evicts a
    finished record after its 0.3 s TTL."""
    c = cluster(1, extra_args=["--ttl", "0.3"])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            hs = [spawn_remote(rt.cx(), "worker-1", "square_inline", i, lease=60.0) for i in range(50)]
            assert [(await h.join())[0] for h in hs] == [i * i for i in range(50)]
            deadline = time.monotonic() + 8.0
            while True:
                st = await rt.status("worker-1")
                if st["idempotency_records"] == 0:
                    break
                assert time.monotonic() < deadline, f"records not evicted: {st['idempotency_records']}"
                await asyncio.sleep(0.1)

    asyncio.run(main())
