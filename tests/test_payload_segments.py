"""Value segments: a msgpack value's large bytes leaves out of band.

Between peers that both offered the ``value_segments`` feature, a msgpack
input's or output's ``bytes`` leaves of 256 KiB or more leave the packed value
(each replaced by an ext reference, code ``SEGMENT_EXT``, data its index) and
travel as SPAWN_REQUEST's or RESULT_DELIVERY's trailing ``segments``, an
array of bins. The compiled decoder receives each segment of a large frame
straight into a ``bytes`` of its own, and the unpacker puts those very
objects where their references were. An older peer gets plain msgpack.

These tests hold the codec units on both twins, and what real node processes
(compiled and pure) do with segments: every kind of computation, both
negotiation outcomes, kept results and the journal, the idempotency
fingerprint, and malformed segments and references sent as real bytes.
"""

from __future__ import annotations

import asyncio
import os
from types import ModuleType
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsc import IdempotencyKey, Runtime, spawn_remote
from rsc._core import messages as m
from rsc._core import schema
from rsc.errors import IdempotencyConflict, InvalidArgument, MalformedFrame, SerializationError
from rsc.registry import Registry
from rsc.value_codec import (
    MAX_SEGMENTS,
    SEGMENT_EXT,
    SEGMENT_MIN_BYTES,
    SIZE_WALK_ITEMS,
    Segmented,
    from_pipe,
    pack_segmented,
    pack_value,
    to_pipe,
    unpack_value,
)
from tests.rawclient import (
    ACCEPTED,
    E_MALFORMED,
    R_INVALID_INPUT,
    REJECTED,
    RawClient,
)
from tests.test_payload_msgpack import REGISTRY, KiB, MiB, answered_from_the_journal_after_a_restart, blob

COMPUTATIONS = ["echo_async", "echo_thread", "echo_inline", "echo_process"]


def ref(index: int) -> msgpack.ExtType:
    return msgpack.ExtType(SEGMENT_EXT, bytes((index,)))


# --------------------------------------------------------------------------- value codec


def test_large_bytes_leaves_leave_the_packed_value_and_come_back_as_the_same_objects() -> None:
    big, other = blob(1 * MiB), blob(SEGMENT_MIN_BYTES, 3)
    value = {"id": 7, "blob": big, "more": [1, other, blob(SEGMENT_MIN_BYTES - 1)], "t": ("x", big)}
    out = pack_segmented(value)
    assert type(out) is Segmented
    assert out.segments == [big, other, big] and out.segments[0] is big
    assert SEGMENT_MIN_BYTES <= len(out.packed) < SEGMENT_MIN_BYTES + 64  # the smaller leaf stays
    assert len(out) == len(out.packed) + 2 * len(big) + len(other)
    back = unpack_value(out)
    assert back["blob"] is big and back["more"][1] is other and back["t"][1] is big
    assert back == {**value, "t": ["x", big]}  # msgpack gives lists for tuples
    assert out.joined() == msgpack.packb(value, use_bin_type=True)
    assert value["more"][1] is other  # the caller's value is not changed


@pytest.mark.parametrize("value", [
    7, "x", b"small", {"id": 7, "blob": blob(SEGMENT_MIN_BYTES - 1)},
    # only bytes leave: a bytearray or a view could change before it is sent
    {"a": bytearray(blob(SEGMENT_MIN_BYTES)), "b": memoryview(blob(SEGMENT_MIN_BYTES))},
])
def test_a_value_without_large_bytes_leaves_packs_as_pack_value_does(value: Any) -> None:
    out = pack_segmented(value)
    assert type(out) is not Segmented
    assert bytes(out) == bytes(pack_value(value)) == msgpack.packb(value, use_bin_type=True)


def test_at_most_max_segments_leave_a_value_the_rest_stay_in_it() -> None:
    leaves = [blob(SEGMENT_MIN_BYTES, i) for i in range(MAX_SEGMENTS + 3)]
    out = pack_segmented(leaves)
    assert type(out) is Segmented and len(out.segments) == MAX_SEGMENTS
    assert unpack_value(out) == leaves


