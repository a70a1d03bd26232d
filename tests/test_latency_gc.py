"""A node's finished tasks leave nothing for its collector to walk.

A node keeps every finished task's outcome ``(kind, payload, exec_ns)`` for
its idempotency TTL, to answer duplicates. A new tuple is tracked by the
cyclic collector, so each finished task left one object in the youngest
generation: with a node's young threshold of 20,000, a young collection every
20,000 tasks walked about 20,000 of these tuples (a pause of about 1 ms here,
several a second under load) only to untrack them, as the collector does
with every tuple of plain values. The compiled idempotency table now applies
that rule itself when it keeps an outcome. The pure twin leaves it to the
collector (its first young pass untracks them, as before).

The rule must never untrack a tuple that could take part in a reference
cycle: one holding a list, a dict (even empty: one can be filled later), an
instance or a tuple still tracked stays tracked.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from rsc import spawn_remote
from rsc._core import USING_EXTENSIONS, load
from tests.test_latency_writes import node_and_origin

TTL_NS = 10**12
KEY = bytes(range(16))


def complete_one(mod: Any, outcome: tuple) -> Any:
    """An idempotency table of ``mod`` holding one finished record with ``outcome``."""
    table = mod.IdemTable(TTL_NS)
    assert table.check_and_record(KEY, mod.fingerprint("compute", b"in"), "origin-a", 1, 0) is mod.NEW
    assert table.complete(KEY, 1, outcome, 5, len(outcome[1]) if isinstance(outcome[1], bytes) else 0) == []
    return table


@pytest.fixture
def compiled_idemtable() -> Any:
    return load("idemtable", compiled=True)


def test_a_kept_outcome_of_plain_values_is_out_of_the_collectors_sight(compiled_idemtable: Any) -> None:
    outcome = tuple([0, b"result", 123_456])  # made at run time, as a node makes one (not a constant)
    assert gc.is_tracked(outcome)  # a new tuple is tracked
    table = complete_one(compiled_idemtable, outcome)
    assert not gc.is_tracked(outcome)
    assert table.get(KEY).outcome is outcome  # still the very outcome, kept and handed out


@pytest.mark.parametrize("payload", [
    pytest.param(lambda: "a failure's text", id="str"),
    pytest.param(lambda: None, id="None"),
    pytest.param(lambda: tuple([1, "reason"]), id="untracked-tuple"),
])
def test_other_plain_payloads_are_untracked_too(compiled_idemtable: Any, payload: Any) -> None:
    value = payload()
    if type(value) is tuple:
        gc.collect()  # the collector itself untracks a tuple of plain values on its first pass
        assert not gc.is_tracked(value)
    outcome = (1, value, 0)
    assert gc.is_tracked(outcome)
    complete_one(compiled_idemtable, outcome)
    assert not gc.is_tracked(outcome)


@pytest.mark.parametrize("payload", [
    pytest.param(lambda: [1, 2], id="list"),
    pytest.param(lambda: {}, id="empty-dict"),
    pytest.param(lambda: tuple([1, []]), id="tracked-tuple"),
    pytest.param(lambda: type("Instance", (), {})(), id="instance"),
])
def test_an_outcome_that_could_hold_a_cycle_stays_tracked(compiled_idemtable: Any, payload: Any) -> None:
    outcome = (1, payload(), 0)
    assert gc.is_tracked(outcome)
    complete_one(compiled_idemtable, outcome)
    assert gc.is_tracked(outcome)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_finished_tasks_leave_nothing_in_the_young_generation(tmp_path: Any, collector_off: None) -> None:
    """A node (in this process, on a real Unix socket) and an origin: the
    youngest generation grows by nearly nothing per finished task (it grew by
    one per task, the kept outcome). Measured as the growth between 2,000
    and 4,000 finished tasks, so what is alive at the end of a batch (the
    last handles) counts in neither."""
    n = 2000

    async def main() -> float:
        async with node_and_origin(str(tmp_path)) as (_node, _rt, cx):

            async def run(count: int) -> int:
                for _ in range(count // 50):
                    handles = [spawn_remote(cx, "worker-1", "echo", b"x") for _ in range(50)]
                    for h in handles:
                        assert await h.join() == b"x"
                return len(gc.get_objects(0))

            await run(500)  # warmed up
            young = await run(n)
            return (await run(n) - young) / n

    per_task = asyncio.run(main())
    if USING_EXTENSIONS:
        assert per_task < 0.1, f"{per_task:.3f} young objects left per finished task"
    else:  # the pure twin leaves each kept outcome to the collector (what this test sees)
        assert per_task >= 0.9, f"{per_task:.3f} young objects left per finished task"
