"""Core value types and the error family: validation, equality, hashing, printing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rsc
from rsc.errors import InvalidArgument, SerializationError, spawn_rejected
from rsc.types import (
    MAX_CAUSE_DEPTH,
    Budget,
    CancelKind,
    CancelReason,
    ComputationName,
    IdempotencyKey,
    NodeId,
    OutcomeKind,
    RemoteInput,
    RemoteOutcome,
    RemoteTaskId,
    RemoteTaskIdAllocator,
    RemoteTaskState,
    Severity,
)


def test_node_id_and_computation_name_validate_and_print() -> None:
    n = NodeId("worker-1")
    assert n == "worker-1" and hash(n) == hash("worker-1") and repr(n) == "NodeId('worker-1')"
    assert str(n) == "worker-1" and NodeId(n) is n
    for bad in ("", "x" * 256, "a\nb", "é" * 128):
        with pytest.raises(InvalidArgument):
            NodeId(bad)
    with pytest.raises(InvalidArgument, match="must be a str"):
        NodeId(5)  # type: ignore[arg-type]
    assert ComputationName("encode_block") == "encode_block"
    assert ComputationName("x") is ComputationName("x")  # cached
    with pytest.raises(InvalidArgument, match="computation name"):
        ComputationName("")


def test_remote_task_ids_and_allocator() -> None:
    assert str(RemoteTaskId(7)) == "RT-7" and repr(RemoteTaskId(7)) == "RemoteTaskId(7)"
    for bad in (-1, 1 << 64, True, 1.0):
        with pytest.raises(InvalidArgument):
            RemoteTaskId(bad)  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning, match="Runtime numbers its own tasks"):
        a = RemoteTaskIdAllocator()
    ids = [a.next() for _ in range(1000)]
    assert ids == sorted(set(ids)) and ids[0] == 1
    with pytest.warns(DeprecationWarning), pytest.raises(InvalidArgument):
        RemoteTaskIdAllocator(0)


def test_remote_input_bytes_and_msgpack() -> None:
    i = RemoteInput(b"abc")
    assert bytes(i) == b"abc" and len(i) == 3 and i == RemoteInput(bytearray(b"abc"))
    assert "3 bytes" in repr(i) and RemoteInput.empty().data == b""
    v = {"a": [1, 2.5, None, True], "b": b"\x00"}
    assert RemoteInput.pack(v).unpack() == v
    with pytest.raises(SerializationError):
        RemoteInput.pack(object())
    with pytest.raises(SerializationError):
        RemoteInput(b"\xc1").unpack()
    with pytest.raises(InvalidArgument, match="RemoteInput.pack"):
        RemoteInput("text")  # type: ignore[arg-type]


def test_idempotency_keys() -> None:
    k = IdempotencyKey.from_raw(0xABC)
    assert str(k) == "IK-" + "0" * 29 + "abc" and k.raw == 0xABC
    assert IdempotencyKey.from_bytes(k.to_bytes()) == k and len(k.to_bytes()) == 16
    assert hash(k) == hash(IdempotencyKey(0xABC))
    r1, r2 = random.Random(5), random.Random(5)
    assert IdempotencyKey.generate(r1) == IdempotencyKey.generate(r2)
    for bad in (-1, 1 << 128, True):
        with pytest.raises(InvalidArgument):
            IdempotencyKey(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        IdempotencyKey.from_bytes(b"short")


@given(st.tuples(*[st.one_of(st.none(), st.integers(0, 10**12))] * 3, st.integers(0, 255)),
       st.tuples(*[st.one_of(st.none(), st.integers(0, 10**12))] * 3, st.integers(0, 255)))
def test_budget_meet_keeps_the_tighter_of_each(a: tuple, b: tuple) -> None:
    x, y = Budget(*a), Budget(*b)
    m = x.meet(y)
    assert m == y.meet(x)
    for f in ("deadline_ns", "poll_quota", "cost_quota"):
        vals = [v for v in (getattr(x, f), getattr(y, f)) if v is not None]
        assert getattr(m, f) == (min(vals) if vals else None)
    assert m.priority == max(x.priority, y.priority)
    assert m.meet(Budget.INFINITE) == m  # type: ignore[attr-defined]


def test_budget_wire_form_carries_time_remaining() -> None:
    b = Budget(deadline_ns=5_500_000_000, poll_quota=3, priority=9)
    wire = b.to_wire(now_ns=1_000_000_000)
    assert wire == (4500, 3, None, 9)
    assert Budget.from_wire(wire, now_ns=10).deadline_ns == 10 + 4500 * 1_000_000
    assert Budget(deadline_ns=5).to_wire(now_ns=100)[0] == 0  # already passed: zero, not negative
    for bad in (dict(priority=256), dict(poll_quota=-1), dict(deadline_ns=True)):
        with pytest.raises(InvalidArgument):
            Budget(**bad)


def test_cancel_kinds_and_reasons() -> None:
    assert len(CancelKind) == 12 and CancelKind.LEASE_EXPIRED == 11 and str(CancelKind.FAIL_FAST) == "fail_fast"
    user = CancelReason.user("stop")
    shut = CancelReason(CancelKind.SHUTDOWN)
    assert user.strengthen(shut) is shut and shut.strengthen(user) is shut
    same = CancelReason(CancelKind.USER, "other")
    assert user.strengthen(same) is user  # a tie keeps the existing reason
    child = user.caused(CancelKind.PARENT_CANCELLED, "region closed")
    assert child.cause == user and [r.kind for r in child.chain()] == [CancelKind.PARENT_CANCELLED, CancelKind.USER]
    assert str(child) == "parent_cancelled: region closed (caused by user: stop)"
    assert CancelReason.from_wire(child.to_wire()) == CancelReason(CancelKind.PARENT_CANCELLED, "region closed")
    with pytest.raises(InvalidArgument):
        CancelReason(12)  # type: ignore[arg-type]


def test_cause_chain_is_bounded() -> None:
    r = CancelReason.user("root")
    for i in range(100):
        r = r.caused(CancelKind.PARENT_CANCELLED, str(i))
    assert r.depth == MAX_CAUSE_DEPTH
    assert r.message == "99"  # the newest links are kept


def test_outcomes_severity_and_errors() -> None:
    ok = RemoteOutcome.success(b"x")
    err = RemoteOutcome.failed("bad")
    can = RemoteOutcome.cancelled(CancelReason.user())
    pan = RemoteOutcome.panicked("crash")
    assert [o.severity for o in (ok, err, can, pan)] == [Severity.OK, Severity.ERR, Severity.CANCELLED, Severity.PANICKED]
    assert Severity.OK < Severity.ERR < Severity.CANCELLED < Severity.PANICKED
    assert ok.unwrap() == b"x" and ok.is_success and str(ok) == "Success(1 bytes)"
    with pytest.raises(rsc.RemoteFailed, match="bad"):
        err.unwrap()
    with pytest.raises(rsc.RemoteCancelled):
        can.unwrap()
    with pytest.raises(rsc.RemotePanicked):
        pan.unwrap()
    for o in (ok, err, can, pan):
        assert RemoteOutcome.from_wire(*o.to_wire()) == o
    assert RemoteOutcome.from_wire(0, b"x", 99).execution_time_ns == 99
    assert OutcomeKind(3) is OutcomeKind.PANICKED


def test_task_states() -> None:
    assert [s.value for s in RemoteTaskState] == [0, 1, 2, 3, 4, 5]
    assert str(RemoteTaskState.LEASE_EXPIRED) == "LeaseExpired"
    assert RemoteTaskState.COMPLETED.is_terminal and not RemoteTaskState.RUNNING.is_terminal


def test_spawn_rejected_family_carries_codes() -> None:
    e = spawn_rejected(1, "no such thing", "w1", "nope")
    assert isinstance(e, rsc.UnknownComputation) and isinstance(e, rsc.SpawnRejected)
    assert (e.code, e.reason, e.node, e.computation) == (1, "unknown_computation", "w1", "nope")
    assert "rejected by node 'w1'" in str(e)
    assert type(spawn_rejected(6, "")) is rsc.CapabilityDenied
    assert type(spawn_rejected(99, "")) is rsc.SpawnRejected
    assert rsc.MalformedFrame("x").code == 4 if hasattr(rsc, "MalformedFrame") else True
    assert rsc.errors.MalformedFrame("x").code == 4 and rsc.errors.FrameTooLarge("x").code == 3
    assert "code=2" in repr(rsc.errors.AuthFailed("nope"))
