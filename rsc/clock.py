"""Clocks. Only a Clock reads time; everything else is handed readings (ns)."""

from __future__ import annotations

from time import monotonic_ns
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Monotonic nanoseconds; only differences are meaningful."""
        ...


class SystemClock:
    """The process's monotonic clock."""

    __slots__ = ()

    def now_ns(self) -> int:
        return monotonic_ns()


class SimClock:
    """Virtual time for the lab: advances only when told to."""

    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError("SimClock cannot go backwards")
        self._now += ns

    def set(self, now_ns: int) -> None:
        if now_ns < self._now:
            raise ValueError("SimClock cannot go backwards")
        self._now = now_ns
