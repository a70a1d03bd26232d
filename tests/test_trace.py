"""Trace records: what the engines report, in order, and merged across files."""

from __future__ import annotations

import json
from pathlib import Path

from rsc.trace import DROPPED, HANDSHAKE, Trace, merge
from tests.engine_link import Link


def test_trace_records_and_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    tr = Trace("w1", str(path), keep=3)
    for i in range(5):
        tr("drop", {"why": f"r{i}"})
    tr.close()
    assert [r["why"] for r in tr.records] == ["r2", "r3", "r4"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5] and rows[0]["who"] == "w1"


def test_merge_orders_by_time_then_emitter(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ticks = iter([30, 10])
    ta = Trace("a", str(a), clock_ns=lambda: next(ticks))
    ta("x", {})
    ta("y", {})
    ta.close()
    tb = Trace("b", str(b), clock_ns=lambda: 20)
    tb("z", {})
    tb.close()
    assert [r["event"] for r in merge(str(a), str(b))] == ["y", "z", "x"]


def test_engines_trace_drops_and_handshakes() -> None:
    link = Link()
    link.connect()
    t = link.spawn()
    link.finish(link.started[0])
    link.origin.receive("node-1", link.to_origin.pop() if link.to_origin else
                        __import__("rsc._core.messages", fromlist=["x"]).ResultDelivery(
                            "node-1", 9999, t.rtid, 0, b"x", 1), link.now)
    events = [e for e, _ in link.traces]
    assert HANDSHAKE in events and DROPPED in events


def test_the_remote_events_keep_their_documented_names_and_are_traced_per_task() -> None:
    """The ten remote:: names, as public constants, and each emitted where it
    happens: over one engine pair, a spawn accepted and finished, one
    rejected, one cancelled, a renewal each way, a lease that lapses."""
    import rsc.trace as T
    from rsc._engine import node as N

    assert T.REMOTE_EVENTS == (
        "remote::spawn_request_created", "remote::spawn_request_sent", "remote::spawn_ack_received",
        "remote::spawn_rejected", "remote::cancel_sent", "remote::cancel_received",
        "remote::result_delivered", "remote::lease_renewal_sent", "remote::lease_renewal_received",
        "remote::lease_expired")
    from rsc._engine import trace_names

    names = [v for k, v in vars(trace_names).items() if k.isupper() and isinstance(v, str)]
    assert names and all(v.count("::") == 1 and getattr(T, k) == v
                         for k, v in vars(trace_names).items() if k.isupper() and isinstance(v, str))
    link = Link()
    link.connect()
    done = link.spawn(lease_ms=3_000)
    link.spawn(computation="nope")  # rejected: unknown computation
    link.advance(1_100)  # a renewal batch goes out at a third of the lease
    link.flush()
    link.finish(link.started[0])
    cancelled = link.spawn(lease_ms=3_000)
    assert link.origin.cancel(cancelled.rtid, (1, "user"), link.now)
    link.flush()
    lapsing = link.spawn(lease_ms=3_000)
    link.disconnect()
    link.advance(4_000)  # no renewals: its lease lapses
    names = [e for e, _ in link.traces]
    for name in T.REMOTE_EVENTS:
        assert name in names, name
    sent = [f for e, f in link.traces if e == T.SPAWN_REQUEST_SENT]
    assert [f["rtid"] for f in sent][:2] == [done.rtid, done.rtid + 1]
    assert any(f["rtid"] == lapsing.rtid for e, f in link.traces if e == T.LEASE_EXPIRED)
    assert N.TN.CANCEL_RECEIVED == T.CANCEL_RECEIVED


def test_a_runtimes_and_a_nodes_trace_carry_their_engines_lamport_time(tmp_path: Path) -> None:
    """No hand wiring: Runtime and NodeServer stamp a Trace with their engine's
    Lamport clock (rsc trace merge orders by it); a trace that already reads a
    clock keeps it."""
    from rsc import Registry, Runtime
    from rsc.node.server import NodeServer

    rt_trace = Trace("o1")
    rt = Runtime({"n1": "unix:/nonexistent/n1.sock"}, trace=rt_trace)
    rt.engine.clock.time = 41
    rt_trace("x", {})
    node_trace = Trace("n1")
    node = NodeServer("n1", f"unix:{tmp_path}/n1.sock", Registry(), trace=node_trace)
    node.engine.clock.time = 7
    node_trace("y", {})
    own = Trace("o2", lamport=lambda: 99)
    Runtime({"n1": "unix:/nonexistent/n1.sock"}, trace=own)
    own("z", {})
    assert [r["lamport"] for r in (*rt_trace.records, *node_trace.records, *own.records)] == [41, 7, 99]


def test_a_story_is_not_joined_by_records_without_a_task_id() -> None:
    """A spawn record of the region that carries no task id (a spawn refused
    before it had one) must not pull in every record that has none."""
    from rsc.trace import story

    records = [
        {"event": "spawn", "who": "o1", "region_id": 7},  # no rtid
        {"event": "spawn", "who": "o1", "region_id": 7, "rtid": 3},
        {"event": "handshake", "who": "n1", "conn": 1},  # about no task
        {"event": "result", "who": "o1", "rtid": 3},
        {"event": "reattempt", "who": "o1", "rtid": 3},  # no new_rtid
        {"event": "result", "who": "o1", "rtid": 4},
    ]
    told = story(records, region=7)
    assert [r["event"] for r in told] == ["spawn", "spawn", "result", "reattempt"]
