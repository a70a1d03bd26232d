"""What the idempotency table keeps beside its records, with the TTL rule written once.

Both twins of ``IdemTable`` keep three side structures that expire ``ttl_ns``
after they are laid: tombstones (with the cancel's reason), redeliveries (the
record a duplicate was answered from) and results held for an origin with no
live connection. None of them is on a per-task path, so both twins use these
plain-Python classes rather than each writing the same queues again.

The rule they share (``ExpiryFifo``): an entry expires ``ttl_ns`` after it
was laid, never earlier than the entry laid before it (so the queue stays in
expiry order even if the clock steps back), and ``now + ttl_ns`` must fit an
int64. Eviction walks the queue from its oldest entry, skipping stale ones
(replaced or taken since), and stops at a caller's limit.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from rsc.errors import InvalidArgument

_I64_MAX = (1 << 63) - 1


class ExpiryFifo:
    """``(expires_at, item)`` in expiry order; callers say which are still live."""

    __slots__ = ("ttl", "queue", "_last", "examined", "passed")

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.queue: deque[tuple[int, Any]] = deque()
        self._last = 0
        self.examined = 0  # entries eviction looked at (a debug figure)
        # How many entries from the head a caller has walked past already (the
        # kept-result budget's cursor); popping the head keeps it on its entry.
        self.passed = 0

    def push(self, item: Any, now: int) -> int:
        """Queue ``item`` to expire ``ttl`` after ``now`` (a validated int); its expiry."""
        expires_at = now + self.ttl
        if expires_at > _I64_MAX:
            raise InvalidArgument(f"now + ttl_ns overflows int64 (now={now})")
        if expires_at < self._last:
            expires_at = self._last
        self._last = expires_at
        self.queue.append((expires_at, item))
        return expires_at

    def next_expiry(self, live: Callable[[int, Any], bool]) -> int | None:
        """The earliest live entry's expiry (stale entries at the head are dropped)."""
        queue = self.queue
        while queue:
            expires_at, item = queue[0]
            if live(expires_at, item):
                return expires_at
            queue.popleft()
            if self.passed:
                self.passed -= 1
        return None

    def evict(self, now: int, limit: int, remove: Callable[[int, Any], bool]) -> int:
        """Pop entries due at ``now``; ``remove`` drops a live one and says so.
        Returns how many were removed, at most ``limit``."""
        queue = self.queue
        removed = 0
        while queue and queue[0][0] <= now and removed < limit:
            expires_at, item = queue.popleft()
            if self.passed:
                self.passed -= 1
            self.examined += 1
            if remove(expires_at, item):
                removed += 1
        return removed


class _Expiring:
    """What both side structures share: an ExpiryFifo whose entries a
    subclass judges live (``_live``) and drops (``_remove``)."""

    __slots__ = ("fifo",)

    def __init__(self, ttl: int) -> None:
        self.fifo = ExpiryFifo(ttl)

    def _live(self, expires_at: int, item: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def _drop(self, item: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _remove(self, expires_at: int, item: Any) -> bool:
        if not self._live(expires_at, item):
            return False  # stale: replaced or taken since it was queued
        self._drop(item)
        return True

    def next_expiry(self) -> int | None:
        return self.fifo.next_expiry(self._live)

    def evict(self, now: int, limit: int) -> int:
        return self.fifo.evict(now, limit, self._remove)


class ExpiringMap(_Expiring):
    """A dict whose entries expire ``ttl`` after they were last set."""

    __slots__ = ("_entries",)

    def __init__(self, ttl: int) -> None:
        super().__init__(ttl)
        self._entries: dict[Any, tuple[int, Any]] = {}

    def set(self, key: Any, value: Any, now: int) -> None:
        self._entries[key] = (self.fifo.push(key, now), value)

    def get(self, key: Any, default: Any = None) -> Any:
        entry = self._entries.get(key)
        return default if entry is None else entry[1]

    def pop(self, key: Any) -> bool:
        """Drop ``key``; whether it was there."""
        return self._entries.pop(key, None) is not None

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[Any, int, Any]]:
        """``(key, expires_at, value)`` of every entry."""
        return [(key, exp, value) for key, (exp, value) in self._entries.items()]

    def _live(self, expires_at: int, key: Any) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry[0] == expires_at

    def _drop(self, key: Any) -> None:
        del self._entries[key]


class HeldResults(_Expiring):
    """Outcomes held per origin, in the order they were held, each for ``ttl``.

    Each is a mutable cell ``[expires_at, task_id, outcome]``, found by
    ``(origin, task_id)`` too, so ``replace`` can swap an outcome the table no
    longer keeps (the kept-result budget) for what stands in for it."""

    __slots__ = ("_by_origin", "_cells")

    def __init__(self, ttl: int) -> None:
        super().__init__(ttl)
        self._by_origin: dict[str, deque[list]] = {}
        self._cells: dict[tuple[str, int], list] = {}

    def hold(self, origin: str, task_id: int, outcome: Any, now: int) -> None:
        expires_at = self.fifo.push(origin, now)
        held = self._by_origin.get(origin)
        if held is None:
            held = self._by_origin[origin] = deque()
        cell = [expires_at, task_id, outcome]
        held.append(cell)
        self._cells[(origin, task_id)] = cell

    def replace(self, origin: str, task_id: int, outcome: Any) -> bool:
        """Hold ``outcome`` instead of what is held for ``(origin, task_id)``; whether one was."""
        cell = self._cells.get((origin, task_id))
        if cell is None:
            return False
        cell[2] = outcome
        return True

    def take(self, origin: str) -> list[tuple[int, Any]]:
        """``(task_id, outcome)`` of everything held for ``origin``, oldest first; forgets them."""
        held = self._by_origin.pop(origin, None)
        if held is None:
            return []
        for cell in held:
            self._forget(origin, cell)
        return [(task_id, outcome) for _e, task_id, outcome in held]

    def _forget(self, origin: str, cell: list) -> None:
        pair = (origin, cell[1])
        if self._cells.get(pair) is cell:
            del self._cells[pair]

    def __len__(self) -> int:
        """Origins with something held."""
        return len(self._by_origin)

    def __bool__(self) -> bool:
        return bool(self._by_origin)

    def _live(self, expires_at: int, origin: str) -> bool:
        held = self._by_origin.get(origin)
        return held is not None and held[0][0] == expires_at

    def _drop(self, origin: str) -> None:
        held = self._by_origin[origin]
        self._forget(origin, held.popleft())
        if not held:
            del self._by_origin[origin]
