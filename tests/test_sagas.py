"""Sagas: the original design's unit tests, ported as they stand; the async saga's
rules on local actions; and bookings over real node processes, checked on the
nodes' side (a ledger file every node writes to, naming itself)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

import rsc
from rsc import Runtime, spawn_remote
from rsc.sagas import CompensationError, Err, SagaStateError

REGISTRY = "tests.saga_registry:ledger"


# -- the original's unit tests ----------------------------------------------------------------
def test_saga_successful_completion() -> None:
    saga = rsc.Saga()
    assert saga.state is rsc.SagaState.RUNNING and saga.completed_steps == 0
    assert saga.step("create resource", lambda: "resource-1", lambda: "deleted resource-1") == "resource-1"
    assert saga.completed_steps == 1
    assert saga.step("configure", lambda: None, lambda: "reset config") is None
    assert saga.completed_steps == 2
    saga.complete()
    assert saga.state is rsc.SagaState.COMPLETED
    assert saga.compensation_results == []


def test_saga_step_failure_runs_compensations_reverse() -> None:
    order: list[int] = []
    saga = rsc.Saga()
    saga.step("step-0", lambda: None, lambda: (order.append(0), "comp-0")[1])
    saga.step("step-1", lambda: None, lambda: (order.append(1), "comp-1")[1])
    with pytest.raises(rsc.SagaStepError) as info:
        saga.step("step-2", lambda: Err("boom"), lambda: (order.append(2), "comp-2")[1])
    assert info.value.step == 2 and "boom" in info.value.message
    assert saga.state is rsc.SagaState.ABORTED
    comps = saga.compensation_results
    assert [c.step for c in comps] == [1, 0] and [c.result for c in comps] == ["comp-1", "comp-0"]
    assert order == [1, 0]


def test_saga_explicit_abort() -> None:
    compensated: list[str] = []
    saga = rsc.Saga()
    saga.step("step-0", lambda: None, lambda: (compensated.append("step-0"), "undid step-0")[1])
    saga.step("step-1", lambda: None, lambda: (compensated.append("step-1"), "undid step-1")[1])
    saga.abort()
    assert saga.state is rsc.SagaState.ABORTED
    assert [c.description for c in saga.compensation_results] == ["step-1", "step-0"]
    assert compensated == ["step-1", "step-0"]


def test_saga_first_step_failure_no_compensations() -> None:
    saga = rsc.Saga()
    with pytest.raises(rsc.SagaStepError):
        saga.step("fail-step", lambda: Err("bad"), lambda: "")
    assert saga.state is rsc.SagaState.ABORTED
    assert saga.compensation_results == []


def test_saga_state_display() -> None:
    assert [str(s) for s in rsc.SagaState] == ["Running", "Completed", "Compensating", "Aborted"]


def test_saga_step_error_display() -> None:
    err = rsc.SagaStepError(3, "deploy", "timeout")
    assert str(err) == "saga step 3 (deploy) failed: timeout"


def test_saga_debug_and_default() -> None:
    saga = rsc.Saga()
    assert "Saga" in repr(saga) and "Running" in repr(saga)
    assert saga.state is rsc.SagaState.RUNNING


# -- the sync saga's Python rules --------------------------------------------------------------
def test_a_raising_action_fails_its_step_with_its_text() -> None:
    saga = rsc.Saga()
    saga.step("a", lambda: 1, lambda: "undo a")

    def bad() -> None:
        raise ValueError("no seats")

    with pytest.raises(rsc.SagaStepError, match=r"saga step 1 \(b\) failed: ValueError: no seats") as info:
        saga.step("b", bad, lambda: "undo b")
    assert isinstance(info.value.__cause__, ValueError)
    assert [c.result for c in saga.compensation_results] == ["undo a"]


def test_only_running_sagas_step_complete_or_abort() -> None:
    saga = rsc.Saga()
    saga.complete()
    for call in (saga.complete, saga.abort, lambda: saga.step("x", lambda: 1, lambda: "")):
        with pytest.raises(SagaStateError, match="it is Completed, not Running"):
            call()
    aborted = rsc.Saga()
    aborted.abort()
    with pytest.raises(SagaStateError, match="it is Aborted"):
        aborted.complete()


def test_a_failing_compensation_does_not_stop_the_others() -> None:
    ran: list[str] = []

    def broken() -> str:
        ran.append("1")
        raise OSError("disk full")

    saga = rsc.Saga()
    saga.step("s0", lambda: None, lambda: ran.append("0") or "undid 0")
    saga.step("s1", lambda: None, broken)
    with pytest.raises(ExceptionGroup) as info:
        saga.step("s2", lambda: Err("boom"), lambda: "")
    step_error, comp_error = info.value.exceptions
    assert isinstance(step_error, rsc.SagaStepError) and step_error.step == 2
    assert isinstance(comp_error, CompensationError) and comp_error.step == 1
    assert isinstance(comp_error.__cause__, OSError)
    assert ran == ["1", "0"]
    assert [c.result for c in saga.compensation_results] == ["failed: OSError: disk full", "undid 0"]


def test_a_saga_dropped_with_undo_work_warns() -> None:
    saga = rsc.Saga(name="forgotten")
    saga.step("s0", lambda: None, lambda: "")
    with pytest.warns(RuntimeWarning, match="forgotten was dropped while Running"):
        del saga
        gc.collect()
    quiet = rsc.Saga()  # nothing recorded: nothing to undo, nothing to say
    del quiet
    gc.collect()


# -- the async saga on local actions -------------------------------------------------------------
class _Cx:
    """A real Cx with a trace that records."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.cx = rsc.Cx(trace=lambda e, f: self.events.append((e, f)))


