"""Leases as the caller sees them, and what to do when one lapses.

A lease is a time-bounded obligation that keeps work alive: its holder renews
it before it runs out; it is released when the work is done, or expires if
neither happens in time. ``Lease`` is one you hold yourself (rules below);
``handle.lease`` is a remote task's, a live ``RemoteLease`` (``rsc.handle``).

A remote task's lease is an obligation of the region that spawned it: the
node renews it while the task runs; it is released when the task's outcome
arrives. If it lapses with neither renewal nor result, the spawn's escalation
policy decides what the caller sees:

- ``fail()``: ``join`` raises LeaseExpired (a best-effort cancel is still sent);
- ``cancel(timeout_s)``: send a cancel and wait up to ``timeout_s`` for the
  node's answer (Cancelled, or the real outcome if it finished first); if none
  comes, LeaseExpired;
- ``retry(attempts, nodes=…, same_node_within_s=None)``: spawn again with the
  same idempotency key, on the same node or the next of ``nodes`` in turn; the
  superseded attempt is cancelled where reachable and its late result dropped.
  With ``same_node_within_s=S`` a retry first goes back to the same node and
  moves on to ``nodes`` only if that node has not accepted it within S
  seconds (a node restarted on its journal then answers the key from it).

The same policy decides, at once, when an origin reconnects to a node that
turns out to be a new process (it restarted): what was in flight there is
lost, so ``fail()`` and ``cancel(t)`` raise LeaseExpired saying so and
``retry`` spawns again as above, except that ``same_node_within_s`` only
keeps the retry on that node if it restarted on its journal. Such a node
(``rsc node --state-dir``) answers for its old tasks itself, so a task
whose policy does not send it elsewhere is simply asked again there (a
result it finished is returned; one it was running is answered cancelled).

What holds (the guide's "Idempotency: exactly what it guarantees"): a key runs at most once on one node while
that node keeps its records (its TTL; across restarts only with a journal);
a retry on another node may run work the first node also ran, so across nodes
it is at least once.
"""

from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass
from time import monotonic
from typing import Any, ClassVar

from rsc.errors import InvalidArgument, LeaseError


class LeasePolicy:
    """What to do when a remote task's lease lapses: ``Fail``, ``CancelThen``
    or ``Retry`` (made by ``fail()``, ``cancel()`` and ``retry()``).

    Every policy answers ``kind`` ("fail", "cancel" or "retry") and the fields
    of all three, with the defaults for those it does not have."""

    __slots__ = ()
    kind: ClassVar[str] = ""
    timeout_s: float = 5.0
    attempts: int = 0
    nodes: tuple[str, ...] = ()
    same_node_within_s: float | None = None


@dataclass(frozen=True, slots=True)
class Fail(LeasePolicy):
    """``join`` raises LeaseExpired (a best-effort cancel is still sent)."""

    kind: ClassVar[str] = "fail"

    def __str__(self) -> str:
        return "fail()"


@dataclass(frozen=True, slots=True)
class CancelThen(LeasePolicy):
    """Send a cancel and wait up to ``timeout_s`` for the node's answer; if
    none comes, LeaseExpired."""

    kind: ClassVar[str] = "cancel"
    timeout_s: float = 5.0

    def __str__(self) -> str:
        return f"cancel({self.timeout_s})"


@dataclass(frozen=True, slots=True)
class Retry(LeasePolicy):
    """Spawn again with the same key, up to ``attempts`` times: on ``nodes``
    in turn (the same node if none), first on the same node if
    ``same_node_within_s`` is given (see the module docstring)."""

    kind: ClassVar[str] = "retry"
    attempts: int = 1
    nodes: tuple[str, ...] = ()
    same_node_within_s: float | None = None

    def __str__(self) -> str:
        where = f", nodes={list(self.nodes)}" if self.nodes else ""
        if self.same_node_within_s is not None:
            where += f", same_node_within_s={self.same_node_within_s}"
        return f"retry({self.attempts}{where})"


def fail() -> Fail:
    """The default policy: when the lease lapses, ``join`` raises
    LeaseExpired at once (a best-effort cancel is still sent to the node)."""
    return Fail()


def cancel(timeout_s: float = 5.0) -> CancelThen:
    """The policy that, when the lease lapses, sends the node a cancel and
    waits up to ``timeout_s`` seconds for its answer: ``join`` then raises
    RemoteCancelled (or returns the real outcome, if the task finished
    first); if no answer comes, LeaseExpired. Raises InvalidArgument for a
    ``timeout_s`` that is not positive."""
    if not timeout_s > 0:
        raise InvalidArgument(f"cancel() needs a positive timeout, got {timeout_s!r}")
    return CancelThen(float(timeout_s))


