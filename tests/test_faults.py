"""Fault tests on real processes: nodes and origins killed, nodes frozen, regions
cancelled wholesale, deadlines passing. Each one is bounded in time.

Timing bounds are generous (lease + a couple of seconds): they say "resolves
within about a lease", not how fast. Leases are short (0.5-1 s) so the file
stays quick; what each test checks after it ran is that nothing leaked: the
runtime's debug counters back to zero, no region open, no asyncio task but the
test's own, and (the cluster fixture's teardown) no child process left.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import rsc
import rsc.lease
from rsc._engine.trace_names import DROPPED
from rsc import CancelKind, CancelReason, RemoteTaskState, Runtime, spawn_remote
from rsc.launch import LocalCluster
from rsc.regions import live_regions
from tests.cluster import REPO_ROOT

LEASE = 0.5  # seconds: the lease of every task whose lease is meant to lapse
MARGIN = 2.0  # seconds on top of a lease before "resolves within a lease" fails
ZERO = dict(handles=0, tasks=0, leases=0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def say(what: str, seconds: float) -> None:
    """Timings for the log (pytest -s); never asserted tightly."""
    print(f"  [faults] {what}: {seconds:.3f} s")


async def settled(rt: Runtime, timeout: float = 4 * LEASE + MARGIN) -> None:
    """Wait (bounded) until the runtime holds nothing in flight. After a lease
    lapses the engine may keep the superseded attempt one more lease while it
    tries to cancel it, hence a bound of a few leases."""
    deadline = time.monotonic() + timeout
    while rt.debug_counts() != ZERO:
        if time.monotonic() > deadline:
            raise AssertionError(f"runtime still holds {rt.debug_counts()} after {timeout} s")
        await asyncio.sleep(0.01)


def assert_no_leaks_after_close() -> None:
    """Call at the end of the main coroutine, after the Runtime is closed."""
    assert live_regions() == 0
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, f"asyncio tasks left behind: {others}"


async def wait_running(hs: list[rsc.RemoteHandle], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(h.state is RemoteTaskState.RUNNING for h in hs):
        done = [h for h in hs if h.is_finished()]
        assert not done, f"finished before all were running: {done[0]!r}"
        assert time.monotonic() < deadline, "not every task was acknowledged in time"
        await asyncio.sleep(0.01)


async def resolution(h: rsc.RemoteHandle) -> tuple[Any, float]:
    """(value or exception, monotonic time it resolved)."""
    try:
        v: Any = await h.join()
    except rsc.RemoteError as exc:
        v = exc
    return v, time.monotonic()


async def stats(rt: Runtime, names: list[str]) -> dict[str, dict]:
    return {n: await rt.status(n) for n in names}


async def until(pred: Any, timeout: float, what: str, step: float = 0.02) -> float:
    """Poll the async predicate ``pred()`` until true; seconds it took."""
    t0 = time.monotonic()
    while not await pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - t0


def recorder(events: list[tuple[str, dict]]) -> Any:
    """A Runtime trace callback that keeps every event, stamped with when it happened."""
    return lambda ev, fields: events.append((ev, dict(fields, at=time.monotonic())))


def drops_of(events: list[tuple[str, dict]], rtid: int) -> list[dict]:
    """Trace events of the origin engine dropping a RESULT_DELIVERY for ``rtid``."""
    return [f for ev, f in events
            if ev == DROPPED and f.get("rtid") == rtid and "RESULT_DELIVERY" in str(f.get("why"))]


@pytest.fixture(scope="module")
def shared(module_cluster: Any) -> LocalCluster:
    """Two nodes for the tests that neither kill a node nor need a fresh one
    (every counter they read is compared to a baseline)."""
    return module_cluster(2)


# ------------------------------------------------------------ 1. node killed


@pytest.mark.parametrize("policy", [rsc.lease.fail(), rsc.lease.cancel(0.25)], ids=str)
def test_node_killed_with_100_in_flight_each_resolves_within_a_lease(
        cluster: Any, policy: rsc.lease.LeasePolicy) -> None:
    c = cluster(2)
    # fail: LeaseExpired at the lapse; cancel(t): the cancel cannot reach a
    # dead node, so LeaseExpired at most t later
    bound = LEASE + policy.timeout_s * (policy.kind == "cancel") + MARGIN

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            hs = [spawn_remote(cx, "worker-1", "sleep_ms", 60_000, lease=LEASE,
                               on_lease_expired=policy) for _ in range(100)]
            await wait_running(hs)
            t0 = time.monotonic()
            c.kill("worker-1", signal.SIGKILL)
            got = await asyncio.wait_for(asyncio.gather(*map(resolution, hs)), bound + 10)
            worst = max(t for _, t in got) - t0
            say(f"kill -9 node, 100 x {policy}: last handle resolved after", worst)
            for h, (v, _t) in zip(hs, got):
                assert isinstance(v, rsc.LeaseExpired), v
                assert h.state is RemoteTaskState.LEASE_EXPIRED
                assert h.lease.state == rsc.lease.EXPIRED
            assert worst <= bound
            # the other node is untouched
            assert await spawn_remote(cx, "worker-2", "square", 9).join() == 81
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())
    assert c.procs["worker-1"].wait(5) == -signal.SIGKILL


def test_node_killed_with_100_in_flight_retry_completes_each_once_elsewhere(cluster: Any) -> None:
    c = cluster(2)
    base_ms = 2000  # long enough to be in flight at the kill; distinct values per task

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            before = await rt.status("worker-2")
            hs = [spawn_remote(cx, "worker-1", "sleep_ms", base_ms + i, lease=LEASE,
                               on_lease_expired=rsc.lease.retry(1, nodes=["worker-2"]))
                  for i in range(100)]
            await wait_running(hs)
            first = [h.attempts[0] for h in hs]
            t0 = time.monotonic()
            c.kill("worker-1", signal.SIGKILL)
            got = await asyncio.wait_for(asyncio.gather(*map(resolution, hs)),
                                         LEASE + base_ms / 1000 + 15)
            say("kill -9 node, 100 x retry on worker-2: last result after",
                max(t for _, t in got) - t0)
            assert [v for v, _ in got] == [base_ms + i for i in range(100)]
            for i, h in enumerate(hs):
                assert h.state is RemoteTaskState.COMPLETED
                assert len(h.attempts) == 2 and h.attempts[0] == first[i]
                assert h.attempts[1][0] == "worker-2" and h.attempts[1][1] != first[i][1]
                assert await h.join() == base_ms + i  # the one outcome, every time
            after = await rt.status("worker-2")
            # each retried task ran exactly once on worker-2
            assert after["accepted"] - before["accepted"] == 100
            assert after["completed"] - before["completed"] == 100
            assert after["running"] == 0
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())
    assert c.procs["worker-1"].wait(5) == -signal.SIGKILL


# ------------------------------------------------------------ 2. origin killed


def test_origin_killed_its_tasks_are_cancelled_on_every_node(shared: LocalCluster, tmp_path: Path) -> None:
    names = sorted(shared.nodes)
    origin_lease = 1.0
    n_tasks = 100
    err = tmp_path / "origin.stderr"

    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            before = await stats(rt, names)
            with open(err, "w") as ef:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.origin_proc", json.dumps(shared.nodes),
                     "--tasks", str(n_tasks), "--lease", str(origin_lease)],
                    cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=ef,
                    text=True)
            try:
                assert proc.stdout is not None
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
                assert line.startswith("SPAWNED"), f"origin said {line!r}; stderr: {err.read_text()}"
                running = await stats(rt, names)
                assert sum(s["running"] - before[n]["running"] for n, s in running.items()) == n_tasks
                t0 = time.monotonic()
                proc.kill()
                assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                proc.stdout.close()  # type: ignore[union-attr]
            # the nodes serve another origin while they clean up after the dead one
            for i, n in enumerate(names):
                assert await spawn_remote(rt.cx(), n, "square", i + 3).join() == (i + 3) ** 2

            async def idle() -> bool:
                return all(s["running"] == 0 for s in (await stats(rt, names)).values())

            await until(idle, origin_lease + MARGIN, "orphaned tasks cancelled")
            elapsed = time.monotonic() - t0
            say("kill -9 origin, 100 tasks over 2 nodes: nodes idle after", elapsed)
            assert elapsed <= origin_lease + MARGIN + 1.0
            after = await stats(rt, names)
            assert sum(after[n]["cancelled"] - before[n]["cancelled"] for n in names) == n_tasks
            for n in names:
                assert after[n]["cancelled"] - before[n]["cancelled"] == n_tasks // len(names)
            # and still serving afterwards
            for n in names:
                assert await spawn_remote(rt.cx(), n, "echo", b"after").join() == b"after"
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())


# ------------------------------------------------------------ 3. node frozen


def _stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def test_frozen_node_fail_policy_late_result_is_dropped(shared: LocalCluster) -> None:
    pid = shared.pids["worker-1"]
    sleep_ms = 1500
    events: list[tuple[str, dict]] = []

    async def main() -> None:
        async with Runtime(shared.nodes, trace=recorder(events)) as rt:
            before = await rt.status("worker-1")
            t_spawn = time.monotonic()
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", sleep_ms, lease=LEASE,
                             on_lease_expired=rsc.lease.fail())
            await wait_running([h])
            rtid = h.remote_task_id
            os.kill(pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with pytest.raises(rsc.LeaseExpired):
                    await asyncio.wait_for(h.join(), LEASE + MARGIN)
                say("SIGSTOP node, fail: LeaseExpired after", time.monotonic() - t0)
                assert h.state is RemoteTaskState.LEASE_EXPIRED
                # stay frozen past the moment the task would have finished
                await asyncio.sleep(max(0.0, t_spawn + sleep_ms / 1000 + 0.3 - time.monotonic()))
                assert _stopped(pid)
            finally:
                os.kill(pid, signal.SIGCONT)

            async def late_result_dropped() -> bool:
                return bool(drops_of(events, rtid))

            await until(late_result_dropped, 10.0, "the resumed node's late result reached the origin")
            after = await rt.status("worker-1")
            assert after["running"] == before["running"]
            assert (after["completed"] + after["cancelled"]) - (before["completed"] + before["cancelled"]) == 1
            # the caller keeps its one outcome
            with pytest.raises(rsc.LeaseExpired):
                await h.join()
            assert h.state is RemoteTaskState.LEASE_EXPIRED
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())


def test_frozen_node_retry_policy_result_comes_from_the_other_node(shared: LocalCluster) -> None:
    pid = shared.pids["worker-1"]
    sleep_ms = 2500
    events: list[tuple[str, dict]] = []

    async def main() -> None:
        async with Runtime(shared.nodes, trace=recorder(events)) as rt:
            b1, b2 = await rt.status("worker-1"), await rt.status("worker-2")
            t_spawn = time.monotonic()
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", sleep_ms, lease=LEASE,
                             on_lease_expired=rsc.lease.retry(1, nodes=["worker-2"]))
            await wait_running([h])
            first = h.attempts[0]
            os.kill(pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                while len(h.attempts) < 2:
                    assert time.monotonic() - t0 < LEASE + MARGIN, "no retry within a lease"
                    await asyncio.sleep(0.01)
                say("SIGSTOP node, retry: re-spawned on worker-2 after", time.monotonic() - t0)
                assert not h.is_finished()
                # resume the frozen node once its task would have finished: its
                # (late) result arrives while the retry still runs on worker-2
                await asyncio.sleep(max(0.0, t_spawn + sleep_ms / 1000 + 0.1 - time.monotonic()))
                assert _stopped(pid)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await asyncio.wait_for(h.join(), sleep_ms / 1000 + MARGIN + 5) == sleep_ms
            t_result = time.monotonic()
            assert h.state is RemoteTaskState.COMPLETED
            assert h.attempts[0] == first and first[0] == "worker-1"
            assert len(h.attempts) == 2 and h.attempts[1][0] == "worker-2"

            async def late_result_dropped() -> bool:
                return bool(drops_of(events, first[1]))

            await until(late_result_dropped, 10.0, "the resumed node's late result reached the origin")
            say("SIGSTOP node, retry: late result dropped this long before the retry's result",
                t_result - drops_of(events, first[1])[0]["at"])
            a1, a2 = await rt.status("worker-1"), await rt.status("worker-2")
            assert a2["completed"] - b2["completed"] == 1 and a2["accepted"] - b2["accepted"] == 1
            assert (a1["completed"] + a1["cancelled"]) - (b1["completed"] + b1["cancelled"]) == 1
            assert a1["running"] == b1["running"] and a2["running"] == b2["running"]
            assert await h.join() == sleep_ms  # still the one outcome
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())


def test_frozen_node_cancel_policy_delivers_the_answer_within_its_timeout(shared: LocalCluster) -> None:
    """cancel(timeout_s): the node's answer to the cancel is what the caller sees
    when it comes within timeout_s (rsc/lease.py), even if that is longer than a lease."""
    pid = shared.pids["worker-1"]
    timeout_s = 4.0
    frozen_for = 3 * LEASE  # past the lease (escalation) and well within timeout_s

    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", 60_000, lease=LEASE,
                             on_lease_expired=rsc.lease.cancel(timeout_s))
            await wait_running([h])
            os.kill(pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                while h.state is not RemoteTaskState.LEASE_EXPIRED and not h.is_finished():
                    assert time.monotonic() - t0 < LEASE + MARGIN, "no escalation within a lease"
                    await asyncio.sleep(0.01)
                say("SIGSTOP node, cancel(): escalated after", time.monotonic() - t0)
                await asyncio.sleep(max(0.0, t0 + frozen_for - time.monotonic()))
            finally:
                os.kill(pid, signal.SIGCONT)
            outcome = await asyncio.wait_for(h.outcome(), timeout_s + MARGIN)
            say("SIGSTOP node, cancel(): outcome after", time.monotonic() - t0)
            assert h.state is RemoteTaskState.CANCELLED, (h.state, outcome)
            assert outcome.value.kind is CancelKind.LEASE_EXPIRED
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())


# ------------------------------------------------------------ 4. region cancel


def test_region_cancelled_with_1000_in_flight_over_4_nodes_exits_after_all_acknowledged(cluster: Any) -> None:
    c = cluster(4)
    names = sorted(c.nodes)
    n = 1000

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            before = await stats(rt, names)
            t_cancel = 0.0
            async with rsc.region(rt.cx()) as r:
                hs = [spawn_remote(r.cx, names[i % 4], "sleep_ms", 60_000, lease=5.0) for i in range(n)]
                await wait_running(hs)
                t_cancel = time.monotonic()
                r.cancel(CancelReason.user("stop all 1000"))
                await asyncio.sleep(60)  # interrupted by the cancel
                raise AssertionError("not reached")
            say("region of 1000 over 4 nodes: exit after cancel", time.monotonic() - t_cancel)
            assert r.cancelled and r.cancel_reason.kind is CancelKind.USER
            # quiescence: every handle has the node's acknowledged outcome
            assert all(h.is_finished() for h in hs)
            states = {h.state for h in hs}
            assert states <= {RemoteTaskState.CANCELLED, RemoteTaskState.COMPLETED}, states
            for h in hs:
                if h.state is RemoteTaskState.CANCELLED:
                    outcome = await h.outcome()
                    assert outcome.value.kind is CancelKind.PARENT_CANCELLED
            # the nodes are idle the moment the region is gone: no waiting
            now = await stats(rt, names)
            assert {nm: s["running"] for nm, s in now.items()} == {nm: 0 for nm in names}
            for nm in names:
                assert (now[nm]["cancelled"] + now[nm]["completed"]
                        - before[nm]["cancelled"] - before[nm]["completed"]) == n // 4
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())


# ------------------------------------------------------------ 5. deadlines


async def assert_one_more_cancelled(rt: Runtime, node: str, before: dict) -> None:
    """The node's STATUS: exactly one more task cancelled than ``before``, and
    no more running."""
    after = await rt.status(node)
    assert after["cancelled"] - before["cancelled"] == 1
    assert after["running"] == before["running"]


def test_spawn_deadline_cancels_on_the_node_with_reason_deadline(shared: LocalCluster, tmp_path: Path) -> None:
    marks = tmp_path / "marks"

    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            before = await rt.status("worker-2")
            b = rsc.Budget(deadline_ns=rt.clock.now_ns() + 300_000_000)
            t0 = time.monotonic()
            h = spawn_remote(rt.cx(), "worker-2", "observe_async", {"path": str(marks), "seconds": 30},
                             budget=b)
            with pytest.raises(rsc.RemoteCancelled) as e:
                await asyncio.wait_for(h.join(), 10)
            say("spawn budget deadline 0.3 s: cancelled after", time.monotonic() - t0)
            assert e.value.reason.kind is CancelKind.DEADLINE
            assert h.state is RemoteTaskState.CANCELLED
            await assert_one_more_cancelled(rt, "worker-2", before)
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())
    assert lines(marks) == ["started", "cancelled"]


def test_region_deadline_cancels_on_the_node_with_reason_deadline(shared: LocalCluster, tmp_path: Path) -> None:
    marks = tmp_path / "marks"

    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            before = await rt.status("worker-1")
            t0 = time.monotonic()
            budget = rsc.Budget(deadline_ns=rt.clock.now_ns() + 300_000_000)
            async with rsc.region(rt.cx(), budget=budget) as r:
                h = spawn_remote(r.cx, "worker-1", "observe_async", {"path": str(marks), "seconds": 30})
                await h.join()  # interrupted when the deadline passes
                raise AssertionError("not reached")
            say("region budget deadline 0.3 s: region exited after", time.monotonic() - t0)
            assert r.cancel_reason.kind is CancelKind.DEADLINE
            assert h.state is RemoteTaskState.CANCELLED
            with pytest.raises(rsc.RemoteCancelled) as e:
                h.try_join()
            assert e.value.reason.kind is CancelKind.DEADLINE
            await assert_one_more_cancelled(rt, "worker-1", before)
            await settled(rt)
        assert_no_leaks_after_close()

    run(main())
    assert lines(marks) == ["started", "cancelled"]
