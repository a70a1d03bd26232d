"""One loop timer kept at a sans-I/O engine's next deadline."""

from __future__ import annotations

import asyncio
from typing import Callable, Protocol

from rsc.clock import Clock


class TimedEngine(Protocol):
    """What an engine offers its timer (both the node and the origin engine do).

    ``deadline_hint`` is the earliest deadline the engine added since its
    driver last read ``next_deadline()`` (None if none): only one that comes
    before the armed time can move the timer, so a driver with a timer armed
    need not read ``next_deadline()`` at all otherwise.
    """

    deadline_hint: int | None

    def next_deadline(self) -> int | None: ...


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

    __slots__ = ("_loop", "_clock", "_on_due", "_handle", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock, on_due: Callable[[], None]) -> None:
        self._loop = loop
        self._clock = clock
        self._on_due = on_due
        self._handle: asyncio.Handle | None = None
        self.at: int | None = None  # ns on ``clock`` of the armed timer

    def follow(self, engine: TimedEngine) -> None:
        """Arm at ``engine.next_deadline()`` if that is earlier than what is armed.

        Called after every batch of engine work, so the common case is cheap:
        with a timer armed and no earlier ``deadline_hint``, nothing is read.
        A later hint is left in place; it stays later than the armed time
        until the timer fires, and then ``at`` is None and everything is re-read.
        """
        at = self.at
        if at is not None:
            hint = engine.deadline_hint
            if hint is None or hint >= at:
                return
        engine.deadline_hint = None
        nxt = engine.next_deadline()
        if nxt is None or (at is not None and at <= nxt):
            return
        if self._handle is not None:
            self._handle.cancel()
        self.at = nxt
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
        self._on_due()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.at = None
