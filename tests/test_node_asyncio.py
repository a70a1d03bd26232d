"""asyncio's task machinery inside computations, on a real node.

On Python 3.12+ a node starts an async computation eagerly: its first step runs
at once, inside the loop callback that admitted it, and its asyncio task waits
on the loop only if it suspends (on 3.11 the task's first step is scheduled on
the loop). Either way a computation runs inside its own asyncio task:
``asyncio.current_task()``, ``asyncio.timeout()`` and ``TaskGroup`` work in it,
and it can be cancelled whether or not it has suspended. These tests hold on
every Python the suite runs on.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

import rsc
from rsc import CancelKind, Runtime, spawn_remote
from rsc.launch import LocalCluster
from tests.test_e2e_runtime import settled

REGISTRY = "tests.registries_asyncio:inside"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(scope="module")
def node(module_cluster: Any) -> LocalCluster:
    return module_cluster(1, REGISTRY)


@pytest.mark.parametrize("suspend", [False, True])
def test_current_task_is_the_computations_own(node: LocalCluster, suspend: bool) -> None:
    async def main() -> None:
        async with Runtime(node.nodes) as rt:
            got = await spawn_remote(rt.cx(), "worker-1", "identity", suspend).join()
            assert got == dict(has_task=True, same=True, name="rsc:identity", done=False,
                               all_tasks_has_it=True)
            await settled(rt)

    run(main())


def test_timeout_inside_a_computation(node: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(node.nodes) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "timeout", 20).join() == dict(
                fired=True, cancelling=0)
            assert await spawn_remote(cx, "worker-1", "timeout_at_once", None).join() == dict(
                fired=True, cancelling=0)
            await settled(rt)

    run(main())


def test_task_group_inside_a_computation(node: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(node.nodes) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "group", [3, 1, 2]).join() == dict(
                results=[30, 10, 20])
            assert await spawn_remote(cx, "worker-1", "group", [5, -1, 2]).join() == dict(
                failed=["child -1 failed"])
            assert await spawn_remote(cx, "worker-1", "group_no_children", None).join() == "ok"
            await settled(rt)

    run(main())


def test_cancel_a_computation_suspended_in_its_first_step(node: LocalCluster) -> None:
    tag = f"cancel-{id(node)}"

    async def main() -> None:
        async with Runtime(node.nodes) as rt:
            cx = rt.cx()
            h = spawn_remote(cx, "worker-1", "parked", tag)
            for _ in range(500):
                if await spawn_remote(cx, "worker-1", "probe", tag).join() == ["started"]:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the parked computation never started")
            outcome = await h.close()
            assert outcome.kind is rsc.RemoteOutcome.cancelled(rsc.CancelReason.user()).kind
            assert outcome.value.kind is CancelKind.USER
            assert await spawn_remote(cx, "worker-1", "probe", tag).join() == [
                "started", "cancelled", "finally"]
            await settled(rt)

    run(main())


def test_cancelled_in_the_same_read_as_its_spawn_never_starts(node: LocalCluster) -> None:
    tag = f"never-{id(node)}"

    async def main() -> None:
        async with Runtime(node.nodes) as rt:
            cx = rt.cx()
            h = spawn_remote(cx, "worker-1", "parked", tag)
            h.abort()  # the SPAWN and the CANCEL leave in one write
            with pytest.raises(rsc.RemoteCancelled):
                await h.join()
            assert await spawn_remote(cx, "worker-1", "probe", tag).join() == []
            await settled(rt)

    run(main())


def test_computations_that_never_suspend(node: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(node.nodes) as rt:
            cx = rt.cx()
            hs = [spawn_remote(cx, "worker-1", "at_once", i) for i in range(300)]
            assert [await h.join() for h in hs] == [[i, True] for i in range(300)]
            with pytest.raises(rsc.RemoteFailed, match="KeyError: 7"):
                await spawn_remote(cx, "worker-1", "fail_at_once", 7).join()
            await settled(rt)
            stats = await rt.status("worker-1")
            assert stats["running"] == 0

    run(main())


def test_the_node_runs_on_the_suites_python(node: LocalCluster) -> None:
    """So a run of the suite on 3.13 tests eager starts, and one on 3.11 the scheduled ones."""
    async def main() -> None:
        async with Runtime(node.nodes) as rt:
            got = await spawn_remote(rt.cx(), "worker-1", "python_version", None).join()
            assert tuple(got) == tuple(sys.version_info[:2])

    run(main())
