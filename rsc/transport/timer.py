"""One loop timer kept at a sans-I/O engine's next deadline."""

from __future__ import annotations

import asyncio
from typing import Callable

from rsc._signature import SourceSignature
from rsc._engine.deadlines import Deadlines
from rsc.clock import Clock


def after_io(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    """Call ``fn(*args)`` once the loop has polled its sockets (see EngineTimer).

    For a timer that judges a peer silent: give it as the callback of
    ``call_later`` so the peer's frames that came in meanwhile are read first.
    """
    loop.call_soon(loop.call_soon, fn, *args)


class EngineTimer:
    """Calls ``on_due()`` at (or just after) the engine deadline it follows.

    ``on_due()`` runs only after the loop has polled its sockets once since
    the deadline passed. A loop runs due timers before it reads, so after a
    stall longer than a lease (a paused process, a starved core) a timer
    called straight away would judge a peer silent while that peer's frames
    sit unread in the socket buffer. Two ``call_soon`` hops put one I/O poll
    in between on both asyncio and uvloop (each runs only the callbacks that
    were ready when its turn began, and polls before the next turn).
    """

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    __slots__ = ("_loop", "_clock", "_on_due", "_handle", "at", "_armed_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock, on_due: Callable[[], None]) -> None:
        self._loop = loop
        self._clock = clock
        self._on_due = on_due
        self._handle: asyncio.Handle | None = None
        self.at: int | None = None  # ns on ``clock`` of the armed timer
        # the same as an int, -1 when none is armed (deadlines are >= 0): a C
        # integer when compiled, so follow()'s common case boxes nothing
        self._armed_at = -1

    def follow(self, timers: Deadlines) -> None:
        """Arm at ``timers.next_deadline()`` if that is earlier than what is armed.

        ``timers`` is the engine's ``Deadlines`` (``engine.timers``). Called
        after every batch of engine work, so the common case is cheap: with a
        timer armed and no deadline set earlier than it since the last read
        (``timers.hint``), nothing is read. A later one is left for after the
        timer fires: then ``at`` is None and everything is re-read.
        """
        armed = self._armed_at
        if armed >= 0 and timers.hint >= armed:
            return
        nxt = timers.next_deadline()  # resets timers.hint
        if nxt is None or (armed >= 0 and armed <= nxt):
            return
        if self._handle is not None:
            self._handle.cancel()
        self.at = nxt
        self._armed_at = nxt
        delay = max(0.0, (nxt - self._clock.now_ns()) / 1e9)
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        # ``at`` stays set until on_due runs, so follow() does not arm a second timer meanwhile
        self._handle = self._loop.call_soon(self._after_turn)

    def _after_turn(self) -> None:
        self._handle = self._loop.call_soon(self._after_poll)

    def _after_poll(self) -> None:
        self._handle = None
        self.at = None
        self._armed_at = -1
        self._on_due()

    def cancel(self) -> None:
        """Disarm the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.at = None
        self._armed_at = -1
