"""The idempotency fingerprint's algorithms (docs/DESIGN.md, "The fingerprint").

A fingerprint is an algorithm tag and a 16-byte digest: BLAKE2b-128 for inputs
under ``FP_SHA256_MIN_INPUT`` bytes (what rsc has always written), SHA-256 for
larger ones (about twice as fast there). A record is checked with the
algorithm its tag names, so a journal written by an older rsc (format 1:
16-byte untagged BLAKE2b fingerprints) still recognises its requests after the
upgrade; the last test restarts a real node on such a journal.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsc import IdempotencyKey, IdempotencyConflict, Runtime, spawn_remote
from rsc.errors import InvalidArgument
from rsc.node import journal as J


def _old_fingerprint(computation: str, data: bytes) -> bytes:
    """What rsc wrote before fingerprints were tagged: BLAKE2b-128, 16 bytes."""
    name = computation.encode()
    h = hashlib.blake2b(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"),
                        digest_size=16, person=b"rsc/idem-fp/v1")
    h.update(data)
    return h.digest()


@pytest.mark.parametrize("size", [0, 100, 2047, 2048, 5000, 1 << 20])
def test_a_fingerprint_matches_its_request_only(idemtable_mod: ModuleType, size: int) -> None:
    m = idemtable_mod
    data = os.urandom(size)
    fp = m.fingerprint("echo", data)
    assert len(fp) == 17 and fp[0] == (m.FP_SHA256 if size >= m.FP_SHA256_MIN_INPUT else m.FP_BLAKE2B)
    assert m.fingerprint_matches(fp, "echo", data)
    assert not m.fingerprint_matches(fp, "echo2", data)
    assert not m.fingerprint_matches(fp, "echo", data + b"x")
    if size:
        assert not m.fingerprint_matches(fp, "echo", bytes([data[0] ^ 1]) + data[1:])
    # an older rsc's (untagged BLAKE2b) fingerprint of the same request matches too
    assert m.fingerprint_matches(m.legacy_fingerprint(_old_fingerprint("echo", data)), "echo", data)
    assert not m.fingerprint_matches(b"\x07" + fp[1:], "echo", data)  # an unknown algorithm


def test_fingerprint_argument_checks(idemtable_mod: ModuleType) -> None:
    m = idemtable_mod
    for bad in (b"x" * 16, b"x" * 18, "x" * 17, None):
        with pytest.raises(InvalidArgument, match="fingerprint must be 17 bytes"):
            m.fingerprint_matches(bad, "echo", b"")
    with pytest.raises(InvalidArgument):
        m.fingerprint_matches(b"\x01" * 17, "echo", "not bytes")
    assert m.legacy_fingerprint(b"\x05" * 17) == b"\x05" * 17
    assert m.legacy_fingerprint(b"a" * 16) == b"\x01" + b"a" * 16
    with pytest.raises(InvalidArgument):
        m.legacy_fingerprint(b"a" * 15)
    t = m.IdemTable(10)
    with pytest.raises(InvalidArgument, match="17 bytes"):
        t.check_and_record(b"k" * 16, b"f" * 16, "o", 1, 0)


@settings(max_examples=40, deadline=None)
@given(name=st.text(max_size=8), size=st.integers(0, 6000), seed=st.integers(0, 1000))
def test_twins_agree_across_the_threshold(name: str, size: int, seed: int) -> None:
    from rsc._core import _idemtable, _idemtable_py

    data = (seed.to_bytes(2, "big") * (size // 2 + 1))[:size]
    try:
        expected = _idemtable_py.fingerprint(name, data)
    except InvalidArgument:
        with pytest.raises(InvalidArgument):
            _idemtable.fingerprint(name, data)
        return
    assert _idemtable.fingerprint(name, data) == expected
    assert _idemtable.fingerprint_matches(expected, name, data)


def test_records_differ_by_tag(idemtable_mod: ModuleType) -> None:
    """The same 16 digest bytes under another tag are another fingerprint."""
    t = idemtable_mod.IdemTable(10)
    assert t.check_and_record(b"k" * 16, b"\x01" + b"d" * 16, "o", 1, 0) is idemtable_mod.NEW
    assert t.check_and_record(b"k" * 16, b"\x02" + b"d" * 16, "o", 2, 0) is idemtable_mod.CONFLICT
    assert t.get(b"k" * 16).fingerprint == b"\x01" + b"d" * 16


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_node_upgraded_on_an_old_journal_recognises_its_requests(cluster: Any, tmp_path: Path) -> None:
    """A format-1 journal, as an older rsc wrote it (16-byte BLAKE2b
    fingerprints), holding a finished request with a large input (which a
    new fingerprint would hash with SHA-256) and one with a small input: a
    resend of each is answered from the journal without running, another
    input under the same key is a conflict."""
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    state.mkdir(mode=0o700)
    big_req = {"token": "B" * 4000, "path": str(counter)}
    small_req = {"token": "s", "path": str(counter)}
    big_key, small_key = (IdempotencyKey.from_bytes(secrets.token_bytes(16)) for _ in range(2))
    expires = time.time_ns() + 600 * 10**9
    entries = [J._entry([J.J_HEAD, 1, secrets.token_bytes(16)])]
    for rtid, (key, req) in enumerate([(big_key, big_req), (small_key, small_req)], 1):
        data = msgpack.packb(req, use_bin_type=True)
        entries.append(J._entry([J.J_RECORD, key.to_bytes(), _old_fingerprint("count", data), "old-origin",
                                 rtid]))
        entries.append(J._entry([J.J_DONE, key.to_bytes(), rtid, 0,
                                 msgpack.packb(req["token"], use_bin_type=True), 5, expires]))
    (state / J.JOURNAL_FILE).write_bytes(b"".join(entries))
    c = cluster(1, extra_args=["--state-dir", str(state)])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            got = await spawn_remote(cx, "worker-1", "count", big_req, idempotency_key=big_key).join()
            assert got == big_req["token"]
            got = await spawn_remote(cx, "worker-1", "count", small_req, idempotency_key=small_key).join()
            assert got == "s"
            with pytest.raises(IdempotencyConflict):
                await spawn_remote(cx, "worker-1", "count", {**big_req, "token": "C" * 4000},
                                   idempotency_key=big_key).join()

    asyncio.run(main())
    assert _lines(counter) == []  # nothing ran: both were answered from the old journal
    # the node rewrote the journal in the current format, fingerprints tagged
    with open(state / J.JOURNAL_FILE, "rb") as f:
        head, *rest = list(J._Entries(f))
    assert head[1] == J.FORMAT_VERSION == 2
    assert {len(e[2]) for e in rest if e[0] == J.J_RECORD} == {17}


# --- inputs in parts: a segmented input is hashed without joining its parts ----------

# A segmented input and a small one, and their fingerprints in the framed form
# (``Segmented.framed_fingerprint_parts``: what every segmented input was
# fingerprinted as before it fingerprinted as its plain bytes), as the code
# before inputs in parts computed them (over one joined copy): records written
# then hold them and a node still checks a mismatch against them, so they must
# not move.
_SEG_BIG_PACKED = msgpack.packb({"id": 7, "blob": msgpack.ExtType(82, b"\x00"),
                                 "more": [msgpack.ExtType(82, b"\x01")]}, use_bin_type=True)
_SEG_BIG = (_SEG_BIG_PACKED, [bytes(range(256)) * 1024, b"\x5a" * 300_001])
_SEG_BIG_FP = bytes.fromhex("0260000ab45003426d177d9d847cedaf95")
_SEG_SMALL = (msgpack.packb([msgpack.ExtType(82, b"\x00")], use_bin_type=True), [b"abc"])
_SEG_SMALL_FP = bytes.fromhex("01b53787e07cf6bfa596eb93dab7090c54")


@pytest.mark.parametrize("seg, expected", [(_SEG_BIG, _SEG_BIG_FP), (_SEG_SMALL, _SEG_SMALL_FP)],
                         ids=["sha256", "blake2b"])
def test_the_framed_form_of_a_segmented_input_fingerprints_as_it_always_has(
        idemtable_mod: ModuleType, seg: Any, expected: bytes) -> None:
    from rsc.value_codec import Segmented

    m, s = idemtable_mod, Segmented(*seg)
    framed = s.framed_fingerprint_parts()
    assert m.fingerprint("echo", framed) == expected
    assert m.fingerprint("echo", b"".join(framed)) == expected
    assert m.spawn_fingerprint("echo", framed, False) == expected
    assert m.fingerprint_matches(expected, "echo", framed)
    assert m.spawn_matches(expected, "o", "p", False, "echo", framed)
    assert not m.fingerprint_matches(expected, "echo2", framed)
    # the fingerprint a node makes now is the plain value's, not that one
    assert m.fingerprint("echo", s.fingerprint_parts()) == m.fingerprint("echo", s.joined()) != expected


@settings(max_examples=60, deadline=None)
@given(packed=st.binary(max_size=300), sizes=st.lists(st.integers(0, 3000), max_size=5),
       seed=st.integers(0, 255), views=st.booleans())
def test_an_input_in_parts_fingerprints_as_its_joined_bytes(packed: bytes, sizes: list[int], seed: int,
                                                            views: bool) -> None:
    """Both twins, either algorithm (the parts' total crosses
    FP_SHA256_MIN_INPUT), parts as bytes or as memoryviews."""
    from rsc._core import _idemtable, _idemtable_py
    from rsc.value_codec import Segmented

    segments = [bytes([(seed + i) % 256]) * n for i, n in enumerate(sizes)]
    s = Segmented(packed, segments)
    parts = s.fingerprint_parts()
    assert b"".join(parts) == s.fingerprint_bytes()
    if views:
        parts = tuple(memoryview(p) for p in parts)
    expected = _idemtable_py.fingerprint("echo", s.fingerprint_bytes())
    for m in (_idemtable, _idemtable_py):
        assert m.fingerprint("echo", parts) == expected
        assert m.fingerprint_matches(expected, "echo", parts)
        assert m.fingerprint_matches(m.fingerprint("echo", s.fingerprint_bytes()), "echo", parts)
        if segments:  # the same bytes cut otherwise are another input
            other = Segmented(packed, segments[:-1] + [segments[-1] + b"x"])
            assert not m.fingerprint_matches(expected, "echo", other.fingerprint_parts())


def test_an_input_in_parts_is_hashed_without_a_joined_copy(idemtable_mod: ModuleType) -> None:
    import tracemalloc

    from rsc.value_codec import Segmented

    s = Segmented(_SEG_BIG_PACKED, [os.urandom(4 << 20), os.urandom(1 << 20)])
    fp = idemtable_mod.fingerprint("echo", s.fingerprint_bytes())
    tracemalloc.start()
    try:
        assert idemtable_mod.fingerprint("echo", s.fingerprint_parts()) == fp
        assert idemtable_mod.spawn_matches(fp, "o", "o", False, "echo", s.fingerprint_parts())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"{peak} bytes allocated: the parts were joined"


@pytest.mark.parametrize("bad, error", [
    ([b"a", b"b"], "input must be bytes or a tuple of bytes-like parts, not list"),
    ((b"a", 7), "an input part must be bytes-like, not int"),
    ((b"a", memoryview(bytes(8))[::2]), "an input part must be a contiguous buffer"),
])
def test_an_input_in_parts_must_be_a_tuple_of_bytes_like_parts(idemtable_mod: ModuleType, bad: Any,
                                                               error: str) -> None:
    m = idemtable_mod
    for call in (lambda: m.fingerprint("echo", bad), lambda: m.spawn_fingerprint("echo", bad, False),
                 lambda: m.fingerprint_matches(b"\x02" * 17, "echo", bad),
                 lambda: m.spawn_matches(m.DRAWN_FINGERPRINT, "o", "o", True, "echo", bad)):
        with pytest.raises(InvalidArgument, match=error):
            call()


# A segmented spawn of "count" and its fingerprint as the code before inputs in
# parts computed it (over a joined copy). "count" appends to ``path``: where
# nothing can be written, so a run would fail rather than answer.
_SEG_SPAWN = {"token": "ran", "path": "/nonexistent/rsc-count.txt", "blob": bytes(range(256)) * 1024,
              "more": [b"\x5a" * 300_001]}
_SEG_SPAWN_FP = bytes.fromhex("02adc171271ac760ad5a187b26d3671be8")


def test_a_journal_record_of_a_segmented_input_still_matches_it(cluster: Any, tmp_path: Path) -> None:
    """A real node restarted on a journal whose record of a segmented input
    holds the fingerprint the earlier code wrote: the same input resent under
    the key, by a fresh runtime before its handshake, is answered from the
    journal (never run), other segments under it are a conflict."""
    from rsc.value_codec import Segmented, pack_segmented

    seg = pack_segmented(_SEG_SPAWN)
    assert type(seg) is Segmented and len(seg.segments) == 2
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = IdempotencyKey.from_bytes(secrets.token_bytes(16))
    expires = time.time_ns() + 600 * 10**9
    (state / J.JOURNAL_FILE).write_bytes(b"".join([
        J._entry([J.J_HEAD, J.FORMAT_VERSION, secrets.token_bytes(16)]),
        J._entry([J.J_RECORD, key.to_bytes(), _SEG_SPAWN_FP, "earlier-origin", 1]),
        J._entry([J.J_DONE, key.to_bytes(), 1, 0, msgpack.packb("from the journal"), 5, expires]),
    ]))
    c = cluster(1, extra_args=["--state-dir", str(state)])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            # spawned before the connection's handshake, as a fresh runtime's
            # first spawn is: it goes with its segments all the same (it went
            # plain, another fingerprint, and was refused as a conflict)
            assert not rt.engine.link_for("worker-1").segments
            got = await spawn_remote(cx, "worker-1", "count", _SEG_SPAWN, idempotency_key=key).join()
            assert got == "from the journal"
            assert rt.engine.link_for("worker-1").segments
            other = {**_SEG_SPAWN, "blob": _SEG_SPAWN["blob"] + b"x"}
            with pytest.raises(IdempotencyConflict):
                await spawn_remote(cx, "worker-1", "count", other, idempotency_key=key).join()

    asyncio.run(main())
