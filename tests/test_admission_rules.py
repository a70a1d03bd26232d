"""Spawn admission is one ordered list of rules (PROTOCOL.md section 7).

The list (``ADMISSION_RULES``) is the rule; ``NodeEngine.admission_verdict``
writes it out as straight-line calls. These tests hold the two to each other
over randomized spawns and engine states, hold the list to the order the
protocol document gives, and check the order where two rules both apply.
"""

from __future__ import annotations

import os
import random
import re

from rsc._core import envelope
from rsc._core.messages import (
    OUTCOME_CANCELLED,
    REJECT_CAPACITY_EXCEEDED,
    REJECT_IDEMPOTENCY_CONFLICT,
    REJECT_INVALID_INPUT,
    REJECT_NODE_SHUTTING_DOWN,
    REJECT_UNKNOWN_COMPUTATION,
    CancelRequest,
    SpawnRequest,
)
from rsc._engine.node import (
    ADMISSION_RULES,
    MAX_LEASE_MS,
    VERDICT_DUPLICATE,
    VERDICT_REJECT,
    VERDICT_TOMBSTONED,
    NodeEngine,
)
from tests.engine_link import Link, wire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANCEL_USER = (1, "user")


def _names() -> list[str]:
    return list(ADMISSION_RULES)


def test_the_protocol_document_lists_the_rules_in_the_same_order() -> None:
    with open(os.path.join(ROOT, "docs", "PROTOCOL.md"), encoding="utf-8") as fh:
        text = fh.read()
    section = text[text.index("#### Spawn admission"):text.index("## 8.")]
    listed = re.findall(r"^(\d+)\. `(_rule_\w+)`", section, re.M)
    assert [int(n) for n, _ in listed] == list(range(1, len(listed) + 1))
    assert [name for _, name in listed] == _names()


def test_every_rule_cites_its_place_in_the_protocol() -> None:
    for i, name in enumerate(ADMISSION_RULES, 1):
        doc = getattr(NodeEngine, name).__doc__ or ""
        assert f"§7.{i}:" in doc, name  # a compiled method's doc starts with its signature


def _spawn_fields(rng: random.Random, rtid_hi: int) -> tuple:
    rtid = rng.randrange(1, rtid_hi)
    key = rng.choice([rtid, rtid + 1, rng.randrange(1, rtid_hi)]).to_bytes(16, "big")
    if rng.random() < 0.05:
        key = key[:8]
    return (rtid, rng.choice(["echo", "echo", "slow", "nope"]),
            rng.choice([b"in", b"other", b"bad", b"x" * 2000]),
            rng.choice([3_000, 3_000, 0, MAX_LEASE_MS + 1]), key, None,
            "origin-a" if rng.random() < 0.9 else "origin-b", 7, 8, None, rng.random() < 0.5)


def _norm(v: tuple | None) -> tuple | None:
    if v is None or v[0] != VERDICT_DUPLICATE:
        return v
    return (v[0], v[1].key, v[1].finished, v[2])  # a record snapshot compared by what it holds


def test_the_written_out_chain_is_the_list() -> None:
    rng = random.Random(11)
    for _run in range(60):
        link = Link(capacity=rng.choice([1, 3, 8]), bad_inputs={b"bad"})
        link.connect()
        node = link.node
        for rtid in range(1, 12):  # some running, some finished, some tombstoned
            r = rng.random()
            if r < 0.4:
                link.spawn(rtid=rtid)
            elif r < 0.55:
                link.node.receive(link.conn, wire(CancelRequest("origin-a", 1, rtid, CANCEL_USER,
                                                                "origin-a")), link.now)
                link.flush()
        for task in link.started[: rng.randrange(len(link.started) + 1)]:
            link.finish(task)
        if rng.random() < 0.2:
            node.begin_drain()
        for _ in range(60):
            f = _spawn_fields(rng, 14)
            comp = node.admission.find(f[1])
            first = next((v for v in (getattr(node, name)("origin-a", f, comp)
                                      for name in ADMISSION_RULES)
                          if v is not None), None)
            assert _norm(node.admission_verdict("origin-a", f, comp)) == _norm(first), f


