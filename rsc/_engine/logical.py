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


# A peer's time above this is not merged: it would push our clock toward the
# uint64 limit of the wire, after which no stamp could be strictly greater, and
# one bad peer would break every connection of this side. Such a time is still
# accepted (PROTOCOL.md: never reject a message for its time value).
MAX_MERGED_TIME = 1 << 62
_MAX_MERGED = MAX_MERGED_TIME  # what merge reads: a C global when compiled (logical.pxd)


class LamportClock:
    """``send()`` returns a stamp strictly greater than every earlier one;
    ``merge(t)`` takes ``max(local, t') + 1`` (times above MAX_MERGED_TIME are
    ignored, see above)."""

    __slots__ = ("time",)

    def __init__(self, start: int = 0) -> None:
        self.time = start

    def send(self) -> int:
        self.time += 1
        return self.time

    def merge(self, wire_time: Any) -> int:
        # Called for every message received: the plain Lamport stamp skips a
        # call, and compiled, the reading is a C integer from the first line
        # on (logical.pxd): no int object made, compared or added per message.
        v = wire_time if type(wire_time) is int else lamport_value(wire_time)
        try:
            t = v
        except OverflowError:  # (compiled: beyond a C long long) above the bound, so not merged
            t = 0
        if t > _MAX_MERGED or t < 0:
            t = 0
        self.time = (t if t > self.time else self.time) + 1
        return self.time