def retry(attempts: int = 1, nodes: list[str] | tuple[str, ...] | None = None,
          same_node_within_s: float | None = None) -> Retry:
    """The policy that spawns the task again when its lease lapses (or its
    node is found restarted), with the same idempotency key, up to
    ``attempts`` times: on the next of ``nodes`` in turn, or on the same node
    if ``nodes`` is empty. With ``same_node_within_s=S`` each retry goes back
    to the same node first and moves on to ``nodes`` only if that node has
    not accepted it within S seconds (a node restarted on its journal then
    answers the key from it). The superseded attempt is cancelled where
    reachable and its late result dropped. Once the attempts are spent,
    ``join`` raises LeaseExpired.

    On one node that keeps its records a key runs at most once; a retry on
    another node may run work the first node also ran (at least once).
    Raises InvalidArgument for ``attempts < 1`` or a ``same_node_within_s``
    that is not a positive number."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidArgument(f"retry() needs attempts >= 1, got {attempts!r}")
    if same_node_within_s is not None:
        if (isinstance(same_node_within_s, bool) or not isinstance(same_node_within_s, (int, float))
                or not same_node_within_s > 0):
            raise InvalidArgument(f"retry() needs a positive same_node_within_s (seconds) or None, "
                                  f"got {same_node_within_s!r}")
        same_node_within_s = float(same_node_within_s)
    return Retry(attempts, tuple(nodes or ()), same_node_within_s)


def prefers_same_node(policy: LeasePolicy) -> bool:
    """Whether a task under ``policy`` should stay on its node when that node
    restarted on its journal (every policy but a retry that names other nodes
    without ``same_node_within_s``)."""
    return not isinstance(policy, Retry) or not policy.nodes or policy.same_node_within_s is not None


DEFAULT_POLICY = fail()




# ------------------------------------------------------------------- leases


class LeaseState(str, enum.Enum):
    """Where a lease is. ``str()`` prints ``Active``, ``Released`` or
    ``Expired``; a member also equals its value, the lower-case word
    (``LeaseState.RELEASED == "released"``), as ``handle.lease.state`` was a
    plain string before."""

    ACTIVE = "active"  # not released, not marked expired (its time may have run out: is_expired(now))
    RELEASED = "released"  # released by its holder (a remote task's: its outcome arrived)
    EXPIRED = "expired"  # ran out with neither renewal nor release

    def __str__(self) -> str:
        return self.name.title()

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


ACTIVE, RELEASED, EXPIRED = LeaseState.ACTIVE, LeaseState.RELEASED, LeaseState.EXPIRED

#: obligation ids of the standalone leases made without one (process-wide, from 1)
_obligation_ids = itertools.count(1)


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise InvalidArgument(f"{what} must be a finite number of seconds (int or float), got {x!r}")
    return float(x)


def _duration(x: Any) -> float:
    d = _number(x, "a lease duration")
    if d < 0:
        raise InvalidArgument(f"a lease duration must be >= 0 seconds, got {x!r}")
    return d


class Lease:
    """A time-bounded obligation that keeps work alive, for your own
    bookkeeping: made active, expiring ``duration`` seconds after ``now``;
    ``renew`` moves the expiry to ``now + duration``, ``release`` ends it
    cleanly, ``mark_expired`` records that it ran out::

        create -> Active --renew()--> Active (extended)
                    |-- release() ----> Released
                    '-- runs out -----> Expired (renew() after it, or mark_expired())

    Rules: renewing at or after the expiry fails with ``LeaseError.Expired``
    and marks the lease expired; renewing a released lease fails with
    ``LeaseError.Released``; releasing twice fails with
    ``LeaseError.AlreadyReleased``; releasing an expired lease fails with
    ``LeaseError.Expired``; ``mark_expired`` is idempotent but fails with
    ``LeaseError.Released`` on a released lease.

    Time is seconds (float) on one clock, the lease's: ``time.monotonic()``
    when a ``now`` argument is None (the default), or any clock you pass
    consistently as ``now`` (virtual time in a test: ``Lease(30, now=10)``
    expires at 40). ``now()`` reads the lease's clock.

    ``region``, ``holder`` and ``obligation_id`` are for bookkeeping (ints,
    or None); ``obligation_id`` defaults to a fresh number, unique in the
    process among leases made without one.

    ``handle.lease`` is a ``RemoteLease`` (``rsc.handle``), a live view of a
    remote task's lease with the same surface: its node renews it and its
    outcome releases it, so its ``renew``/``release``/``mark_expired`` refuse.
    """

    __slots__ = ("_obligation_id", "_region", "_holder", "_expires_at", "_initial_duration",
                 "_state", "_renewal_count")

    def __init__(self, duration: float, now: float | None = None, *, region: int | None = None,
                 holder: int | None = None, obligation_id: int | None = None) -> None:
        duration = _duration(duration)
        start = self.now() if now is None else _number(now, "now")
        for name, v in (("region", region), ("holder", holder), ("obligation_id", obligation_id)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise InvalidArgument(f"a lease's {name} must be an int or None, got {v!r}")
        self._obligation_id = next(_obligation_ids) if obligation_id is None else obligation_id
        self._region = region
        self._holder = holder
        self._expires_at: float | None = start + duration
        self._initial_duration = duration
        self._state = ACTIVE
        self._renewal_count = 0

    # -- what it is -------------------------------------------------------------
    @property
    def obligation_id(self) -> int:
        """The obligation this lease stands for (a remote task's: its remote task id)."""
        return self._obligation_id

    @property
    def region(self) -> int | None:
        """The region that owns the lease."""
        return self._region

    @property
    def holder(self) -> int | None:
        """The task that holds the lease (a remote task's: the local task that spawned it)."""
        return self._holder

    @property
    def expires_at(self) -> float | None:
        """When the lease runs out unless renewed (seconds on the lease's clock).
        Kept once released or expired. None only for a remote task's lease
        whose clock has not started (the spawn is not yet written to its node)."""
        return self._expires_at

    @property
    def initial_duration(self) -> float:
        """The duration it was made with (seconds)."""
        return self._initial_duration

    @property
    def state(self) -> LeaseState:
        """``ACTIVE``, ``RELEASED`` or ``EXPIRED`` (an ``rsc.LeaseState``)."""
        return self._state

    @property
    def renewal_count(self) -> int:
        """How many renewals were applied to it."""
        return self._renewal_count

    @property
    def duration_s(self) -> float:
        """``initial_duration`` (the name of the snapshot this class replaced)."""
        return self.initial_duration

    @property
    def expires_at_ns(self) -> int | None:
        """``expires_at`` in int ns while the state is Active, else None (the
        field of the snapshot this class replaced)."""
        at = self.expires_at
        return round(at * 1e9) if at is not None and self.state is ACTIVE else None

    # -- reading it at a time ---------------------------------------------------------
    def now(self) -> float:
        """The time on the lease's clock (seconds): ``time.monotonic()``."""
        return monotonic()

    def _at(self, now: float | None) -> float:
        return self.now() if now is None else _number(now, "now")

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before the expiry at ``now`` (default: the lease's
        clock), 0.0 at or after it; the whole duration if not started."""
        at = self.expires_at
        if at is None:
            return self.initial_duration
        return max(0.0, at - self._at(now))

    def is_active(self, now: float | None = None) -> bool:
        """Active and not run out at ``now`` (default: the lease's clock)."""
        if self.state is not ACTIVE:
            return False
        at = self.expires_at
        return at is None or self._at(now) < at

    def is_expired(self, now: float | None = None) -> bool:
        """Marked expired, or active with its time run out at ``now`` (default:
        the lease's clock)."""
        state = self.state
        if state is EXPIRED:
            return True
        at = self.expires_at
        return state is ACTIVE and at is not None and self._at(now) >= at

    @property
    def is_released(self) -> bool:
        """Whether the lease was released (its work is done)."""
        return self.state is RELEASED

    # -- changing it -----------------------------------------------------------------
    def renew(self, duration: float, now: float | None = None) -> None:
        """Extend the lease to expire ``duration`` seconds after ``now``
        (default: the lease's clock) and count the renewal. Raises
        ``LeaseError.Released`` if released, ``LeaseError.Expired`` if expired
        or if its time ran out at ``now`` (and marks it expired)."""
        duration = _duration(duration)
        at = self._at(now)
        if self._state is RELEASED:
            raise LeaseError.Released(f"lease {self._obligation_id} was released; "
                                      f"a released lease cannot be renewed")
        if self._state is EXPIRED:
            raise LeaseError.Expired(f"lease {self._obligation_id} expired; "
                                     f"an expired lease cannot be renewed")
        if self._expires_at is not None and at >= self._expires_at:
            self._state = EXPIRED
            raise LeaseError.Expired(f"lease {self._obligation_id} ran out at {self._expires_at} "
                                     f"before this renewal at {at}; it is now expired")
        self._expires_at = at + duration
        self._renewal_count += 1

    def release(self, now: float | None = None) -> None:
        """Release the lease (the obligation is met). Raises
        ``LeaseError.AlreadyReleased`` if released before, ``LeaseError.Expired``
        if expired. ``now`` is checked but not kept."""
        if now is not None:
            _number(now, "now")
        if self._state is RELEASED:
            raise LeaseError.AlreadyReleased(f"lease {self._obligation_id} was released before; "
                                             f"release() may be called once")
        if self._state is EXPIRED:
            raise LeaseError.Expired(f"lease {self._obligation_id} expired; "
                                     f"an expired lease cannot be released")
        self._state = RELEASED

    def mark_expired(self) -> None:
        """Record that the lease ran out (idempotent). Raises
        ``LeaseError.Released`` if it was released."""
        if self._state is RELEASED:
            raise LeaseError.Released(f"lease {self._obligation_id} was released; "
                                      f"a released lease cannot expire")
        self._state = EXPIRED

    def snapshot(self) -> Lease:
        """A standalone copy of the lease as it is now (``Lease``, not live)."""
        out = Lease.__new__(Lease)
        out._obligation_id = self.obligation_id
        out._region = self.region
        out._holder = self.holder
        out._expires_at = self.expires_at
        out._initial_duration = self.initial_duration
        out._state = self.state
        out._renewal_count = self.renewal_count
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.state}, expires_at={self.expires_at}, "
                f"initial_duration={self.initial_duration}, renewals={self.renewal_count}, "
                f"region={self.region}, holder={self.holder}, obligation={self.obligation_id})")
