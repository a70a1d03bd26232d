"""The per-task state machines of both sides, as transition tables.

This file owns them: nothing else decides which state follows which.

Rules the tables keep:

1. A transition is ``(state, event) -> next state``. A pair that is not in the
   table does not fit: ``advance`` returns ``None``; the origin engine's one
   transition path (``OriginEngine._process``) then drops the event and
   reports a ``RemoteProtocolError``. State never changes on a dropped event.
2. Terminal states (origin: COMPLETED, REJECTED; node: COMPLETED, REJECTED)
   have no outgoing transition except the node's COMPLETED self-loops, which
   re-send a finished task's result on a CANCEL or a duplicate SPAWN.
3. The origin table matches PROTOCOL.md section 4 plus two edges the protocol
   implies: a lease can lapse while a spawn is unacknowledged (SPAWNED), and a
   RESULT can arrive before its ACK is read (SPAWNED -> COMPLETED) once the
   ACK was written by the node first but reordered in our own queues. Two
   origin-only events: NODE_RESTARTED (a reconnect found a new node process;
   what was written to the old one lapses at once) and REFUSE (the origin
   gives up a spawn it never wrote: its input is more than the node's WELCOME
   says it takes, or the node cannot be reached or refused the handshake; a
   spawn cancelled before it was written is given up the same way).
4. The node table is PROTOCOL.md's diagram, with TOMBSTONED for a cancel that
   arrived before its spawn. It has no CANCEL_PENDING (a cancel between a
   spawn's receipt and its ack): the node decides a spawn within the step that
   receives it, so nothing could hold that state; a later cancel meets the
   task RUNNING, or its finished record. The node engine changes a task's state only
   through ``NodeEngine.process``, which reads this table; PROTOCOL.md section
   6 says what holds each node state (TOMBSTONED: the idempotency table's
   tombstone; REJECTED: nothing past the step that rejects).
"""

from __future__ import annotations

import enum


class OriginState(enum.IntEnum):
    INIT = 0
    SPAWNED = 1
    RUNNING = 2
    CANCEL_SENT = 3
    LEASE_EXPIRED = 4
    COMPLETED = 5
    REJECTED = 6


class OriginEvent(enum.IntEnum):
    SEND_SPAWN = 0
    ACK_ACCEPTED = 1
    ACK_REJECTED = 2
    RENEWAL = 3
    RESULT = 4
    SEND_CANCEL = 5
    LEASE_LAPSED = 6
    NODE_RESTARTED = 7  # the node answered a reconnect as a new process
    REFUSE = 8  # the origin gives up a spawn it never wrote (see rule 3)


class NodeState(enum.IntEnum):
    INIT = 0
    SPAWN_RECEIVED = 1
    RUNNING = 2
    CANCEL_RECEIVED = 3
    COMPLETED = 4
    REJECTED = 5
    TOMBSTONED = 6


class NodeEvent(enum.IntEnum):
    RECV_SPAWN = 0
    SEND_ACK_ACCEPTED = 1
    SEND_ACK_REJECTED = 2
    RECV_CANCEL = 3
    SEND_RESULT = 4
    ORIGIN_SILENT = 5
    RECV_DUPLICATE_SPAWN = 6


O, OE = OriginState, OriginEvent
N, NE = NodeState, NodeEvent

ORIGIN_TRANSITIONS: dict[tuple[OriginState, OriginEvent], OriginState] = {
    (O.INIT, OE.SEND_SPAWN): O.SPAWNED,
    (O.SPAWNED, OE.SEND_SPAWN): O.SPAWNED,  # resend with the same key after a reconnect
    (O.SPAWNED, OE.ACK_ACCEPTED): O.RUNNING,
    (O.SPAWNED, OE.ACK_REJECTED): O.REJECTED,
    (O.SPAWNED, OE.RESULT): O.COMPLETED,
    (O.SPAWNED, OE.SEND_CANCEL): O.CANCEL_SENT,
    (O.SPAWNED, OE.LEASE_LAPSED): O.LEASE_EXPIRED,
    (O.SPAWNED, OE.NODE_RESTARTED): O.LEASE_EXPIRED,
    (O.SPAWNED, OE.REFUSE): O.REJECTED,
    (O.RUNNING, OE.SEND_SPAWN): O.RUNNING,  # resend after a reconnect: the node dedups
    (O.RUNNING, OE.ACK_ACCEPTED): O.RUNNING,  # ack of a resend
    (O.RUNNING, OE.RENEWAL): O.RUNNING,
    (O.RUNNING, OE.RESULT): O.COMPLETED,
    (O.RUNNING, OE.SEND_CANCEL): O.CANCEL_SENT,
    (O.RUNNING, OE.LEASE_LAPSED): O.LEASE_EXPIRED,
    (O.RUNNING, OE.NODE_RESTARTED): O.LEASE_EXPIRED,
    (O.CANCEL_SENT, OE.ACK_ACCEPTED): O.CANCEL_SENT,
    (O.CANCEL_SENT, OE.ACK_REJECTED): O.REJECTED,
    (O.CANCEL_SENT, OE.RENEWAL): O.CANCEL_SENT,
    (O.CANCEL_SENT, OE.SEND_CANCEL): O.CANCEL_SENT,  # re-sent after a reconnect
    (O.CANCEL_SENT, OE.RESULT): O.COMPLETED,
    (O.CANCEL_SENT, OE.LEASE_LAPSED): O.LEASE_EXPIRED,
    (O.CANCEL_SENT, OE.REFUSE): O.REJECTED,  # cancelled before it was ever written
    (O.LEASE_EXPIRED, OE.SEND_CANCEL): O.CANCEL_SENT,
    (O.LEASE_EXPIRED, OE.RESULT): O.COMPLETED,
}