def test_async_saga_completes_on_leaving_the_block() -> None:
    rec = _Cx()

    async def main() -> rsc.sagas.AsyncSaga:
        async with rsc.saga(rec.cx, name="trip") as s:
            async def reserve() -> str:
                await asyncio.sleep(0)
                return "seat-7"
            assert await s.step("reserve", reserve, lambda seat: f"freed {seat}") == "seat-7"
            assert await s.step("pay", lambda: 10, None) == 10
        return s

    s = asyncio.run(main())
    assert s.state is rsc.SagaState.COMPLETED and s.completed_steps == 2
    names = [e for e, _ in rec.events]
    assert names == ["saga::step_started", "saga::step_completed"] * 2 + ["saga::completed"]
    assert rec.events[0][1]["saga"] == "trip" and rec.events[2][1]["step"] == 1


def test_async_saga_body_error_compensates_with_the_step_values() -> None:
    undone: list[Any] = []

    async def main() -> None:
        async with rsc.saga(rsc.Cx()) as s:
            await s.step("a", lambda: "A", lambda v: undone.append(v))

            async def undo_b(v: str) -> str:
                await asyncio.sleep(0)
                undone.append(v)
                return "undid b"

            await s.step("b", lambda: "B", undo_b)
            raise KeyError("late")

    with pytest.raises(KeyError):
        asyncio.run(main())
    assert undone == ["B", "A"]


def test_async_failing_compensations_are_grouped_with_the_error() -> None:
    async def main() -> None:
        async with rsc.saga(rsc.Cx()) as s:
            await s.step("a", lambda: 1, lambda v: 1 / 0)
            await s.step("b", lambda: Err("sold out"), None)

    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(main())
    step_error, comp_error = info.value.exceptions
    assert isinstance(step_error, rsc.SagaStepError) and step_error.message == "sold out"
    assert isinstance(comp_error, CompensationError) and "ZeroDivisionError" in str(comp_error)


