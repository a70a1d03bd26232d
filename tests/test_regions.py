"""Regions: quiescence, fail-fast, cancellation spreading to remote work, budgets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import rsc
from rsc import CancelKind, CancelReason, Runtime, spawn_remote
from rsc.launch import LocalCluster
from rsc.regions import live_regions
from tests.test_e2e_runtime import lines, settled


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def wait_lines(path: Path, n: int, timeout: float = 5.0) -> list[str]:
    for _ in range(int(timeout / 0.01)):
        if len(lines(path)) >= n:
            break
        await asyncio.sleep(0.01)
    return lines(path)


# ----------------------------------------------------------------- local only


def test_local_tasks_quiesce_and_fail_fast() -> None:
    seen: list[str] = []

    async def ok(cx: rsc.Cx, d: float) -> None:
        await asyncio.sleep(d)
        seen.append(f"ok{d}")

    async def bad(cx: rsc.Cx) -> None:
        await asyncio.sleep(0.01)
        raise ValueError("bad")

    async def victim(cx: rsc.Cx) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(f"victim:{cx.cancel_reason.kind}")
            raise

    async def main() -> None:
        async with rsc.region(rsc.Cx()) as r:
            r.spawn(ok, 0.02)
            r.spawn(ok, 0.01)
        assert sorted(seen) == ["ok0.01", "ok0.02"]
        seen.clear()
        with pytest.raises(ExceptionGroup) as eg:
            async with rsc.region(rsc.Cx()) as r:
                r.spawn(victim)
                r.spawn(bad)
                await asyncio.sleep(10)  # interrupted by the fail-fast cancel
        assert [type(e) for e in eg.value.exceptions] == [ValueError]
        assert seen == ["victim:parent_cancelled"]
        assert r.cancel_reason.kind is CancelKind.FAIL_FAST
        assert live_regions() == 0

    run(main())


def test_cancel_from_outside_exits_quietly_and_outer_cancel_propagates() -> None:
    async def main() -> None:
        cx = rsc.Cx()
        async with rsc.region(cx) as r:
            asyncio.get_running_loop().call_later(0.02, r.cancel, CancelReason.user("enough"))
            await asyncio.sleep(10)
            raise AssertionError("not reached")
        assert r.cancelled and r.cancel_reason.message == "enough"
        assert asyncio.current_task().cancelling() == 0

        async def inner() -> None:
            async with rsc.region(cx) as r2:
                r2.spawn(lambda c: asyncio.sleep(10))
                await asyncio.sleep(10)

        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(inner(), 0.05)
        assert live_regions() == 0

    run(main())


def test_parent_cancel_reaches_child_region_with_chained_reason() -> None:
    async def main() -> None:
        outer_cx = rsc.Cx()
        async with rsc.region(outer_cx) as outer:
            async with rsc.region(outer.cx) as inner:
                outer.cancel(CancelReason.user("top"))
                await asyncio.sleep(1)
        assert inner.cancel_reason.kind is CancelKind.PARENT_CANCELLED
        assert inner.cancel_reason.cause is not None and inner.cancel_reason.cause.message == "top"

    run(main())


def test_spawn_outside_an_open_region_is_refused() -> None:
    r = rsc.region(rsc.Cx())
    with pytest.raises(rsc.InvalidArgument):
        r.spawn(lambda cx: asyncio.sleep(0))


# ----------------------------------------------------------------- remote


@pytest.fixture(scope="module")
def two(module_cluster: Any) -> LocalCluster:
    return module_cluster(2)


def test_region_exit_waits_for_remote_work(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            async with rsc.region(rt.cx()) as r:
                hs = [spawn_remote(r.cx, f"worker-{i % 2 + 1}", "sleep_ms", 100 + i) for i in range(20)]
            assert all(h.is_finished() for h in hs)
            assert [h.try_join() for h in hs] == [100 + i for i in range(20)]
            assert all(h.owner_region == r.id and h.lease.state == "released" for h in hs)
            await settled(rt)

    run(main())


def test_error_in_body_cancels_remote_children(two: LocalCluster, tmp_path: Path) -> None:
    marks = [tmp_path / f"m{i}" for i in range(3)]

    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            with pytest.raises(ExceptionGroup) as eg:
                async with rsc.region(rt.cx()) as r:
                    hs = [spawn_remote(r.cx, f"worker-{i % 2 + 1}", "observe_async",
                                       {"path": str(m), "seconds": 30}) for i, m in enumerate(marks)]
                    for m in marks:
                        await wait_lines(m, 1)
                    raise KeyError("body failed")
            assert [type(e) for e in eg.value.exceptions] == [KeyError]
            for h in hs:
                assert h.state is rsc.RemoteTaskState.CANCELLED
                with pytest.raises(rsc.RemoteCancelled) as e:
                    h.try_join()
                assert e.value.reason.kind is CancelKind.PARENT_CANCELLED
            await settled(rt)

    run(main())
    assert all(lines(m) == ["started", "cancelled"] for m in marks)


def test_unobserved_remote_failure_is_raised_at_exit_observed_one_is_not(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            with pytest.raises(ExceptionGroup) as eg:
                async with rsc.region(rt.cx()) as r:
                    spawn_remote(r.cx, "worker-1", "boom", None)
            assert [type(e) for e in eg.value.exceptions] == [rsc.RemoteFailed]
            async with rsc.region(rt.cx()) as r:
                h = spawn_remote(r.cx, "worker-1", "boom", None)
                with pytest.raises(rsc.RemoteFailed):
                    await h.join()
            await settled(rt)

    run(main())


def test_region_deadline_cancels_remote_work_with_reason_deadline(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            deadline = rsc.Budget(deadline_ns=rt.clock.now_ns() + 300_000_000)
            async with rsc.region(rt.cx(), budget=deadline) as r:
                h = spawn_remote(r.cx, "worker-2", "sleep_ms", 10_000)
                await h.join()  # the deadline interrupts the body; the region exits quietly
                raise AssertionError("not reached")
            assert r.cancel_reason.kind is CancelKind.DEADLINE
            with pytest.raises(rsc.RemoteCancelled) as e:
                h.try_join()
            assert e.value.reason.kind is CancelKind.DEADLINE
            await settled(rt)

    run(main())


def test_spawn_deadline_alone_is_enforced_by_the_node(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            b = rsc.Budget(deadline_ns=rt.clock.now_ns() + 200_000_000)
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", 10_000, budget=b)
            with pytest.raises(rsc.RemoteCancelled) as e:
                await h.join()
            assert e.value.reason.kind is CancelKind.DEADLINE
            st = await rt.status("worker-1")
            assert st["running"] == 0
            await settled(rt)

    run(main())


def test_region_cancel_from_another_task_drains_remote_work(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            async with rsc.region(rt.cx()) as r:
                hs = [spawn_remote(r.cx, f"worker-{i % 2 + 1}", "sleep_ms", 30_000) for i in range(50)]
                asyncio.get_running_loop().call_later(0.2, r.cancel, CancelReason.user("stop all"))
                await asyncio.gather(*(h.outcome() for h in hs))
            for h in hs:
                outcome = await h.outcome()
                assert outcome.value.kind is CancelKind.PARENT_CANCELLED
                assert "stop all" in outcome.value.message
            for node in two.nodes:
                assert (await rt.status(node))["running"] == 0
            await settled(rt)

    run(main())


def test_outcome_and_close_count_as_observed(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            async with rsc.region(rt.cx()) as r:
                h = spawn_remote(r.cx, "worker-1", "boom", None)
                assert (await h.outcome()).kind is rsc.types.OutcomeKind.FAILED
            async with rsc.region(rt.cx()) as r:
                h = spawn_remote(r.cx, "worker-2", "sleep_ms", 30_000)
                assert (await h.close()).value.kind is CancelKind.USER
            await settled(rt)

    run(main())


def test_tighter_of_capability_and_region_budget_wins(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            now = rt.clock.now_ns()
            cap = rsc.RemoteCap(rt, budget=rsc.Budget(deadline_ns=now + 250_000_000))
            loose = rsc.Budget(deadline_ns=now + 60_000_000_000)
            async with rsc.region(rsc.Cx(remote_cap=cap), budget=loose) as r:
                assert r.cx.budget.deadline_ns == now + 250_000_000  # the capability's is tighter
                h = spawn_remote(r.cx, "worker-1", "sleep_ms", 10_000)
                await h.outcome()
            with pytest.raises(rsc.RemoteCancelled) as e:
                h.try_join()
            assert e.value.reason.kind is CancelKind.DEADLINE
            await settled(rt)

    run(main())
