"""One value, one fingerprint, with segments or without (docs/PROTOCOL.md §4,
"Value segments").

A node fingerprints a segmented input as the plain MessagePack it stands for
(``Segmented.fingerprint_parts``: the pieces of the splice ``joined`` makes,
hashed part by part), so a retry of the same value under the same key is a
duplicate whether each try went with segments or without (an origin or node
without the ``value_segments`` extension, an older rsc, a mixed fleet). A
record written while segmented inputs fingerprinted in the framed form (a
head, the packed value and each segment after its length) still recognises
its request: a node checks a mismatch against that form too
(``rsc._engine.node:input_matches``).

The codec tests run on both twins of ``rsc.value_codec`` (the compiled module
and its source) and of the fingerprint functions; the node tests on real
``rsc node`` processes, compiled and pure.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import random
import secrets
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rsc.value_codec as compiled_codec
from rsc import IdempotencyConflict, IdempotencyKey, Runtime, spawn_remote
from rsc._core import _idemtable, _idemtable_py
from rsc.errors import SerializationError
from rsc.node import journal as J

KiB, MiB = 1024, 1024 * 1024
IDEM_TWINS = (_idemtable, _idemtable_py)


def _source_codec() -> ModuleType:
    """value_codec.py loaded from its source, beside the compiled build."""
    path = os.path.join(os.path.dirname(compiled_codec.__file__), "value_codec.py")
    spec = importlib.util.spec_from_file_location("rsc_value_codec_source", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


SOURCE_CODEC = _source_codec()


@pytest.fixture(params=["c", "py"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "c":
        assert os.environ.get("RSC_NO_EXTENSIONS") == "1" or not compiled_codec.__file__.endswith(".py")
        return compiled_codec
    return SOURCE_CODEC


def _old_segmented_fp(computation: str, packed: bytes, segments: list[bytes]) -> bytes:
    """What rsc recorded for a segmented input before it fingerprinted as its
    plain form, written out: SHA-256 (segments make it at least 2 KiB) over
    the framed bytes, ``b"rsc-segmented"``, then the packed value and each
    segment, each after its u64be length."""
    framed = b"rsc-segmented" + len(packed).to_bytes(8, "big") + packed
    for seg in segments:
        framed += len(seg).to_bytes(8, "big") + seg
    name = computation.encode()
    h = hashlib.sha256(b"rsc/idem-fp/v2\x00\x00" + len(name).to_bytes(8, "big") + name
                       + len(framed).to_bytes(8, "big"))
    h.update(framed)
    return b"\x02" + h.digest()[:16]


# --------------------------------------------------------------------------- the codec


class Cut(bytes):
    """A leaf the strategy takes out as a segment (a marker while drawing)."""


def _leaf_sizes() -> st.SearchStrategy[int]:
    # each bin header a segment gets: bin8, bin16, bin32
    return st.one_of(st.integers(0, 300), st.integers(256, 3000), st.just(70_000))


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1), st.floats(allow_nan=False),
    st.text(max_size=40), st.binary(max_size=300),
    st.builds(msgpack.ExtType, st.integers(0, 81), st.binary(max_size=20)),
    st.builds(lambda n, seed: Cut(random.Random(seed).randbytes(n)), _leaf_sizes(), st.integers(0, 99)),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=20),
                            st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-1000, 1000)), inner,
                                            max_size=20)),
    max_leaves=40,
)


def _split(value: Any, segments: list) -> tuple[Any, Any]:
    """``(plain, cut)``: the value with each Cut leaf as bytes, and with it as
    a placeholder (its index in ``segments``, in packing order)."""
    if type(value) is Cut:
        segments.append(bytes(value))
        return bytes(value), len(segments) - 1
    if isinstance(value, list):
        pairs = [_split(v, segments) for v in value]
        return [p for p, _ in pairs], [c for _, c in pairs]
    if isinstance(value, dict):
        plain, cut = {}, {}
        for k, v in value.items():
            plain[k], cut[k] = _split(v, segments)
        return plain, cut
    return value, _Same(value)


class _Same:
    """A leaf that is not a segment (so an int placeholder is told apart)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _with_refs(cut: Any, order: list[int], widths: list[int]) -> Any:
    """``cut`` with each placeholder ``i`` as a reference to segment
    ``order[i]``, its index ``widths[i]`` bytes long (1 to 4)."""
    if isinstance(cut, _Same):
        return cut.value
    if isinstance(cut, int):
        return msgpack.ExtType(82, order[cut].to_bytes(widths[cut], "big"))
    if isinstance(cut, list):
        return [_with_refs(v, order, widths) for v in cut]
    return {k: _with_refs(v, order, widths) for k, v in cut.items()}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_VALUES, data=st.data())