def test_a_compensation_over_its_budget_fails_and_the_rest_run() -> None:
    ran: list[str] = []

    async def main() -> None:
        async with rsc.saga(rsc.Cx(), compensation_budget_s=0.05) as s:
            await s.step("a", lambda: 1, lambda v: ran.append("a"))

            async def stuck(v: Any) -> None:
                await asyncio.sleep(10)

            await s.step("b", lambda: 2, stuck)
            raise RuntimeError("abort")

    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(main())
    assert "within its budget of 0.05 s" in str(info.value.exceptions[1])
    assert ran == ["a"]


def test_a_cancel_compensates_shielded_and_still_propagates() -> None:
    undone: list[str] = []
    started = asyncio.Event

    async def main() -> None:
        gate = started()

        async def body() -> None:
            async with rsc.saga(rsc.Cx()) as s:
                await s.step("a", lambda: "A", slow_undo)

                async def forever() -> None:
                    gate.set()
                    await asyncio.sleep(60)

                await s.step("b", forever, None)

        async def slow_undo(v: str) -> None:
            await asyncio.sleep(0.05)
            undone.append(v)

        task = asyncio.get_running_loop().create_task(body())
        await gate.wait()
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()  # a second cancel while compensating does not cut it short
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert undone == ["A"]


def test_keys_are_derived_from_saga_step_and_n() -> None:
    async def main() -> list[Any]:
        keys: list[Any] = []
        async with rsc.saga(rsc.Cx(), saga_id=b"trip-42") as s:
            await s.step("a", lambda: keys.append((s.key(), s.key(1))), None)
            await s.step("b", lambda: keys.append(s.key()), None)
        with pytest.raises(SagaStateError):
            s.key()
        return keys

    (k0, k0b), k1 = asyncio.run(main())
    again = asyncio.run(main())
    assert (k0, k0b) == again[0] and k1 == again[1]
    assert len({k0, k0b, k1}) == 3


def test_async_saga_arguments_are_checked() -> None:
    with pytest.raises(rsc.InvalidArgument, match="needs a Cx"):
        rsc.saga("cx")  # type: ignore[arg-type]
    with pytest.raises(rsc.InvalidArgument, match="compensation_budget_s"):
        rsc.saga(rsc.Cx(), compensation_budget_s=0)


# -- over real nodes ------------------------------------------------------------------------------
def _ledger(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _booking(s: Any, path: Path, node: str, item: str, **extra: Any) -> tuple[Any, Any]:
    """A step's action and compensation: book ``item`` on ``node``, unbook it there."""
    async def act() -> str:
        req = dict(path=str(path), item=item, **extra)
        return await spawn_remote(s.cx, node, "book", req, idempotency_key=s.key()).join()

    async def undo(booked: str) -> str:
        req = dict(path=str(path), item=booked)
        return await spawn_remote(s.cx, node, "unbook", req, idempotency_key=s.key(), lease=1.0,
                                  on_lease_expired=rsc.lease.retry(2, nodes=["worker-2"])).join()

    return act, undo


@pytest.fixture(scope="module")
def three(module_cluster: Any) -> Any:
    return module_cluster(3, registry=REGISTRY)


def test_three_step_booking_undone_on_the_nodes_in_reverse(three: Any, tmp_path: Path) -> None:
    path = tmp_path / "ledger.txt"

    async def main() -> None:
        async with Runtime(three.nodes) as rt:
            async with rsc.region(rt.cx()) as r:
                async with rsc.saga(r.cx, name="trip") as s:
                    await s.step("flight", *_booking(s, path, "worker-1", "flight"))
                    await s.step("hotel", *_booking(s, path, "worker-2", "hotel"))
                    await s.step("car", *_booking(s, path, "worker-3", "car", fail=True))

    with pytest.raises(ExceptionGroup) as info:  # the region's group
        asyncio.run(main())
    (err,) = info.value.exceptions
    assert isinstance(err, rsc.SagaStepError) and err.step == 2 and "no car left" in err.message
    assert _ledger(path) == ["book flight on worker-1", "book hotel on worker-2",
                             "unbook hotel on worker-2", "unbook flight on worker-1"]


def test_a_cancelled_region_still_gets_its_undo(three: Any, tmp_path: Path) -> None:
    path = tmp_path / "ledger.txt"

    async def main() -> rsc.sagas.AsyncSaga:
        async with Runtime(three.nodes) as rt:
            async with rsc.region(rt.cx()) as r:
                s = rsc.saga(r.cx)

                async def trip() -> None:
                    async with s:
                        await s.step("flight", *_booking(s, path, "worker-1", "flight"))
                        await s.step("hotel", *_booking(s, path, "worker-2", "hotel", delay_s=30))

                r.spawn(lambda cx: trip())
                while _ledger(path) != ["book flight on worker-1"] or s.completed_steps != 1:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)  # the hotel step is running on worker-2
                r.cancel()
            return s

    s = asyncio.run(main())
    assert s.state is rsc.SagaState.ABORTED
    assert _ledger(path) == ["book flight on worker-1", "unbook flight on worker-1"]


