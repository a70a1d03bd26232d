"""The node's executor: outcomes, cancellation, threads, shutdown.

Plain test functions drive their own loop with ``run`` (pytest-asyncio is not
used). Every scenario is bounded: ``run`` gives up after 5 s.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import msgpack
import pytest

from rsc._engine.node import new_node_task
from rsc.cx import Cx
from rsc.errors import Cancelled, InvalidArgument
from rsc.node.executor import EAGER_TASKS, CancelInterrupt, Executor, TaskReporter
from rsc.registry import Computation
from rsc.types import CancelKind, CancelReason

SUCCESS, FAILED, CANCELLED, PANICKED = 0, 1, 2, 3
USER = CancelReason(CancelKind.USER, "stop please")


def run(coro: Awaitable[Any], timeout: float = 5.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Results:
    """An on_done that records every call and checks it runs on the loop thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[Hashable, int, Any, int]] = []
        self.loop_thread = threading.get_ident()  # asyncio.run runs the loop here

    def __call__(self, key: Hashable, kind: int, payload: Any, elapsed_ns: int) -> None:
        assert threading.get_ident() == self.loop_thread, "on_done must run on the loop thread"
        assert isinstance(elapsed_ns, int) and elapsed_ns >= 0
        self.calls.append((key, kind, payload, elapsed_ns))

    def get(self, key: Hashable) -> tuple[int, Any]:
        found = [(k, p) for (kk, k, p, _) in self.calls if kk == key]
        assert len(found) == 1, f"on_done called {len(found)} times for {key!r}"
        return found[0]

    async def wait(self, *keys: Hashable, timeout: float = 4.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(any(c[0] == k for c in self.calls) for k in keys):
            assert time.monotonic() < deadline, f"no outcome for {keys!r} in {timeout}s"
            await asyncio.sleep(0.005)


def comp(fn: Callable[..., Any], codec: str | None = None) -> Computation:
    return Computation(getattr(fn, "__name__", "c"), fn, codec=codec)


async def one(fn: Callable[..., Any], data: bytes = b"", *, codec: str | None = None,
              ex: Executor | None = None) -> tuple[int, Any]:
    """Run one computation to its outcome on a fresh executor."""
    ex = ex or Executor(max_threads=2)
    res = Results()
    ex.start("k", comp(fn, codec), data, Cx(), res)
    await res.wait("k")
    await ex.aclose(1.0)
    assert ex.running == 0 and ex.live_tasks == 0
    return res.get("k")


def assert_clean(ex: Executor) -> None:
    assert ex.running == 0
    assert ex.live_tasks == 0


class Reporter(TaskReporter):
    """An on_done that is a TaskReporter: called with the task's record."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, int, Any, int]] = []

    def _on_done(self, task: Any, kind: int, payload: Any, exec_ns: int) -> None:
        assert isinstance(exec_ns, int) and exec_ns >= 0
        self.calls.append((task, kind, payload, exec_ns))


def test_a_task_reporter_gets_each_record_and_its_outcome() -> None:
    """An on_done that is a TaskReporter has its _on_done called once per task,
    with the record the task was started under (its key in ``ekey``) and the
    outcome a plain on_done would get, for every way a computation runs."""
    async def slow(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return data + b"!"

    async def at_once(cx: Cx, data: bytes) -> bytes:
        return data

    def fails(cx: Cx, data: bytes) -> bytes:
        raise ValueError("no")

    def inline(cx: Cx, data: bytes) -> bytes:
        return data * 2

    async def main() -> Reporter:
        ex = Executor(max_threads=2)
        rep = Reporter()
        ex.start("slow", comp(slow), b"s", Cx(), rep)
        ex.start("at_once", comp(at_once), b"a", Cx(), rep)
        ex.start("fails", comp(fails), b"f", Cx(), rep)
        ex.start("inline", Computation("inline", inline, inline=True), b"i", Cx(), rep)
        deadline = time.monotonic() + 4
        while len(rep.calls) < 4:
            assert time.monotonic() < deadline, rep.calls
            await asyncio.sleep(0.005)
        await ex.aclose(1.0)
        assert_clean(ex)
        return rep

    rep = run(main())
    got = {task.ekey: (kind, payload) for task, kind, payload, _ in rep.calls}
    assert got == {"slow": (SUCCESS, b"s!"), "at_once": (SUCCESS, b"a"),
                   "fails": (FAILED, "ValueError: no"), "inline": (SUCCESS, b"ii")}
    assert len(rep.calls) == 4


# -- async computations --------------------------------------------------------------


def test_async_success() -> None:
    async def upper(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(0)
        return data.upper()

    assert run(one(upper, b"abc")) == (SUCCESS, b"ABC")


def test_async_exception_is_failed_with_message() -> None:
    async def bad(cx: Cx, data: bytes) -> bytes:
        raise ValueError("block 7 is corrupt")

    assert run(one(bad)) == (FAILED, "ValueError: block 7 is corrupt")


async def crash_then_ok(crash: Any, ok: Any) -> Results:
    """Run ``crash`` then ``ok`` on one single-thread executor, close it, and
    check it is clean: whatever the first did, the second still runs."""
    ex = Executor(max_threads=1)
    res = Results()
    ex.start("crash", comp(crash), b"", Cx(), res)
    await res.wait("crash")
    ex.start("ok", comp(ok), b"", Cx(), res)
    await res.wait("ok")
    await ex.aclose(1.0)
    assert_clean(ex)
    return res


@pytest.mark.parametrize("exc", [KeyboardInterrupt("ctrl-c"), SystemExit(3), GeneratorExit()])
def test_async_base_exception_is_panicked_and_node_survives(exc: BaseException) -> None:
    async def crash(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(0)
        raise exc

    async def ok(cx: Cx, data: bytes) -> bytes:
        return b"still here"

    res = run(crash_then_ok(crash, ok))
    kind, msg = res.get("crash")
    assert kind == PANICKED and msg.startswith(type(exc).__name__)
    assert res.get("ok") == (SUCCESS, b"still here")


def test_async_cancelled_while_awaiting() -> None:
    seen: list[str] = []

    async def slow(cx: Cx, data: bytes) -> bytes:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(f"CancelledError cx.cancelled={cx.cancelled}")
            raise
        return b"never"

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("k", comp(slow), b"", Cx(), res)
        await asyncio.sleep(0.02)
        assert ex.is_running("k")
        assert ex.cancel("k", USER) is True
        await res.wait("k")
        assert res.get("k") == (CANCELLED, USER)
        assert not ex.is_running("k")
        assert ex.cancel("k", USER) is False  # already finished
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())
    assert seen == ["CancelledError cx.cancelled=True"]


def test_async_cancel_observed_by_checkpoint() -> None:
    async def polls(cx: Cx, data: bytes) -> bytes:
        while True:
            try:
                await asyncio.sleep(0.005)
            except asyncio.CancelledError:
                pass  # rely on the checkpoint instead
            cx.checkpoint()

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("k", comp(polls), b"", Cx(), res)
        await asyncio.sleep(0.02)
        ex.cancel("k", USER)
        await res.wait("k")
        assert res.get("k") == (CANCELLED, USER)
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_async_swallowing_cancel_delivers_real_outcome() -> None:
    async def stubborn(cx: Cx, data: bytes) -> bytes:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return b"finished anyway"
        return b"never"

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("k", comp(stubborn), b"", Cx(), res)
        await asyncio.sleep(0.02)
        assert ex.cancel("k", USER)
        await res.wait("k")
        assert res.get("k") == (SUCCESS, b"finished anyway")
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_async_cancel_before_first_step_never_runs_it() -> None:
    ran: list[bool] = []

    async def f(cx: Cx, data: bytes) -> bytes:
        ran.append(True)
        return b""

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("k", comp(f), b"", Cx(), res)
        assert res.calls == []  # on_done is never called from inside start()
        ex.cancel("k", USER)
        await res.wait("k")
        assert res.get("k") == (CANCELLED, USER)
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())
    assert ran == []


def test_cx_already_cancelled_at_start() -> None:
    async def f(cx: Cx, data: bytes) -> bytes:
        return b"ran"

    def g(cx: Cx, data: bytes) -> bytes:
        return b"ran"

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        for key, fn in (("a", f), ("s", g)):
            cx = Cx()
            cx.cancel(CancelReason(CancelKind.DEADLINE))
            ex.start(key, comp(fn), b"", cx, res)
        await res.wait("a", "s")
        await ex.aclose(1.0)
        assert res.get("a") == (CANCELLED, CancelReason(CancelKind.DEADLINE))
        assert res.get("s") == (CANCELLED, CancelReason(CancelKind.DEADLINE))
        assert_clean(ex)

    run(main())


def test_cancelled_error_without_cancel_is_panicked() -> None:
    """Decision pinned: a CancelledError nobody asked for is Panicked, not
    Cancelled (there is no cancel reason to report) and not Failed (it is a
    BaseException other than this task's cancellation)."""

    async def awaits_cancelled_inner(cx: Cx, data: bytes) -> bytes:
        inner = asyncio.get_running_loop().create_future()
        inner.cancel()
        await inner
        return b"never"

    kind, msg = run(one(awaits_cancelled_inner))
    assert kind == PANICKED
    assert "CancelledError without a cancel having been requested" in msg


def test_rsc_cancelled_without_cancel_is_panicked() -> None:
    async def own_child(cx: Cx, data: bytes) -> bytes:
        child = cx.child()
        child.cancel()
        child.checkpoint()
        return b"never"

    def own_child_sync(cx: Cx, data: bytes) -> bytes:
        raise Cancelled(USER)

    for fn in (own_child, own_child_sync):
        kind, msg = run(one(fn))
        assert kind == PANICKED
        assert "Cancelled without a cancel having been requested" in msg


def test_async_output_must_encode() -> None:
    async def text(cx: Cx, data: bytes) -> str:
        return "not bytes"

    kind, msg = run(one(text))
    assert kind == FAILED and msg.startswith("SerializationError:") and "codec='msgpack'" in msg


def test_msgpack_codec_through_executor() -> None:
    async def total(cx: Cx, values: list[int]) -> dict[str, int]:
        return {"sum": sum(values)}

    def unencodable(cx: Cx, values: Any) -> object:
        return object()

    kind, out = run(one(total, msgpack.packb([1, 2, 3]), codec="msgpack"))
    assert kind == SUCCESS and msgpack.unpackb(out) == {"sum": 6}
    kind, msg = run(one(total, b"\xc1", codec="msgpack"))
    assert kind == FAILED and msg.startswith("SerializationError: cannot unpack")
    kind, msg = run(one(unencodable, msgpack.packb(1), codec="msgpack"))
    assert kind == FAILED and "cannot pack" in msg


# -- sync computations --------------------------------------------------------------


def test_sync_success_runs_in_a_pool_thread() -> None:
    threads: list[str] = []

    def f(cx: Cx, data: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return data[::-1]

    assert run(one(f, b"abc")) == (SUCCESS, b"cba")
    assert threads[0].startswith("rsc-computation")


def test_sync_exception_is_failed() -> None:
    def bad(cx: Cx, data: bytes) -> bytes:
        raise KeyError("missing")

    assert run(one(bad)) == (FAILED, "KeyError: 'missing'")


def test_sync_base_exception_is_panicked_and_pool_survives() -> None:
    def crash(cx: Cx, data: bytes) -> bytes:
        raise SystemExit("worker exit")

    def ok(cx: Cx, data: bytes) -> bytes:
        return b"ok"

    res = run(crash_then_ok(crash, ok))
    assert res.get("crash") == (PANICKED, "SystemExit: worker exit")
    assert res.get("ok") == (SUCCESS, b"ok")


def test_sync_returning_a_coroutine_fails_clearly() -> None:
    async def inner() -> bytes:
        return b""

    def wrong(cx: Cx, data: bytes) -> Any:
        return inner()

    kind, msg = run(one(wrong))
    assert kind == FAILED and "define it with async def" in msg


# -- inline computations (plain functions called on the loop thread) ------------------


def inline(fn: Callable[..., Any], codec: str | None = None) -> Computation:
    return Computation(getattr(fn, "__name__", "c"), fn, codec=codec, inline=True)


def test_inline_runs_on_the_loop_thread_at_the_next_turn() -> None:
    threads: list[int] = []

    def f(cx: Cx, data: bytes) -> bytes:
        threads.append(threading.get_ident())
        return data[::-1]

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("k", inline(f), b"abc", Cx(), res)
        assert res.calls == [] and threads == []  # neither run nor reported inside start()
        assert ex.running == 1 and ex.live_tasks == 1
        await asyncio.sleep(0)
        assert res.get("k") == (SUCCESS, b"cba")
        assert threads == [res.loop_thread]
        assert ex._pool is None  # no thread pool was made for it
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_inline_outcomes_and_codec() -> None:
    def bad(cx: Cx, data: bytes) -> bytes:
        raise KeyError("missing")

    def crash(cx: Cx, data: bytes) -> bytes:
        raise SystemExit("no")

    def wrong(cx: Cx, data: bytes) -> Any:
        async def inner() -> bytes:
            return b""
        return inner()

    def not_bytes(cx: Cx, data: bytes) -> Any:
        return 5

    def add(cx: Cx, req: dict) -> int:
        return req["a"] + req["b"]

    def stops(cx: Cx, data: bytes) -> bytes:
        raise Cancelled(USER)  # a Cancelled nobody asked for: Panicked, as for the others

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("bad", inline(bad), b"", Cx(), res)
        ex.start("crash", inline(crash), b"", Cx(), res)
        ex.start("wrong", inline(wrong), b"", Cx(), res)
        ex.start("not_bytes", inline(not_bytes), b"", Cx(), res)
        ex.start("add", inline(add, "msgpack"), msgpack.packb({"a": 2, "b": 3}), Cx(), res)
        ex.start("stops", inline(stops), b"", Cx(), res)
        await res.wait("bad", "crash", "wrong", "not_bytes", "add", "stops")
        await ex.aclose(1.0)
        assert_clean(ex)
        assert res.get("bad") == (FAILED, "KeyError: 'missing'")
        assert res.get("crash") == (PANICKED, "SystemExit: no")
        kind, msg = res.get("wrong")
        assert kind == FAILED and "registered as inline but returned an awaitable" in msg
        kind, msg = res.get("not_bytes")
        assert kind == FAILED and "SerializationError" in msg
        assert res.get("add") == (SUCCESS, msgpack.packb(5))
        assert res.get("stops")[0] == PANICKED

    run(main())


def test_inline_cancel_before_it_runs_never_runs_it_and_a_running_one_finishes() -> None:
    ran: list[str] = []

    def f(cx: Cx, data: bytes) -> bytes:
        ran.append(data.decode())
        return data

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("early", inline(f), b"early", Cx(), res)
        assert ex.cancel("early", USER)  # before its turn: it never runs
        cx = Cx()
        cx.cancel(CancelReason(CancelKind.DEADLINE))
        ex.start("pre", inline(f), b"pre", cx, res)  # cancelled before start
        # a cancel asked for while it runs (by itself) is a request: the real outcome wins
        def self_cancel(cx: Cx, data: bytes) -> bytes:
            ex.cancel("self", USER)
            return b"done anyway"
        ex.start("self", inline(self_cancel), b"", Cx(), res)
        await res.wait("early", "pre", "self")
        assert res.get("early") == (CANCELLED, USER)
        assert res.get("pre") == (CANCELLED, CancelReason(CancelKind.DEADLINE))
        assert res.get("self") == (SUCCESS, b"done anyway")
        assert ran == []
        assert not ex.cancel("self", USER)  # finished: nothing to cancel
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_inline_must_be_a_plain_function() -> None:
    async def f(cx: Cx, data: bytes) -> bytes:
        return data

    with pytest.raises(InvalidArgument, match="drop inline=True"):
        Computation("f", f, inline=True)
    with pytest.raises(InvalidArgument, match="inline must be True or False"):
        Computation("g", lambda cx, d: d, inline=1)  # type: ignore[arg-type]


def test_sync_cancel_observed_by_checkpoint() -> None:
    seen: list[CancelReason] = []

    def loop(cx: Cx, data: bytes) -> bytes:
        while True:
            try:
                cx.checkpoint()
            except Cancelled as exc:
                seen.append(exc.reason)
                raise
            time.sleep(0.005)

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("k", comp(loop), b"", Cx(), res)
        await asyncio.sleep(0.03)
        assert ex.cancel("k", USER)
        await res.wait("k")
        assert res.get("k") == (CANCELLED, USER)
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())
    assert seen == [USER]


def test_sync_wait_cancelled_wakes_and_real_outcome_wins() -> None:
    def sleeper(cx: Cx, data: bytes) -> bytes:
        if cx.wait_cancelled(30):
            return b"woke early"
        return b"slept"

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("k", comp(sleeper), b"", Cx(), res)
        await asyncio.sleep(0.03)
        ex.cancel("k", USER)
        await res.wait("k")
        assert res.get("k") == (SUCCESS, b"woke early")
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_sync_ignoring_cancel_is_interrupted_after_grace() -> None:
    state: dict[str, Any] = {"returned": False, "saw": None}

    def busy(cx: Cx, data: bytes) -> bytes:
        x = 0
        try:
            while True:  # pure Python, never checks the Cx
                x += 1
        except Cancelled as exc:
            state["saw"] = exc
            raise
        finally:
            state["returned"] = True

    async def main() -> None:
        ex = Executor(max_threads=1, cancel_grace_s=0.2)
        assert ex.cancel_grace_s == 0.2
        res = Results()

        def on_done(key: Hashable, kind: int, payload: Any, t: int) -> None:
            # never reported while the computation is still running
            assert state["returned"] is True
            res(key, kind, payload, t)

        reason = CancelReason(CancelKind.LEASE_EXPIRED, "lease lapsed")
        ex.start("k", comp(busy), b"", Cx(), on_done)
        await asyncio.sleep(0.05)
        assert ex.cancel("k", reason)
        await asyncio.sleep(0.05)
        assert ex.is_running("k") and res.calls == []  # still inside the grace
        await res.wait("k")
        assert res.get("k") == (CANCELLED, reason)
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())
    assert isinstance(state["saw"], CancelInterrupt)
    assert isinstance(state["saw"], Cancelled)
    assert state["saw"].reason == CancelReason(CancelKind.LEASE_EXPIRED, "lease lapsed")


def test_interrupted_worker_thread_is_reused_cleanly() -> None:
    """After an interrupt the pool's single thread still runs later tasks."""

    def busy(cx: Cx, data: bytes) -> bytes:
        while True:
            pass

    def ok(cx: Cx, data: bytes) -> bytes:
        s = 0
        for i in range(200_000):  # pure Python work: a stray interrupt would land here
            s += i
        return str(s).encode()

    async def main() -> None:
        ex = Executor(max_threads=1, cancel_grace_s=0.05)
        res = Results()
        ex.start("busy", comp(busy), b"", Cx(), res)
        await asyncio.sleep(0.02)
        ex.cancel("busy", USER)
        await res.wait("busy")
        for i in range(3):
            ex.start(i, comp(ok), b"", Cx(), res)
        await res.wait(0, 1, 2)
        await ex.aclose(1.0)
        assert res.get("busy") == (CANCELLED, USER)
        for i in range(3):
            assert res.get(i) == (SUCCESS, str(sum(range(200_000))).encode())
        assert_clean(ex)

    run(main())


def test_loop_stays_responsive_while_sync_blocks() -> None:
    def blocking(cx: Cx, data: bytes) -> bytes:
        time.sleep(0.4)
        return b"done"

    async def main() -> int:
        ex = Executor(max_threads=1)
        res = Results()
        ticks = 0
        ex.start("k", comp(blocking), b"", Cx(), res)
        while not res.calls:
            ticks += 1
            await asyncio.sleep(0.01)
        await ex.aclose(1.0)
        assert res.get("k") == (SUCCESS, b"done")
        assert_clean(ex)
        return ticks

    assert run(main()) >= 5


def test_thread_pool_capacity_is_respected() -> None:
    lock = threading.Lock()
    now = 0
    peak = 0

    def work(cx: Cx, data: bytes) -> bytes:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.1)
        with lock:
            now -= 1
        return data

    async def main() -> None:
        ex = Executor(max_threads=2)
        res = Results()
        for i in range(4):
            ex.start(i, comp(work), bytes([i]), Cx(), res)
        assert ex.running == 4 and ex.live_tasks == 4
        await res.wait(0, 1, 2, 3)
        await ex.aclose(1.0)
        for i in range(4):
            assert res.get(i) == (SUCCESS, bytes([i]))
        assert_clean(ex)

    run(main())
    assert peak == 2