@pytest.mark.parametrize("value", [
    {"ext": ref(0), "blob": blob(SEGMENT_MIN_BYTES)},
    {"blob": blob(SEGMENT_MIN_BYTES), "ext": msgpack.ExtType(SEGMENT_EXT, b"\x00\x07")},
    # past the walk's budget, where the cut never looks
    [blob(SEGMENT_MIN_BYTES)] + list(range(SIZE_WALK_ITEMS)) + [[ref(1)]],
    {ref(0): 1, "blob": blob(SEGMENT_MIN_BYTES)},  # as a map key
])
def test_a_value_holding_an_ext_of_the_segment_code_goes_plain(value: Any) -> None:
    """Its own ext would be read as a reference by the receiver ("segment 0
    is referred to twice": refused, while the same value sent plain runs), so
    it is packed plain, where such an ext is an ordinary value."""
    out = pack_segmented(value)
    assert type(out) is not Segmented
    assert bytes(out) == msgpack.packb(value, use_bin_type=True)
    assert unpack_value(out) == msgpack.unpackb(bytes(out), strict_map_key=False)


def test_a_value_without_segments_keeps_ext_values_of_the_segment_code() -> None:
    """A plain value holding an ext of the segment code (sent by a peer
    without segments) unpacks as before: an ExtType, not a lookup."""
    data = msgpack.packb([ref(0), msgpack.ExtType(5, b"x")], use_bin_type=True)
    assert unpack_value(data) == [ref(0), msgpack.ExtType(5, b"x")]
    seg = Segmented(msgpack.packb([ref(0), msgpack.ExtType(5, b"x")]), [b"s"])
    assert unpack_value(seg) == [b"s", msgpack.ExtType(5, b"x")]


@pytest.mark.parametrize("packed, segments, error", [
    ([ref(0), ref(1)], [b"a"], "segment reference 1, but the value has 1 segments"),
    ([ref(0)], [b"a", b"b"], r"segments \[1\] are not referred to"),
    ([ref(0), ref(0)], [b"a"], "segment 0 is referred to twice"),
    ([msgpack.ExtType(SEGMENT_EXT, b"")], [b"a"], "segment reference of 0 bytes"),
    ([msgpack.ExtType(SEGMENT_EXT, b"12345")], [b"a"], "segment reference of 5 bytes"),
])
def test_references_that_do_not_match_the_segments_are_a_serialization_error(
        packed: Any, segments: list, error: str) -> None:
    with pytest.raises(SerializationError, match=error):
        unpack_value(Segmented(msgpack.packb(packed, use_bin_type=True), segments))


# scalars of every width msgpack has, and the sizes at which a bin's header grows
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False),
                     st.text(max_size=40), st.binary(max_size=40),
                     st.sampled_from(["s" * 300, "t" * 70_000, b"b" * 300, b"c" * 70_000]),
                     st.builds(msgpack.ExtType, st.integers(0, 127).filter(lambda c: c != SEGMENT_EXT),
                               st.sampled_from([b"x", b"xy", b"wxyz", b"12345678", b"q" * 16, b"abc", b"r" * 300])))
_SEG_SIZES = st.sampled_from([0, 1, 255, 256, 65_535, 65_536, 70_000])


@st.composite
def _segmented_values(draw: Any) -> Segmented:
    """A packed value of any shape with references (their index as 1, 2 or 4
    bytes, so fixext 1/2/4 and an ext 8) to segments of sizes around each bin
    header's limits, in any order."""
    n = draw(st.integers(0, 4))
    order = draw(st.permutations(range(n)))
    refs = [msgpack.ExtType(SEGMENT_EXT, i.to_bytes(draw(st.sampled_from([1, 2, 3, 4])), "big")) for i in order]
    leaves = st.one_of(_SCALARS, st.just(None))
    tree = draw(st.recursive(leaves, lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=5), kids, max_size=4)), max_leaves=12))
    value = [tree, *refs] if draw(st.booleans()) else {"tree": tree, "refs": refs}
    segments = [bytes([i]) * draw(_SEG_SIZES) for i in range(n)]
    return Segmented(msgpack.packb(value, use_bin_type=True), segments)


