"""Lease expiry heap, pure-Python twin of the compiled ``rsc._core._leaseheap``.

Both twins implement the same contract, documented on ``LeaseHeap`` below, and
the test suite runs every test against both and checks they agree result for
result.

How this twin works (trio's deadline heap): a ``heapq`` of
``(deadline, seq, lease_id)`` tuples plus a dict ``lease_id -> tuple``. A
heap tuple is live only while the dict still maps its lease to that very tuple
(``is``), so ``renew`` pushes a fresh tuple and ``remove`` deletes the dict
entry, both leaving the old tuple behind as garbage that ``pop_expired`` and
``next_deadline`` skip. When garbage outnumbers live entries (plus a small
constant) the heap is rebuilt from the dict, so garbage never exceeds about
half the heap and each operation stays O(log n) amortised.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Final

from rsc.errors import InvalidArgument

__all__ = ["LeaseHeap"]

_U64_LIMIT: Final = 1 << 64
_I64_LIMIT: Final = 1 << 63

# Garbage allowed beyond the number of live entries before a rebuild; keeps
# small heaps from rebuilding on every other renew (trio uses the same idea).
_PRUNE_SLACK: Final = 1000


# The slow path of argument checking (the methods inline the common case of
# an in-range plain int): normalise int subclasses, refuse everything else.


def _lease_id(x: object) -> int:
    if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < _U64_LIMIT:
        return int(x)
    raise InvalidArgument(f"lease_id must be an int in [0, 2**64), got {x!r}")


def _time(x: object, name: str) -> int:
    if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < _I64_LIMIT:
        return int(x)
    raise InvalidArgument(f"{name} must be an int in [0, 2**63) nanoseconds, got {x!r}")


def _is_lease_id(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < _U64_LIMIT


class LeaseHeap:
    """Leases keyed by id, each with a deadline; expired ones come out in order.

    Contract (identical in the compiled module and its pure twin):

    - A lease id is an ``int`` in ``[0, 2**64)``; a time (``expires_at``,
      ``now``) is an ``int`` of nanoseconds in ``[0, 2**63)``. Anything else
      (``bool``, ``float``, a negative or too-large int) raises
      ``rsc.errors.InvalidArgument``. Subclasses of ``int`` other than ``bool``
      are accepted and stored as plain ``int``.
    - ``add`` of an id already present raises ``InvalidArgument`` (use
      ``renew``). ``renew`` and ``remove`` of an absent id raise
      ``KeyError(lease_id)``; ``discard`` never raises for an absent id.
    - ``pop_expired(now)`` removes and returns the ids of every lease with
      ``expires_at <= now``, earliest deadline first. Equal deadlines come out
      in the order of the ``add``/``renew`` call that set them (a ``renew``
      counts as a fresh insertion, even to the same deadline), decided by an
      internal counter, never by object identity: the same calls always give
      the same order.
    - ``add``, ``renew``, ``remove``, ``discard`` and each lease popped cost
      O(log n); ``next_deadline``, ``deadline_of``, ``len`` and ``in`` cost
      O(1) (amortised in the pure twin, whose skipped garbage was paid for
      by the renew or remove that left it). A million leases are fine.
    - ``x in heap`` is ``False`` for anything that is not a valid lease id.

    Memory (this twin, 64-bit CPython 3.11, ids and times past the small-int
    cache): about 230 bytes per live lease (a 3-tuple and its three ints, a
    dict slot, a list slot); garbage from renew/remove adds up to about 100
    bytes per live lease more until it is popped or the heap is rebuilt.
    """

    __slots__ = ("_heap", "_entries", "_seq")

    _heap: list[tuple[int, int, int]]
    _entries: dict[int, tuple[int, int, int]]
    _seq: int

    def __init__(self) -> None:
        self._heap = []  # (deadline, seq, lease_id); may hold garbage, see module doc
        self._entries = {}  # lease_id -> its live heap tuple
        self._seq = 0  # tie-break counter; seq values are unique, so tuples never compare ids

    def add(self, lease_id: int, expires_at: int) -> None:
        """Start tracking ``lease_id``, expiring at ``expires_at``."""
        # The common case inline; the helpers sort out subclasses and errors.
        if type(lease_id) is not int or not 0 <= lease_id < _U64_LIMIT:
            lease_id = _lease_id(lease_id)
        if type(expires_at) is not int or not 0 <= expires_at < _I64_LIMIT:
            expires_at = _time(expires_at, "expires_at")
        entries = self._entries
        if lease_id in entries:
            raise InvalidArgument(
                f"lease {lease_id} is already in the heap; use renew() to move its deadline"
            )
        seq = self._seq
        self._seq = seq + 1
        entry = (expires_at, seq, lease_id)
        entries[lease_id] = entry
        heappush(self._heap, entry)

    def renew(self, lease_id: int, expires_at: int) -> None:
        """Move the deadline of ``lease_id`` (earlier or later); ``KeyError`` if absent."""
        if type(lease_id) is not int or not 0 <= lease_id < _U64_LIMIT:
            lease_id = _lease_id(lease_id)
        if type(expires_at) is not int or not 0 <= expires_at < _I64_LIMIT:
            expires_at = _time(expires_at, "expires_at")
        entries = self._entries
        if lease_id not in entries:
            raise KeyError(lease_id)
        seq = self._seq
        self._seq = seq + 1
        entry = (expires_at, seq, lease_id)
        entries[lease_id] = entry
        heap = self._heap
        heappush(heap, entry)
        if len(heap) > 2 * len(entries) + _PRUNE_SLACK:
            self._rebuild()

    def remove(self, lease_id: int) -> None:
        """Stop tracking ``lease_id``; ``KeyError`` if absent."""
        if not self.discard(lease_id):
            raise KeyError(int(lease_id))  # discard has validated it

    def discard(self, lease_id: int) -> bool:
        """Stop tracking ``lease_id`` if present; return whether it was."""
        if type(lease_id) is not int or not 0 <= lease_id < _U64_LIMIT:
            lease_id = _lease_id(lease_id)
        entries = self._entries
        if entries.pop(lease_id, None) is None:
            return False
        if len(self._heap) > 2 * len(entries) + _PRUNE_SLACK:
            self._rebuild()
        return True

    # The compiled heap has these on C values for a compiled caller
    # (rsc._engine.deadlines); here they are the same methods.
    add_raw = add
    renew_raw = renew
    discard_raw = discard

    def pop_expired(self, now: int, limit: int | None = None) -> list[int]:
        """Remove and return the ids of leases with ``expires_at <= now``, in order.

        With ``limit``, return at most that many (the earliest ones); the rest
        stay for the next call.
        """
        now = _time(now, "now")
        if limit is None:
            remaining = -1  # never reaches 0
        elif isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            remaining = int(limit)
            if remaining == 0:
                return []
        else:
            raise InvalidArgument(f"limit must be None or an int >= 0, got {limit!r}")
        heap = self._heap
        entries = self._entries
        expired: list[int] = []
        while heap and heap[0][0] <= now:
            entry = heappop(heap)
            lease_id = entry[2]
            if entries.get(lease_id) is entry:
                del entries[lease_id]
                expired.append(lease_id)
                remaining -= 1
                if remaining == 0:
                    break
        return expired

    def next_deadline(self) -> int | None:
        """The earliest deadline, or ``None`` when empty."""
        heap = self._heap
        entries = self._entries
        while heap:
            entry = heap[0]
            if entries.get(entry[2]) is entry:
                return entry[0]
            heappop(heap)
        return None

    def deadline_of(self, lease_id: int) -> int | None:
        """The deadline of ``lease_id``, or ``None`` if it is not in the heap."""
        entry = self._entries.get(_lease_id(lease_id))
        return None if entry is None else entry[0]

    def clear(self) -> None:
        """Remove every lease."""
        self._heap = []
        self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, lease_id: object) -> bool:
        return _is_lease_id(lease_id) and lease_id in self._entries

    def __repr__(self) -> str:
        return f"LeaseHeap(len={len(self)}, next_deadline={self.next_deadline()})"

    def _rebuild(self) -> None:
        # O(live); runs only after more than live + _PRUNE_SLACK garbage pushes,
        # so it is O(1) amortised per renew/remove.
        heap = list(self._entries.values())
        heapify(heap)
        self._heap = heap
