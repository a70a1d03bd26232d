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


class EngineTimer:
    """Calls ``on_due()`` at (or just after) the engine deadline it follows."""

    __slots__ = ("_loop", "_clock", "_on_due", "_handle", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock, on_due: Callable[[], None]) -> None:
        self._loop = loop
        self._clock = clock
        self._on_due = on_due
        self._handle: asyncio.TimerHandle | None = None
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
        self._handle = None
        self.at = None
        self._on_due()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.at = None
