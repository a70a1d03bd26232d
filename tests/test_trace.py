"""Trace records: what the engines report, in order, and merged across files."""

from __future__ import annotations

import json
from pathlib import Path

from rsc.trace import Trace, merge
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
    assert "handshake" in events and "drop" in events
