"""Every deadline of one sans-I/O engine, in one place the engine owns.

trio's ``Deadlines`` is the model. An engine keeps each of its timers here
under a *kind* (a small int the engine names: a lease, a budget deadline, a
renewal group, an escalation step, a keep-alive ping) and a *key* (an int: the
task's, group's or link's id); one heap holds them all. No other structure of
the engine holds a deadline, so nothing can forget to tell the driver:

- every ``add`` / ``move`` that sets a deadline earlier than ``hint`` lowers it;
- the driver's timer (``rsc.transport.timer.EngineTimer``) re-reads
  ``next_deadline()`` only when ``hint`` is earlier than the time it has armed,
  and reading resets ``hint``;
- at or after that deadline the driver calls the engine's ``tick(now)``,
  which takes what is due with ``pop_due(now)``, earliest first.

A source that keeps its own ordered expiries (the idempotency table: its
expiries form a FIFO and cost no heap entry) is attached with ``attach``: its
``next_expiry()`` counts in ``next_deadline()``, and it calls ``note(at)`` for
the first expiry it adds after each ``next_expiry()`` (``IdemTable.watch``).
Its expiries are ``now + ttl`` for one ttl, so that first one is the earliest.

Compiled in Cython pure-Python mode through ``deadlines.pxd`` (rsc/_compiled.py);
the per-task calls (``add``, ``move``, ``discard``) are then C calls.
"""

from __future__ import annotations

from typing import Any, Protocol

from rsc._core import leaseheap as _lh

KIND_BITS = 3
KIND_MASK = (1 << KIND_BITS) - 1
#: ``hint`` when nothing was set since the last read (later than any deadline)
NO_DEADLINE = (1 << 63) - 1


MAX_KEY = (1 << (63 - KIND_BITS)) - 1


def _id(kind: int, key: int) -> int:
    """The heap id of ``(kind, key)``. The bounds are written as literals and
    a shift so the compiled build compares C values (a module global, or a
    literal above 2**31, would be a Python object: the key boxed and compared
    as ints on every call); the assert below holds them to KIND_BITS."""
    if not 0 <= kind <= 7 or key < 0 or key >> 60:
        raise ValueError(f"a deadline's kind is an int in [0, {KIND_MASK}] and its key one in "
                         f"[0, {MAX_KEY}], got ({kind}, {key})")
    return key << 3 | kind


assert KIND_MASK == 7 and MAX_KEY == (1 << 60) - 1


def _check_time(at: int) -> int:
    if at < 0:
        raise ValueError(f"a deadline is an int of ns >= 0, got {at}")
    return at


class ExpirySource(Protocol):
    """What ``attach`` takes: something with its own ordered expiries."""

    def next_expiry(self) -> int | None: ...


class Deadlines:
    """One engine's timers: ``(kind, key) -> deadline`` in one heap, plus the
    attached sources. Times are int ns on the engine's clock; a kind is an
    int in ``[0, 8)`` and a key an int in ``[0, MAX_KEY]``."""

    __slots__ = ("_heap", "hint", "_sources", "_counts")

    def __init__(self) -> None:
        self._heap = _lh.LeaseHeap()
        self.hint = NO_DEADLINE  # the earliest deadline set since the last next_deadline()
        self._sources: list[Any] = []
        self._counts = [0, 0, 0, 0, 0, 0, 0, 0]  # per kind (a C array when compiled)

    # The per-task calls hand the heap C values (its *_raw methods): no int
    # object is made for a key or a time. Times are >= 0 on every engine clock.
    def add(self, kind: int, key: int, at: int) -> None:
        """Set the deadline of ``(kind, key)``, which must not have one."""
        self._heap.add_raw(_id(kind, key), _check_time(at))
        self._counts[kind] += 1
        if at < self.hint:
            self.hint = at

    def move(self, kind: int, key: int, at: int) -> None:
        """Move the deadline of ``(kind, key)``, which must have one (KeyError if not)."""
        self._heap.renew_raw(_id(kind, key), _check_time(at))
        if at < self.hint:
            self.hint = at

    def put(self, kind: int, key: int, at: int) -> None:
        """Set the deadline of ``(kind, key)``, whether or not it had one."""
        self.discard(kind, key)
        self.add(kind, key, at)

    def discard(self, kind: int, key: int) -> bool:
        """Drop the deadline of ``(kind, key)`` if it has one; whether it had."""
        if self._heap.discard_raw(_id(kind, key)):
            self._counts[kind] -= 1
            return True
        return False

    def deadline_of(self, kind: int, key: int) -> int | None:
        return self._heap.deadline_of(_id(kind, key))

    def count(self, kind: int) -> int:
        """How many deadlines of ``kind`` are set."""
        return self._counts[_id(kind, 0) & KIND_MASK]

    def note(self, at: int) -> None:
        """An attached source added an expiry at ``at``."""
        if at < self.hint:
            self.hint = at

    def attach(self, source: ExpirySource) -> None:
        self._sources.append(source)

    def next_deadline(self) -> int | None:
        """The earliest deadline of all, or None; resets ``hint``."""
        self.hint = NO_DEADLINE
        best = self._heap.next_deadline()
        for source in self._sources:
            d = source.next_expiry()
            if d is not None and (best is None or d < best):
                best = d
        return best

    def pop_due(self, now: int) -> list[tuple[int, int]]:
        """Remove and return ``(kind, key)`` of every deadline ``<= now``, earliest
        first (equal deadlines in the order they were set). Attached sources
        expire their own entries (the engine asks them in ``tick``)."""
        out = []
        for k in self._heap.pop_expired(now):
            kind = k & KIND_MASK
            self._counts[kind] -= 1
            out.append((kind, k >> KIND_BITS))
        return out

    def __len__(self) -> int:
        return len(self._heap)

    def __repr__(self) -> str:
        return f"Deadlines(len={len(self._heap)}, next={self._heap.next_deadline()})"
