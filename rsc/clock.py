"""Clocks. Only a Clock reads time; everything else is handed readings (ns)."""

from __future__ import annotations

from time import monotonic_ns
from typing import Protocol

from rsc._signature import SourceSignature

_monotonic_ns = monotonic_ns  # a C global when compiled (a module global is a dict lookup a read)


class Clock(Protocol):
    """What reads time: ``now_ns()``, monotonic nanoseconds."""

    def now_ns(self) -> int:
        """Monotonic nanoseconds; only differences are meaningful."""
        ...


class SystemClock:
    """The process's monotonic clock."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    __slots__ = ()

    def now_ns(self) -> int:
        """``time.monotonic_ns()``."""
        return _monotonic_ns()


class SimClock:
    """Virtual time for the lab: advances only when told to."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        """The virtual time (nanoseconds)."""
        return self._now

    def advance(self, ns: int) -> None:
        """Move the virtual time forward by ``ns``."""
        if ns < 0:
            raise ValueError("SimClock cannot go backwards")
        self._now += ns

    def set(self, now_ns: int) -> None:
        """Set the virtual time to ``now_ns`` (never backwards)."""
        if now_ns < self._now:
            raise ValueError("SimClock cannot go backwards")
        self._now = now_ns
