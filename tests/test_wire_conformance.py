"""Conformance of a real node process to the wire protocol (docs/PROTOCOL.md).

Every test talks to a node started with ``tests.registries:basic`` through
``tests/rawclient.py``, a client written from PROTOCOL.md alone (no rsc code), so
a failure here is a place where the node and the written contract disagree.

Most tests share one module-scoped node and use their own origin name, so their
tasks never collide; the few that need a differently configured node, or that
must be alone with it (orphan detection), start their own. Every wait is bounded.
"""

from __future__ import annotations

import itertools
import os
import struct
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.rawclient import (
    ACCEPTED,
    AUTH,
    C_SHUTDOWN,
    R_CAPACITY_EXCEEDED,
    R_NODE_SHUTTING_DOWN,
    E_SHUTTING_DOWN,
    C_LEASE_EXPIRED,
    CANCELLED,
    E_FRAME_TOO_LARGE,
    E_MALFORMED,
    E_UNEXPECTED_MESSAGE,
    E_VERSION_MISMATCH,
    ERROR,
    FAILED,
    HELLO,
    LEASE_RENEWAL,
    LEASE_RENEWAL_BATCH,
    LEASE_RENEWAL_DIGEST,
    LEASE_RESYNC_REQUEST,
    RENEWAL_DIGEST_FEATURE,
    PANICKED,
    PING,
    PONG,
    R_IDEMPOTENCY_CONFLICT,
    R_INVALID_INPUT,
    R_UNKNOWN_COMPUTATION,
    REJECTED,
    RESULT_DELIVERY,
    SPAWN_ACK,
    SPAWN_REQUEST,
    STATUS_REPLY,
    STATUS_REQUEST,
    SUCCESS,
    WELCOME,
    RawClient,
    frame,
    pack,
    renewal_digest,
)

NODE = "worker-1"
MAX_INPUT = 4096  # the shared node's --max-input-bytes
T = 5.0  # default bound on any single wait

STATUS_KEYS = {"pid", "uptime_s", "rss_bytes", "cpu_percent", "capacity", "running", "accepted",
               "completed", "failed", "cancelled", "panicked", "rejected", "idempotency_records",
               "tombstones", "connections", "version"}

_names = itertools.count(1)


# ------------------------------------------------------------------ fixtures