@settings(max_examples=150, deadline=None)
@given(seg=_segmented_values())
def test_joined_is_the_value_unpacked_and_packed_again(seg: Segmented) -> None:
    """``joined`` splices each segment into the packed value in its
    reference's place; the bytes are what unpacking the segmented value and
    packing it again with ``packb`` gives."""
    assert seg.joined() == msgpack.packb(unpack_value(seg), use_bin_type=True)
    as_view = Segmented(memoryview(seg.packed), seg.segments)
    assert as_view.joined() == seg.joined()


@pytest.mark.parametrize("packed, segments, error", [
    ([ref(0), ref(1)], [b"a"], "segment reference 1, but the value has 1 segments"),
    ([ref(0)], [b"a", b"b"], r"segments \[1\] are not referred to"),
    ([ref(0), ref(0)], [b"a"], "segment 0 is referred to twice"),
    ([msgpack.ExtType(SEGMENT_EXT, b"12345")], [b"a"], "segment reference of 5 bytes"),
])
def test_joined_refuses_references_that_do_not_match_the_segments(packed: Any, segments: list,
                                                                  error: str) -> None:
    with pytest.raises(SerializationError, match=error):
        Segmented(msgpack.packb(packed, use_bin_type=True), segments).joined()
    with pytest.raises(SerializationError, match="cannot unpack"):
        Segmented(msgpack.packb([ref(0)], use_bin_type=True)[:-1], [b"a"]).joined()


def test_joined_copies_each_segment_once() -> None:
    import tracemalloc

    seg = pack_segmented({"id": 7, "blob": os.urandom(4 * MiB), "more": [os.urandom(MiB)]})
    expected = msgpack.packb(unpack_value(seg), use_bin_type=True)
    tracemalloc.start()
    try:
        out = seg.joined()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out == expected
    assert peak < 5 * MiB + 64 * KiB, f"{peak} bytes at the peak: more than the joined bytes"


def test_the_fingerprint_bytes_cover_the_segments_and_where_they_are_cut() -> None:
    a = Segmented(b"\x92\xd4\x52\x00\xd4\x52\x01", [b"ab", b"c"])
    assert a.fingerprint_bytes() == Segmented(a.packed, [b"ab", b"c"]).fingerprint_bytes()
    assert a.fingerprint_bytes() != Segmented(a.packed, [b"a", b"bc"]).fingerprint_bytes()
    assert a.fingerprint_bytes() != Segmented(a.packed, [b"ab", b"d"]).fingerprint_bytes()


def test_a_segmented_value_crosses_a_worker_pipe_as_a_list() -> None:
    seg = pack_segmented({"blob": blob(SEGMENT_MIN_BYTES)})
    wire = msgpack.unpackb(msgpack.packb(to_pipe(seg), use_bin_type=True), raw=False)
    assert from_pipe(wire) == seg and from_pipe(to_pipe(b"plain")) == b"plain"


def test_a_computation_gets_the_very_segment_objects_the_decoder_received(
        envelope_mod: ModuleType) -> None:
    """Frame bytes fed in reads of 64 KiB: the computation's value holds the
    bytes objects the message holds (no copy between the decoder and it)."""
    reg = Registry()

    @reg.computation("echo", codec="msgpack")
    def echo(cx: Any, value: Any) -> Any:
        return value

    comp = reg.get("echo")
    value = {"id": 7, "blob": blob(2 * MiB), "b2": blob(300 * KiB, 1)}
    seg = pack_segmented(value)
    msg = m.SpawnRequest("o", 1, 1, "echo", seg.packed, 1000, bytes(16), None, "o", 0, 0, None,
                         False, seg.segments)
    frame = envelope_mod.encode_frame(msg)
    dec = envelope_mod.FrameDecoder()
    got: list = []
    for at in range(0, len(frame), 64 * KiB):
        got += dec.feed(frame[at:at + 64 * KiB])
    (back,) = got
    data = Segmented(back.input, back.segments)
    assert comp.check_input(data) is None
    out = comp.decode_input(data)
    assert out == value
    assert out["blob"] is back.segments[0] and out["b2"] is back.segments[1]


# --------------------------------------------------------------------------- wire codec


