"""Drawn keys under the deterministic lab: with frames duplicated, connections
reset and resent, retries on other nodes and a node restarted on its journal,
spawns under keys the runtime drew (recorded owner-only, not hashed) still run
at most once per node (the lab's ``at_most_once`` oracle), and the nodes really
took the drawn path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest

import rsc
from rsc import Registry, spawn_remote
from rsc._core import idemtable
from rsc._engine.node import NodeEngine
from rsc.lab import Lab, load_scenario, run_seed
from rsc.lab.scenario import Scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "lab"

registry = Registry()


@registry.computation("work", codec="msgpack")
async def work(cx: Any, args: list[Any]) -> Any:
    await asyncio.sleep(args[1])
    return 2 * args[0]


async def durable_drawn(lab: Lab) -> None:
    """examples/lab/durable_restart.py's first half under drawn keys: n1
    keeps its records on its disk, crashes while running and restarts; the
    runtime resends each lapsed task to n1 first under the same drawn key."""
    await lab.start_node("n1", registry, durable=True)
    await lab.start_node("n2", registry)
    rt = await lab.start_origin("o1")
    crash_at = lab.random.uniform(0.05, 1.5)
    lab.at(crash_at, lab.crash, "n1")
    lab.at(crash_at + lab.random.uniform(0.05, 0.8), lab.restart, "n1")
    policy = rsc.lease.retry(2, nodes=["n2"], same_node_within_s=2.0)
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        handles = [spawn_remote(r.cx, "n1", "work", [i, lab.random.uniform(0.1, 2.0)], lease=1.0,
                                on_lease_expired=policy) for i in range(20)]
        for h in handles:
            try:
                await h.outcome()  # a success, or Cancelled if it ran at the crash
            except rsc.LeaseExpired:
                pass  # every attempt lapsed; an IdempotencyConflict would fail the run


DURABLE_DRAWN = Scenario(__file__, durable_drawn, {"network": "lan"})


class NotesDrawn(NodeEngine):
    """The production node engine, noting each spawn it receives: whether it
    said drawn, and the fingerprint its key is then recorded under."""

    seen: ClassVar[list[tuple[bool, bytes]]] = []

    def _on_spawn(self, c: Any, msg: Any, now: int) -> None:
        super()._on_spawn(c, msg, now)
        rec = self._idem.get(msg.idempotency_key)
        if rec is not None:
            NotesDrawn.seen.append((msg.drawn, rec.fingerprint))


@pytest.mark.parametrize(("name", "seeds", "fault"), [
    ("duplicates", 40, "duplicated"),
    ("lossy_retries", 40, "resets"),
    ("durable_drawn", 30, "records_restored"),
])
def test_drawn_keys_run_at_most_once_under_duplicates_resends_and_restarts(
        name: str, seeds: int, fault: str) -> None:
    scenario = (DURABLE_DRAWN if name == "durable_drawn"
                else load_scenario(str(SCENARIOS / f"{name}.py")))
    faults = 0
    for seed in range(seeds):
        NotesDrawn.seen.clear()
        report = run_seed(scenario, seed, node_engine=NotesDrawn)
        assert report.ok, report.format()
        assert report.figures["reexecuted_after_crash"] == 0, report.format()
        faults += report.figures[fault]
        assert NotesDrawn.seen, "no spawn reached a node"
        assert all(drawn for drawn, _ in NotesDrawn.seen), "the runtime drew these keys"
        assert {fp for _, fp in NotesDrawn.seen} == {idemtable.DRAWN_FINGERPRINT}
    assert faults > 0, f"no {fault} in {seeds} seeds"
