"""The origin runtime against real node processes over real Unix sockets."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

import rsc
from rsc import CancelKind, IdempotencyKey, Runtime, spawn_remote
from rsc.launch import LocalCluster


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def settled(rt: Runtime) -> None:
    """Wait (bounded) until the runtime holds nothing in flight."""
    for _ in range(200):
        if rt.debug_counts() == dict(handles=0, tasks=0, leases=0):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"runtime still holds {rt.debug_counts()}")


@pytest.fixture(scope="module")
def two(module_cluster: Any) -> LocalCluster:
    return module_cluster(2)


def test_round_trip_bytes_and_values(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            cx = rt.cx()
            h = spawn_remote(cx, "worker-1", "echo", b"hello")
            assert await h.join() == b"hello"
            assert h.state is rsc.RemoteTaskState.COMPLETED and h.is_finished()
            assert h.try_join() == b"hello"
            assert (h.node, h.computation, h.owner_region) == ("worker-1", "echo", cx.region_id)
            v = spawn_remote(cx, "worker-2", "square", 12)
            assert await v.join() == 144
            inline = [spawn_remote(cx, "worker-1", "square_inline", i) for i in range(50)]
            got = [await h.join() for h in inline]
            assert [g[0] for g in got] == [i * i for i in range(50)]
            assert {g[1] for g in got} == {"MainThread"}  # on the node's loop thread, not its pool
            await settled(rt)

    run(main())


def test_a_settled_handle_is_freed_without_the_cycle_collector(two: LocalCluster) -> None:
    """A handle and its task record form no reference cycle once settled, so
    letting go of the handle frees both at once (bursts of spawns would
    otherwise leave all their handles to the cycle collector)."""
    import gc
    import weakref

    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            cx = rt.cx()
            hs = [spawn_remote(cx, "worker-1", "echo", b"x") for _ in range(20)]
            for h in hs:
                assert await h.join() == b"x"
            refs = [weakref.ref(h) for h in hs]  # a cycle through its task would keep each alive
            gc.disable()
            try:
                del h, hs
                assert [r for r in refs if r() is not None] == []
            finally:
                gc.enable()
            await settled(rt)

    run(main())


def test_a_cancelled_join_leaves_the_task_running(two: LocalCluster) -> None:
    """join() is cancellable (wait_for, task.cancel) without cancelling the
    remote task; later and concurrent joins still get its one outcome."""
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", 300)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(h.join(), 0.05)
            waiter = asyncio.ensure_future(h.join())
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert not h.is_finished() and h.state is not rsc.RemoteTaskState.CANCELLED
            assert h._waiters == []  # cancelled waits leave nothing behind
            a, b = await asyncio.gather(h.join(), h.outcome())
            assert a == 300 and b.is_success and h._waiters is None
            await settled(rt)

    run(main())


def test_ten_thousand_tasks_over_four_nodes(cluster: Any) -> None:
    c = cluster(4)
    names = sorted(c.nodes)

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            hs = [spawn_remote(cx, names[i % 4], "square", i) for i in range(10_000)]
            got = await asyncio.gather(*(h.join() for h in hs))
            assert got == [i * i for i in range(10_000)]
            keys = {h.idempotency_key.to_bytes() for h in hs}  # drawn 256 at a time: all distinct
            assert len(keys) == 10_000 and {len(k) for k in keys} == {16}
            for name in names:
                st = await rt.status(name)
                assert st["completed"] == 2_500 and st["running"] == 0
            await settled(rt)

    run(main())


def test_each_reject_reason_reaches_the_caller_typed(cluster: Any, tmp_path: Path) -> None:
    c = cluster(1, capacity=1, extra_args=["--max-input-bytes", "1000"])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            with pytest.raises(rsc.UnknownComputation) as e:
                await spawn_remote(cx, "worker-1", "nope", b"").join()
            assert e.value.code == 1 and e.value.reason == "unknown_computation"
            with pytest.raises(rsc.InvalidInput):
                await spawn_remote(cx, "worker-1", "positive", -5).join()
            with pytest.raises(rsc.InvalidInput, match="at most 1000"):
                await spawn_remote(cx, "worker-1", "echo", b"x" * 5000).join()
            key = IdempotencyKey.generate(cx.entropy)
            first = spawn_remote(cx, "worker-1", "sleep_ms", 400, idempotency_key=key)
            with pytest.raises(rsc.IdempotencyConflict):
                await spawn_remote(cx, "worker-1", "sleep_ms", 401, idempotency_key=key).join()
            with pytest.raises(rsc.CapacityExceeded):
                await spawn_remote(cx, "worker-1", "echo", b"more").join()
            assert await first.join() == 400
            await settled(rt)

    run(main())


def test_no_capability_and_bad_arguments(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            with pytest.raises(rsc.NoCapability):
                spawn_remote(rsc.Cx(), "worker-1", "echo", b"")
            with pytest.raises(rsc.InvalidArgument, match="not in this runtime's cluster"):
                spawn_remote(rt.cx(), "worker-9", "echo", b"")
            with pytest.raises(rsc.InvalidArgument, match="lease"):
                spawn_remote(rt.cx(), "worker-1", "echo", b"", lease=0)
            with pytest.raises(rsc.InvalidArgument):
                spawn_remote(rt.cx(), "worker-1", "", b"")
            with pytest.raises(rsc.InvalidArgument, match="needs a Cx"):
                spawn_remote(None, "worker-1", "echo", b"")  # type: ignore[arg-type]
            with pytest.raises(rsc.InvalidArgument, match="needs a Cx"):
                rt.spawn("cx", "worker-1", "echo", b"")  # type: ignore[arg-type]
            with pytest.raises(rsc.NoCapability):
                rt.spawn(rsc.Cx(), "worker-1", "echo", b"")
            with pytest.raises(rsc.InvalidArgument, match="not an rsc.Runtime"):
                spawn_remote(rsc.Cx(remote_cap=rsc.RemoteCap(object())), "worker-1", "echo", b"")  # type: ignore[arg-type]
            with pytest.raises(rsc.InvalidArgument, match="remote_cap must be an rsc.cx.RemoteCap"):
                spawn_remote(rsc.Cx(remote_cap=object()), "worker-1", "echo", b"")  # type: ignore[arg-type]
            assert rt.live_handles == 0  # nothing was half-made by the refusals

    run(main())


def test_unreachable_node_fails_with_node_unreachable(tmp_path: Path) -> None:
    async def main() -> None:
        async with Runtime({"ghost": f"unix:{tmp_path}/none.sock"}, connect_timeout_s=0.3) as rt:
            with pytest.raises(rsc.NodeUnreachable):
                await asyncio.wait_for(spawn_remote(rt.cx(), "ghost", "echo", b"").join(), 10)
            await settled(rt)

    run(main())


@pytest.mark.parametrize("computation", ["observe_async", "observe_sync"])
def test_cancel_while_running_is_observed(two: LocalCluster, tmp_path: Path, computation: str) -> None:
    marks = tmp_path / "marks"

    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-1", computation, {"path": str(marks), "seconds": 30})
            for _ in range(500):
                if lines(marks):
                    break
                await asyncio.sleep(0.01)
            assert lines(marks) == ["started"]
            outcome = await h.close()
            assert outcome.kind is rsc.RemoteOutcome.cancelled(rsc.CancelReason.user()).kind
            assert outcome.value.kind is CancelKind.USER
            with pytest.raises(rsc.RemoteCancelled):
                await h.join()
            assert h.state is rsc.RemoteTaskState.CANCELLED
            await settled(rt)

    run(main())
    assert lines(marks) == ["started", "cancelled"]


def test_cancel_before_ack_runs_nothing(two: LocalCluster, tmp_path: Path) -> None:
    path = tmp_path / "ran"

    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-2", "count", {"path": str(path), "token": "x"})
            h.abort()  # same loop turn: nothing has been written yet
            with pytest.raises(rsc.RemoteCancelled):
                await h.join()
            await settled(rt)

    run(main())
    assert lines(path) == []


def test_connection_cut_mid_task_result_arrives_once(two: LocalCluster, tmp_path: Path) -> None:
    path = tmp_path / "ran"

    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            cx = rt.cx()
            slow = spawn_remote(cx, "worker-1", "sleep_ms", 600)
            once = spawn_remote(cx, "worker-1", "count", {"path": str(path), "token": "t"})
            while slow.state is not rsc.RemoteTaskState.RUNNING:
                await asyncio.sleep(0.005)
            link = rt._links["worker-1"]
            link.conn.abort()  # kill the socket, not the node
            assert await slow.join() == 600
            assert await once.join() == "t"
            assert link.conn is not None  # reconnected
            await settled(rt)

    run(main())
    assert lines(path) == ["t"]


def test_failed_panicked_and_huge_results(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            cx = rt.cx()
            with pytest.raises(rsc.RemoteFailed, match="ValueError: boom"):
                await spawn_remote(cx, "worker-1", "boom", None).join()
            with pytest.raises(rsc.RemotePanicked):
                await spawn_remote(cx, "worker-1", "crash", None).join()
            n = 20 * 1024 * 1024
            data = await spawn_remote(cx, "worker-2", "big", n).join()
            assert len(data) == n and data[:3] == b"\x00\x01\x02" and data[-1] == (n - 1) % 256
            assert await spawn_remote(cx, "worker-1", "echo", b"still alive").join() == b"still alive"
            await settled(rt)

    run(main())


def test_sigterm_drains_then_cancels_with_reason_shutdown(cluster: Any) -> None:
    c = cluster(1, grace=1.0)

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            short = spawn_remote(cx, "worker-1", "sleep_ms", 300)
            long = spawn_remote(cx, "worker-1", "sleep_ms", 60_000)
            while long.state is not rsc.RemoteTaskState.RUNNING:
                await asyncio.sleep(0.005)
            os.kill(c.pids["worker-1"], signal.SIGTERM)
            await asyncio.sleep(0.1)
            with pytest.raises(rsc.NodeShuttingDown):
                await spawn_remote(cx, "worker-1", "echo", b"late").join()
            assert await short.join() == 300
            with pytest.raises(rsc.RemoteCancelled) as e:
                await long.join()
            assert e.value.reason.kind is CancelKind.SHUTDOWN

    run(main())
    assert c.procs["worker-1"].wait(10) == 0


def test_spawn_to_a_node_that_died_fails_unreachable_not_lost(cluster: Any) -> None:
    c = cluster(1)

    async def main() -> None:
        async with Runtime(c.nodes, connect_timeout_s=0.5) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "echo", b"up").join() == b"up"
            c.kill("worker-1", signal.SIGKILL)
            c.procs["worker-1"].wait(5)
            await asyncio.sleep(0.3)  # let the runtime see the connection close (else the
            # spawn is written into the dying socket, and only its lease can tell)
            with pytest.raises(rsc.NodeUnreachable):
                await asyncio.wait_for(spawn_remote(cx, "worker-1", "echo", b"late").join(), 15)
            await settled(rt)

    run(main())


def test_closing_the_runtime_settles_what_never_answered(tmp_path: Path) -> None:
    async def main() -> None:
        rt = Runtime({"ghost": f"unix:{tmp_path}/none.sock"}, connect_timeout_s=30)
        await rt.start()
        h = spawn_remote(rt.cx(), "ghost", "echo", b"")
        await rt.aclose(cancel_timeout_s=0.2)
        with pytest.raises(rsc.RuntimeClosed):
            await h.join()
        with pytest.raises(rsc.InvalidArgument, match="closed"):
            spawn_remote(rt.cx(), "ghost", "echo", b"")

    run(main())