def _spawn(segments: Any = None, data: bytes = b"\x81\xa1a\xd4\x52\x00", drawn: bool = False) -> m.SpawnRequest:
    return m.SpawnRequest("origin-a", 3, 9, "echo", data, 1000, b"k" * 16, None, "origin-a", 0, 0,
                          None, drawn, segments)


def _result(segments: Any = None) -> m.ResultDelivery:
    return m.ResultDelivery("node-1", 4, 9, 0, b"\xd4\x52\x00", 10, segments)


def test_segments_round_trip_and_a_message_without_them_is_the_same_bytes_as_before(
        envelope_mod: ModuleType) -> None:
    plain = envelope_mod.encode(_spawn())
    assert len(msgpack.unpackb(plain)) == 13  # no trailing drawn, no segments
    assert len(msgpack.unpackb(envelope_mod.encode(_result()))) == 7
    for msg in (_spawn([b"x" * 10, blob(100 * KiB)]), _spawn([b"y"], drawn=True),
                _result([blob(70 * KiB), b""])):
        body = envelope_mod.encode(msg)
        back = envelope_mod.decode(body)
        assert back == msg and type(back.segments) is list
        assert all(type(s) is bytes for s in back.segments)
    assert envelope_mod.decode(plain).segments is None
    wire = msgpack.unpackb(envelope_mod.encode(_spawn([b"z"])))
    assert wire[13:] == [False, [b"z"]]  # drawn written (False) before the segments


def test_both_twins_write_the_same_bytes(both_envelopes: tuple[ModuleType, ModuleType]) -> None:
    c, py = both_envelopes
    for msg in (_spawn([b"x" * 10, blob(100 * KiB)]), _result([blob(70 * KiB)]), _spawn([])):
        assert c.encode(msg) == py.encode(msg)


@pytest.mark.parametrize("bad", [
    "not a list", [b"ok", "a str"], [b"x"] * (schema.MAX_SEGMENTS + 1), [memoryview(b"abcd")[::2]],
], ids=["str", "str item", "too many", "strided view"])
def test_encode_refuses_segments_a_decoder_would_not_take(envelope_mod: ModuleType, bad: Any) -> None:
    with pytest.raises(InvalidArgument, match="SpawnRequest.segments"):
        envelope_mod.encode(_spawn(bad))


def test_each_large_segment_is_a_part_of_its_own(envelope_mod: ModuleType) -> None:
    segs = [blob(100 * KiB, i) for i in range(6)] + [b"small"]
    msg = _result(segs)
    parts = envelope_mod.encode_frame_parts(msg)
    frame = envelope_mod.encode_frame(msg)
    if envelope_mod.IMPLEMENTATION == "c":
        assert type(parts) is tuple
        assert [p for p in parts if any(p is s for s in segs)] == segs[:6]
        assert b"".join(parts) == frame
    else:
        assert parts == frame


@pytest.mark.parametrize("read", [1, 7, 4096, 65536, 1 << 20])
def test_a_stream_of_segmented_frames_decodes_however_it_is_read(
        envelope_mod: ModuleType, read: int) -> None:
    msgs = [_spawn([blob(300 * KiB, 1), b"", blob(70 * KiB, 2)], data=blob(70 * KiB, 9)),
            _result([blob(1 * MiB, 3)]),
            _spawn([b"tiny"]),
            _result([blob(200 * KiB, 4)] * 3)]
    stream = b"".join(envelope_mod.encode_frame(msg) for msg in msgs)
    if read == 1:
        stream = stream[:200_000]  # a byte at a time through the first frame's segments
        msgs = []
    dec = envelope_mod.FrameDecoder()
    got: list = []
    peak = 0
    for at in range(0, len(stream), read):
        got += dec.feed(stream[at:at + read])
        peak = max(peak, dec.buffered)
    assert got == msgs
    assert dec.buffered == (len(stream) if read == 1 else 0)
    assert peak <= 4 + 1 * MiB + 64


def _segmented_frame(segment_items: list, tail: bytes = b"") -> bytes:
    """A SPAWN_REQUEST frame body with ``segment_items`` (packed already) as its
    segments array."""
    head = msgpack.packb([10, "origin-a", 1, 3, "echo", b"\x90", 1000, b"k" * 16, None,
                          "origin-a", 0, 0, None, False])
    count = len(segment_items)
    array = (bytes((0x90 + count,)) if count < 16 else b"\xdc" + count.to_bytes(2, "big"))
    body = bytes((head[0] + 1,)) + head[1:] + array + b"".join(segment_items) + tail
    return len(body).to_bytes(4, "big") + body


