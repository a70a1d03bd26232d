"""One loop timer kept at a sans-I/O engine's next deadline."""

from __future__ import annotations

import asyncio
from typing import Callable

from rsc.clock import Clock


class EngineTimer:
    """Calls ``on_due()`` at (or just after) the engine deadline it was last armed for.

    ``arm(next_deadline)`` keeps the earlier of the armed time and the one
    given; ``next_deadline`` is a callable so that a driver can skip computing
    it when the engine says nothing earlier came in.
    """

    __slots__ = ("_loop", "_clock", "_on_due", "_handle", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock, on_due: Callable[[], None]) -> None:
        self._loop = loop
        self._clock = clock
        self._on_due = on_due
        self._handle: asyncio.TimerHandle | None = None
        self.at: int | None = None  # ns on ``clock`` of the armed timer

    def arm(self, next_deadline: Callable[[], int | None], hint: int | None = None,
            use_hint: bool = False) -> None:
        """Arm at ``next_deadline()`` if that is earlier than what is armed.

        With ``use_hint`` and a timer armed, ``next_deadline`` is not even
        called unless ``hint`` (the earliest deadline added since the last look)
        comes before the armed time.
        """
        if use_hint and self.at is not None and (hint is None or hint >= self.at):
            return
        at = next_deadline()
        if at is None or (self.at is not None and self.at <= at):
            return
        if self._handle is not None:
            self._handle.cancel()
        self.at = at
        delay = max(0.0, (at - self._clock.now_ns()) / 1e9)
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