class Node:
    """Where a node listens, its pid, and a way to open raw connections to it."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.address = cluster.nodes[NODE]
        self.path = self.address[len("unix:"):]
        self.pid = cluster.pids[NODE]


@pytest.fixture(scope="module")
def node(module_cluster: Callable[..., Any]) -> Node:
    return Node(module_cluster(1, extra_args=["--max-input-bytes", str(MAX_INPUT)]))


@pytest.fixture
def origin(request: pytest.FixtureRequest) -> str:
    """An origin name no other test uses."""
    return f"raw-{next(_names)}-{request.node.name[:80]}"


@pytest.fixture
def connect() -> Iterator[Callable[..., RawClient]]:
    """``connect(node, name=None, handshake=True)`` → a RawClient, closed at teardown."""
    clients: list[RawClient] = []

    def open_(n: Node, name: str | None = None, handshake: bool = True) -> RawClient:
        rc = RawClient(n.path, name or f"raw-anon-{next(_names)}")
        clients.append(rc)
        if handshake:
            rc.handshake()
        return rc

    yield open_
    for rc in clients:
        rc.close()


# ------------------------------------------------------------------- helpers


def ack_of(rc: RawClient, task: int) -> list:
    ack = rc.recv_ack(task, T)
    # [11, sender, time, remote_task_id, status, reject_code, reject_detail, assigned_node]
    assert len(ack) >= 8, ack
    assert ack[4] in (ACCEPTED, REJECTED), ack
    assert isinstance(ack[5], int) and isinstance(ack[6], str) and isinstance(ack[7], str), ack
    return ack


def assert_accepted(rc: RawClient, task: int) -> list:
    ack = ack_of(rc, task)
    assert ack[4] == ACCEPTED and ack[5] == 0, ack
    return ack


def assert_rejected(rc: RawClient, task: int, code: int) -> list:
    ack = ack_of(rc, task)
    assert (ack[4], ack[5]) == (REJECTED, code), ack
    return ack


def result_of(rc: RawClient, task: int, timeout: float = T) -> list:
    res = rc.recv_result(task, timeout)
    # [13, sender, time, remote_task_id, outcome_kind, payload, execution_time_ns]
    assert len(res) >= 7, res
    assert res[4] in (SUCCESS, FAILED, CANCELLED, PANICKED), res
    assert isinstance(res[6], int) and not isinstance(res[6], bool) and res[6] >= 0, res
    return res


def assert_alive(rc: RawClient, nonce: int = 4242) -> None:
    """The connection still answers: PING → PONG with our nonce."""
    rc.ping(nonce)
    pong = rc.recv_kind(PONG, T)
    assert pong[3] == nonce, pong


def results_for(rc: RawClient, task: int) -> list[list]:
    return [m for m in rc.received if m[0] == RESULT_DELIVERY and m[3] == task]


def assert_no_result_for(rc: RawClient, task: int) -> None:
    """Round-trips a PING so anything sent before it has arrived, then checks."""
    assert_alive(rc)
    assert results_for(rc, task) == [], rc.received


def round_trip(n: Node, name: str | None = None) -> None:
    """A new connection, a handshake, an echo spawn and its result."""
    with RawClient(n.path, name or f"raw-rt-{next(_names)}") as rc:
        rc.handshake()
        data = os.urandom(64)
        rc.spawn(1, "echo", data)
        assert_accepted(rc, 1)
        res = result_of(rc, 1)
        assert (res[4], res[5]) == (SUCCESS, data), res


def count_input(path: Path, token: str = "once") -> bytes:
    return pack({"path": str(path), "token": token})


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# ----------------------------------------------------------------- handshake


def test_unkeyed_handshake_and_welcome_shape(node: Node, connect: Callable[..., RawClient],
                                             origin: str) -> None:
    rc = connect(node, origin, handshake=False)
    rc.clock = 123_456
    rc.hello()
    welcome = rc.recv(T)
    assert welcome[0] == WELCOME, welcome
    assert welcome[2] > 123_457, "WELCOME's stamp must follow the merge of HELLO's"
    assert welcome[1] == NODE
    version, nonce_n, proof, features = welcome[3:7]
    assert version == 1
    assert isinstance(nonce_n, bytes) and len(nonce_n) == 32
    assert proof is None  # unkeyed node
    assert isinstance(features, dict)
    assert all(isinstance(k, str) for k in features)
    assert isinstance(welcome[2], int) and not isinstance(welcome[2], bool)  # Lamport: no clock feature sent
    rc.send(AUTH, None)
    assert_alive(rc)
    # a fresh nonce per handshake
    rc2 = connect(node, origin)
    assert rc2.welcome is not None and rc2.welcome[4] != nonce_n


def test_handshake_pipelined_in_one_write(node: Node, connect: Callable[..., RawClient],
                                          origin: str) -> None:
    """Unkeyed, AUTH needs nothing from WELCOME: HELLO, AUTH and a SPAWN in one write."""
    rc = connect(node, origin, handshake=False)
    data = b"pipelined"
    rc.send_raw(rc.encode(HELLO, 1, "origin", os.urandom(32), {})
                + rc.encode(AUTH, None)
                + rc.encode(SPAWN_REQUEST, 7, "echo", data, 30_000, os.urandom(16), None, origin, 0, 0, None))
    assert rc.recv(T)[0] == WELCOME
    assert_accepted(rc, 7)
    assert result_of(rc, 7)[4:6] == [SUCCESS, data]


def test_node_sends_nothing_but_welcome_before_auth(node: Node, connect: Callable[..., RawClient],
                                                    origin: str) -> None:
    rc = connect(node, origin, handshake=False)
    rc.hello()
    assert rc.recv(T)[0] == WELCOME
    with pytest.raises(TimeoutError):
        rc.recv(0.5)
    rc.send(AUTH, None)
    assert_alive(rc)
    assert [m[0] for m in rc.received] == [WELCOME, PONG]


@pytest.mark.parametrize("when", ["before_hello", "before_auth"])
@pytest.mark.parametrize("what", ["ping", "status", "spawn"])
def test_message_before_handshake_is_unexpected(node: Node, connect: Callable[..., RawClient],
                                                origin: str, tmp_path: Path, when: str, what: str) -> None:
    rc = connect(node, origin, handshake=False)
    if when == "before_auth":
        rc.hello()
        assert rc.recv(T)[0] == WELCOME
    marker = tmp_path / "ran"
    if what == "ping":
        rc.ping(1)
    elif what == "status":
        rc.send(STATUS_REQUEST)
    else:
        rc.spawn(1, "count", count_input(marker))
    err = rc.recv_error(T)
    assert err[3] == E_UNEXPECTED_MESSAGE, err
    assert isinstance(err[4], str)
    assert rc.expect_closed(T)
    assert [m[0] for m in rc.received if m[0] not in (WELCOME,)] == [ERROR], rc.received
    time.sleep(0.1)
    assert not marker.exists(), "a spawn sent before the handshake completed ran"
    round_trip(node)


@pytest.mark.parametrize("fields", [
    (2, "origin", b"\0" * 32, {}),           # v1 shape, version 2
    (2, {"roles": ["origin"]}, [1, 2, 3]),   # what a v2 HELLO might look like
    (2,),                                    # just the version
    (2, "origin", b"\0" * 32, {}, "more", 1),
    (0, "origin", b"\0" * 32, {}),
], ids=["v1-shape", "v2-shape", "version-only", "v2-extra", "version-0"])
def test_hello_other_version_is_version_mismatch(node: Node, connect: Callable[..., RawClient],
                                                 origin: str, fields: tuple) -> None:
    rc = connect(node, origin, handshake=False)
    rc.send(HELLO, *fields)
    err = rc.recv_error(T)
    assert err[3] == E_VERSION_MISMATCH, err
    assert rc.expect_closed(T)


@pytest.mark.parametrize("clock", ["hybrid", "vector", "lamport"])
def test_clock_feature_negotiation(node: Node, connect: Callable[..., RawClient], origin: str,
                                   clock: str) -> None:
    """The node sends non-Lamport stamps only when both HELLO and WELCOME carry
    the clock feature; either way one kind is used on the connection."""
    rc = connect(node, origin, handshake=False)
    rc.handshake(features={"clock": clock})
    assert rc.welcome is not None
    agreed = rc.welcome[6].get("clock") if clock in ("hybrid", "vector") else None
    assert agreed in (None, clock), rc.welcome
    assert_alive(rc)
    rc.spawn(1, "echo", b"c")
    assert_accepted(rc, 1)
    result_of(rc, 1)
    want = {None: int, "hybrid": list, "vector": dict}[agreed]
    for m in rc.received:
        assert isinstance(m[2], want) and not isinstance(m[2], bool), (agreed, m)


def test_hello_with_extra_trailing_fields_is_accepted(node: Node, connect: Callable[..., RawClient],
                                                      origin: str) -> None:
    rc = connect(node, origin, handshake=False)
    rc.hello(extra=("a later minor version's field", {"x": 1}))
    assert rc.recv(T)[0] == WELCOME
    rc.send(AUTH, None, "extra")
    assert_alive(rc)


# ------------------------------------------------------------- bad frames

def _bad(name: str) -> dict[str, tuple[bytes, int]]:
    """Raw bytes to send after the handshake on a connection whose sender is
    ``name``, and the ERROR code each must draw."""
    def msg(*v: Any) -> bytes:
        return frame(pack(list(v)))
    spawn_ok = [SPAWN_REQUEST, name, 100, 1, "echo", b"x", 30_000, b"k" * 16, None, name, 0, 0, None]

    def spawn_with(i: int, v: Any) -> bytes:
        m = list(spawn_ok)
        m[i] = v
        return msg(*m)
    return {
        "zero-length": (b"\0\0\0\0", E_MALFORMED),
        "too-large": ((64 * 1024 * 1024 + 1).to_bytes(4, "big"), E_FRAME_TOO_LARGE),
        "too-large-max": (b"\xff\xff\xff\xff", E_FRAME_TOO_LARGE),
        "not-msgpack": (frame(b"\xc1"), E_MALFORMED),
        "truncated-msgpack": (frame(b"\x94\x10"), E_MALFORMED),
        "trailing-bytes": (frame(pack([PING, name, 100, 1]) + b"\x00"), E_MALFORMED),
        "not-array-map": (frame(pack({"kind": PING})), E_MALFORMED),
        "not-array-int": (frame(pack(16)), E_MALFORMED),
        "empty-array": (msg(), E_MALFORMED),
        "envelope-short": (msg(PING, name), E_MALFORMED),
        "ping-no-nonce": (msg(PING, name, 100), E_MALFORMED),
        "spawn-short": (msg(*spawn_ok[:9]), E_MALFORMED),
        "kind-str": (msg("16", name, 100, 1), E_MALFORMED),
        "kind-negative": (msg(-16, name, 100, 1), E_MALFORMED),
        "kind-bool": (msg(True, name, 100, 1), E_MALFORMED),
        "sender-empty": (msg(PING, "", 100, 1), E_MALFORMED),
        "sender-256-bytes": (msg(PING, "x" * 256, 100, 1), E_MALFORMED),
        "sender-256-utf8-bytes": (msg(PING, "\u00e9" * 128, 100, 1), E_MALFORMED),
        "sender-bin": (msg(PING, name.encode(), 100, 1), E_MALFORMED),
        "sender-nil": (msg(PING, None, 100, 1), E_MALFORMED),
        "nonce-negative": (msg(PING, name, 100, -1), E_MALFORMED),
        "nonce-bool": (msg(PING, name, 100, True), E_MALFORMED),
        "nonce-float": (msg(PING, name, 100, 1.0), E_MALFORMED),
        "nonce-nil": (msg(PING, name, 100, None), E_MALFORMED),
        "vector-time-1025": (msg(PING, name, {f"n{i}": 1 for i in range(1025)}, 1), E_MALFORMED),
        "spawn-task-negative": (spawn_with(3, -1), E_MALFORMED),
        "spawn-task-bool": (spawn_with(3, False), E_MALFORMED),
        "spawn-computation-bin": (spawn_with(4, b"echo"), E_MALFORMED),
        "spawn-input-str": (spawn_with(5, "x"), E_MALFORMED),
        "spawn-lease-bool": (spawn_with(6, True), E_MALFORMED),
        "spawn-lease-negative": (spawn_with(6, -5), E_MALFORMED),
        "spawn-key-str": (spawn_with(7, "k" * 16), E_MALFORMED),
        "spawn-budget-map": (spawn_with(8, {"priority": 1}), E_MALFORMED),
        "spawn-budget-short": (spawn_with(8, [None, None]), E_MALFORMED),
        "spawn-origin-int": (spawn_with(9, 5), E_MALFORMED),
        "spawn-region-negative": (spawn_with(10, -1), E_MALFORMED),
        "spawn-capability-str": (spawn_with(12, "cap"), E_MALFORMED),
        "cancel-reason-not-array": (msg(12, name, 100, 1, 0, name), E_MALFORMED),
        "cancel-reason-short": (msg(12, name, 100, 1, [0], name), E_MALFORMED),
        "cancel-reason-kind-str": (msg(12, name, 100, 1, ["user", None], name), E_MALFORMED),
        "time-str": (msg(PING, name, "100", 1), E_MALFORMED),
        "time-nil": (msg(PING, name, None, 1), E_MALFORMED),
        "time-negative": (msg(PING, name, -1, 1), E_MALFORMED),
        "time-hybrid-short": (msg(PING, name, [100], 1), E_MALFORMED),
        "time-hybrid-str": (msg(PING, name, ["a", 1], 1), E_MALFORMED),
        "time-vector-str-counter": (msg(PING, name, {"a": "1"}, 1), E_MALFORMED),
        "auth-str-after-handshake": (msg(AUTH, name, 100, "proof"), E_MALFORMED),
        "time-vector-int-key": (msg(PING, name, {1: 5}, 1), E_MALFORMED),
        "cancel-reason-message-int": (msg(12, name, 100, 1, [0, 5], name), E_MALFORMED),
        "unknown-kind-99": (msg(99, name, 100, "whatever"), E_UNEXPECTED_MESSAGE),
        "unknown-kind-4": (msg(4, name, 100), E_UNEXPECTED_MESSAGE),
        "node-only-kind-ack": (msg(SPAWN_ACK, name, 100, 1, 0, 0, "", NODE), E_UNEXPECTED_MESSAGE),
        "node-only-kind-result": (msg(RESULT_DELIVERY, name, 100, 1, 0, b"", 0), E_UNEXPECTED_MESSAGE),
        "node-only-kind-welcome": (msg(WELCOME, name, 100, 1, b"\0" * 32, None, {}), E_UNEXPECTED_MESSAGE),
        "node-only-kind-status-reply": (msg(STATUS_REPLY, name, 100, {}), E_UNEXPECTED_MESSAGE),
    }


BAD_CASES = sorted(_bad("x"))


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_frame_closes_only_that_connection(node: Node, connect: Callable[..., RawClient],
                                               origin: str, case: str) -> None:
    # A bystander with a running task on another connection.
    bystander = connect(node, origin + "-bystander")
    bystander.spawn(5, "sleep_ms", pack(300))
    assert_accepted(bystander, 5)

    rc = connect(node, origin)
    data, code = _bad(origin)[case]
    rc.send_raw(data)
    err = rc.recv_error(T)
    assert err[3] == code, err
    assert isinstance(err[4], str), err
    assert rc.expect_closed(T), "the node kept the connection open after the error"

    round_trip(node)
    res = result_of(bystander, 5)
    assert (res[4], msgpack.unpackb(res[5])) == (SUCCESS, 300), res
    assert_alive(bystander)


@pytest.mark.parametrize("case", ["zero-length", "not-msgpack", "too-large", "trailing-bytes",
                                  "sender-empty", "time-str"])
def test_bad_frame_before_handshake(node: Node, connect: Callable[..., RawClient],
                                    origin: str, case: str) -> None:
    rc = connect(node, origin, handshake=False)
    data, code = _bad(origin)[case]
    rc.send_raw(data)
    err = rc.recv_error(T)
    assert err[3] == code, err
    assert rc.expect_closed(T)
    round_trip(node)


@pytest.mark.parametrize("fields", [
    (1, "origin", b"\0" * 32),                 # features missing
    (1, "origin", b"\0" * 32, ["not", "map"]),
    (1, 0, b"\0" * 32, {}),                     # role not str
    (1, "origin", "n" * 32, {}),                # nonce not bin
    (1, "origin", b"\0" * 31, {}),              # nonce not 32 bytes
    (1, "origin", None, {}),
    ("1", "origin", b"\0" * 32, {}),            # version not uint
    (True, "origin", b"\0" * 32, {}),
    (),                                         # nothing at all
], ids=["no-features", "features-array", "role-int", "nonce-str", "nonce-31", "nonce-nil",
        "version-str", "version-bool", "empty"])
def test_malformed_hello(node: Node, connect: Callable[..., RawClient], origin: str, fields: tuple) -> None:
    rc = connect(node, origin, handshake=False)
    rc.send(HELLO, *fields)
    err = rc.recv_error(T)
    assert err[3] == E_MALFORMED, err
    assert rc.expect_closed(T)


@pytest.mark.parametrize("proof", ["str-proof", 5, [None]], ids=["str", "int", "array"])
def test_malformed_auth(node: Node, connect: Callable[..., RawClient], origin: str, proof: Any) -> None:
    rc = connect(node, origin, handshake=False)
    rc.hello()
    assert rc.recv(T)[0] == WELCOME
    rc.send(AUTH, proof)
    err = rc.recv_error(T)
    assert err[3] == E_MALFORMED, err
    assert rc.expect_closed(T)


def test_frame_of_exactly_max_size_is_read(node: Node, connect: Callable[..., RawClient],
                                           origin: str) -> None:
    """A 64 MiB frame is within the limit: its SPAWN_REQUEST is read and its
    over-limit input is rejected as invalid_input, the connection staying up."""
    rc = connect(node, origin)
    limit = 64 * 1024 * 1024

    def body(n: int) -> bytes:
        return pack([SPAWN_REQUEST, origin, 10**6, 1, "echo", b"\0" * n, 30_000, b"k" * 16, None, origin, 0, 0,
                     None])
    n = limit - (len(body(100_000)) - 100_000)
    assert len(body(n)) == limit
    rc.clock = 10**6
    rc.send_frame(body(n))
    assert_rejected(rc, 1, R_INVALID_INPUT)
    assert_alive(rc)


def test_frames_split_byte_by_byte(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin, handshake=False)
    hello = rc.encode(HELLO, 1, "origin", os.urandom(32), {})
    for b in hello:
        rc.send_raw(bytes([b]))
        time.sleep(0.001)
    assert rc.recv(T)[0] == WELCOME
    data = os.urandom(40)
    payload = rc.encode(AUTH, None) + rc.encode(SPAWN_REQUEST, 3, "echo", data, 30_000, os.urandom(16),
                                                None, origin, 0, 0, None)
    for b in payload:
        rc.send_raw(bytes([b]))
        time.sleep(0.001)
    assert_accepted(rc, 3)
    assert result_of(rc, 3)[4:6] == [SUCCESS, data]


def test_many_frames_coalesced_in_one_write(node: Node, connect: Callable[..., RawClient],
                                            origin: str) -> None:
    rc = connect(node, origin)
    blob = b"".join(rc.encode(PING, i) for i in range(200))
    blob += b"".join(rc.encode(SPAWN_REQUEST, 100 + i, "square", pack(i), 30_000, os.urandom(16), None,
                               origin, 0, 0, None) for i in range(20))
    rc.send_raw(blob)
    pongs = [rc.recv_kind(PONG, T)[3] for _ in range(200)]
    assert pongs == list(range(200))
    # The 20 run concurrently in the node's thread pool: their results may
    # come in any order (on CPython 3.13 they often do), each exactly once.
    if not all(results_for(rc, 100 + i) for i in range(20)):
        rc.recv_until(lambda m: all(results_for(rc, 100 + i) for i in range(20)), T)
    for i in range(20):
        (res,) = results_for(rc, 100 + i)
        assert res[4] == SUCCESS and msgpack.unpackb(res[5]) == i * i, res
    acks = [m for m in rc.received if m[0] == SPAWN_ACK]
    assert sorted(m[3] for m in acks) == [100 + i for i in range(20)]
    assert all(m[4] == ACCEPTED for m in acks)


# ------------------------------------------------- extensibility and clocks


def test_extra_trailing_elements_are_ignored(node: Node, connect: Callable[..., RawClient],
                                             origin: str) -> None:
    rc = connect(node, origin)
    # element 13 is the optional "drawn" flag (a bool), element 14 the optional
    # segments (an array of bins; empty: none); what follows them is unknown
    rc.spawn(1, "echo", b"more", extra=(False, [], "future field", [1, 2], {"k": None}),
             budget=[30_000, None, None, 3, "future budget field"])
    assert_accepted(rc, 1)
    assert result_of(rc, 1)[4:6] == [SUCCESS, b"more"]

    rc.spawn(2, "sleep_ms", pack(3000))
    assert_accepted(rc, 2)
    rc.cancel(2, [0, "stop", "future reason field"], extra=("future cancel field",))
    res = result_of(rc, 2)
    assert res[4] == CANCELLED and res[5][:2] == [0, "stop"], res

    rc.send(PING, 77, "future ping field")
    assert rc.recv_kind(PONG, T)[3] == 77


def test_node_stamps_increase_and_merge_lamport(node: Node, connect: Callable[..., RawClient],
                                                origin: str) -> None:
    rc = connect(node, origin)
    for i, t in enumerate([1000, 1001, 50_000, 50_001]):
        rc.send(PING, i, time=t)
        pong = rc.recv_kind(PONG, T)
        assert pong[2] > t, (pong, t)
    rc.clock = 60_000
    rc.spawn(1, "echo", b"t")
    assert_accepted(rc, 1)
    result_of(rc, 1)
    stamps = [m[2] for m in rc.received]
    assert all(isinstance(s, int) and not isinstance(s, bool) for s in stamps), stamps
    assert all(a < b for a, b in zip(stamps, stamps[1:])), stamps
    assert stamps[-1] > 60_000


def test_hybrid_time_stamps_accepted(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    phys = time.time_ns()
    rc.send(PING, 1, time=[phys, 70_000])
    assert rc.recv_kind(PONG, T)[2] > 70_000
    rc.send(PING, 2, time=[phys + 1000, 70_001, "future hybrid field"])
    assert rc.recv_kind(PONG, T)[2] > 70_001
    # a physical part far ahead of the node's clock is still never a reason to reject
    rc.send(PING, 3, time=[phys + 3_600 * 10**9, 70_002])
    assert rc.recv_kind(PONG, T)[3] == 3
    rc.spawn(1, "echo", b"h", time=[phys + 2000, 70_003])
    assert_accepted(rc, 1)
    assert result_of(rc, 1)[4] == SUCCESS
    stamps = [m[2] for m in rc.received]
    assert all(a < b for a, b in zip(stamps, stamps[1:])), stamps


def test_vector_time_stamps_accepted(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    rc.send(PING, 1, time={origin: 80_000, "someone-else": 3})
    assert rc.recv_kind(PONG, T)[2] > 80_000
    rc.send(PING, 2, time={origin: 80_001, "n2": 90_000})
    assert rc.recv_kind(PONG, T)[2] > 90_000
    rc.send(PING, 3, time={f"n{i}": i for i in range(1024)})  # 1,024 entries is still fine
    assert rc.recv_kind(PONG, T)[3] == 3
    rc.spawn(1, "echo", b"v", time={origin: 90_002})
    assert_accepted(rc, 1)
    assert result_of(rc, 1)[4] == SUCCESS
    stamps = [m[2] for m in rc.received]
    assert all(a < b for a, b in zip(stamps, stamps[1:])), stamps


# ------------------------------------------------------------------- spawn


def test_echo_round_trip(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    data = os.urandom(1000)
    rc.spawn(1, "echo", data)
    ack = assert_accepted(rc, 1)
    assert ack[1] == NODE and ack[7] == NODE, ack
    res = result_of(rc, 1)
    assert res[1] == NODE and res[4:6] == [SUCCESS, data], res
    # ACK strictly before RESULT, and exactly one of each
    kinds = [m[0] for m in rc.received if m[0] in (SPAWN_ACK, RESULT_DELIVERY)]
    assert kinds == [SPAWN_ACK, RESULT_DELIVERY]
    assert_alive(rc)
    assert len(results_for(rc, 1)) == 1


@pytest.mark.parametrize("case", ["unknown", "key-15", "key-17", "key-empty", "lease-0", "validator",
                                  "input-over-limit", "origin-mismatch"])
def test_spawn_rejects_and_connection_stays_up(node: Node, connect: Callable[..., RawClient],
                                               origin: str, tmp_path: Path, case: str) -> None:
    rc = connect(node, origin)
    kw: dict[str, Any] = {}
    comp, data, code = "echo", b"x", R_INVALID_INPUT
    if case == "unknown":
        comp, code = "no_such_computation", R_UNKNOWN_COMPUTATION
    elif case.startswith("key-"):
        kw["key"] = {"key-15": b"k" * 15, "key-17": b"k" * 17, "key-empty": b""}[case]
    elif case == "lease-0":
        kw["lease_ms"] = 0
    elif case == "validator":
        comp, data = "positive", pack(-1)
    elif case == "input-over-limit":
        data = b"x" * (MAX_INPUT + 1)
    elif case == "origin-mismatch":
        comp, data = "count", count_input(tmp_path / "ran")
        kw["origin_node"] = origin + "-impostor"
    rc.spawn(1, comp, data, **kw)
    ack = assert_rejected(rc, 1, code)
    assert ack[6], "reject_detail should say why"
    assert_no_result_for(rc, 1)
    assert not (tmp_path / "ran").exists()
    # still usable, and the rejected task id is free for a good spawn
    rc.spawn(1, "echo", b"ok")
    assert_accepted(rc, 1)
    assert result_of(rc, 1)[4:6] == [SUCCESS, b"ok"]


def test_input_at_limit_accepted(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    data = os.urandom(MAX_INPUT)
    rc.spawn(1, "echo", data)
    assert_accepted(rc, 1)
    assert result_of(rc, 1)[4:6] == [SUCCESS, data]


def test_live_task_id_with_another_key_is_conflict(node: Node, connect: Callable[..., RawClient],
                                                   origin: str) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "sleep_ms", pack(400))
    assert_accepted(rc, 1)
    rc.spawn(1, "sleep_ms", pack(400))  # same (origin, id), a fresh key
    assert_rejected(rc, 1, R_IDEMPOTENCY_CONFLICT)
    res = result_of(rc, 1)
    assert (res[4], msgpack.unpackb(res[5])) == (SUCCESS, 400)
    assert_alive(rc)
    assert len(results_for(rc, 1)) == 1


def test_same_key_other_input_is_conflict(node: Node, connect: Callable[..., RawClient],
                                          origin: str) -> None:
    rc = connect(node, origin)
    key = os.urandom(16)
    rc.spawn(1, "echo", b"first", key=key)
    assert_accepted(rc, 1)
    result_of(rc, 1)
    rc.spawn(2, "echo", b"second", key=key)
    assert_rejected(rc, 2, R_IDEMPOTENCY_CONFLICT)
    rc.spawn(3, "square", pack(3), key=key)  # other computation too
    assert_rejected(rc, 3, R_IDEMPOTENCY_CONFLICT)
    assert_no_result_for(rc, 2)
    assert_no_result_for(rc, 3)


def test_short_lease_accepted(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "echo", b"short", lease_ms=1)
    assert_accepted(rc, 1)
    assert result_of(rc, 1)[4:6] == [SUCCESS, b"short"]
    # a 50 ms lease on a 300 ms task, kept alive by frequent pings (lease >= 100 ms)
    rc.spawn(2, "sleep_ms", pack(300), lease_ms=50)
    assert_accepted(rc, 2)
    deadline = time.monotonic() + T
    while not results_for(rc, 2) and time.monotonic() < deadline:
        rc.ping(0)
        try:
            rc.recv(0.02)
        except TimeoutError:
            pass
    res = results_for(rc, 2)[0]
    assert res[4] == SUCCESS, res


def test_same_task_id_from_two_origins_are_separate(node: Node, connect: Callable[..., RawClient],
                                                    origin: str) -> None:
    a = connect(node, origin + "-a")
    b = connect(node, origin + "-b")
    key = os.urandom(16)
    a.spawn(1, "sleep_ms", pack(300), key=os.urandom(16))
    b.spawn(1, "echo", b"b", key=key)
    assert_accepted(a, 1)
    assert_accepted(b, 1)
    assert result_of(b, 1)[4:6] == [SUCCESS, b"b"]
    b.cancel(1, [0, "b cancels its own finished task"])  # must not touch a's task 1
    assert result_of(b, 1)[4:6] == [SUCCESS, b"b"]
    res = result_of(a, 1)
    assert (res[4], msgpack.unpackb(res[5])) == (SUCCESS, 300), res


# ------------------------------------------------------------- idempotency


def test_idempotency_keys_are_scoped_to_the_node(node: Node, connect: Callable[..., RawClient],
                                                  origin: str, tmp_path: Path) -> None:
    """A key is the node's, not the origin's: another origin presenting the same
    key and fingerprint gets the same result, and the work is not redone."""
    a = connect(node, origin + "-a")
    b = connect(node, origin + "-b")
    path = tmp_path / "count"
    key = os.urandom(16)
    a.spawn(1, "count", count_input(path), key=key)
    assert_accepted(a, 1)
    assert result_of(a, 1)[4:6] == [SUCCESS, pack("once")]
    b.spawn(1, "count", count_input(path), key=key)
    assert_accepted(b, 1)
    assert result_of(b, 1, 1.0)[4:6] == [SUCCESS, pack("once")]
    assert lines(path) == 1
    b.spawn(2, "count", count_input(path, "other"), key=key)
    assert_rejected(b, 2, R_IDEMPOTENCY_CONFLICT)


def test_tombstones_are_per_origin(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    a = connect(node, origin + "-a")
    b = connect(node, origin + "-b")
    b.cancel(5, [0, "b's tombstone"])
    assert_alive(b)
    a.spawn(5, "echo", b"a runs")
    assert_accepted(a, 5)
    assert result_of(a, 5)[4:6] == [SUCCESS, b"a runs"]


def test_duplicate_while_running_runs_once(cluster: Callable[..., Any], connect: Callable[..., RawClient],
                                           origin: str, tmp_path: Path) -> None:
    """One pool thread, kept busy, so the first `count` task is still unfinished
    when its duplicate arrives."""
    n = Node(cluster(1, threads=1))
    rc = connect(n, origin)
    rc.spawn(1, "block_sync", pack(0.6))
    assert_accepted(rc, 1)
    path = tmp_path / "count"
    key = os.urandom(16)
    rc.spawn(2, "count", count_input(path), key=key, lease_ms=10_000)
    assert_accepted(rc, 2)
    rc.spawn(3, "count", count_input(path), key=key, lease_ms=20_000)  # lease differs: still a duplicate
    assert_accepted(rc, 3)
    r2, r3 = result_of(rc, 2), result_of(rc, 3)
    assert r2[4:6] == r3[4:6] == [SUCCESS, pack("once")]
    assert lines(path) == 1
    assert_alive(rc)
    assert len(results_for(rc, 2)) == len(results_for(rc, 3)) == 1


def test_duplicate_of_running_sleep_gets_same_result(node: Node, connect: Callable[..., RawClient],
                                                     origin: str) -> None:
    rc = connect(node, origin)
    key = os.urandom(16)
    rc.spawn(1, "sleep_ms", pack(300), key=key)
    assert_accepted(rc, 1)
    rc.spawn(2, "sleep_ms", pack(300), key=key)
    assert_accepted(rc, 2)
    r1, r2 = result_of(rc, 1), result_of(rc, 2)
    assert r1[4:6] == r2[4:6] == [SUCCESS, pack(300)]


def test_duplicate_after_finish_redelivers_at_once(node: Node, connect: Callable[..., RawClient],
                                                   origin: str, tmp_path: Path) -> None:
    rc = connect(node, origin)
    path = tmp_path / "count"
    key = os.urandom(16)
    rc.spawn(1, "count", count_input(path), key=key)
    assert_accepted(rc, 1)
    first = result_of(rc, 1)
    assert first[4:6] == [SUCCESS, pack("once")]
    # a retry from another connection of the same origin, with other lease and budget
    rc2 = connect(node, origin)
    rc2.spawn(2, "count", count_input(path), key=key, lease_ms=5000, budget=[None, None, None, 9])
    assert_accepted(rc2, 2)
    assert result_of(rc2, 2, timeout=1.0)[4:6] == [SUCCESS, pack("once")]
    assert lines(path) == 1


def test_cancel_to_alias_cancels_the_real_task(node: Node, connect: Callable[..., RawClient],
                                               origin: str) -> None:
    rc = connect(node, origin)
    key = os.urandom(16)
    rc.spawn(1, "sleep_ms", pack(5000), key=key)
    assert_accepted(rc, 1)
    rc.spawn(2, "sleep_ms", pack(5000), key=key)
    assert_accepted(rc, 2)
    reason = [7, "cancelled through the alias"]
    rc.cancel(2, reason)
    r1, r2 = result_of(rc, 1, 2.0), result_of(rc, 2, 2.0)
    assert r1[4:6] == r2[4:6] == [CANCELLED, reason], (r1, r2)


# ------------------------------------------------------------------ cancel


@pytest.mark.parametrize("reason", [[1, "stop it"], [0, None], [10, ""]])
def test_cancel_running_task(node: Node, connect: Callable[..., RawClient], origin: str,
                             reason: list) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "sleep_ms", pack(5000))
    assert_accepted(rc, 1)
    t0 = time.monotonic()
    rc.cancel(1, reason)
    res = result_of(rc, 1, 2.0)
    assert res[4:6] == [CANCELLED, reason], res
    assert time.monotonic() - t0 < 2.0
    assert_alive(rc)
    assert len(results_for(rc, 1)) == 1


def test_cancel_blocking_sync_task(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "block_sync", pack(5.0))
    assert_accepted(rc, 1)
    time.sleep(0.1)
    reason = [0, "stop blocking"]
    rc.cancel(1, reason)
    assert result_of(rc, 1, 2.0)[4:6] == [CANCELLED, reason]


def test_cancel_in_the_same_write_as_spawn(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    """SpawnReceived --CANCEL--> CancelPending --ACK accepted--> CancelReceived --RESULT."""
    rc = connect(node, origin)
    reason = [5, "cancelled before the ack"]
    rc.send_raw(rc.encode(SPAWN_REQUEST, 1, "sleep_ms", pack(5000), 30_000, os.urandom(16), None, origin, 0, 0,
                          None) + rc.encode(12, 1, reason, origin))
    assert_accepted(rc, 1)
    assert result_of(rc, 1, 2.0)[4:6] == [CANCELLED, reason]
    assert_alive(rc)
    assert len(results_for(rc, 1)) == 1


def test_cancel_with_rejected_spawn_delivers_nothing(node: Node, connect: Callable[..., RawClient],
                                                     origin: str) -> None:
    """CancelPending --ACK rejected--> Rejected: no RESULT."""
    rc = connect(node, origin)
    rc.send_raw(rc.encode(SPAWN_REQUEST, 1, "no_such_computation", b"", 30_000, os.urandom(16), None, origin,
                          0, 0, None) + rc.encode(12, 1, [0, "x"], origin))
    assert_rejected(rc, 1, R_UNKNOWN_COMPUTATION)
    assert_no_result_for(rc, 1)


def test_deadline_budget_cancels_with_reason_deadline(node: Node, connect: Callable[..., RawClient],
                                                      origin: str) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "sleep_ms", pack(5000), budget=[300, None, None, 0])
    assert_accepted(rc, 1)
    res = result_of(rc, 1, 3.0)
    assert res[4] == CANCELLED and res[5][0] == 2, res  # 2 deadline


def test_retransmitted_spawn_is_acked_again(node: Node, connect: Callable[..., RawClient], origin: str,
                                            tmp_path: Path) -> None:
    """The very same SPAWN_REQUEST twice while it runs (an origin's retry): one
    ACK per receipt, one RESULT; a copy after it finished gets the result again
    at once; the work ran once."""
    rc = connect(node, origin)
    key = os.urandom(16)
    rc.spawn(1, "sleep_ms", pack(300), key=key)
    rc.spawn(1, "sleep_ms", pack(300), key=key)
    assert_accepted(rc, 1)
    assert_accepted(rc, 1)
    assert result_of(rc, 1)[4:6] == [SUCCESS, pack(300)]
    assert_alive(rc)
    assert len(results_for(rc, 1)) == 1

    path = tmp_path / "count"
    key2 = os.urandom(16)
    rc.spawn(2, "count", count_input(path), key=key2)
    assert_accepted(rc, 2)
    assert result_of(rc, 2)[4:6] == [SUCCESS, pack("once")]
    rc.spawn(2, "count", count_input(path), key=key2)
    assert_accepted(rc, 2)
    assert len([m for m in rc.received if m[0] == SPAWN_ACK and m[3] == 2]) == 2
    assert_alive(rc)
    assert [m[4:6] for m in results_for(rc, 2)] == [[SUCCESS, pack("once")]] * 2
    assert lines(path) == 1


def test_cancel_before_spawn_leaves_tombstone(node: Node, connect: Callable[..., RawClient],
                                              origin: str, tmp_path: Path) -> None:
    rc = connect(node, origin)
    reason = [0, "cancelled before it was spawned"]
    rc.cancel(9, reason)
    assert_alive(rc)  # the cancel is processed; nothing answers it
    assert [m[0] for m in rc.received[1:]] == [PONG]
    path = tmp_path / "count"
    rc.spawn(9, "count", count_input(path))
    assert_accepted(rc, 9)
    res = result_of(rc, 9)
    assert res[4:6] == [CANCELLED, reason], res
    time.sleep(0.1)
    assert not path.exists(), "a tombstoned task ran"


def test_cancel_finished_task_redelivers(node: Node, connect: Callable[..., RawClient],
                                         origin: str) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "echo", b"done")
    assert_accepted(rc, 1)
    assert result_of(rc, 1)[4:6] == [SUCCESS, b"done"]
    rc.cancel(1, [0, "too late"])
    assert result_of(rc, 1)[4:6] == [SUCCESS, b"done"]


def test_cancel_for_another_origin_is_ignored(node: Node, connect: Callable[..., RawClient],
                                              origin: str) -> None:
    victim = connect(node, origin + "-victim")
    victim.spawn(1, "sleep_ms", pack(400))
    assert_accepted(victim, 1)
    attacker = connect(node, origin + "-attacker")
    attacker.cancel(1, [0, "not yours"], origin_node=origin + "-victim")
    assert_alive(attacker)  # dropped, not a connection error
    # claiming its own name for the victim's id cancels nothing of the victim's either
    victim.cancel(1, [0, "wrong claim"], origin_node=origin + "-attacker")
    assert_alive(victim)
    res = result_of(victim, 1)
    assert (res[4], msgpack.unpackb(res[5])) == (SUCCESS, 400), res
    assert_alive(attacker)
    assert results_for(attacker, 1) == []


# ---------------------------------------------------------------- renewals


def _renewals(rc: RawClient, until: Callable[[], bool], limit: float) -> list[tuple[float, list]]:
    """Ping every ~50 ms until ``until()`` or ``limit`` seconds; returns (time,
    message) of every LEASE_RENEWAL_BATCH / LEASE_RENEWAL received."""
    t0 = time.monotonic()
    out: list[tuple[float, list]] = []
    seen = len(rc.received)
    while not until() and time.monotonic() - t0 < limit:
        rc.ping(0)
        try:
            rc.recv(0.05)
        except TimeoutError:
            pass
        for m in rc.received[seen:]:
            if m[0] in (LEASE_RENEWAL_BATCH, LEASE_RENEWAL):
                out.append((time.monotonic() - t0, m))
        seen = len(rc.received)
    return out


def _renewed_ids(m: list) -> list[int]:
    # [15, sender, time, new_lease_ms, node, ids] or [14, sender, time, id, new_lease_ms, state, node]
    return list(m[5]) if m[0] == LEASE_RENEWAL_BATCH else [m[3]]


def _renewed_lease(m: list) -> int:
    return m[3] if m[0] == LEASE_RENEWAL_BATCH else m[4]


def test_lease_renewals_while_running(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    # Leases of 300 ms failed now and then on a loaded 2-core CI machine: a
    # stall of either process longer than the lease is a real silence.
    rc.spawn(1, "sleep_ms", pack(2000), lease_ms=600)
    assert_accepted(rc, 1)
    got = _renewals(rc, lambda: bool(results_for(rc, 1)), T)
    res = results_for(rc, 1)
    assert res and res[0][4] == SUCCESS, rc.received[-5:]
    for _, m in got:
        if m[0] == LEASE_RENEWAL_BATCH:
            assert m[4] == NODE and isinstance(m[5], list) and all(isinstance(i, int) for i in m[5]), m
        else:
            assert m[5] == 1 and m[6] == NODE, m  # current_state Running
    early = [t for t, m in got if 1 in _renewed_ids(m) and t < 1.5]
    assert len(early) >= 2, got
    assert all(_renewed_lease(m) == 600 for _, m in got if 1 in _renewed_ids(m)), got
    # once its result is out, the task is never listed as Running again
    after = _renewals(rc, lambda: False, 0.4)
    assert not any(1 in _renewed_ids(m) for _, m in after), after


def test_renewals_group_by_lease(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "sleep_ms", pack(2000), lease_ms=600)
    rc.spawn(2, "sleep_ms", pack(2000), lease_ms=1200)
    rc.spawn(3, "sleep_ms", pack(2000), lease_ms=600)
    for i in (1, 2, 3):
        assert_accepted(rc, i)
    got = _renewals(rc, lambda: all(results_for(rc, i) for i in (1, 2, 3)), T)
    lease = {1: 600, 2: 1200, 3: 600}
    for _, m in got:
        ids = [i for i in _renewed_ids(m) if i in lease]
        assert len({lease[i] for i in ids}) <= 1, ("tasks with different leases in one batch", m)
        for i in ids:
            assert _renewed_lease(m) == lease[i], m
    for i in (1, 2, 3):
        assert any(i in _renewed_ids(m) for _, m in got), (i, got)
        assert results_for(rc, i)[0][4] == SUCCESS


def test_an_origin_that_offers_nothing_gets_full_batches(node: Node,
                                                          connect: Callable[..., RawClient],
                                                          origin: str) -> None:
    """An origin written before compact renewals (empty HELLO features) is
    renewed by LEASE_RENEWAL_BATCH only, even by a node that offers them."""
    rc = RawClient(node.path, origin)
    try:
        welcome = rc.handshake()
        assert welcome[6].get(RENEWAL_DIGEST_FEATURE) == 1  # the node offers them
        rc.spawn(1, "sleep_ms", pack(1500), lease_ms=600)
        assert_accepted(rc, 1)
        got = _renewals(rc, lambda: bool(results_for(rc, 1)), T)
        assert got and all(m[0] == LEASE_RENEWAL_BATCH for _, m in got), got
        assert not [m for m in rc.received if m[0] == LEASE_RENEWAL_DIGEST]
    finally:
        rc.close()


def test_compact_renewals_digest_and_resync(node: Node, origin: str) -> None:
    """A peer that offers compact renewals gets one LEASE_RENEWAL_DIGEST per
    group and period, whose count and digest it computes from the spec; a
    LEASE_RESYNC_REQUEST is answered with the group's full list, and one for
    a group the node does not have with an empty list."""
    rc = RawClient(node.path, origin)
    try:
        rc.handshake(features={RENEWAL_DIGEST_FEATURE: 1})
        ids = [7, 8, 2**40 + 3]
        for i in ids:
            rc.spawn(i, "sleep_ms", pack(1500), lease_ms=600)
        for i in ids:
            assert_accepted(rc, i)
        seen = len(rc.received)

        def digests() -> list[list]:
            return [m for m in rc.received[seen:] if m[0] == LEASE_RENEWAL_DIGEST]

        _renewals(rc, lambda: len(digests()) >= 2, T)
        assert len(digests()) >= 2, rc.received[seen:]
        for m in digests():
            # [20, sender, time, new_lease_ms, task_count, digest]
            assert m[1] == NODE and m[3:6] == [600, 3, renewal_digest(ids)], m
        assert not [m for m in rc.received[seen:] if m[0] in (LEASE_RENEWAL_BATCH, LEASE_RENEWAL)]
        rc.send(LEASE_RESYNC_REQUEST, 600)
        batch = rc.recv_kind(LEASE_RENEWAL_BATCH, T)
        assert batch[3:6] == [600, NODE, sorted(ids)], batch
        rc.send(LEASE_RESYNC_REQUEST, 1234)
        batch = rc.recv_kind(LEASE_RENEWAL_BATCH, T)
        assert batch[3:6] == [1234, NODE, []], batch
        _renewals(rc, lambda: all(results_for(rc, i) for i in ids), T)  # pings: not silent
        assert [results_for(rc, i)[0][4] for i in ids] == [SUCCESS] * 3
    finally:
        rc.close()


# ------------------------------------------------------------------ orphans


def test_silent_origin_task_is_cancelled_lease_expired(cluster: Callable[..., Any],
                                                       connect: Callable[..., RawClient],
                                                       origin: str) -> None:
    n = Node(cluster(1))
    rc = connect(n, origin)
    rc.spawn(1, "sleep_ms", pack(10_000), lease_ms=300)
    assert_accepted(rc, 1)
    t0 = time.monotonic()
    res = result_of(rc, 1, 3.0)  # we send nothing while waiting
    assert res[4] == CANCELLED and res[5][0] == C_LEASE_EXPIRED, res
    assert time.monotonic() - t0 < 2.5


def test_frames_on_another_connection_of_the_origin_keep_tasks_alive(
        node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    """Silence is "no frame on any connection": pings on a second connection of
    the same origin keep a task spawned on the first alive."""
    quiet = connect(node, origin)
    chatty = connect(node, origin)
    # The task outlives its lease five times over. (A 200 ms lease was too
    # tight for a loaded 2-core CI machine: a stall of either process longer
    # than the lease is a real silence.)
    quiet.spawn(1, "sleep_ms", pack(2500), lease_ms=500)
    assert_accepted(quiet, 1)
    _renewals(chatty, lambda: bool(results_for(chatty, 1)), T)
    res = results_for(chatty, 1)
    assert res and res[0][4:6] == [SUCCESS, pack(2500)], res
    assert result_of(quiet, 1)[4:6] == [SUCCESS, pack(2500)]


def test_a_node_frozen_past_a_lease_reads_the_pings_before_judging_silence(
        cluster: Callable[..., Any], connect: Callable[..., RawClient], origin: str) -> None:
    """The node is frozen (SIGSTOP) for three leases while its origin keeps
    pinging. The origin was never silent: its pings are in the socket buffer,
    so once resumed the node reads them before its orphan check runs."""
    n = Node(cluster(1))
    rc = connect(n, origin)
    rc.spawn(1, "sleep_ms", pack(3000), lease_ms=400)
    assert_accepted(rc, 1)
    os.kill(n.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.2:
            rc.ping(0)
            time.sleep(0.05)
    finally:
        os.kill(n.pid, signal.SIGCONT)
    _renewals(rc, lambda: bool(results_for(rc, 1)), T)
    res = results_for(rc, 1)
    assert res and res[0][4:6] == [SUCCESS, pack(3000)], res


def test_result_held_for_reconnecting_origin(cluster: Callable[..., Any], connect: Callable[..., RawClient],
                                             origin: str) -> None:
    n = Node(cluster(1))
    rc = connect(n, origin)
    rc.spawn(1, "sleep_ms", pack(10_000), lease_ms=300)
    assert_accepted(rc, 1)
    rc.close()
    time.sleep(1.2)
    again = connect(n, origin, handshake=False)
    again.hello()
    assert again.recv(T)[0] == WELCOME
    with pytest.raises(TimeoutError):  # held until the handshake completes
        again.recv(0.3)
    again.send(AUTH, None)
    res = result_of(again, 1)
    assert res[4] == CANCELLED and res[5][0] == C_LEASE_EXPIRED, res
    assert_alive(again)
    assert len(results_for(again, 1)) == 1
    # sent once: a later handshake does not get it again
    third = connect(n, origin)
    assert_alive(third)
    assert results_for(third, 1) == []


# -------------------------------------------------- fan-out, ping, status


def test_result_goes_to_every_live_connection(node: Node, connect: Callable[..., RawClient],
                                              origin: str) -> None:
    a = connect(node, origin)
    b = connect(node, origin)
    other = connect(node, origin + "-other")
    a.spawn(1, "sleep_ms", pack(200))
    assert_accepted(a, 1)
    ra, rb = result_of(a, 1), result_of(b, 1)
    assert ra[3:6] == rb[3:6] == [1, SUCCESS, pack(200)]
    assert not any(m[0] == SPAWN_ACK for m in b.received), "the ACK belongs to the spawning connection"
    assert_alive(other)
    assert results_for(other, 1) == []
    for c in (a, b):
        assert_alive(c)
        assert len(results_for(c, 1)) == 1


@pytest.mark.parametrize("nonce", [0, 1, 2**32 + 7, 2**64 - 1])
def test_ping_pong_echoes_nonce(node: Node, connect: Callable[..., RawClient], origin: str, nonce: int) -> None:
    rc = connect(node, origin)
    rc.ping(nonce)
    pong = rc.recv(T)
    assert pong[0] == PONG and pong[1] == NODE and pong[3] == nonce, pong


def test_status_reply(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    rc.send(STATUS_REQUEST)
    reply = rc.recv(T)
    assert reply[0] == STATUS_REPLY, reply
    stats = reply[3]
    assert isinstance(stats, dict)
    assert STATUS_KEYS <= set(stats), STATUS_KEYS - set(stats)
    assert stats["pid"] == node.pid
    assert isinstance(stats["version"], str) and stats["version"]
    for k in STATUS_KEYS - {"version", "uptime_s", "cpu_percent"}:
        assert isinstance(stats[k], int) and not isinstance(stats[k], bool) and stats[k] >= 0, (k, stats[k])
    assert isinstance(stats["uptime_s"], (int, float)) and stats["uptime_s"] > 0
    assert isinstance(stats["cpu_percent"], (int, float))
    assert stats["connections"] >= 1


# ----------------------------------------------------------------- outcomes


def test_failed_outcome(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "boom", pack(None))
    assert_accepted(rc, 1)
    res = result_of(rc, 1)
    assert res[4] == FAILED and isinstance(res[5], str) and "boom" in res[5], res


def test_panicked_outcome_and_node_survives(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    rc = connect(node, origin)
    rc.spawn(1, "crash", pack(None))
    assert_accepted(rc, 1)
    res = result_of(rc, 1)
    assert res[4] == PANICKED and isinstance(res[5], str), res
    assert_alive(rc)
    round_trip(node)
    assert node.cluster.procs[NODE].poll() is None


def test_big_result(node: Node, connect: Callable[..., RawClient], origin: str) -> None:
    size = 8 * 1024 * 1024
    rc = connect(node, origin)
    rc.spawn(1, "big", pack(size))
    assert_accepted(rc, 1)
    res = result_of(rc, 1, 10.0)
    assert res[4] == SUCCESS, res[:5]
    out = msgpack.unpackb(res[5])
    pattern = bytes(range(256))
    assert isinstance(out, bytes) and len(out) == size
    assert out == (pattern * (size // 256 + 1))[:size]


# ------------------------------------------------------------------ socket


def test_socket_permissions(node: Node) -> None:
    assert stat.S_IMODE(os.stat(node.path).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(node.path).st_mode)
    assert stat.S_IMODE(os.stat(os.path.dirname(node.path)).st_mode) == 0o700


# ------------------------------------------------------- capacity, shutdown


def test_capacity_exceeded(cluster: Callable[..., Any], connect: Callable[..., RawClient], origin: str) -> None:
    n = Node(cluster(1, capacity=1))
    rc = connect(n, origin)
    rc.spawn(1, "sleep_ms", pack(500))
    assert_accepted(rc, 1)
    rc.spawn(2, "echo", b"no room")
    assert_rejected(rc, 2, R_CAPACITY_EXCEEDED)
    assert result_of(rc, 1)[4] == SUCCESS
    assert_no_result_for(rc, 2)
    rc.spawn(3, "echo", b"room again")
    assert_accepted(rc, 3)
    assert result_of(rc, 3)[4:6] == [SUCCESS, b"room again"]


def test_sigterm_drains(cluster: Callable[..., Any], connect: Callable[..., RawClient], origin: str) -> None:
    c = cluster(1, grace=0.5)
    n = Node(c)
    rc = connect(n, origin)
    rc.spawn(1, "sleep_ms", pack(200))
    rc.spawn(2, "sleep_ms", pack(10_000))
    assert_accepted(rc, 1)
    assert_accepted(rc, 2)
    os.kill(n.pid, signal.SIGTERM)
    time.sleep(0.05)
    try:
        rc.spawn(3, "echo", b"too late")
    except OSError:
        pass
    r1 = result_of(rc, 1, 3.0)
    assert r1[4:6] == [SUCCESS, pack(200)]
    r2 = result_of(rc, 2, 3.0)
    assert r2[4] == CANCELLED and r2[5][0] == C_SHUTDOWN, r2
    assert rc.expect_closed(5.0)
    acks3 = [m for m in rc.received if m[0] == SPAWN_ACK and m[3] == 3]
    if acks3:
        assert (acks3[0][4], acks3[0][5]) == (REJECTED, R_NODE_SHUTTING_DOWN), acks3
    errors = [m for m in rc.received if m[0] == ERROR]
    assert all(e[3] == E_SHUTTING_DOWN for e in errors), errors
    assert c.procs[NODE].wait(5.0) == 0


# ------------------------------------------------------ values near the limits


def test_lamport_time_at_2_63_and_above_is_accepted(cluster: Callable[..., Any],
                                                    connect: Callable[..., RawClient], origin: str) -> None:
    """sender_time is a uint: a Lamport value in [2**63, 2**64) is a valid time and
    a receiver "never rejects a message for its time value". rsc does not merge
    times above 2**62 (docs/PROTOCOL.md, choices): merging them would push its
    clock to the uint64 limit, after which no later stamp could be greater."""
    n = Node(cluster(1))
    rc = connect(n, origin)
    rc.send(PING, 1, time=2**63)
    pong = rc.recv(T)
    assert pong[0] == PONG and pong[2] < 2**62, pong
    rc.send(PING, 2, time=2**61)
    pong = rc.recv(T)
    assert pong[0] == PONG and pong[2] > 2**61, pong


def _drain(c: Any, timeout: float = 3.0) -> int | None:
    """SIGTERM the node and wait for it to exit; its exit code, or None when it
    did not exit in time."""
    proc = c.procs[NODE]
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except Exception:
        return None


def _kill(c: Any) -> None:
    """SIGKILL the node if it is still there, so a stuck node costs this test
    nothing more (the fixture's own stop would wait much longer)."""
    proc = c.procs[NODE]
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5.0)


@pytest.mark.parametrize("stamp", ["lamport", "hybrid", "vector"])
def test_time_near_uint64_max_does_not_disturb_others(cluster: Callable[..., Any],
                                                      connect: Callable[..., RawClient], origin: str,
                                                      stamp: str) -> None:
    """One peer stamping with 2**64-1 may lose its own connection, but "a bad
    frame from one peer never disturbs other connections or any task owned by
    another origin": the node's stamps elsewhere must stay valid."""
    c = cluster(1, grace=0.5)
    n = Node(c)
    try:
        bystander = connect(n, origin + "-bystander")
        bystander.spawn(1, "sleep_ms", pack(300))
        assert_accepted(bystander, 1)
        rc = connect(n, origin)
        top = 2**64 - 1
        t = {"lamport": top, "hybrid": [time.time_ns(), top], "vector": {origin: top}}[stamp]
        rc.send(PING, 1, time=t)
        try:
            rc.recv(1.0)  # PONG, or ERROR and close: either is this peer's business
        except (TimeoutError, OSError):
            pass
        res = result_of(bystander, 1, 2.0)
        assert res[4:6] == [SUCCESS, pack(300)], res
        assert_alive(bystander)
        round_trip(n)
        assert _drain(c) == 0, "the node did not exit 0 on SIGTERM"
    finally:
        _kill(c)


@pytest.mark.parametrize("case", ["lease-max", "lease-292-years", "deadline-max"])
def test_huge_durations_answered_not_dropped(cluster: Callable[..., Any], connect: Callable[..., RawClient],
                                             origin: str, case: str) -> None:
    """A well-formed SPAWN_REQUEST with a huge lease or deadline (uint ms) gets a
    SPAWN_ACK — accepted, or rejected invalid_input — and the connection stays
    up; the node still drains on SIGTERM."""
    c = cluster(1, grace=0.5)
    n = Node(c)
    try:
        rc = connect(n, origin)
        kw: dict[str, Any] = {
            "lease-max": {"lease_ms": 2**64 - 1},
            "lease-292-years": {"lease_ms": 2**63 // 10**6},
            "deadline-max": {"budget": [2**64 - 1, None, None, 0]},
        }[case]
        rc.spawn(1, "echo", b"long", **kw)
        ack = ack_of(rc, 1)
        if ack[4] == ACCEPTED:
            assert result_of(rc, 1)[4:6] == [SUCCESS, b"long"]
        else:
            assert ack[5] == R_INVALID_INPUT, ack
        assert_alive(rc)
        assert _drain(c) == 0, "the node did not exit 0 on SIGTERM"
    finally:
        _kill(c)


def test_frames_before_a_bad_frame_in_one_write_are_answered(node: Node, connect: Callable[..., RawClient],
                                                             origin: str) -> None:
    """A SPAWN_REQUEST that shares a write with a malformed frame still gets its
    one SPAWN_ACK (then ERROR malformed and the close). The computation
    suspends: one that ends in its first step may have its RESULT written
    before the ERROR (on Python 3.12+ a node runs that step at once)."""
    rc = connect(node, origin)
    spawn = rc.encode(SPAWN_REQUEST, 1, "sleep_ms", pack(50), 30_000, os.urandom(16), None, origin, 0, 0,
                      None)
    rc.send_raw(spawn + struct.pack(">I", 1) + b"\xc1")  # encode() gives a whole frame
    ack = assert_accepted(rc, 1)
    assert ack[3] == 1
    err = rc.recv_error(T)
    assert err[3] == 4
    assert rc.expect_closed(T)
    round_trip(node)