def _send_spawn(link: Link, rtid: int, key: bytes, *, computation: str = "echo",
                data: bytes = b"in", lease_ms: int = 3_000, origin_node: str = "origin-a") -> tuple:
    """Hand the node one SPAWN_REQUEST; return the SPAWN_ACK's (status, reject code, detail)."""
    link.collect()
    link.to_origin.clear()
    link.node.receive(link.conn, wire(SpawnRequest("origin-a", 1, rtid, computation, data,
                                                   lease_ms, key, None, origin_node, 7, 8, None)),
                      link.now)
    link.collect()
    acks = [m for m in link.to_origin if type(m).__name__ == "SpawnAck"]
    assert len(acks) == 1
    fields = envelope.fields(acks[0])
    link.to_origin.clear()
    return fields


def _k(n: int) -> bytes:
    return n.to_bytes(16, "big")


def test_order_where_two_rules_apply() -> None:
    link = Link(capacity=1, bad_inputs={b"bad"})
    link.connect()
    # 1 before 2: another origin's spawn with a short key is the mismatch
    ack = _send_spawn(link, 1, b"short", origin_node="origin-b")
    assert ack[2] == REJECT_INVALID_INPUT and "origin_node" in ack[3]
    # 3 before 5: a zero lease with an oversized input
    ack = _send_spawn(link, 1, _k(1), lease_ms=0, data=b"x" * 2000)
    assert "lease_ms must be positive" in ack[3]
    # 5 before 6: an oversized resend of a running task is refused for its size
    t = link.spawn(rtid=10)
    ack = _send_spawn(link, 10, _k(10), data=b"x" * 2000)
    assert "input is 2000 bytes" in ack[3]
    # 6 before 7 and 8: the same task id under another key is a conflict, tombstone or not
    ack = _send_spawn(link, 10, _k(99))
    assert ack[2] == REJECT_IDEMPOTENCY_CONFLICT and "another idempotency key" in ack[3]
    # 8 before 11: a duplicate of the running task is accepted at capacity
    ack = _send_spawn(link, 11, _k(10))
    assert ack[1] == 0 and link.node.running == 1
    # 11 before 12 (and 10 before 11): at capacity, an unknown computation is unknown
    ack = _send_spawn(link, 12, _k(12), computation="nope")
    assert ack[2] == REJECT_UNKNOWN_COMPUTATION
    ack = _send_spawn(link, 13, _k(13), data=b"bad")
    assert ack[2] == REJECT_CAPACITY_EXCEEDED
    link.finish(link.started[0])
    assert t.rtid == 10
    # 7 before 9 and 10: a tombstoned spawn of an unknown computation on a draining node is Cancelled
    link.node.receive(link.conn, wire(CancelRequest("origin-a", 1, 20, CANCEL_USER, "origin-a")),
                      link.now)
    link.node.begin_drain()
    link.collect()
    link.to_origin.clear()
    link.node.receive(link.conn, wire(SpawnRequest("origin-a", 1, 20, "nope", b"in", 3_000, _k(20),
                                                   None, "origin-a", 7, 8, None)), link.now)
    link.collect()
    kinds = [type(m).__name__ for m in link.to_origin]
    assert kinds == ["SpawnAck", "ResultDelivery"]
    assert envelope.fields(link.to_origin[0])[1] == 0
    assert envelope.fields(link.to_origin[1])[1] == OUTCOME_CANCELLED
    # 8 before 9: a duplicate of a finished task is answered on a draining node
    link.to_origin.clear()
    ack = _send_spawn(link, 21, _k(10))
    assert ack[1] == 0
    # 9: anything new is refused while draining, even with a bad input
    ack = _send_spawn(link, 22, _k(22), data=b"bad")
    assert ack[2] == REJECT_NODE_SHUTTING_DOWN


def test_verdict_kinds() -> None:
    link = Link()
    link.connect()
    node = link.node
    link.spawn(rtid=1)
    f = (2, "echo", b"in", 3_000, _k(1), None, "origin-a", 7, 8, None, False)
    v = node.admission_verdict("origin-a", f, node.admission.find("echo"))
    assert v[0] == VERDICT_DUPLICATE and v[2] is False
    link.node.receive(link.conn, wire(CancelRequest("origin-a", 1, 5, CANCEL_USER, "origin-a")),
                      link.now)
    f = (5, "echo", b"in", 3_000, _k(5), None, "origin-a", 7, 8, None, False)
    assert node.admission_verdict("origin-a", f, node.admission.find("echo")) == (VERDICT_TOMBSTONED,)
    f = (6, "nope", b"in", 3_000, _k(6), None, "origin-a", 7, 8, None, False)
    assert node.admission_verdict("origin-a", f, None)[:2] == (VERDICT_REJECT, REJECT_UNKNOWN_COMPUTATION)
