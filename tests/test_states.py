"""The transition tables hold exactly PROTOCOL.md's edges (plus the documented extras)."""

from __future__ import annotations

from rsc._engine.states import (
    NODE_TERMINAL,
    NODE_TRANSITIONS,
    ORIGIN_TERMINAL,
    NodeEvent as NE,
    NodeState as N,
    OriginEvent as OE,
    OriginState as O,
    advance_node,
    advance_origin,
    origin_after,
)

PROTOCOL_ORIGIN = [
    (O.INIT, OE.SEND_SPAWN, O.SPAWNED),
    (O.SPAWNED, OE.ACK_ACCEPTED, O.RUNNING),
    (O.RUNNING, OE.RESULT, O.COMPLETED),
    (O.SPAWNED, OE.ACK_REJECTED, O.REJECTED),
    (O.SPAWNED, OE.SEND_CANCEL, O.CANCEL_SENT),
    (O.RUNNING, OE.SEND_CANCEL, O.CANCEL_SENT),
    (O.CANCEL_SENT, OE.RESULT, O.COMPLETED),
    (O.RUNNING, OE.LEASE_LAPSED, O.LEASE_EXPIRED),
    (O.LEASE_EXPIRED, OE.SEND_CANCEL, O.CANCEL_SENT),
    (O.LEASE_EXPIRED, OE.RESULT, O.COMPLETED),
]

PROTOCOL_NODE = [
    (N.INIT, NE.RECV_SPAWN, N.SPAWN_RECEIVED),
    (N.SPAWN_RECEIVED, NE.SEND_ACK_ACCEPTED, N.RUNNING),
    (N.RUNNING, NE.SEND_RESULT, N.COMPLETED),
    (N.SPAWN_RECEIVED, NE.SEND_ACK_REJECTED, N.REJECTED),
    (N.CANCEL_RECEIVED, NE.SEND_RESULT, N.COMPLETED),
    (N.RUNNING, NE.RECV_CANCEL, N.CANCEL_RECEIVED),
    (N.RUNNING, NE.ORIGIN_SILENT, N.CANCEL_RECEIVED),
    (N.INIT, NE.RECV_CANCEL, N.TOMBSTONED),
    (N.TOMBSTONED, NE.SEND_ACK_ACCEPTED, N.COMPLETED),
    (N.COMPLETED, NE.RECV_CANCEL, N.COMPLETED),
    (N.COMPLETED, NE.RECV_DUPLICATE_SPAWN, N.COMPLETED),
]


def test_every_protocol_edge_is_in_the_tables() -> None:
    for s, e, t in PROTOCOL_ORIGIN:
        assert advance_origin(s, e) is t, (s, e)
    for s, e, t in PROTOCOL_NODE:
        assert advance_node(s, e) is t, (s, e)


def test_terminal_states_have_no_way_out() -> None:
    for s in ORIGIN_TERMINAL:
        assert all(advance_origin(s, e) is None for e in OE)
    for (s, _e), t in NODE_TRANSITIONS.items():
        if s in NODE_TERMINAL:
            assert t is s  # only the re-send self-loops


def test_unlisted_pairs_do_not_fit() -> None:
    assert advance_origin(O.INIT, OE.RESULT) is None
    assert advance_origin(O.COMPLETED, OE.RESULT) is None
    assert advance_node(N.REJECTED, NE.RECV_CANCEL) is None
    assert advance_node(N.INIT, NE.SEND_RESULT) is None


def test_origin_after_is_a_column_of_the_table() -> None:
    for event in OE:
        column = origin_after(event)
        assert len(column) == len(O)
        for state in O:
            assert column[state] == advance_origin(state, event)
