"""Sync computations in the lab: real threads, run one at a time, in virtual time.

A node runs a sync computation in a thread of its pool, so that the
computation can block (``time.sleep``, a long loop) while the node answers.
In the lab it still gets a real thread of its own (so the executor's code is
the production one: the thread's ident, the cancel grace timer, the
``CancelInterrupt`` raised in the thread), but the threads run in **lockstep**
with the loop: the loop hands the running token to one computation thread and
waits until that thread gives it back, by finishing or by sleeping. Only one
thread ever runs Python code at a time, so the interleaving is the loop's
alone, and the run stays a function of the seed.

While a lab runs, ``time.sleep`` in a computation thread does not block: the
thread gives the token back and the loop wakes it at ``now + seconds`` of
virtual time (in the context of its node, so a paused node's sleepers wait
for its resume, and a crashed node's sleepers are stopped). ``time.monotonic``,
``time.perf_counter`` and ``time.time`` (and their ``_ns`` forms) read virtual
time there too. On the loop thread itself (an ``inline`` computation, a
scenario's own code) ``time.sleep`` blocks the whole simulated cluster, as it
would block a real process's loop: virtual time jumps by that much at once.
Only these calls, looked up on the ``time`` module when they are called, are
virtual: another blocking call (a lock held by nobody in the lab, a socket)
blocks the lab in wall time.

A pending asynchronous exception (the executor's ``CancelInterrupt``, sent
after ``cancel_grace_s`` to a sync computation that ignores its cancel)
lands, as in CPython, when the thread next runs Python code: when its sleep
is over.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import contextvars
import threading
import time
from collections import deque
from typing import Any, Callable

from rsc.lab.loop import EPOCH_NS, NS

__all__ = ["LabThreads", "LabPool", "ProcessDied"]


class ProcessDied(BaseException):
    """Raised in a computation thread whose node crashed: the thread's code
    unwinds (a real crash would end it outright) and its outcome is ignored."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)


def _binary_semaphore() -> Any:
    # A raw lock, taken: release() lets one acquire() through. Not a
    # threading.Semaphore: an asynchronous exception (CancelInterrupt) that
    # lands right after a wake-up must find the token already taken, which
    # the C acquire guarantees and Semaphore's Python code does not.
    lock = _thread.allocate_lock()
    lock.acquire()
    return lock


class _Worker:
    """One computation thread and the two tokens of its lockstep."""

    __slots__ = ("thread", "to_worker", "to_loop", "job", "wake_at", "killed", "timer", "ctx",
                 "pool", "exiting")

    def __init__(self, threads: LabThreads) -> None:
        self.to_worker = _binary_semaphore()
        self.to_loop = _binary_semaphore()
        self.job: Callable[[], None] | None = None
        self.wake_at: float | None = None  # set while it sleeps
        self.killed = False
        self.exiting = False
        self.timer: Any = None
        self.ctx: contextvars.Context | None = None
        self.pool: LabPool | None = None
        self.thread = threading.Thread(target=self._main, args=(threads,), daemon=True,
                                       name="rsc-lab-computation")

    def _main(self, threads: LabThreads) -> None:
        threads._by_ident[threading.get_ident()] = self
        while True:
            self.to_worker.acquire()
            if self.exiting:
                self.to_loop.release()
                return
            job, self.job = self.job, None
            try:
                job()  # type: ignore[misc]
            except BaseException:  # noqa: BLE001 - the job reports its own outcome
                pass
            self.wake_at = None
            self.to_loop.release()