def test_a_segmented_value_fingerprints_as_its_plain_bytes(value: Any, data: st.DataObject) -> None:
    """Any value, its leaves cut out anywhere (references in any order, of
    any width, behind bin8/16/32 headers), small enough for BLAKE2b or large
    enough for SHA-256: the parts stand for the plain bytes, on both codec
    twins and both fingerprint twins."""
    segments: list[bytes] = []
    plain, cut = _split(value, segments)
    if not segments:
        return
    order = data.draw(st.permutations(range(len(segments))))
    widths = data.draw(st.lists(st.integers(1, 4), min_size=len(segments), max_size=len(segments)))
    packed = msgpack.packb(_with_refs(cut, order, widths), use_bin_type=True)
    by_index = [b""] * len(segments)
    for i, seg in enumerate(segments):
        by_index[order[i]] = seg
    expected_bytes = msgpack.packb(plain, use_bin_type=True)
    for codec in (compiled_codec, SOURCE_CODEC):
        s = codec.Segmented(packed, by_index)
        parts = s.fingerprint_parts()
        assert b"".join(parts) == expected_bytes == s.joined() == s.fingerprint_bytes()
        assert all(any(p is seg for p in parts) for seg in by_index)  # the very objects, no copies
        for m in IDEM_TWINS:
            fp = m.fingerprint("echo", expected_bytes)
            assert m.fingerprint("echo", parts) == fp
            assert m.spawn_fingerprint("echo", parts, False) == fp
            assert m.spawn_matches(fp, "o", "p", False, "echo", parts)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(256 * KiB, 256 * KiB + 70_000), min_size=1, max_size=4),
       small=st.lists(st.integers(0, 2000), max_size=3), nested=st.booleans())
def test_what_pack_segmented_makes_fingerprints_as_what_pack_value_makes(
        sizes: list[int], small: list[int], nested: bool) -> None:
    """The runtime's packers, both codec twins: ``pack_segmented`` (an origin
    or node that takes segments) and ``pack_value`` (one that does not) of
    the same value."""
    big = os.urandom(max(sizes))
    leaves: list[Any] = [big[:n] for n in sizes] + [os.urandom(n) for n in small]
    value: Any = {"id": 7, "leaves": leaves, "n": [1, 2.5, "é"]}
    if nested:
        value = [value, {"again": {"x": big[:sizes[0]]}}]
    for codec in (compiled_codec, SOURCE_CODEC):
        seg = codec.pack_segmented(value)
        assert type(seg) is codec.Segmented and len(seg.segments) == len(sizes) + nested
        plain = bytes(codec.pack_value(value))
        for m in IDEM_TWINS:
            assert m.fingerprint("count", seg.fingerprint_parts()) == m.fingerprint("count", plain)


@pytest.mark.parametrize("packed, segments", [
    (msgpack.packb([msgpack.ExtType(82, b"\x00")]) + b"\x00", [b"x" * 3000]),  # bytes after the value
    (msgpack.packb([msgpack.ExtType(82, b"\x00")])[:-1], [b"x" * 3000]),  # truncated
    (b"\xc4", [b"x"]),  # a bin8 without its length
    (b"\xc7\x01", [b"x"]),  # an ext8 without its type
    (b"\x91\xc1", [b"x"]),  # a byte no item starts with
    (msgpack.packb([msgpack.ExtType(82, b"\x00"), msgpack.ExtType(82, b"\x01")]), [b"x" * 3000]),
    (msgpack.packb([msgpack.ExtType(82, b"\x00")]), [b"x" * 3000, b"y"]),  # one not referred to
    (msgpack.packb([msgpack.ExtType(82, b"\x00"), msgpack.ExtType(82, b"\x00")]), [b"x", b"y"]),
    (msgpack.packb([msgpack.ExtType(82, b"")]), [b"x"]),  # a reference of 0 bytes
    (msgpack.packb([msgpack.ExtType(82, b"\x00" * 5)]), [b"x"]),  # of 5
], ids=["after", "truncated", "bin8", "ext8", "c1", "missing", "unreferenced", "twice", "ref0", "ref5"])
def test_a_value_whose_references_do_not_match_fingerprints_framed(
        codec: ModuleType, packed: bytes, segments: list[bytes]) -> None:
    """It stands for no plain value (a node rejects it invalid_input, after
    the key rules that fingerprint it): no error, the framed form, which
    holds every segment, so it is never another value's duplicate."""
    s = codec.Segmented(packed, segments)
    assert s.fingerprint_parts() == s.framed_fingerprint_parts()
    assert s.fingerprint_bytes().startswith(b"rsc-segmented")
    with pytest.raises(SerializationError):
        s.joined()


# --------------------------------------------------------------------------- real nodes


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _plain_runtime(nodes: dict) -> Runtime:
    """A runtime whose HELLO does not offer value segments (as an origin of an
    older rsc or another client): its msgpack inputs travel plain."""
    rt = Runtime(nodes)
    rt.engine.features.pop("value_segments")
    return rt