def _bin(data: bytes) -> bytes:
    return msgpack.packb(data, use_bin_type=True)


@pytest.mark.parametrize("items, error", [
    ([_bin(blob(100 * KiB)), msgpack.packb("a str")], "expected bin"),
    ([_bin(blob(100 * KiB))] * (schema.MAX_SEGMENTS + 1), "at most 32 bins"),
    ([b"\xc6\x7f\xff\xff\xff" + blob(100 * KiB)], "truncated|expected"),
], ids=["not a bin", "too many", "overruns the frame"])
@pytest.mark.parametrize("read", [4096, 1 << 24])
def test_malformed_segments_are_a_malformed_frame(envelope_mod: ModuleType, items: list, error: str,
                                                  read: int) -> None:
    frame = _segmented_frame(items)
    dec = envelope_mod.FrameDecoder()
    with pytest.raises(MalformedFrame, match=error):
        for at in range(0, len(frame), read):
            dec.feed(frame[at:at + read])
    assert dec.buffered <= len(frame)


def test_a_well_formed_hand_built_segmented_frame_decodes(envelope_mod: ModuleType) -> None:
    segs = [blob(100 * KiB), b"", blob(300, 5)]
    frame = _segmented_frame([_bin(s) for s in segs], tail=b"")
    for read in (4096, len(frame)):
        dec = envelope_mod.FrameDecoder()
        got: list = []
        for at in range(0, len(frame), read):
            got += dec.feed(frame[at:at + read])
        assert got[0].segments == segs and got[0].input == b"\x90"


def test_optional_fields_follow_every_other_field() -> None:
    spec = schema.BY_KIND[schema.SPAWN_REQUEST]
    assert spec.fields[-2:] == (("drawn", schema.FLAG), ("segments", schema.SEGMENTS))
    assert spec.required == len(spec.fields) - 2
    with pytest.raises(ValueError, match="optional fields come after"):
        schema.check((schema.MessageSpec(10, "X", "X", (("s", schema.SEGMENTS), ("n", schema.UINT))),))


# --------------------------------------------------------------------------- real nodes


def _values() -> list[Any]:
    return [
        {"id": 7, "blob": blob(SEGMENT_MIN_BYTES)},
        {"id": 7, "blob": blob(3 * MiB + 1)},
        [blob(SEGMENT_MIN_BYTES + i, i) for i in range(5)] + [blob(100)],
        {"a": {"b": [blob(400 * KiB, 3), "é" * 1000]}, "c": blob(64 * KiB)},
        {"ext": ref(0), "blob": blob(SEGMENT_MIN_BYTES)},  # an ext of the segment code: goes plain
    ]


@pytest.mark.parametrize("twin", ["c", "py"])
def test_segmented_values_round_trip_through_every_kind_of_computation(cluster: Any, twin: str) -> None:
    env = {"RSC_NO_EXTENSIONS": "1"} if twin == "py" else {}
    c = cluster(1, registry=REGISTRY, env=env, extra_args=["--max-input-bytes", str(32 * MiB)])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            # the first spawn learns the node's features; the rest go with segments
            assert await spawn_remote(cx, "worker-1", "echo_async", 1).join() == 1
            assert rt.engine.link_for("worker-1").segments
            for name in COMPUTATIONS:
                handles = [spawn_remote(cx, "worker-1", name, v) for v in _values()]
                for v, h in zip(_values(), handles):
                    got = await h.join()
                    assert got == v, name
            leaves = [blob(SEGMENT_MIN_BYTES, 1), blob(SEGMENT_MIN_BYTES, 2)]
            assert await spawn_remote(cx, "worker-1", "types_of", leaves).join() == ["bytes"] * 2

    asyncio.run(main())


