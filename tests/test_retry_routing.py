"""A retry goes where its policy says (issue 10 item 11, second half), and the
same-node preference (item 8).

Real node processes: worker-1 is killed with SIGKILL while a task runs on it
and restarted under the same name and address before the task's lease could
lapse. The origin reconnects to a new process (WELCOME's ``instance`` changed):
the task must not be quietly re-sent to it; its policy decides at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import rsc.lease
from rsc import RemoteTaskState, Runtime, spawn_remote
from rsc.errors import InvalidArgument, LeaseExpired, RemoteCancelled
from rsc.launch import LocalCluster

LEASE = 6.0  # long: the restart must come before it could lapse, so the lapse is not what decides


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _until_started(marks: Path, n: int = 1, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(_lines(marks)) < n:
        assert time.monotonic() < deadline, f"marks {_lines(marks)} after {timeout} s"
        await asyncio.sleep(0.02)


async def _start_observed(rt: Runtime, marks: Path, seconds: float, **kw: Any) -> Any:
    """``observe_async`` on worker-1, once it has started there (it marks ``marks``)."""
    h = spawn_remote(rt.cx(), "worker-1", "observe_async", {"path": str(marks), "seconds": seconds}, **kw)
    await _until_started(marks)
    return h


async def _kill_and_restart(c: LocalCluster, cluster: Any) -> None:
    c.kill("worker-1")
    await asyncio.to_thread(c.procs["worker-1"].wait, 10.0)
    await asyncio.to_thread(c.restart, "worker-1")
    cluster.track(c)


def test_retry_after_restart_runs_on_the_named_node(cluster: Any, tmp_path: Path) -> None:
    c = cluster(2)
    marks = tmp_path / "marks.txt"

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            h = await _start_observed(rt, marks, 1.0, lease=LEASE,
                                      on_lease_expired=rsc.lease.retry(1, nodes=["worker-2"]))
            await _kill_and_restart(c, cluster)
            assert await asyncio.wait_for(h.join(), LEASE + 10) == "finished"
            assert h.node == "worker-2"
            assert [n for n, _ in h.attempts] == ["worker-1", "worker-2"]
            assert _lines(marks) == ["started", "started"]  # once on each node, not twice on worker-1

    asyncio.run(main())


def test_fail_policy_after_restart_raises_at_once(cluster: Any, tmp_path: Path) -> None:
    c = cluster(1)
    marks = tmp_path / "marks.txt"

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            h = await _start_observed(rt, marks, 1.0, lease=LEASE)
            await _kill_and_restart(c, cluster)
            with pytest.raises(LeaseExpired, match="restarted while the task was in flight"):
                await asyncio.wait_for(h.join(), LEASE + 10)
            assert h.state is RemoteTaskState.LEASE_EXPIRED
            await asyncio.sleep(1.5)
            assert _lines(marks) == ["started"]  # not run again on the new process

    asyncio.run(main())


def test_durable_node_answers_for_its_task_after_restart(cluster: Any, tmp_path: Path) -> None:
    """With a journal and a policy that prefers the node, the origin asks the
    restarted node again: a task it was running is answered cancelled, not run."""
    c = cluster(2, state_dir=str(tmp_path / "state"))
    marks = tmp_path / "marks.txt"

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            policy = rsc.lease.retry(1, nodes=["worker-2"], same_node_within_s=3.0)
            h = await _start_observed(rt, marks, 30.0, lease=LEASE, on_lease_expired=policy)
            await _kill_and_restart(c, cluster)
            with pytest.raises(RemoteCancelled, match="node restarted while it ran"):
                await asyncio.wait_for(h.join(), LEASE + 10)
            assert [n for n, _ in h.attempts] == ["worker-1", "worker-1"]
            assert _lines(marks) == ["started"]

    asyncio.run(main())


def test_same_node_within_s_retries_there_first_then_moves_on(cluster: Any, tmp_path: Path) -> None:
    """On a lapse, a retry with same_node_within_s goes back to the same node;
    a node that does not accept within that window loses the retry to ``nodes``."""
    c = cluster(2)
    marks = tmp_path / "marks.txt"

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            pid = c.pids["worker-1"]
            policy = rsc.lease.retry(1, nodes=["worker-2"], same_node_within_s=1.0)
            h = await _start_observed(rt, marks, 0.2, lease=0.5, on_lease_expired=policy)
            os.kill(pid, signal.SIGSTOP)  # silent: the lease lapses, the node cannot accept
            try:
                assert await asyncio.wait_for(h.join(), 15.0) == "finished"
            finally:
                os.kill(pid, signal.SIGCONT)
            assert [n for n, _ in h.attempts] == ["worker-1", "worker-1", "worker-2"]
            assert h.node == "worker-2"

    asyncio.run(main())


def test_retry_rejects_a_bad_window() -> None:
    for bad in (0, -1.0, "3", True):
        with pytest.raises(InvalidArgument, match="same_node_within_s"):
            rsc.lease.retry(1, same_node_within_s=bad)
    p = rsc.lease.retry(2, nodes=["w2"], same_node_within_s=2)
    assert p.same_node_within_s == 2.0 and "same_node_within_s=2.0" in str(p)


def test_engine_reports_tasks_on_a_new_instance_instead_of_resending() -> None:
    """Engine level (both engines over the in-memory link): a reconnect to the
    same process resends; one to a new process reports EV_NODE_RESTARTED."""
    from rsc._engine import node as N
    from rsc._engine import origin as O
    from rsc._engine.states import OriginState
    from tests.engine_link import FakeAdmission, Link, entropy_from

    link = Link()
    link.connect()
    t = link.spawn()
    assert t.state is OriginState.RUNNING
    link.disconnect()
    link.connect()  # same node process: a transparent resend, a duplicate there
    assert len(link.started) == 1 and link.node.counters["duplicates"] == 1
    assert not link.events_of(O.EV_NODE_RESTARTED)
    link.disconnect()
    link.node = N.NodeEngine("node-1", FakeAdmission({"echo"}), entropy=entropy_from(500))
    link.connect()  # a new process: nothing resent, the task reported at once
    assert link.node.counters["accepted"] == 0 and link.node.counters["duplicates"] == 0
    ((_ev, task, kept),) = link.events_of(O.EV_NODE_RESTARTED)
    assert task is t and kept is False and t.state is OriginState.LEASE_EXPIRED
    assert link.origin.lease_deadline(t.rtid) is None
