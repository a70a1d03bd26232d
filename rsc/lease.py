"""Leases as the caller sees them, and what to do when one lapses.

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

What holds (README "Guarantees"): a key runs at most once on one node while
that node keeps its records (its TTL; across restarts only with a journal);
a retry on another node may run work the first node also ran, so across nodes
it is at least once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rsc.errors import InvalidArgument

ACTIVE, RELEASED, EXPIRED = "active", "released", "expired"


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
    return Fail()


def cancel(timeout_s: float = 5.0) -> CancelThen:
    if not timeout_s > 0:
        raise InvalidArgument(f"cancel() needs a positive timeout, got {timeout_s!r}")
    return CancelThen(float(timeout_s))


def retry(attempts: int = 1, nodes: list[str] | tuple[str, ...] | None = None,
          same_node_within_s: float | None = None) -> Retry:
    """Spawn again with the same key: on ``nodes`` in turn (the same node if
    none), or first on the same node if ``same_node_within_s`` is given (see
    the module docstring)."""
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


@dataclass(frozen=True, slots=True)
class Lease:
    """A snapshot of one remote task's lease."""

    duration_s: float
    state: str  # ACTIVE, RELEASED or EXPIRED
    expires_at_ns: int | None  # on the origin's clock; None once not active
    region: int
    holder: int

    @property
    def is_active(self) -> bool:
        return self.state == ACTIVE