class LabThreads:
    """The computation threads of one lab run and the virtual ``time`` they see."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._by_ident: dict[int, _Worker] = {}
        self._loop_ident: int | None = None
        self._saved: dict[str, Any] = {}

    # -- running ------------------------------------------------------------------------
    def run(self, pool: LabPool, job: Callable[[], None], ctx: contextvars.Context) -> None:
        """Run ``job`` on a computation thread until it finishes or sleeps (loop thread)."""
        w = self._idle.pop() if self._idle else self._new_worker()
        # the thread runs inside ``ctx``; its wake-ups are scheduled in a copy
        # (one context cannot be entered by two threads at once)
        w.job, w.ctx, w.pool, w.killed = job, ctx.copy(), pool, False
        self._step(w)

    def _new_worker(self) -> _Worker:
        w = _Worker(self)
        self._all.append(w)
        w.thread.start()
        return w

    def _step(self, w: _Worker) -> None:
        """Hand the token to ``w`` and wait until it hands it back."""
        w.timer = None
        w.to_worker.release()
        w.to_loop.acquire()
        if w.wake_at is not None:  # asleep: wake it then, as part of its node
            w.timer = self.loop.call_at(w.wake_at, self._step, w, context=w.ctx)
            return
        pool, w.pool, w.ctx = w.pool, None, None
        self._idle.append(w)
        if pool is not None:
            pool._finished()

    def kill(self, pool: LabPool) -> None:
        """The node of ``pool`` crashed: its sleeping threads raise ProcessDied now."""
        for w in list(self._all):
            if w.pool is pool and w.wake_at is not None:
                if w.timer is not None:
                    w.timer.cancel()
                w.killed = True
                self._step(w)

    def _sleep(self, w: _Worker, seconds: float) -> None:
        """``time.sleep`` in a computation thread: give the token back until woken."""
        if w.killed:
            raise ProcessDied("the node crashed")
        w.wake_at = self.loop.time() + max(0.0, seconds)
        w.to_loop.release()
        w.to_worker.acquire()
        w.wake_at = None
        if w.killed:
            raise ProcessDied("the node crashed")

    # -- the time module while a lab runs ----------------------------------------------------
    def install(self) -> None:
        """Make ``time``'s sleep and clocks virtual (until :meth:`uninstall`)."""
        self._loop_ident = threading.get_ident()
        names = ("sleep", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "time",
                 "time_ns")
        self._saved = {n: getattr(time, n) for n in names}
        real = self._saved
        by_ident, loop, loop_ident = self._by_ident, self.loop, self._loop_ident
        get_ident = threading.get_ident

        def sleep(seconds: float) -> None:
            ident = get_ident()
            w = by_ident.get(ident)
            if w is not None:
                self._sleep(w, seconds)
            elif ident == loop_ident:
                loop._now += max(0.0, seconds)  # the whole loop blocks: so does the cluster
            else:
                real["sleep"](seconds)

        def clock(name: str, scale: float, offset: float) -> Callable[[], Any]:
            original = real[name]
            as_int = name.endswith("_ns")

            def read() -> Any:
                if get_ident() in by_ident:
                    t = (loop._now + offset) * scale
                    return int(t) if as_int else t
                return original()
            read.__name__ = name
            return read

        time.sleep = sleep  # type: ignore[assignment]
        for name in names[1:]:
            scale = NS if name.endswith("_ns") else 1.0
            offset = EPOCH_NS / NS if name.startswith("time") else 0.0
            setattr(time, name, clock(name, scale, offset))

    def uninstall(self) -> None:
        """Put back the real ``time`` functions replaced for the run."""
        for name, fn in self._saved.items():
            setattr(time, name, fn)
        self._saved = {}

    def close(self) -> None:
        """End every thread: sleepers raise ProcessDied, idle ones exit; joined."""
        for w in list(self._all):
            if w.wake_at is not None:
                if w.timer is not None:
                    w.timer.cancel()
                w.killed = True
                w.pool = None
                self._step(w)
        for w in self._all:
            w.exiting = True
            w.to_worker.release()
            w.to_loop.acquire()
            w.thread.join()
        self._all.clear()
        self._idle.clear()


class LabPool:
    """What a node's executor uses of ``concurrent.futures.ThreadPoolExecutor``
    (``submit``, ``shutdown``), on the lab's lockstep threads: at most
    ``max_workers`` at once, the rest queued in order, each started at a loop
    turn in the context of the process that submitted it."""

    def __init__(self, threads: LabThreads, max_workers: int) -> None:
        self._threads = threads
        self._max = max_workers
        self._queue: deque[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...],
                                 contextvars.Context]] = deque()
        self._running = 0
        self._scheduled = False
        self.dead = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` on a lab thread when its turn comes; its future."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        ctx = contextvars.copy_context()
        self._queue.append((fut, fn, args, ctx))
        self._schedule(ctx)
        return fut

    def _schedule(self, ctx: contextvars.Context) -> None:
        if not self._scheduled and self._queue and self._running < self._max:
            self._scheduled = True
            self._threads.loop.call_soon(self._start_next, context=ctx.copy())

    def _start_next(self) -> None:
        self._scheduled = False
        while self._queue and self._running < self._max and not self.dead:
            fut, fn, args, ctx = self._queue.popleft()
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled while queued: never runs
            self._running += 1
            self._threads.run(self, _job(fut, fn, args, ctx), ctx)

    def _finished(self) -> None:
        self._running -= 1
        if self._queue:
            self._schedule(self._queue[0][3])

    def kill(self) -> None:
        """The node crashed: nothing queued runs, sleepers die."""
        self.dead = True
        for fut, _fn, _args, _ctx in self._queue:
            fut.cancel()
        self._queue.clear()
        self._threads.kill(self)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to wait for: lab threads end with their computations."""
        if cancel_futures:
            for fut, _fn, _args, _ctx in self._queue:
                fut.cancel()
            self._queue.clear()


def _job(fut: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...],
         ctx: contextvars.Context) -> Callable[[], None]:
    def job() -> None:
        try:
            ctx.run(_call, fut, fn, args)
        except BaseException as exc:  # noqa: BLE001 - could not even run it: say so
            if not fut.done():
                fut.set_exception(exc)
    return job


def _call(fut: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the executor classifies it
        fut.set_exception(exc)
    else:
        fut.set_result(result)
