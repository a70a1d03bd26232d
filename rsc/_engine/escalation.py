"""Lease escalation as a sans-I/O machine: what happens when a lease lapses.

A remote task's escalation policy (``rsc.lease.Fail``, ``CancelThen``,
``Retry``) decides what the caller sees when its lease lapses, or when the
node it was written to turns out to be a new process. This module holds that
decision, for every policy, as a small state machine per remote task (one
record across all its attempts). It does no I/O and reads no clock: the
origin engine feeds it events and the time, asks it for its next deadline
(the cancel timeout, the same-node window) and applies what it decides.

States (``EscState``) and events (``EscEvent``) follow
``ESCALATION_TRANSITIONS``; a decision is a list of ``Decision`` values:

- ``Settle(message)``: settle the caller's handle with LeaseExpired(message);
- ``Cancel(reason)``: send the node a CANCEL_REQUEST for the current attempt;
- ``Forget()``: stop tracking the current attempt (nothing more is awaited);
- ``Reattempt(node, reason)``: supersede the current attempt with a new one
  of the same idempotency key on ``node`` (the old one is cancelled where
  reachable and its late result dropped).

Rules (PROTOCOL.md section 8, "Rules an origin keeps", and ``rsc.lease``):

1. ``Fail``: the first lapse settles LeaseExpired and sends a best-effort cancel.
2. ``CancelThen(t)``: the first lapse sends a cancel and waits ``t`` seconds
   for the node's answer; each further lapse meanwhile cancels again; at the
   deadline the task is given up on (LeaseExpired).
3. ``Retry(n, nodes, same_node_within_s)``: each lapse spends one of ``n``
   attempts on the next of ``nodes`` (the same node if none); with
   ``same_node_within_s=S`` it first goes back to the same node and moves on
   to the next of ``nodes`` if that attempt is not accepted within S seconds
   or lapses. With no attempts left it fails as ``Fail``.
4. A node restart: a node that kept its journal is asked again for the same
   key where the policy prefers the same node (``prefers_same_node``),
   without spending an attempt; else ``Retry`` spends one (not first on the
   same node), and ``Fail``/``CancelThen`` settle LeaseExpired at once.
5. Once settled (DONE), a lapse of a task still watched only forgets it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rsc._core.messages import CANCEL_KIND_LEASE_EXPIRED
from rsc.lease import CancelThen, LeasePolicy, Retry, prefers_same_node

MS = 1_000_000
_LEASE_EXPIRED_KIND = CANCEL_KIND_LEASE_EXPIRED  # the wire's constant: rsc.types is not for engines


class EscState(enum.IntEnum):
    WATCHING = 0  # nothing lapsed yet, or a new attempt runs
    CANCELLING = 1  # CancelThen: waiting for the answer to the cancel, until the deadline
    ON_SAME_NODE = 2  # Retry with same_node_within_s: the same node has until the deadline to accept
    DONE = 3  # settled by escalation


class EscEvent(enum.IntEnum):
    LAPSED = 0  # the current attempt's lease lapsed
    NODE_RESTARTED = 1  # the node of the current attempt is a new process
    DEADLINE = 2  # the cancel timeout or the same-node window passed


E, EE = EscState, EscEvent

# Every move the machine can make; which of the listed next states is taken
# depends on the policy and the attempts left (``Escalation.on_*``).
ESCALATION_TRANSITIONS: dict[tuple[EscState, EscEvent], frozenset[EscState]] = {
    (E.WATCHING, EE.LAPSED): frozenset({E.DONE, E.CANCELLING, E.WATCHING, E.ON_SAME_NODE}),
    (E.WATCHING, EE.NODE_RESTARTED): frozenset({E.DONE, E.WATCHING}),
    (E.CANCELLING, EE.LAPSED): frozenset({E.CANCELLING}),  # cancel again
    (E.CANCELLING, EE.NODE_RESTARTED): frozenset({E.DONE, E.WATCHING}),
    (E.CANCELLING, EE.DEADLINE): frozenset({E.DONE}),
    (E.ON_SAME_NODE, EE.LAPSED): frozenset({E.WATCHING}),  # move on to the fallback node
    (E.ON_SAME_NODE, EE.NODE_RESTARTED): frozenset({E.DONE, E.WATCHING}),
    (E.ON_SAME_NODE, EE.DEADLINE): frozenset({E.WATCHING}),  # moved on, or accepted in time
    (E.DONE, EE.LAPSED): frozenset({E.DONE}),
    (E.DONE, EE.NODE_RESTARTED): frozenset({E.DONE}),
}


@dataclass(frozen=True, slots=True)
class Settle:
    message: str


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: tuple


@dataclass(frozen=True, slots=True)
class Forget:
    pass


@dataclass(frozen=True, slots=True)
class Reattempt:
    node: str
    reason: tuple


Decision = Settle | Cancel | Forget | Reattempt


def lease_message(lease_ms: int, node: str, extra: str = "") -> str:
    """What a LeaseExpired says for a lapse."""
    return f"lease of {lease_ms} ms on node {node!r} lapsed with neither renewal nor result{extra}"


class Escalation:
    """One remote task's escalation, across its attempts.

    ``state`` is an ``EscState``; ``deadline`` (ns) is when ``on_deadline``
    is due, or None. The ``on_*`` methods take the current attempt's node
    and lease and return the decisions, in order."""

    __slots__ = ("policy", "state", "retries_left", "attempts", "fallback", "deadline")

    def __init__(self, policy: LeasePolicy) -> None:
        self.policy = policy
        self.state = EscState.WATCHING
        self.retries_left = policy.attempts
        self.attempts = 1  # attempts made so far (the current one included)
        self.fallback: str | None = None  # ON_SAME_NODE: where to go next
        self.deadline: int | None = None

    def _go(self, event: EscEvent, nxt: EscState) -> None:
        allowed = ESCALATION_TRANSITIONS.get((self.state, event), frozenset())
        assert nxt in allowed, f"escalation {self.state.name} --{event.name}--> {nxt.name} is not in the table"
        self.state = nxt

    def _reattempt(self, node: str, reason: tuple) -> Reattempt:
        self.attempts += 1
        return Reattempt(node, reason)

    def _retry(self, node: str, reason: tuple, now: int, same_node_first: bool,
               event: EscEvent) -> list[Decision]:
        policy = self.policy
        self.retries_left -= 1
        other = policy.nodes[(self.attempts - 1) % len(policy.nodes)] if policy.nodes else node
        if same_node_first and policy.same_node_within_s is not None and other != node:
            self._go(event, EscState.ON_SAME_NODE)
            self.fallback = other
            self.deadline = now + int(policy.same_node_within_s * 1e9)
            return [self._reattempt(node, reason)]
        self._go(event, EscState.WATCHING)
        return [self._reattempt(other, reason)]

    def on_lapsed(self, node: str, lease_ms: int, now: int) -> list[Decision]:
        """The current attempt's lease lapsed."""
        reason = (_LEASE_EXPIRED_KIND, "origin saw the lease lapse")
        state, policy = self.state, self.policy
        if state is EscState.DONE:
            self._go(EscEvent.LAPSED, EscState.DONE)
            return [Forget()]
        if state is EscState.CANCELLING:
            self._go(EscEvent.LAPSED, EscState.CANCELLING)
            return [Cancel(reason)]  # keep asking until the deadline decides
        if state is EscState.ON_SAME_NODE:
            other, self.fallback, self.deadline = self.fallback, None, None
            self._go(EscEvent.LAPSED, EscState.WATCHING)
            return [self._reattempt(other, reason)]  # type: ignore[arg-type]
        if isinstance(policy, Retry) and self.retries_left > 0:
            return self._retry(node, reason, now, True, EscEvent.LAPSED)
        if isinstance(policy, CancelThen):
            self._go(EscEvent.LAPSED, EscState.CANCELLING)
            self.deadline = now + int(policy.timeout_s * 1e9)
            return [Cancel(reason)]
        self._go(EscEvent.LAPSED, EscState.DONE)
        return [Settle(lease_message(lease_ms, node)), Cancel(reason)]

    def on_node_restarted(self, node: str, kept_journal: bool, now: int) -> list[Decision]:
        """The node of the current attempt answered a reconnect as a new process."""
        reason = (_LEASE_EXPIRED_KIND, "the node restarted while the task was in flight")
        policy = self.policy
        if self.state is EscState.DONE:
            self._go(EscEvent.NODE_RESTARTED, EscState.DONE)
            return [Forget()]
        self.fallback = self.deadline = None
        if kept_journal and prefers_same_node(policy):
            # it answers for the key from its journal: ask it again there
            self._go(EscEvent.NODE_RESTARTED, EscState.WATCHING)
            return [self._reattempt(node, reason)]
        if isinstance(policy, Retry) and self.retries_left > 0:
            return self._retry(node, reason, now, False, EscEvent.NODE_RESTARTED)
        self._go(EscEvent.NODE_RESTARTED, EscState.DONE)
        why = "has no record of it" if not kept_journal else f"policy {policy} sends it nowhere"
        return [Settle(f"node {node!r} restarted while the task was in flight and {why}; its "
                       f"outcome is lost (it may or may not have run)"), Cancel(reason)]

    def on_deadline(self, node: str, lease_ms: int, accepted: bool) -> list[Decision]:
        """``deadline`` passed: the cancel went unanswered, or the same-node
        window closed (``accepted``: whether the current attempt was accepted)."""
        self.deadline = None
        if self.state is EscState.CANCELLING:
            self._go(EscEvent.DEADLINE, EscState.DONE)
            return [Forget(), Settle(lease_message(
                lease_ms, node, f"; no answer to the cancel within {self.policy.timeout_s} s"))]
        other, self.fallback = self.fallback, None
        self._go(EscEvent.DEADLINE, EscState.WATCHING)
        if accepted or other is None:
            return []  # accepted in time: it stays where it is
        reason = (_LEASE_EXPIRED_KIND,
                  f"node {node!r} did not accept the retry within {self.policy.same_node_within_s} s")
        return [self._reattempt(other, reason)]