@pytest.mark.parametrize("twin", ["c", "py"])
def test_the_same_value_plain_then_segmented_under_one_key_is_a_duplicate(
        cluster: Any, tmp_path: Path, twin: str) -> None:
    """Two origins, one without ``value_segments``: each order of plain and
    segmented under a key runs once and answers the second with the first's
    result; another value under the key is still a conflict."""
    env = {"RSC_NO_EXTENSIONS": "1"} if twin == "py" else {}
    c = cluster(1, env=env, extra_args=["--max-input-bytes", str(8 * MiB)])
    counter = tmp_path / "count.txt"

    def req(token: str, blob: bytes) -> dict:
        return {"token": token, "path": str(counter), "blob": blob, "more": [os.urandom(100), blob[:300 * KiB]]}

    async def main() -> None:
        async with Runtime(c.nodes) as seg_rt, _plain_runtime(c.nodes) as plain_rt:
            for rt in (seg_rt, plain_rt):
                assert await spawn_remote(rt.cx(), "worker-1", "square", 3).join() == 9
            assert seg_rt.engine.link_for("worker-1").segments
            assert not plain_rt.engine.link_for("worker-1").segments
            for token, (first, second) in [("a", (plain_rt, seg_rt)), ("b", (seg_rt, plain_rt))]:
                key = IdempotencyKey.from_bytes(secrets.token_bytes(16))
                value = req(token, os.urandom(1 * MiB))
                assert await spawn_remote(first.cx(), "worker-1", "count", value, idempotency_key=key).join() == token
                assert await spawn_remote(second.cx(), "worker-1", "count", value, idempotency_key=key).join() == token
                for rt in (seg_rt, plain_rt):
                    with pytest.raises(IdempotencyConflict):
                        other = req(token, os.urandom(1 * MiB))
                        await spawn_remote(rt.cx(), "worker-1", "count", other, idempotency_key=key).join()
            stats = await seg_rt.status("worker-1")
            assert stats["duplicates"] == 2

    asyncio.run(asyncio.wait_for(main(), 120))
    assert _lines(counter) == ["a", "b"]  # each ran once


@pytest.mark.parametrize("twin", ["c", "py"])
def test_a_node_upgraded_on_a_journal_of_framed_fingerprints_recognises_its_requests(
        cluster: Any, tmp_path: Path, twin: str) -> None:
    """A journal whose record of a segmented input holds the framed
    fingerprint (as rsc wrote it before segmented inputs fingerprinted as
    their plain form): a real node restarted on it answers a retry of the
    same segmented value from the journal without running it; another value
    under the key is a conflict."""
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    state.mkdir(mode=0o700)
    key = IdempotencyKey.from_bytes(secrets.token_bytes(16))
    value = {"token": "old", "path": str(counter), "blob": os.urandom(1 * MiB)}
    seg = compiled_codec.pack_segmented(value)
    assert type(seg) is compiled_codec.Segmented
    expires = time.time_ns() + 600 * 10**9
    (state / J.JOURNAL_FILE).write_bytes(b"".join([
        J._entry([J.J_HEAD, J.FORMAT_VERSION, secrets.token_bytes(16)]),
        J._entry([J.J_RECORD, key.to_bytes(), _old_segmented_fp("count", seg.packed, seg.segments),
                  "old-origin", 1]),
        J._entry([J.J_DONE, key.to_bytes(), 1, 0, msgpack.packb("old", use_bin_type=True), 5, expires]),
    ]))
    env = {"RSC_NO_EXTENSIONS": "1"} if twin == "py" else {}
    c = cluster(1, env=env, extra_args=["--state-dir", str(state), "--max-input-bytes", str(8 * MiB)])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "square", 3).join() == 9
            assert rt.engine.link_for("worker-1").segments
            assert await spawn_remote(cx, "worker-1", "count", value, idempotency_key=key).join() == "old"
            other = {**value, "blob": os.urandom(1 * MiB)}
            with pytest.raises(IdempotencyConflict):
                await spawn_remote(cx, "worker-1", "count", other, idempotency_key=key).join()
            stats = await rt.status("worker-1")
            assert stats["duplicates"] == 1 and stats["completed"] == 1  # only the echo ran

    asyncio.run(asyncio.wait_for(main(), 120))
    assert _lines(counter) == []  # answered from the journal


# --------------------------------------------------------------------------- engines in memory


def test_a_drawn_key_spawn_does_not_walk_its_segmented_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key the origin drew is recorded without a hash, so the node does not
    find the plain form's parts for it (a walk of the packed value's headers);
    a user's key is hashed over them."""
    from rsc._engine.origin import EV_RESULT, OriginTask
    from tests.engine_link import Link

    walked: list[int] = []
    parts = compiled_codec.Segmented.fingerprint_parts

    def counting(self: Any) -> tuple:
        walked.append(len(self.segments))
        return parts(self)

    monkeypatch.setattr(compiled_codec.Segmented, "fingerprint_parts", counting)
    link = Link(max_input_bytes=4 * MiB)
    link.connect()
    seg = compiled_codec.pack_segmented({"id": 7, "blob": os.urandom(300 * KiB)})
    drawn = OriginTask(99, "node-1", "echo", seg, 3000, secrets.token_bytes(16), None, None, 7, 8, None, None)
    drawn.drawn = True
    link.origin.spawn(drawn, link.now)
    link.flush()
    assert walked == [] and len(link.started) == 1
    link.spawn(data=seg, key=secrets.token_bytes(16))  # a user's key
    assert walked == [1] and len(link.started) == 2
    for started in list(link.started):
        link.finish(started, payload=b"out")
    assert len(link.events_of(EV_RESULT)) == 2
