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

:class:`ProcessTag` and :data:`PROCESS` say which lab process a callback
belongs to: each process (a node incarnation, an origin) runs in its own
``contextvars.Context`` holding its tag, and every callback, timer and task
it makes inherits that context (asyncio copies the current context into each
handle). :meth:`VirtualLoop.hold` sets a process's callbacks aside as they
come due, and :meth:`VirtualLoop.release` puts them back in the ready queue,
in order: that is how ``pause`` freezes a process's coroutines, timers and
network reads at once, as SIGSTOP would, while the other processes run on.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import random
from collections import deque
from typing import Any, Callable

from rsc.clock import SystemClock

__all__ = ["LabClock", "PROCESS", "ProcessTag", "Stuck", "TimeLimit", "VirtualLoop",
           "process_context"]

NS = 1_000_000_000
#: what a lab process's wall clock reads at virtual time 0 (2026-01-01T00:00:00Z):
#: wall-clock readings in a run (a journal's expiries, ``time.time()`` in a
#: computation thread) are decided by the lab's seed like everything else
EPOCH_NS = 1_767_225_600 * NS



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


class ProcessTag:
    """Which lab process a callback belongs to (one per node incarnation or
    origin); ``held`` keeps its callbacks while it is paused."""

    __slots__ = ("name", "paused", "held")

    def __init__(self, name: str) -> None:
        self.name = name
        self.paused = False
        self.held: deque[asyncio.Handle] = deque()

    def __repr__(self) -> str:
        return f"ProcessTag({self.name!r}{', paused' if self.paused else ''})"


#: the :class:`ProcessTag` of the process the running code belongs to (None:
#: the lab itself, or a scenario's own code)
PROCESS: contextvars.ContextVar[ProcessTag | None] = contextvars.ContextVar("rsc_lab_process",
                                                                          default=None)


def process_context(tag: ProcessTag) -> contextvars.Context:
    """A context for the code of one process: the current one, tagged."""
    ctx = contextvars.copy_context()
    ctx.run(PROCESS.set, tag)
    return ctx


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
        if loop._paused:
            loop._set_aside_paused()
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
        self._paused: list[ProcessTag] = []  # processes whose callbacks are held
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

    # -- pausing one process -------------------------------------------------------------
    def hold(self, tag: ProcessTag) -> None:
        """From now on set the callbacks of ``tag``'s process aside as they come
        due (its tasks' steps, its timers, what the network delivers to it)."""
        if not tag.paused:
            tag.paused = True
            self._paused.append(tag)

    def release(self, tag: ProcessTag) -> None:
        """Let ``tag``'s process run again: what was set aside is ready now, in
        the order it came due (a resumed process first runs what was overdue)."""
        if tag.paused:
            tag.paused = False
            self._paused.remove(tag)
            self._ready.extend(tag.held)
            tag.held.clear()

    def _set_aside_paused(self) -> None:
        # Take the timers due now into the ready queue here, as _run_once
        # would right after select() (the same test, at the same time), so
        # that a paused process's timers are set aside too.
        end_time = self.time() + self._clock_resolution  # type: ignore[attr-defined]  # BaseEventLoop's
        scheduled, ready = self._scheduled, self._ready
        while scheduled and scheduled[0]._when < end_time:  # type: ignore[attr-defined]  # asyncio's own fields
            timer = heapq.heappop(scheduled)
            timer._scheduled = False  # type: ignore[attr-defined]
            ready.append(timer)
        keep: deque[asyncio.Handle] = deque()
        for handle in ready:
            tag = handle._context.get(PROCESS)  # type: ignore[attr-defined]
            if tag is not None and tag.paused:
                tag.held.append(handle)
            else:
                keep.append(handle)
        self._ready = keep

    # -- what BaseEventLoop leaves to a selector loop ------------------------------------
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        # call_soon_threadsafe comes from the loop thread, or from a lab
        # computation thread while the loop waits for it (rsc.lab.threads):
        # the loop never sleeps in select, so there is nothing to wake
        pass

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:  # type: ignore[override]  # any callable, as asyncio's
        """Runs ``func`` on the loop thread at the next turn (what a node runs in its default
        executor: a journal compaction's write, in the lab on the simulated disk)."""
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