def test_queued_sync_task_cancelled_without_running() -> None:
    release = threading.Event()
    ran: list[str] = []

    def hold(cx: Cx, data: bytes) -> bytes:
        release.wait(4)
        return b"held"

    def queued(cx: Cx, data: bytes) -> bytes:
        ran.append("queued")
        return b""

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("hold", comp(hold), b"", Cx(), res)
        ex.start("queued", comp(queued), b"", Cx(), res)
        await asyncio.sleep(0.02)
        assert ex.cancel("queued", USER)
        await res.wait("queued")  # reported while "hold" still occupies the only thread
        assert ex.is_running("hold")
        release.set()
        await res.wait("hold")
        await ex.aclose(1.0)
        assert res.get("queued") == (CANCELLED, USER)
        assert res.get("hold") == (SUCCESS, b"held")
        assert_clean(ex)

    try:
        run(main())
    finally:
        release.set()
    assert ran == []


# -- shutdown -------------------------------------------------------------------------


def test_aclose_lets_short_tasks_finish_and_cancels_long_ones() -> None:
    async def short_async(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(0.05)
        return b"short async"

    def short_sync(cx: Cx, data: bytes) -> bytes:
        time.sleep(0.05)
        return b"short sync"

    async def long_async(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(30)
        return b"never"

    def long_sync(cx: Cx, data: bytes) -> bytes:
        while True:
            cx.checkpoint()
            cx.wait_cancelled(0.05)

    async def main() -> None:
        ex = Executor(max_threads=4)
        res = Results()
        for fn in (short_async, short_sync, long_async, long_sync):
            ex.start(fn.__name__, comp(fn), b"", Cx(), res)
        await ex.aclose(0.3)
        assert len(res.calls) == 4  # every task reported before aclose returned
        assert res.get("short_async") == (SUCCESS, b"short async")
        assert res.get("short_sync") == (SUCCESS, b"short sync")
        for key in ("long_async", "long_sync"):
            kind, reason = res.get(key)
            assert kind == CANCELLED and reason.kind is CancelKind.SHUTDOWN
        assert_clean(ex)
        with pytest.raises(RuntimeError, match="closing"):
            ex.start("late", comp(short_async), b"", Cx(), res)
        await ex.aclose(0.3)  # idempotent

    run(main())


def test_aclose_with_nothing_running() -> None:
    async def main() -> None:
        ex = Executor(max_threads=1)
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_aclose_abandons_a_task_stuck_outside_python() -> None:
    release = threading.Event()

    def stuck(cx: Cx, data: bytes) -> bytes:
        release.wait(4)  # a blocking C call: the interrupt cannot land inside it
        return b"late"

    async def main() -> None:
        ex = Executor(max_threads=1, cancel_grace_s=0.05)
        res = Results()
        ex.start("k", comp(stuck), b"", Cx(), res)
        await ex.aclose(0.05, abandon_after_s=0.2)
        kind, msg = res.get("k")
        assert kind == PANICKED and "abandoned at shutdown" in msg
        assert_clean(ex)
        release.set()
        await asyncio.sleep(0.05)  # the thread returns later; nothing is reported twice
        assert len(res.calls) == 1

    try:
        run(main())
    finally:
        release.set()


# -- bookkeeping ----------------------------------------------------------------------


def test_on_done_exactly_once_per_task_under_a_mix() -> None:
    async def a_ok(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(0.001 * data[0])
        return data

    async def a_fail(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(0.001 * data[0])
        raise RuntimeError("nope")

    async def a_slow(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(10)
        return data

    def s_ok(cx: Cx, data: bytes) -> bytes:
        time.sleep(0.001 * data[0])
        return data

    def s_slow(cx: Cx, data: bytes) -> bytes:
        while not cx.wait_cancelled(0.01):
            pass
        cx.checkpoint()
        return data

    fns = [a_ok, a_fail, a_slow, s_ok, s_slow]

    async def main() -> None:
        ex = Executor(max_threads=3, cancel_grace_s=0.5)
        res = Results()
        keys = []
        for i in range(60):
            fn = fns[i % len(fns)]
            ex.start(i, comp(fn), bytes([i % 7]), Cx(), res)
            keys.append(i)
            if i % 4 == 0:
                await asyncio.sleep(0)
            if i % 9 == 0:
                ex.cancel(i, USER)
        await asyncio.sleep(0.05)
        for i in keys:
            if fns[i % len(fns)] in (a_slow, s_slow):
                ex.cancel(i, USER)
        await res.wait(*keys)
        await ex.aclose(1.0)
        counts = collections.Counter(c[0] for c in res.calls)
        assert counts == {k: 1 for k in keys}
        assert_clean(ex)

    run(main())


def test_on_done_error_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def f(cx: Cx, data: bytes) -> bytes:
        return b"x"

    def g(cx: Cx, data: bytes) -> bytes:
        return b"y"

    async def main() -> None:
        ex = Executor(max_threads=1)
        calls = []

        def bad_on_done(*args: Any) -> None:
            calls.append(args[0])
            raise RuntimeError("bookkeeping bug")

        ex.start("a", comp(f), b"", Cx(), bad_on_done)
        ex.start("s", comp(g), b"", Cx(), bad_on_done)
        deadline = time.monotonic() + 4
        while len(calls) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        res = Results()
        ex.start("after", comp(f), b"", Cx(), res)
        await res.wait("after")
        await ex.aclose(1.0)
        assert sorted(calls) == ["a", "s"]
        assert_clean(ex)

    with caplog.at_level(logging.ERROR, logger="rsc.node.executor"):
        run(main())
    assert sum("bookkeeping bug" in r.getMessage() or (r.exc_info and "bookkeeping bug" in str(r.exc_info[1]))
               for r in caplog.records) == 2


def test_huge_output() -> None:
    big = b"\xab" * (10 * 1024 * 1024)

    async def a(cx: Cx, data: bytes) -> bytes:
        return big

    def s(cx: Cx, data: bytes) -> bytearray:
        return bytearray(big)

    for fn in (a, s):
        kind, out = run(one(fn))
        assert kind == SUCCESS and len(out) == len(big) and out == big


def test_execution_time_uses_the_injected_clock() -> None:
    readings = iter([1_000, 251_000])

    async def f(cx: Cx, data: bytes) -> bytes:
        return b""

    async def main() -> None:
        ex = Executor(max_threads=1, clock_ns=lambda: next(readings))
        res = Results()
        ex.start("k", comp(f), b"", Cx(), res)
        await res.wait("k")
        await ex.aclose(1.0)
        assert res.calls == [("k", SUCCESS, b"", 250_000)]

    run(main())


def test_start_errors() -> None:
    async def f(cx: Cx, data: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return b""

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        ex.start("k", comp(f), b"", Cx(), res)
        with pytest.raises(InvalidArgument, match="already running"):
            ex.start("k", comp(f), b"", Cx(), res)
        # a node's own record as the key: started twice, it is refused too,
        # and the running one is left as it was
        rec = new_node_task("o", 1, b"k" * 16, "f", b"", 1000, None, None, None, None, 1, None)
        rep = Reporter()
        ex.start(rec, comp(f), b"in", Cx(), rep)
        with pytest.raises(InvalidArgument, match="already running"):
            ex.start(rec, comp(f), b"again", Cx(), rep)
        assert ex.running == 2 and ex.is_running(rec)
        assert ex.cancel("other", USER) is False
        await res.wait("k")
        while not rep.calls:
            await asyncio.sleep(0.005)
        await ex.aclose(1.0)
        assert len(res.calls) == 1
        assert [(t, k, p) for t, k, p, _ in rep.calls] == [(rec, SUCCESS, b"")]
        assert_clean(ex)

    run(main())
    with pytest.raises(RuntimeError):  # no running loop
        Executor(max_threads=1).start("k", comp(f), b"", Cx(), Results())


@pytest.mark.parametrize("kwargs", [{"max_threads": 0}, {"max_threads": True}, {"max_threads": 1.5},
                                    {"max_threads": 1, "cancel_grace_s": -1}])
def test_constructor_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        Executor(**kwargs)


# -- ready tasks: run_ready (the node calls it after each batch of starts) -------------


def test_run_ready_runs_a_first_step_eagerly_on_312() -> None:
    """On 3.12+ an async computation that never suspends ends inside
    run_ready, in its own asyncio task; on 3.11 its first step is scheduled
    on the loop when it starts. on_done is never called from inside start."""
    seen: list[Any] = []

    async def f(cx: Cx, data: bytes) -> bytes:
        seen.append(asyncio.current_task())
        return data + b"!"

    async def main() -> None:
        ex = Executor(max_threads=1)
        ex.driver_runs_ready = True
        res = Results()
        ex.start("k", comp(f), b"x", Cx(), res)
        assert res.calls == [] and seen == []
        ex.run_ready()
        if EAGER_TASKS:
            assert [c[:3] for c in res.calls] == [("k", SUCCESS, b"x!")]
        else:
            assert res.calls == []
            await res.wait("k")
        assert res.get("k") == (SUCCESS, b"x!")
        assert len(seen) == 1 and isinstance(seen[0], asyncio.Task)
        assert seen[0].get_name() == "rsc:f"
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_run_ready_then_a_suspended_computation_is_cancellable() -> None:
    steps: list[str] = []

    async def f(cx: Cx, data: bytes) -> bytes:
        steps.append("first")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise
        return b""

    async def main() -> None:
        ex = Executor(max_threads=1)
        ex.driver_runs_ready = True
        res = Results()
        ex.start("k", comp(f), b"", Cx(), res)
        ex.run_ready()
        await asyncio.sleep(0.01)
        assert steps == ["first"] and res.calls == []
        assert ex.cancel("k", USER)
        await res.wait("k")
        assert res.get("k") == (CANCELLED, USER)
        assert steps == ["first", "cancelled"]
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_cancelled_before_run_ready_never_runs() -> None:
    ran: list[bool] = []

    async def f(cx: Cx, data: bytes) -> bytes:
        ran.append(True)
        return b""

    def g(cx: Cx, data: bytes) -> bytes:
        ran.append(True)
        return b""

    async def main() -> None:
        ex = Executor(max_threads=1)
        ex.driver_runs_ready = True
        res = Results()
        ex.start("a", comp(f), b"", Cx(), res)
        ex.start("i", Computation("g", g, inline=True), b"", Cx(), res)
        assert ex.cancel("a", USER) and ex.cancel("i", USER)
        ex.run_ready()
        await res.wait("a", "i")
        assert res.get("a") == (CANCELLED, USER) and res.get("i") == (CANCELLED, USER)
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())
    assert ran == []


def test_ready_tasks_run_at_the_next_turn_without_a_driver() -> None:
    async def f(cx: Cx, data: bytes) -> bytes:
        return b"a"

    def g(cx: Cx, data: bytes) -> bytes:
        return b"i"

    async def main() -> None:
        ex = Executor(max_threads=1)  # nobody calls run_ready: the loop does
        res = Results()
        ex.start("a", comp(f), b"", Cx(), res)
        ex.start("i", Computation("g", g, inline=True), b"", Cx(), res)
        assert res.calls == []
        await res.wait("a", "i")
        assert res.get("a") == (SUCCESS, b"a") and res.get("i") == (SUCCESS, b"i")
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())


def test_a_computation_replaced_under_its_name_runs_as_registered() -> None:
    """The executor reads a computation's fields once (its plan); a different
    Computation under the same name, with another function and codec, is
    read afresh, and the first one again after it."""
    async def first(cx: Cx, data: bytes) -> bytes:
        return b"first:" + data

    async def second(cx: Cx, value: Any) -> Any:
        return {"second": value}

    a = Computation("same", first)
    b = Computation("same", second, codec="msgpack")

    async def main() -> None:
        ex = Executor(max_threads=1)
        res = Results()
        for key, c, data in (("a1", a, b"x"), ("b1", b, msgpack.packb(7)), ("a2", a, b"y")):
            ex.start(key, c, data, Cx(), res)
            await res.wait(key)
        assert res.get("a1") == (SUCCESS, b"first:x")
        assert res.get("b1") == (SUCCESS, msgpack.packb({"second": 7}))
        assert res.get("a2") == (SUCCESS, b"first:y")
        await ex.aclose(1.0)
        assert_clean(ex)

    run(main())