def test_a_failing_remote_compensation_is_reported_and_the_rest_run(three: Any, tmp_path: Path) -> None:
    path = tmp_path / "ledger.txt"

    async def main() -> None:
        async with Runtime(three.nodes) as rt:
            async with rsc.saga(rt.cx()) as s:
                await s.step("flight", *_booking(s, path, "worker-1", "flight"))

                async def broken_undo(booked: str) -> Any:
                    req = dict(path=str(path), item=booked, fail=True)
                    return await spawn_remote(s.cx, "worker-2", "unbook", req).join()

                await s.step("hotel", _booking(s, path, "worker-2", "hotel")[0], broken_undo)
                raise RuntimeError("traveller changed their mind")

    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(main())
    body_error, comp_error = info.value.exceptions
    assert isinstance(body_error, RuntimeError)
    assert isinstance(comp_error, CompensationError) and comp_error.step == 1
    assert isinstance(comp_error.__cause__, rsc.RemoteFailed)
    assert _ledger(path) == ["book flight on worker-1", "book hotel on worker-2",
                             "unbook flight on worker-1"]


def test_a_node_killed_during_a_compensation_is_finished_once_by_the_retry(cluster: Any,
                                                                          tmp_path: Path) -> None:
    c = cluster(2, registry=REGISTRY)
    path = tmp_path / "ledger.txt"

    async def trip(rt: Runtime) -> None:
        async with rsc.saga(rt.cx()) as s:
            async def undo(booked: str) -> str:
                req = dict(path=str(path), item=booked, stall_on="worker-1")
                h = spawn_remote(s.cx, "worker-1", "unbook", req, idempotency_key=s.key(), lease=1.0,
                                 on_lease_expired=rsc.lease.retry(1, nodes=["worker-2"]))
                return await h.join()

            await s.step("flight", _booking(s, path, "worker-1", "flight")[0], undo)
            raise RuntimeError("abort the trip")

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            task = asyncio.get_running_loop().create_task(trip(rt))
            while "unbooking flight on worker-1" not in _ledger(path):
                await asyncio.sleep(0.01)
            c.kill("worker-1")  # mid-compensation
            with pytest.raises(RuntimeError, match="abort the trip"):
                await asyncio.wait_for(task, 30)

    asyncio.run(main())
    assert _ledger(path) == ["book flight on worker-1", "unbooking flight on worker-1",
                             "unbook flight on worker-2"]


def test_the_booking_example_runs() -> None:
    import subprocess
    import sys

    from tests.cluster import REPO_ROOT

    out = subprocess.run([sys.executable, "examples/booking_saga.py"], cwd=REPO_ROOT, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-4:] == [
        "  booked flight on worker-1", "  booked hotel on worker-2",
        "  cancelled hotel-ref on worker-2", "  cancelled flight-ref on worker-1"]