def test_a_caller_that_packs_its_own_input_gets_the_output_as_plain_msgpack_bytes(cluster: Any) -> None:
    """A spawn without a codec (a ``RemoteInput`` packed by the caller) of a
    msgpack computation: ``join`` returns the output's msgpack bytes, as it
    would from a node without value segments, never a ``Segmented``; and the
    outcome of the same task says the same."""
    c = cluster(1, registry=REGISTRY, extra_args=["--max-input-bytes", str(8 * MiB)])
    value = {"id": 7, "blob": blob(1 * MiB)}
    plain = msgpack.packb(value, use_bin_type=True)

    async def main() -> None:
        from rsc import RemoteInput

        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "echo_async", 1).join() == 1
            assert rt.engine.link_for("worker-1").segments  # the node sends a large leaf apart
            got = await spawn_remote(cx, "worker-1", "echo_async", RemoteInput(plain)).join()
            assert type(got) is bytes and got == plain
            h = spawn_remote(cx, "worker-1", "echo_async", RemoteInput(plain))
            outcome = await h.outcome()
            assert outcome.is_success and outcome.unwrap() == plain and type(outcome.unwrap()) is bytes
            # with the codec, the very value
            assert await spawn_remote(cx, "worker-1", "echo_async", value).join() == value

    asyncio.run(main())


def _raw_spawn(client: RawClient, rtid: int, value_packed: bytes, segments: list | None,
               key: bytes | None = None, computation: str = "echo_async") -> bytes:
    extra: tuple = () if segments is None else (False, segments)
    return client.spawn(rtid, computation, value_packed, key=key, extra=extra)


def test_an_origin_that_offers_segments_gets_them_and_one_that_does_not_gets_plain_msgpack(
        cluster: Any) -> None:
    c = cluster(1, registry=REGISTRY)
    path = c.socket_path("worker-1")
    big = blob(1 * MiB)
    seg = pack_segmented({"id": 7, "blob": big})
    assert type(seg) is Segmented
    with RawClient(path, "origin-new") as new:
        welcome = new.handshake(features={"value_segments": 1})
        assert welcome[6].get("value_segments") == 1
        _raw_spawn(new, 1, seg.packed, seg.segments)
        result = new.recv_result(1)
        assert len(result) == 8 and result[7] == [big]
        assert unpack_value(Segmented(result[5], result[7])) == {"id": 7, "blob": big}
    with RawClient(path, "origin-old") as old:
        old.handshake()  # an older origin: no value_segments offered
        _raw_spawn(old, 1, seg.packed, seg.segments)  # segments are understood all the same
        result = old.recv_result(1)
        assert len(result) == 7
        assert result[5] == msgpack.packb({"id": 7, "blob": big}, use_bin_type=True)
        plain = msgpack.packb({"id": 8, "blob": big}, use_bin_type=True)
        _raw_spawn(old, 2, plain, None)
        result = old.recv_result(2)
        assert len(result) == 7 and result[5] == plain


def test_a_node_without_segments_gets_plain_msgpack_from_a_new_origin(tmp_path: Any) -> None:
    """A node that does not offer value_segments (an older rsc) gets every
    input plain and answers plain; the caller sees no difference."""
    from rsc.node.server import NodeServer
    from tests.registries_payload import payload

    async def main() -> None:
        node = NodeServer("worker-1", f"unix:{tmp_path}/n.sock", payload, value_segments=False)
        await node.start()
        try:
            async with Runtime({"worker-1": f"unix:{tmp_path}/n.sock"}) as rt:
                cx = rt.cx()
                assert await spawn_remote(cx, "worker-1", "echo_async", 1).join() == 1
                assert not rt.engine.link_for("worker-1").segments
                v = {"id": 7, "blob": blob(1 * MiB)}
                assert await spawn_remote(cx, "worker-1", "echo_async", v).join() == v
                assert await spawn_remote(cx, "worker-1", "types_of", [v["blob"]]).join() == ["bytes"]
        finally:
            await node.shutdown()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_references_that_do_not_match_the_segments_reject_the_spawn(cluster: Any) -> None:
    c = cluster(1, registry=REGISTRY)
    path = c.socket_path("worker-1")
    with RawClient(path, "origin-a") as a:
        a.handshake(features={"value_segments": 1})
        cases = [(msgpack.packb([ref(0), ref(1)]), [blob(300 * KiB)], "segment reference 1"),
                 (msgpack.packb([ref(0)]), [blob(300 * KiB), b"x"], "not referred to"),
                 (msgpack.packb([ref(0), ref(0)]), [b"x"], "referred to twice")]
        for rtid, (packed, segs, why) in enumerate(cases, 1):
            _raw_spawn(a, rtid, packed, segs)
            ack = a.recv_ack(rtid)
            assert ack[4] == REJECTED and ack[5] == R_INVALID_INPUT and why in ack[6], ack
        # and the connection serves on
        _raw_spawn(a, 9, msgpack.packb([ref(0)]), [b"fine"])
        assert a.recv_result(9)[5] == msgpack.packb([b"fine"])


