"""A virtual-time asyncio event loop, its clocks, and a thread-free pool.

:class:`VirtualLoop` is a plain ``asyncio.BaseEventLoop`` whose ``time()`` is
a number it keeps itself. It never polls a socket: where a real loop would
block in ``select(timeout)`` waiting for I/O or the next timer, it moves its
clock straight to that timer. Nothing outside the loop can wake it (there is
no I/O in the lab, every byte goes through :mod:`rsc.lab.net` as a loop
callback), so when nothing is ready and no timer is armed the run is stuck
for good: :class:`Stuck` is raised instead of sleeping forever.

Determinism: the ready queue is FIFO and timers with equal deadlines run in
the order they were armed (asyncio's heap, fed the same sequence, pops the
same sequence). With ``shuffle`` set, the callbacks ready at the start of
each turn are permuted by the loop's seeded ``random.Random``: asyncio never
promises more than FIFO order of ``call_soon``, and a shuffled turn explores
orders a FIFO loop never produces (code that relies on one ``call_soon``
running before another made in the same turn will see it broken, as it
would on another loop implementation).

:class:`LabClock` is an ``rsc.clock.SystemClock`` the drivers
(``Runtime.clock``, ``NodeServer.clock``) can hold: it reads the loop's
virtual time through a per-process rate and offset, so a node's clock can be
slowed, sped up or frozen (``pause``) by a fault.

:class:`InlinePool` stands in for the executor's thread pool: a sync
computation runs on the loop thread at the next turn, like an ``inline``
one, so its interleaving is decided by the loop alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
from collections import deque
from typing import Any, Callable, TypeVar, TypeVarTuple, Unpack

from rsc.clock import SystemClock

__all__ = ["InlinePool", "LabClock", "Stuck", "TimeLimit", "VirtualLoop"]

NS = 1_000_000_000


_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

class Stuck(RuntimeError):
    """Nothing is ready and no timer is armed, yet the run has not finished:
    every task waits for something that can no longer happen (a deadlock)."""

    def __init__(self, message: str) -> None:
        """``message`` says at which virtual time the run got stuck."""
        super().__init__(message)


class TimeLimit(RuntimeError):
    """The run went past its virtual time limit without finishing."""

    def __init__(self, message: str) -> None:
        """``message`` names the limit that passed."""
        super().__init__(message)


class _VirtualSelector:
    """What ``BaseEventLoop._run_once`` calls ``select`` on: instead of
    waiting ``timeout`` seconds it advances the loop's clock by them."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        loop = self._loop
        if timeout is None:
            raise Stuck(f"nothing ready and no timer armed at virtual time {loop.time():.6f} s")
        if timeout > 0:
            # Jump exactly to the head timer's deadline (not now + timeout,
            # whose float sum may fall a hair short of it).
            head = loop._scheduled[0].when() if loop._scheduled else loop._now + timeout
            loop._now = max(loop._now, min(head, loop._now + timeout))
            if loop._now > loop.time_limit:
                raise TimeLimit(f"virtual time passed {loop.time_limit:g} s")
        if loop._shuffle is not None and len(loop._ready) > 1:
            ready = list(loop._ready)
            loop._shuffle.shuffle(ready)
            loop._ready = deque(ready)
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """An event loop on virtual time (see the module docstring).

    ``shuffle``: a ``random.Random`` that permutes each turn's ready
    callbacks (None: FIFO). ``time_limit``: virtual seconds after which the
    loop raises :class:`TimeLimit` (default: none).
    """

    # BaseEventLoop's own queues, which this loop reads and reorders (typeshed
    # leaves these private attributes out)
    _ready: deque[asyncio.Handle]
    _scheduled: list[asyncio.TimerHandle]

    def __init__(self, *, shuffle: random.Random | None = None,
                 time_limit: float = float("inf")) -> None:
        super().__init__()
        self._now = 0.0
        self._shuffle = shuffle
        self.time_limit = time_limit
        self._selector = _VirtualSelector(self)
        #: exceptions that reached the loop's exception handler, as contexts
        self.unhandled: list[dict[str, Any]] = []
        self.set_exception_handler(self._record_unhandled)

    def time(self) -> float:
        """The virtual time (seconds since the run began)."""
        return self._now

    def now_ns(self) -> int:
        """Virtual time in integer nanoseconds."""
        return round(self._now * NS)

    def _record_unhandled(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.unhandled.append(context)

    # -- what BaseEventLoop leaves to a selector loop ------------------------------------
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # call_soon_threadsafe from the loop thread itself: nothing to wake

    def run_in_executor(self, executor: concurrent.futures.Executor | None,
                        func: Callable[[Unpack[_Ts]], _T], *args: Unpack[_Ts]) -> asyncio.Future[_T]:
        """Runs ``func`` on the loop thread at the next turn (no threads in the lab)."""
        fut = self.create_future()

        def run() -> None:
            if fut.cancelled():
                return
            try:
                fut.set_result(func(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                fut.set_exception(exc)

        self.call_soon(run)
        return fut

    def close(self) -> None:
        """Drop every pending callback and close the loop."""
        self._ready.clear()
        super().close()


class LabClock(SystemClock):
    """A process's clock in the lab: ``offset + rate * (virtual time)``, in ns.

    ``set_rate`` changes the rate from now on (the reading stays continuous:
    a skew never makes a clock jump backwards); rate 0 freezes it, which is
    how a paused process sees time. Monotonic as long as the rate is >= 0.
    """

    def __init__(self, loop: VirtualLoop, *, rate: float = 1.0, offset_ns: int = 0) -> None:
        self._loop = loop
        self._rate = float(rate)
        self._base_virtual = loop.now_ns()
        self._base_local = loop.now_ns() + offset_ns
        self._frozen_at: tuple[int, float] | None = None

    def now_ns(self) -> int:
        """This process's time (nanoseconds): the virtual time, run at the clock's rate
        since its last change."""
        return self._base_local + int((self._loop.now_ns() - self._base_virtual) * self._rate)

    @property
    def rate(self) -> float:
        """How fast this clock runs against virtual time (1.0: in step)."""
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Run the clock at ``rate`` from now on (a skew fault); ValueError for a
        negative rate."""
        if rate < 0:
            raise ValueError("a clock rate is >= 0")
        self._base_local = self.now_ns()
        self._base_virtual = self._loop.now_ns()
        self._rate = float(rate)

    def freeze(self) -> None:
        """Stop the clock (a paused process reads the same time throughout)."""
        if self._frozen_at is None:
            self._frozen_at = (self._loop.now_ns(), self._rate)
            self.set_rate(0.0)

    def thaw(self) -> None:
        """Run again, having counted the frozen stretch at the old rate: a
        resumed process sees its clock jump, as after SIGCONT."""
        if self._frozen_at is not None:
            since, rate = self._frozen_at
            self._frozen_at = None
            self._base_local += int((self._loop.now_ns() - since) * rate)
            self.set_rate(rate)

    def jump(self, ns: int) -> None:
        """Move the reading forward by ``ns`` at once."""
        if ns < 0:
            raise ValueError("a clock only jumps forward")
        self._base_local += ns


class InlinePool:
    """The part of ``concurrent.futures.ThreadPoolExecutor`` the node's
    executor uses (``submit``, ``shutdown``), running each call on the loop
    thread at the next loop turn. A future cancelled before its turn never
    runs, as a queued pool job would not."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` on the loop thread at the next loop turn; its future."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._loop.call_soon(self._run, fut, fn, args)
        return fut

    @staticmethod
    def _run(fut: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - the executor classifies it
            fut.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to shut down: calls run on the loop thread."""
        pass
