"""Logical clocks for message stamps (PROTOCOL.md section 2).

A connection uses Lamport time unless both sides asked for another kind; rsc's
own sides speak Lamport. Receipt merges any of the three wire forms.
"""

from __future__ import annotations

from typing import Any


def lamport_value(t: Any) -> int:
    """The Lamport reading of a wire time: the uint itself, a hybrid time's
    logical part, or a vector time's largest entry."""
    if type(t) is int:
        return t
    if type(t) is tuple or type(t) is list:
        return int(t[1])
    if type(t) is dict:
        return max(t.values(), default=0)
    return 0


class LamportClock:
    """``send()`` returns a stamp strictly greater than every earlier one;
    ``merge(t)`` takes ``max(local, t') + 1``."""

    __slots__ = ("time",)

    def __init__(self, start: int = 0) -> None:
        self.time = start

    def send(self) -> int:
        self.time += 1
        return self.time

    def merge(self, wire_time: Any) -> int:
        v = lamport_value(wire_time)
        self.time = (v if v > self.time else self.time) + 1
        return self.time
