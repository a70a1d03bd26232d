"""What the idempotency table holds besides its records, over both twins:
tombstone reasons, redeliveries and held results, each with its TTL in the
table's one bounded eviction."""

from __future__ import annotations

from types import ModuleType

import pytest

from rsc.errors import InvalidArgument

TTL = 1_000


def K(i: int) -> bytes:
    return i.to_bytes(16, "big")


FP = b"f" * 17  # a fingerprint: 17 bytes, an algorithm tag first


def test_tombstone_reasons(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(TTL)
    t.add_tombstone("o", 1, 0, (1, "user"))
    t.add_tombstone("o", 2, 0)
    assert t.tombstone_reason("o", 1) == (1, "user") and t.tombstone_reason("o", 2) is None
    t.add_tombstone("o", 1, 10)  # renewed without a reason: the reason stays
    assert t.tombstone_reason("o", 1) == (1, "user")
    assert t.take_tombstone("o", 1) is True and t.tombstone_reason("o", 1) is None
    t.add_tombstone("o", 3, 20, (2, "deadline"))
    assert t.evict_expired(20 + TTL) == 2  # o/2 and o/3
    assert t.tombstone_reason("o", 3) is None and t.tombstone_count == 0


def test_redeliveries_follow_their_record(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(TTL)
    t.check_and_record(K(1), FP, "o", 1, 0)
    t.complete(K(1), 1, (0, b"out", 5), 0)
    assert t.key_of("o", 1) == K(1) and t.key_of("o", 2) is None
    t.add_redelivery("o", 2, K(1), 100)
    assert t.key_of("o", 2) == K(1) and t.owner_of("o", 2) is None
    assert t.next_expiry() == TTL  # the record's, before the redelivery's
    assert t.evict_expired(TTL) == 1  # the record goes first...
    assert t.key_of("o", 2) is None  # ...and the redelivery with it
    assert t._debug_counters()["redeliveries"] == 0
    t.check_and_record(K(3), FP, "o", 3, 0)
    t.complete(K(3), 3, (0, b"out", 5), 2 * TTL)
    t.add_redelivery("o", 4, K(3), 2 * TTL)
    assert t.next_expiry() == 3 * TTL
    assert t.evict_expired(3 * TTL, limit=1) == 1 and t.next_expiry() == 3 * TTL
    assert t.evict_expired(3 * TTL) == 1 and t.next_expiry() is None
    with pytest.raises(InvalidArgument):
        t.add_redelivery("o", 5, b"short", 0)


def test_held_results(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(TTL)
    assert t.take_held("o") == [] and t.held_origins == 0
    t.hold("o", 1, (0, b"a", 1), 0)
    t.hold("o", 2, (0, b"b", 1), 0)
    t.hold("p", 3, (1, "boom", 1), 10)
    assert t.held_origins == 2 and t.next_expiry() == TTL
    assert t.take_held("o") == [(1, (0, b"a", 1)), (2, (0, b"b", 1))]
    assert t.held_origins == 1
    t.hold("o", 4, (0, b"c", 1), 0)  # raised to the latest expiry already queued
    assert t.next_expiry() == 10 + TTL  # the entries of the taken ones count for nothing...
    assert t.evict_expired(TTL) == 0  # ...and evict nothing
    assert t.evict_expired(10 + TTL, limit=1) == 1 and t.held_origins == 1
    assert t.evict_expired(10 + TTL) == 1 and t.held_origins == 0
    assert t.next_expiry() is None
    t.hold("o", 5, None, 0)
    t.clear()
    assert t.held_origins == 0 and t.next_expiry() is None
