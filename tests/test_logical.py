"""The Lamport clock both engines stamp and merge with (PROTOCOL.md section 2),
compiled and, through tests/test_twins_env.py, as its pure source."""

from __future__ import annotations

from rsc._engine.logical import MAX_MERGED_TIME, LamportClock, lamport_value


def test_send_is_strictly_increasing() -> None:
    c = LamportClock(5)
    assert [c.send() for _ in range(3)] == [6, 7, 8] and c.time == 8


def test_merge_takes_the_later_time_plus_one_in_each_wire_form() -> None:
    c = LamportClock(10)
    assert c.merge(3) == 11  # behind us: our own time moves on
    assert c.merge(40) == 41  # ahead of us: past it
    assert c.merge((7, 100)) == 101  # hybrid: its logical part
    assert c.merge({"a": 5, "b": 200}) == 201  # vector: its largest entry
    assert c.merge({}) == 202 and c.merge("junk") == 203  # no reading: as if 0
    assert lamport_value((1, 9)) == 9 and lamport_value({"x": 4}) == 4


def test_a_time_above_the_bound_is_accepted_but_not_merged() -> None:
    c = LamportClock(10)
    assert c.merge(MAX_MERGED_TIME) == MAX_MERGED_TIME + 1  # the bound itself is merged
    c = LamportClock(10)
    for huge in (MAX_MERGED_TIME + 1, 1 << 63, (1 << 64) - 1, 1 << 70, (0, 1 << 64)):
        assert c.merge(huge) == c.time and c.time < 100  # moved on by one, never toward the limit
    assert c.merge(-5) == c.time and c.time < 100  # (not a wire value) nothing to merge either
