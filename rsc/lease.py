"""Leases as the caller sees them, and what to do when one lapses.

A remote task's lease is an obligation of the region that spawned it: the
node renews it while the task runs; it is released when the task's outcome
arrives. If it lapses with neither renewal nor result, the spawn's escalation
policy decides what the caller sees:

- ``fail()``: ``join`` raises LeaseExpired (a best-effort cancel is still sent);
- ``cancel(timeout_s)``: send a cancel and wait up to ``timeout_s`` for the
  node's answer (Cancelled, or the real outcome if it finished first); if none
  comes, LeaseExpired;
- ``retry(attempts, nodes=…)``: spawn again with the same idempotency key, on
  the same node or the next of ``nodes`` in turn; the superseded attempt is
  cancelled where reachable and its late result dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsc.errors import InvalidArgument

ACTIVE, RELEASED, EXPIRED = "active", "released", "expired"


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    kind: str  # "fail" | "cancel" | "retry"
    timeout_s: float = 5.0
    attempts: int = 0
    nodes: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "retry":
            where = f", nodes={list(self.nodes)}" if self.nodes else ""
            return f"retry({self.attempts}{where})"
        if self.kind == "cancel":
            return f"cancel({self.timeout_s})"
        return "fail()"


def fail() -> LeasePolicy:
    return LeasePolicy("fail")


def cancel(timeout_s: float = 5.0) -> LeasePolicy:
    if not timeout_s > 0:
        raise InvalidArgument(f"cancel() needs a positive timeout, got {timeout_s!r}")
    return LeasePolicy("cancel", timeout_s=float(timeout_s))


def retry(attempts: int = 1, nodes: list[str] | tuple[str, ...] | None = None) -> LeasePolicy:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidArgument(f"retry() needs attempts >= 1, got {attempts!r}")
    return LeasePolicy("retry", attempts=attempts, nodes=tuple(nodes or ()))


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
