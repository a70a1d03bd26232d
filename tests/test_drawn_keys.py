"""Keys the runtime drew itself are recorded owner-only, not hashed
(docs/DESIGN.md, "The fingerprint"; PROTOCOL.md section 4, SPAWN_REQUEST's
``drawn`` flag and the ``drawn_keys`` feature).

The rules checked here, on both twins and on real node processes:

- a frame without the flag is the same bytes as before the flag existed; one
  with it decodes on both twins; a wrong type there is malformed;
- a drawn-key record matches only a drawn spawn from the origin that owns it:
  its resend (after a reconnect, after a restart on a journal) is answered
  without a second run; any other spawn under the key is idempotency_conflict;
- a spawn without the flag (an older origin, a caller's IdempotencyKey, a
  node that does not offer the feature) is hashed and fully checked.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest

from rsc import IdempotencyKey, Runtime, spawn_remote
from rsc._core import messages as m
from rsc._core import schema
from rsc._engine.origin import OriginTask
from rsc.errors import InvalidArgument, MalformedFrame
from rsc.node import journal as J
from tests.engine_link import Link
from tests.rawclient import ACCEPTED, E_MALFORMED, REJECTED, RawClient

CONFLICT_CODE = m.REJECT_IDEMPOTENCY_CONFLICT


def _spawn(drawn: bool = False, data: bytes = b"x", key: bytes = b"k" * 16) -> m.SpawnRequest:
    return m.SpawnRequest("o", 1, 5, "c", data, 100, key, (None, None, None, 3), "o", 2, 3, None,
                          drawn)


# --- the codec ------------------------------------------------------------------


def test_a_spawn_without_the_flag_is_the_bytes_it_always_was(both_envelopes: Any) -> None:
    """Thirteen elements, as a v1 sender before the flag wrote them."""
    old = msgpack.packb([10, "o", 1, 5, "c", b"x", 100, b"k" * 16, [None, None, None, 3], "o", 2, 3,
                         None], use_bin_type=True)
    for twin in both_envelopes:
        assert twin.encode(_spawn()) == old
        assert twin.decode(old) == _spawn() and twin.decode(old).drawn is False


def test_a_spawn_with_the_flag_decodes_on_both_twins(both_envelopes: Any) -> None:
    c, py = both_envelopes
    body = c.encode(_spawn(drawn=True))
    assert body == py.encode(_spawn(drawn=True))
    assert msgpack.unpackb(body)[13] is True and len(msgpack.unpackb(body)) == 14
    for twin in both_envelopes:
        got = twin.decode(body)
        assert got == _spawn(drawn=True) and got.drawn is True
        assert twin.fields(got)[schema.SpawnRequestF.drawn] is True
        # a large input (the compiled stream decoder receives it apart) keeps the flag
        big = _spawn(drawn=True, data=bytes(200_000))
        dec = twin.FrameDecoder()
        frame = twin.encode_frame(big)
        got = [msg for i in range(0, len(frame), 65_536) for msg in dec.feed(frame[i:i + 65_536])]
        assert got == [big]
    # an explicit false is read as the flag left out; encode then leaves it out
    f = msgpack.packb([10, "o", 1, 5, "c", b"x", 100, b"k" * 16, None, "o", 2, 3, None, False],
                      use_bin_type=True)
    for twin in both_envelopes:
        assert twin.decode(f).drawn is False and len(msgpack.unpackb(twin.encode(twin.decode(f)))) == 13


@pytest.mark.parametrize("bad", [1, 0, None, "true", b"\x01", [True]])
def test_a_flag_of_another_type_is_malformed(both_envelopes: Any, bad: Any) -> None:
    body = msgpack.packb([10, "o", 1, 5, "c", b"x", 100, b"k" * 16, None, "o", 2, 3, None, bad],
                         use_bin_type=True)
    for twin in both_envelopes:
        with pytest.raises(MalformedFrame, match="SPAWN_REQUEST drawn: expected bool"):
            twin.decode(body)


def test_elements_after_the_flag_are_dropped_and_a_short_frame_is_malformed(both_envelopes: Any) -> None:
    # element 14 is the optional segments (an empty array: none); what follows is unknown
    longer = msgpack.packb([10, "o", 1, 5, "c", b"x", 100, b"k" * 16, None, "o", 2, 3, None, True,
                            [], "later", [1, 2]], use_bin_type=True)
    short = msgpack.packb([10, "o", 1, 5, "c", b"x", 100, b"k" * 16, None, "o", 2, 3],
                          use_bin_type=True)
    for twin in both_envelopes:
        assert twin.decode(longer).drawn is True
        with pytest.raises(MalformedFrame, match="SPAWN_REQUEST needs 13 elements, got 12"):
            twin.decode(short)
        with pytest.raises(MalformedFrame):
            twin.decode(twin.encode(_spawn(drawn=True))[:-1])  # the flag's byte cut off


@pytest.mark.parametrize("bad", [1, None, "yes"])
def test_encode_refuses_a_flag_that_is_not_a_bool(both_envelopes: Any, bad: Any) -> None:
    for twin in both_envelopes:
        with pytest.raises(InvalidArgument, match="SpawnRequest.drawn must be a bool"):
            twin.encode(_spawn(drawn=bad))


def test_the_builders_set_the_flag(both_envelopes: Any) -> None:
    for twin in both_envelopes:
        args = ("o", 1, 5, "c", b"x", 100, b"k" * 16, None, "o", 2, 3, None)
        assert twin.spawn_request(*args).drawn is False
        assert twin.spawn_request(*args, True) == m.SpawnRequest(*args, True)


def test_flags_come_last_in_the_schema() -> None:
    spec = schema.BY_KIND[schema.SPAWN_REQUEST]
    assert spec.required == len(spec.fields) - 2 and spec.fields[-2] == ("drawn", schema.FLAG)
    bad = schema.MessageSpec(99 % 32, "X", "X", (("a", schema.FLAG), ("b", schema.UINT)))
    with pytest.raises(ValueError, match="optional fields come after every other field"):
        schema.check((bad,))


# --- the table's rules ------------------------------------------------------------


def test_a_drawn_key_hashes_nothing(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod
    assert t.spawn_fingerprint("c", b"x" * 5000, True) == t.DRAWN_FINGERPRINT == b"\x03" + bytes(16)
    assert t.spawn_fingerprint("c", b"x" * 5000, False) == t.fingerprint("c", b"x" * 5000)
    with pytest.raises(InvalidArgument, match="drawn must be a bool"):
        t.spawn_fingerprint("c", b"x", 1)
    # nothing can be compared with it: it matches no request by hash
    assert not t.fingerprint_matches(t.DRAWN_FINGERPRINT, "c", b"x")


def test_a_drawn_record_matches_only_its_owners_drawn_spawn(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod
    fp = t.DRAWN_FINGERPRINT
    assert t.spawn_matches(fp, "a", "a", True, "c", b"x")
    assert t.spawn_matches(fp, "a", "a", True, "other", b"another input")  # its own records only
    assert not t.spawn_matches(fp, "a", "a", False, "c", b"x")  # without the flag
    assert not t.spawn_matches(fp, "a", "b", True, "c", b"x")  # another origin
    assert not t.spawn_matches(fp, "a", "b", False, "c", b"x")
    # a hashed record is checked by its hash, whatever the spawn says
    hashed = t.fingerprint("c", b"x")
    for origin in ("a", "b"):
        for drawn in (True, False):
            assert t.spawn_matches(hashed, "a", origin, drawn, "c", b"x")
            assert not t.spawn_matches(hashed, "a", origin, drawn, "c", b"y")
    with pytest.raises(InvalidArgument):
        t.spawn_matches(fp, "a", 7, True, "c", b"x")
    with pytest.raises(InvalidArgument):
        t.spawn_matches(fp, "a", "a", True, "c", "not bytes")


def test_the_table_aliases_a_drawn_key_for_its_owner_only(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod
    table = t.IdemTable(10**9)
    key, fp = b"k" * 16, t.DRAWN_FINGERPRINT
    assert table.check_and_record(key, fp, "a", 1, 0) is t.NEW
    assert table.check_and_record(key, fp, "b", 2, 0) is t.CONFLICT
    assert table.check_and_record(key, fp, "a", 1, 0).dedup == t.DEDUP_DUPLICATE  # a resend
    alias = table.check_and_record(key, fp, "a", 3, 0)  # a second attempt of the owner
    assert alias.dedup == t.DEDUP_DUPLICATE and alias.aliases == (("a", 3),)
    assert table.get(key).fingerprint == fp


# --- the engines: an older node never sees the flag -----------------------------------


@pytest.mark.parametrize("offered", [True, False])
def test_the_origin_sends_the_flag_only_to_a_node_that_offers_it(offered: bool) -> None:
    link = Link()
    if not offered:  # a node from before the flag
        del link.node.features[m.DRAWN_KEYS_FEATURE]
    link.connect()
    seen: list[m.SpawnRequest] = []
    for rtid, drawn in ((1, True), (2, False)):
        task = OriginTask(rtid, "node-1", "echo", b"in", 3_000, rtid.to_bytes(16, "big"), None, None,
                          7, 8, None, None)
        task.drawn = drawn  # as Runtime sets it for a key it drew
        link.origin.spawn(task, link.now)
        link.collect()
        seen += [msg for msg in link.to_node if type(msg) is m.SpawnRequest]
        link.flush()
    assert [s.drawn for s in seen] == [offered, False]
    fps = [link.node._idem.get(s.idempotency_key).fingerprint for s in seen]
    assert [fp[0] for fp in fps] == [3 if offered else 1, 1]


# --- real node processes ------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _req(counter: Path, token: str) -> bytes:
    return msgpack.packb({"token": token, "path": str(counter)}, use_bin_type=True)


def _run(rc: RawClient, rtid: int, data: bytes, key: bytes, drawn: bool | None) -> list:
    """Spawn ``count`` and return its ACK and, if accepted, its RESULT."""
    rc.spawn(rtid, "count", data, key=key, extra=() if drawn is None else (drawn,))
    ack = rc.recv_ack(rtid)
    if ack[4] != ACCEPTED:
        return [ack]
    return [ack, rc.recv_result(rtid)]


def _journal_fps(state: Path) -> dict[bytes, bytes]:
    with open(state / J.JOURNAL_FILE, "rb") as f:
        return {e[1]: e[2] for e in J._Entries(f) if e[0] == J.J_RECORD}


def test_a_drawn_key_resent_after_a_reconnect_runs_once_and_is_its_owners_alone(
        cluster: Any, tmp_path: Path) -> None:
    c = cluster(1)
    path, counter = c.socket_path("worker-1"), tmp_path / "count.txt"
    key, data = secrets.token_bytes(16), _req(counter, "once")
    with RawClient(path, "origin-a") as a:
        assert a.handshake()[6][m.DRAWN_KEYS_FEATURE] == 1
        first = _run(a, 1, data, key, True)
        assert first[1][4:6] == [0, msgpack.packb("once", use_bin_type=True)]
    with RawClient(path, "origin-a") as a:  # the same origin, reconnected
        a.handshake()
        again = _run(a, 1, data, key, True)  # a resend of the same task
        assert again[0][4] == ACCEPTED and again[1][4:6] == first[1][4:6]
        retry = _run(a, 2, data, key, True)  # a new attempt of the same key
        assert retry[0][4] == ACCEPTED and retry[1][4:6] == first[1][4:6]
        # the owner without the flag: nothing can be compared, so refused
        refused = _run(a, 3, data, key, None)
        assert refused[0][4:6] == [REJECTED, CONFLICT_CODE]
    with RawClient(path, "origin-b") as b:  # another origin that knows the key
        b.handshake()
        for rtid, drawn in ((1, True), (2, None), (3, False)):
            refused = _run(b, rtid, data, key, drawn)
            assert refused[0][4:6] == [REJECTED, CONFLICT_CODE], refused
    assert _lines(counter) == ["once"]


def test_a_spawn_without_the_flag_is_fully_checked(cluster: Any, tmp_path: Path) -> None:
    """An older origin (no flag): the same request under the key from any
    origin is a duplicate, another input a conflict."""
    c = cluster(1)
    path, counter = c.socket_path("worker-1"), tmp_path / "count.txt"
    key, data = secrets.token_bytes(16), _req(counter, "old")
    with RawClient(path, "origin-a") as a:
        a.handshake()
        first = _run(a, 1, data, key, None)
        assert first[0][4] == ACCEPTED
    with RawClient(path, "origin-b") as b:
        b.handshake()
        same = _run(b, 1, data, key, True)  # a hashed record is checked by its hash
        assert same[0][4] == ACCEPTED and same[1][4:6] == first[1][4:6]
        other = _run(b, 2, _req(counter, "other"), key, None)
        assert other[0][4:6] == [REJECTED, CONFLICT_CODE]
        other = _run(b, 3, _req(counter, "other"), key, True)
        assert other[0][4:6] == [REJECTED, CONFLICT_CODE]
    assert _lines(counter) == ["old"]


def test_a_drawn_record_survives_a_restart_on_its_journal(cluster: Any, tmp_path: Path) -> None:
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    c = cluster(1, extra_args=["--state-dir", str(state)])
    path = c.socket_path("worker-1")
    key, data = secrets.token_bytes(16), _req(counter, "kept")
    with RawClient(path, "origin-a") as a:
        a.handshake()
        first = _run(a, 1, data, key, True)
    assert _journal_fps(state)[key] == b"\x03" + bytes(16)
    c.kill("worker-1")
    c.procs["worker-1"].wait(10.0)
    c.restart("worker-1")
    cluster.track(c)
    with RawClient(path, "origin-b") as b:
        b.handshake()
        assert _run(b, 1, data, key, True)[0][4:6] == [REJECTED, CONFLICT_CODE]
    with RawClient(path, "origin-a") as a:
        a.handshake()
        again = _run(a, 1, data, key, True)
        assert again[0][4] == ACCEPTED and again[1][4:6] == first[1][4:6]
    assert _lines(counter) == ["kept"]
    assert _journal_fps(state)[key] == b"\x03" + bytes(16)  # compaction kept the tag


def test_the_runtime_marks_only_the_keys_it_drew(cluster: Any, tmp_path: Path) -> None:
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    c = cluster(1, extra_args=["--state-dir", str(state)])
    user_key = IdempotencyKey.from_bytes(secrets.token_bytes(16))

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            drawn = [spawn_remote(cx, "worker-1", "count", {"token": f"d{i}", "path": str(counter)})
                     for i in range(3)]
            assert await asyncio.gather(*(h.join() for h in drawn)) == ["d0", "d1", "d2"]
            mine = {"token": "u", "path": str(counter)}
            assert await spawn_remote(cx, "worker-1", "count", mine, idempotency_key=user_key).join() == "u"

    asyncio.run(main())
    fps = _journal_fps(state)
    assert fps.pop(user_key.to_bytes())[0] == 1  # the caller's key: hashed (BLAKE2b)
    assert list(fps.values()) == [b"\x03" + bytes(16)] * 3
    assert sorted(_lines(counter)) == ["d0", "d1", "d2", "u"]


@pytest.mark.parametrize("bad", [1, None, "true", [True]])
def test_a_flag_of_another_type_closes_only_that_connection(cluster: Any, tmp_path: Path,
                                                            bad: Any) -> None:
    c = cluster(1)
    path, counter = c.socket_path("worker-1"), tmp_path / "count.txt"
    with RawClient(path, "origin-a") as good, RawClient(path, "origin-b") as hostile:
        good.handshake()
        hostile.handshake()
        hostile.spawn(1, "count", _req(counter, "never"), extra=(bad,))
        error = hostile.recv_error()
        assert error[3] == E_MALFORMED and "drawn" in error[4], error
        assert hostile.expect_closed()
        # the node and its other connections go on
        assert _run(good, 1, _req(counter, "fine"), secrets.token_bytes(16), True)[0][4] == ACCEPTED
    assert _lines(counter) == ["fine"]
