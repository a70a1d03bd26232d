"""Nested runtimes in the lab: a node started with ``peers`` gives its
computations a RemoteCap whose runtime lives inside the node's process and
talks over the lab's network, so a three-level tree of remote tasks runs in
virtual time under faults, and the oracles cover every level."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import rsc
from rsc import spawn_remote
from rsc.lab import Lab, load_scenario
from tests.lab_variants import NeverCancelsOrphans

SCENARIO = str(Path(__file__).resolve().parent.parent / "examples" / "lab" / "nested_tree.py")
NODES = ["n1", "n2", "n3", "n4"]


def _registry() -> Any:
    load_scenario(SCENARIO)  # puts examples/lab's registry module within reach
    import sys

    return sys.modules["lab_registry"].registry


def _depth(trace: list[dict[str, Any]]) -> int:
    parent = {(r["who"], r["rtid"]): tuple(r["parent"]) for r in trace
              if r["event"] == "spawn" and "parent" in r}

    def depth(task: tuple[str, int]) -> int:
        return 1 + (depth(parent[task]) if task in parent else 0)

    return max(depth(t) for t in parent)


def test_a_three_level_tree_runs_over_the_lab_network_and_every_level_is_judged() -> None:
    # (every seed of the scenario, with its spawn count: tests/test_lab_scenarios.py)
    scenario = load_scenario(SCENARIO)
    lab = Lab(3, network="lan")
    report = lab.run(scenario.fn)
    assert report.ok, report.format()
    trace = lab.trace.records
    assert _depth(trace) == 3  # origin -> node -> node -> node
    nested = [r for r in trace if r["event"] == "spawn" and "parent" in r]
    assert {r["who"] for r in nested} <= set(NODES) and len(nested) == 24
    closes = [r for r in trace if r["event"] == "region::closed"]
    assert {r["who"] for r in closes} >= {"o1"} and len({r["who"] for r in closes}) > 1
    # a nested runtime's frames are read by the runtime, not by its node's engine
    assert any(r["event"] == "recv" and r["who"] in NODES and r["kind"] == "ResultDelivery"
               for r in trace)


async def _cut_leaf(lab: Lab, leaf_s: float) -> None:
    reg = _registry()
    for n in NODES[:3]:
        await lab.start_node(n, reg, peers=NODES[:3])
    rt = await lab.start_origin("o1")
    # n1's computation spawns on n2 and n3 and joins n2's first; n2 is then cut
    # off and never heard again: that join lapses, n1's region and the origin's close
    lab.at(0.3, lab.partition, ["n2"], ["n1", "n3", "o1"])
    async with rsc.region(rt.cx(seed=lab.seed)) as r:
        h = spawn_remote(r.cx, "n1", "tree", [2, 2, leaf_s, NODES[:3]], lease=2.0)
        with pytest.raises(rsc.RemoteError):
            await h.join()  # its subtree on n2 lapsed
    await asyncio.sleep(leaf_s)


def test_a_cut_off_leaf_of_a_closed_region_is_stopped_by_its_node() -> None:
    report = Lab(1).run(lambda lab: _cut_leaf(lab, 30.0))
    assert report.ok, report.format()


def test_a_node_that_keeps_a_closed_regions_leaf_running_is_caught() -> None:
    report = Lab(1, node_engine=NeverCancelsOrphans).run(lambda lab: _cut_leaf(lab, 30.0))
    found = [v for v in report.violations if v.oracle == "closed_region"]
    assert found, report.format()
    assert any("ran on n2" in v.message and "of n1" in v.message for v in found), report.format()
    # judged twice: against n1's own region, and as a descendant of the origin's
    assert {v.message.split()[3] for v in found} == {"n1", "o1"}, report.format()


async def _middle_crash(lab: Lab) -> None:
    reg = _registry()
    for n in NODES[:3]:
        await lab.start_node(n, reg, peers=NODES[:3])
    rt = await lab.start_origin("o1")
    lab.at(0.3, lab.crash, "n1")  # n1's nested runtime dies with it
    h = spawn_remote(rt.cx(seed=lab.seed), "n1", "tree", [2, 2, 30.0, NODES[:3]], lease=1.0)
    with pytest.raises(rsc.LeaseExpired):
        await h.join()
    await asyncio.sleep(30)


def test_the_orphans_of_a_crashed_nodes_nested_runtime_are_cancelled() -> None:
    report = Lab(1).run(_middle_crash)
    assert report.ok, report.format()
    bad = Lab(1, node_engine=NeverCancelsOrphans).run(_middle_crash)
    assert "no_orphans" in {v.oracle for v in bad.violations}, bad.format()
    assert any("of n1 ran on" in v.message for v in bad.violations), bad.format()


def test_a_restarted_nodes_nested_spawns_are_accepted_by_its_peers() -> None:
    async def scenario(lab: Lab) -> None:
        reg = _registry()
        for n in NODES[:3]:
            await lab.start_node(n, reg, peers=NODES[:3])
        rt = await lab.start_origin("o1")
        assert await spawn_remote(rt.cx(), "n1", "tree", [2, 2, 0.1, NODES[:3]], lease=1.0).join() == 2
        lab.crash("n1")
        await asyncio.sleep(0.5)
        await lab.start_node("n1")
        assert await spawn_remote(rt.cx(), "n1", "tree", [2, 2, 0.1, NODES[:3]], lease=1.0).join() == 2

    report = Lab(1).run(scenario)
    assert report.ok, report.format()


def test_a_node_and_its_nested_runtime_keep_one_lamport_clock() -> None:
    """A node and its nested runtime are one process with one Lamport clock:
    the process's records, in the order it made them, never go back in
    Lamport time, and a nested spawn is stamped after the node read the spawn
    that caused it."""
    lab = Lab(3, network="lan")
    report = lab.run(load_scenario(SCENARIO).fn)
    assert report.ok, report.format()
    trace = lab.trace.records
    for node in NODES[:3]:
        times = [r["lamport"] for r in sorted(trace, key=lambda r: r["seq"])
                 if r["who"] == node and "lamport" in r]
        assert times and all(a <= b for a, b in zip(times, times[1:])), node
    spawns = {(r["from"], r["rtid"]): r for r in trace
              if r["event"] == "recv" and r["kind"] == "SpawnRequest"}
    nested = [r for r in trace if r["event"] == "spawn" and "parent" in r]
    assert nested
    for r in nested:
        parent = spawns[tuple(r["parent"])]  # the parent's SPAWN, as the nested origin read it
        sent = spawns[(r["who"], r["rtid"])]  # the nested SPAWN, as its node read it
        assert parent["who"] == r["who"] and sent["stamp"] > parent["stamp"], (parent, sent)
