"""Deadlines: one engine's timers of every kind in one place, and the hint
that tells the driver's timer when to re-read them."""

from __future__ import annotations

import pytest

from rsc._core import idemtable as _idem
from rsc._engine.deadlines import MAX_KEY, NO_DEADLINE, Deadlines
from rsc._engine.node import T_BUDGET, T_RENEW, T_SILENCE
from rsc._engine.origin import T_ESCALATION, T_LEASE, T_PING
from tests.engine_link import Link

MS = 1_000_000


def test_kinds_share_keys_without_colliding_and_come_due_in_deadline_order() -> None:
    d = Deadlines()
    d.add(0, 7, 30)
    d.add(1, 7, 10)  # the same key under another kind is another deadline
    d.add(2, 7, 20)
    d.add(0, 8, 20)  # an equal deadline comes out in the order it was set
    assert (len(d), d.count(0), d.count(1), d.count(2)) == (4, 2, 1, 1)
    assert d.deadline_of(1, 7) == 10 and d.deadline_of(3, 7) is None
    assert d.pop_due(20) == [(1, 7), (2, 7), (0, 8)]
    assert (len(d), d.count(0), d.count(1), d.count(2)) == (1, 1, 0, 0)
    assert d.next_deadline() == 30


def test_a_key_or_kind_out_of_bounds_is_refused_and_the_largest_key_is_kept() -> None:
    d = Deadlines()
    big = 2**52 + 12345  # a task id of a Runtime's random start
    d.add(7, big, 5)
    d.add(0, MAX_KEY, 6)
    assert d.deadline_of(7, big) == 5 and d.deadline_of(0, MAX_KEY) == 6
    for kind, key in ((0, MAX_KEY + 1), (0, 2**62), (0, -1), (8, 1), (-1, 1)):
        with pytest.raises(ValueError, match="a deadline's kind is an int"):
            d.add(kind, key, 1)
    assert d.discard(7, big) and not d.discard(7, big)
    assert d.discard(0, MAX_KEY)
    assert len(d) == 0


def test_every_way_of_setting_a_deadline_lowers_the_hint_and_a_read_resets_it() -> None:
    d = Deadlines()
    assert d.hint == NO_DEADLINE
    d.add(0, 1, 100)
    assert d.hint == 100
    d.add(0, 2, 200)  # later: the hint stays at the earliest
    assert d.hint == 100
    assert d.next_deadline() == 100 and d.hint == NO_DEADLINE
    d.move(0, 2, 50)
    assert d.hint == 50
    d.next_deadline()
    d.put(0, 3, 40)  # put of an absent one adds it
    d.put(0, 3, 30)  # and of a present one moves it
    assert d.hint == 30 and d.count(0) == 3
    assert d.discard(0, 3) and not d.discard(0, 3) and d.count(0) == 2
    with pytest.raises(KeyError):
        d.move(0, 99, 1)


def test_an_attached_idempotency_table_counts_and_tells_of_its_first_new_expiry() -> None:
    d = Deadlines()
    t = _idem.IdemTable(1_000)
    d.attach(t)
    t.watch = d
    assert d.next_deadline() is None
    t.add_tombstone("o", 1, 10)  # expires at 1_010: told
    assert d.hint == 1_010
    t.add_tombstone("o", 2, 20)  # not the first since the last read: not told again
    assert d.hint == 1_010
    d.add(0, 1, 5_000)
    assert d.next_deadline() == 1_010 and d.hint == NO_DEADLINE
    t.add_tombstone("o", 3, 30)  # the first since that read: told
    assert d.hint == 1_030


def test_engine_deadlines_of_every_kind_are_in_its_timers() -> None:
    """No deadline of either engine lives outside its timers: after a spawn
    with a budget, the node holds its silence check, budget deadline and
    renewal group there, and the origin its lease and the link's ping."""
    link = Link()
    link.connect()
    link.spawn(lease_ms=30_000, budget=(5_000, None, None, 0), deadline_ns=link.now + 5_000 * MS)
    node, origin = link.node.timers, link.origin.timers
    assert (node.count(T_SILENCE), node.count(T_BUDGET), node.count(T_RENEW)) == (1, 1, 1)
    assert origin.count(T_LEASE) == 1 and origin.count(T_PING) == 1
    assert origin.count(T_ESCALATION) == 0
    assert link.node.next_deadline() == link.now + 5_000 * MS  # the budget deadline comes first
    assert link.origin.next_deadline() == link.now + 10_000 * MS  # the ping: a third of the lease
    (task,) = link.started
    link.finish(task)
    # the renewal group, now empty, stays until its renewal time, then goes,
    # and the silence check (the group's, not the task's) with it
    assert (node.count(T_SILENCE), node.count(T_BUDGET), node.count(T_RENEW)) == (1, 0, 1)
    assert origin.count(T_LEASE) == 0
    link.advance(10_000)
    assert node.count(T_RENEW) == 0 and not link.node._renew and not link.node._renew_group
    assert node.count(T_SILENCE) == 0