NODE_TRANSITIONS: dict[tuple[NodeState, NodeEvent], NodeState] = {
    (N.INIT, NE.RECV_SPAWN): N.SPAWN_RECEIVED,
    (N.INIT, NE.RECV_CANCEL): N.TOMBSTONED,
    (N.SPAWN_RECEIVED, NE.SEND_ACK_ACCEPTED): N.RUNNING,
    (N.SPAWN_RECEIVED, NE.SEND_ACK_REJECTED): N.REJECTED,
    (N.RUNNING, NE.RECV_CANCEL): N.CANCEL_RECEIVED,
    (N.RUNNING, NE.ORIGIN_SILENT): N.CANCEL_RECEIVED,
    (N.RUNNING, NE.SEND_RESULT): N.COMPLETED,
    (N.RUNNING, NE.RECV_DUPLICATE_SPAWN): N.RUNNING,
    (N.CANCEL_RECEIVED, NE.RECV_CANCEL): N.CANCEL_RECEIVED,
    (N.CANCEL_RECEIVED, NE.RECV_DUPLICATE_SPAWN): N.CANCEL_RECEIVED,
    (N.CANCEL_RECEIVED, NE.ORIGIN_SILENT): N.CANCEL_RECEIVED,
    (N.CANCEL_RECEIVED, NE.SEND_RESULT): N.COMPLETED,
    (N.TOMBSTONED, NE.RECV_SPAWN): N.TOMBSTONED,
    (N.TOMBSTONED, NE.SEND_ACK_ACCEPTED): N.COMPLETED,  # answered Cancelled; nothing runs
    (N.TOMBSTONED, NE.RECV_CANCEL): N.TOMBSTONED,
    (N.COMPLETED, NE.RECV_CANCEL): N.COMPLETED,  # result re-sent
    (N.COMPLETED, NE.RECV_DUPLICATE_SPAWN): N.COMPLETED,  # result re-sent
}

ORIGIN_TERMINAL = frozenset({O.COMPLETED, O.REJECTED})
NODE_TERMINAL = frozenset({N.COMPLETED, N.REJECTED})


# Dense lookup tables: indexing a list with an IntEnum uses int's C-level
# __index__, while hashing an Enum member calls a Python-level __hash__ — the
# dict form above stays the readable source of truth, these are derived from it.
_ORIGIN_DENSE: list[list[OriginState | None]] = [[None] * len(OriginEvent) for _ in OriginState]
for (_s, _e), _t in ORIGIN_TRANSITIONS.items():
    _ORIGIN_DENSE[_s][_e] = _t
_NODE_DENSE: list[list[NodeState | None]] = [[None] * len(NodeEvent) for _ in NodeState]
for (_ns, _ne), _nt in NODE_TRANSITIONS.items():
    _NODE_DENSE[_ns][_ne] = _nt


def advance_origin(state: OriginState, event: OriginEvent) -> OriginState | None:
    """The origin state after ``event``, or None when the event does not fit."""
    return _ORIGIN_DENSE[state][event]


def origin_after(event: OriginEvent) -> tuple[OriginState | None, ...]:
    """``advance_origin(s, event)`` for every state ``s``, indexed by state: a
    hot path that always applies the same event indexes this instead of calling."""
    return tuple(_ORIGIN_DENSE[s][event] for s in OriginState)


def node_after(event: NodeEvent) -> tuple[NodeState | None, ...]:
    """``advance_node(s, event)`` for every state ``s``, indexed by state (as ``origin_after``)."""
    return tuple(_NODE_DENSE[s][event] for s in NodeState)


def advance_node(state: NodeState, event: NodeEvent) -> NodeState | None:
    """The node state after ``event``, or None when the event does not fit."""
    return _NODE_DENSE[state][event]