@pytest.mark.parametrize("large", [False, True])
def test_malformed_segments_close_that_connection_with_an_error(cluster: Any, large: bool) -> None:
    c = cluster(1, registry=REGISTRY)
    path = c.socket_path("worker-1")
    filler = blob(200 * KiB) if large else b"x"
    with RawClient(path, "origin-a") as good, RawClient(path, "origin-b") as hostile:
        good.handshake(features={"value_segments": 1})
        hostile.handshake(features={"value_segments": 1})
        body = hostile.message(10, 1, "echo_async", msgpack.packb([ref(0)]), 30_000, os.urandom(16),
                               None, "origin-b", 0, 0, None, False, [filler, "not a bin"])
        hostile.send_frame(msgpack.packb(body, use_bin_type=True))
        error = hostile.recv_error()
        assert error[3] == E_MALFORMED and "segments" in error[4], error
        assert hostile.expect_closed()
        _raw_spawn(good, 1, msgpack.packb([ref(0)]), [blob(300 * KiB)])
        assert good.recv_ack(1)[4] == ACCEPTED


def test_a_key_reused_with_other_segments_is_a_conflict_and_with_the_same_a_duplicate(
        cluster: Any) -> None:
    c = cluster(1, registry=REGISTRY)

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "echo_async", 1).join() == 1
            key = IdempotencyKey.from_bytes(os.urandom(16))
            v = {"id": 7, "blob": blob(1 * MiB)}
            assert await spawn_remote(cx, "worker-1", "echo_async", v, idempotency_key=key).join() == v
            # the same value again: a duplicate, answered with the kept result
            assert await spawn_remote(cx, "worker-1", "echo_async", v, idempotency_key=key).join() == v
            other = {"id": 7, "blob": blob(1 * MiB, 1)}  # the same packed value, another segment
            with pytest.raises(IdempotencyConflict):
                await spawn_remote(cx, "worker-1", "echo_async", other, idempotency_key=key).join()
            stats = await rt.status("worker-1")
            assert stats["completed"] == 2 and stats["duplicates"] == 1

    asyncio.run(main())


def test_a_segmented_result_is_answered_whole_from_the_journal_after_a_restart(
        cluster: Any, tmp_path: Any) -> None:
    # the first spawn learns the node's features, so the value goes with segments
    answered_from_the_journal_after_a_restart(
        cluster, tmp_path, {"id": 1, "blob": blob(2 * MiB), "b": [blob(300 * KiB, 2)]}, first=(0,))


def test_segments_received_through_the_receive_buffer(envelope_mod: ModuleType) -> None:
    """A reader that writes the segment in progress straight into the
    decoder's ``receive_buffer`` and reports it with ``received`` gets the
    same messages as one that feeds the bytes."""
    msgs = [_result([blob(300 * KiB, 1), b"", blob(100 * KiB, 2)]), _spawn([blob(200 * KiB, 3)])]
    stream = memoryview(b"".join(envelope_mod.encode_frame(msg) for msg in msgs))
    dec = envelope_mod.FrameDecoder()
    got: list = []
    pos = 0
    while pos < len(stream):
        window = dec.receive_buffer()
        if window is None:
            got += dec.feed(stream[pos:pos + 4096])
            pos += 4096
            continue
        n = min(len(window), 50_000, len(stream) - pos)
        window[:n] = stream[pos:pos + n]
        got += dec.received(n)
        pos += n
    assert got == msgs and dec.buffered == 0
