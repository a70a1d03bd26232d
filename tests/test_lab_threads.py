"""Sync computations in the lab: real threads in lockstep with the loop, where
time.sleep and the clocks are virtual; the cancel grace interrupt of a sync
computation that ignores its cancel; replay. (A pause freezing them with their
node: tests/test_lab.py.)"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import rsc
from rsc import Registry, spawn_remote
from rsc.lab import Lab

registry = Registry()


@registry.computation("clocked", codec="msgpack")
def clocked(cx: Any, seconds: float) -> list[float]:
    t0, w0 = time.monotonic(), time.time()
    time.sleep(seconds)
    return [time.monotonic() - t0, time.time() - w0, threading.current_thread().name]


@registry.computation("stubborn", codec="msgpack")
def stubborn(cx: Any, step: float) -> int:
    """Ignores its cancel: sleeps in steps until the node interrupts it."""
    n = 0
    while True:
        time.sleep(step)
        n += 1


@registry.computation("blocks_the_loop", codec="msgpack", inline=True)
def blocks_the_loop(cx: Any, seconds: float) -> float:
    t0 = asyncio.get_running_loop().time()
    time.sleep(seconds)
    return asyncio.get_running_loop().time() - t0


@registry.computation("ticks", codec="msgpack")
def ticks(cx: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        time.sleep(0.1)
        out.append(round(time.monotonic(), 6))
    return out


def test_a_sleeping_sync_computation_costs_virtual_time_not_wall_time() -> None:
    got: dict[str, Any] = {}

    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry)
        rt = await lab.start_origin("o1")
        hs = [spawn_remote(rt.cx(), "n1", "clocked", 600.0 + i, lease=30.0) for i in range(3)]
        got["out"] = [await h.join() for h in hs]
        got["t"] = lab.loop.time()

    t0 = time.perf_counter()
    report = Lab(1).run(scenario)
    assert report.ok, report.format()
    assert time.perf_counter() - t0 < 10  # ten virtual minutes, three threads at once
    assert [o[:2] for o in got["out"]] == [[600.0 + i, 600.0 + i] for i in range(3)]
    assert {o[2] for o in got["out"]} == {"rsc-lab-computation"}
    assert 602.0 < got["t"] < 603.0  # they slept side by side, not one after another
    assert time.sleep.__module__ == "time"  # the lab gave the time module back
    assert not [t for t in threading.enumerate() if t.name == "rsc-lab-computation"]


def test_a_sync_computation_that_ignores_its_cancel_is_interrupted_after_the_grace() -> None:
    seen: dict[str, Any] = {}

    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry, cancel_grace_s=2.0)
        rt = await lab.start_origin("o1")
        h = spawn_remote(rt.cx(), "n1", "stubborn", 0.25, lease=30.0)
        await asyncio.sleep(1.0)
        h.abort()
        out = await h.outcome()
        seen["kind"], seen["t"] = out.kind, lab.loop.time()

    report = Lab(3).run(scenario)
    assert report.ok, report.format()
    assert seen["kind"] is rsc.types.OutcomeKind.CANCELLED
    # the cancel at 1 s, the interrupt at 3 s lands when its sleep is over (<= 3.25 s)
    assert 3.0 <= seen["t"] <= 3.3, seen


def test_time_sleep_on_the_loop_thread_blocks_the_whole_cluster_in_virtual_time() -> None:
    seen: dict[str, Any] = {}

    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry)
        rt = await lab.start_origin("o1")
        seen["blocked"] = await spawn_remote(rt.cx(), "n1", "blocks_the_loop", 5.0, lease=30.0).join()
        seen["t"] = lab.loop.time()

    t0 = time.perf_counter()
    report = Lab(1).run(scenario)
    assert report.ok, report.format()
    assert seen["blocked"] == 5.0 and seen["t"] >= 5.0
    assert time.perf_counter() - t0 < 5


def test_sync_computations_replay_to_the_same_digest() -> None:
    async def scenario(lab: Lab) -> None:
        for n in ("n1", "n2"):
            await lab.start_node(n, registry)
        rt = await lab.start_origin("o1")
        hs = [spawn_remote(rt.cx(seed=lab.seed), f"n{1 + i % 2}", "ticks", 1 + i % 5, lease=30.0)
              for i in range(20)]
        for h in hs:
            await h.join()

    a, b = Lab(5, shuffle=True).run(scenario), Lab(5, shuffle=True).run(scenario)
    assert a.ok and a.digest == b.digest
    assert Lab(6, shuffle=True).run(scenario).digest != a.digest


def test_a_crash_stops_a_nodes_sleeping_computations_and_no_thread_outlives_the_run() -> None:
    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry)
        rt = await lab.start_origin("o1")
        h = spawn_remote(rt.cx(), "n1", "stubborn", 0.5, lease=1.0)
        await asyncio.sleep(0.2)
        lab.crash("n1")  # the thread sleeps; it must not run on, nor report
        with pytest.raises(rsc.LeaseExpired):
            await h.join()

    lab = Lab(1)
    report = lab.run(scenario)
    assert report.ok, report.format()
    assert [r["event"] for r in lab.trace.records if r["event"] in ("execute", "finished")] == ["execute"]
    assert not [t for t in threading.enumerate() if t.name == "rsc-lab-computation"]
