"""Large values on the wire: frames with inputs and results of 64 KiB and more.

The compiled decoder receives such a value straight into the bytes object the
message keeps, and ``encode_frame_parts`` leaves it out of the frame's buffer
(the connection writes it as a part of its own). Whatever the path, both twins
must decode every stream exactly as ``decode`` decodes each body, however the
stream is cut, raise what ``decode`` raises for a bad frame, and keep their
bounds; and a real node must echo large inputs byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import rsc
from rsc import Runtime, spawn_remote
from rsc._core import messages as m
from rsc.errors import FrameTooLarge, MalformedFrame, ProtocolError, UnexpectedMessage

KEY = bytes(range(16))
KiB, MiB = 1024, 1024 * 1024


def payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(256)) * (n // 256) + bytes(n % 256)


def spawn(data: Any, capability: Any = None, rtid: int = 7) -> m.SpawnRequest:
    return m.SpawnRequest("origin-1", 3, rtid, "echo", data, 30_000, KEY, (1_000, None, 5, 200),
                          "origin-1", 1, 2, capability)


def result(data: Any, rtid: int = 7) -> m.ResultDelivery:
    return m.ResultDelivery("node-1", 4, rtid, 0, data, 10)


def feed_in(decoder: Any, stream: bytes, chunk: int) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i:i + chunk])
    return out


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and all(getattr(a, s) == getattr(b, s) for s in type(a).__slots__)


STREAM_MESSAGES = [
    ("small, large input, small", lambda: [result(b"a"), spawn(payload(200 * KiB)), result(b"b")]),
    ("large result at the end of the stream", lambda: [spawn(b"x"), result(payload(1 * MiB + 3, 1))]),
    ("two large bins in one frame", lambda: [spawn(payload(70 * KiB, 2), capability=payload(90 * KiB, 3))]),
    ("large frames back to back", lambda: [result(payload(65 * KiB, i), rtid=i) for i in range(3)]),
    ("a bin just under the threshold", lambda: [spawn(payload(64 * KiB - 1))]),
]


@pytest.mark.parametrize("chunk", [1000, 4099, 65536, 262144, 1 << 30])
@pytest.mark.parametrize("case", [c for c, _ in STREAM_MESSAGES])
def test_streams_decode_as_their_bodies_however_cut(envelope_mod: ModuleType, case: str, chunk: int) -> None:
    msgs = dict(STREAM_MESSAGES)[case]()
    stream = b"".join(envelope_mod.encode_frame(msg) for msg in msgs)
    decoder = envelope_mod.FrameDecoder()
    got = feed_in(decoder, stream, chunk)
    assert len(got) == len(msgs)
    for a, b in zip(got, msgs):
        assert same(a, envelope_mod.decode(envelope_mod.encode(b))), case
    assert all(type(getattr(a, "input", getattr(a, "payload", b""))) is bytes for a in got)
    assert decoder.buffered == 0


def test_buffered_counts_the_large_frame_in_progress(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(spawn(payload(300 * KiB)))
    decoder = envelope_mod.FrameDecoder()
    assert decoder.feed(frame[:1000]) == []
    assert decoder.buffered == 1000
    assert decoder.feed(frame[1000:200_000]) == []
    assert decoder.buffered == 200_000
    assert decoder.feed(frame[200_000:-5]) == []
    assert decoder.buffered == len(frame) - 5
    [msg] = decoder.feed(frame[-5:])
    assert msg.input == payload(300 * KiB) and decoder.buffered == 0


def test_reset_in_the_middle_of_a_large_frame(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(result(payload(500 * KiB)))
    decoder = envelope_mod.FrameDecoder()
    decoder.feed(frame[:100_000])
    decoder.reset()
    assert decoder.buffered == 0
    [msg] = decoder.feed(frame)
    assert msg.payload == payload(500 * KiB)


def _body_with(elements: list[Any]) -> bytes:
    import msgpack

    body = msgpack.packb(elements, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


BAD_FRAMES = [
    # the large bin where the computation's name (a str) belongs
    ("bin for a str", lambda: _body_with([10, "o", 3, 7, payload(100 * KiB), b"x", 30_000, KEY,
                                         [1_000, None, 5, 200], "o", 1, 2, None])),
    # the large input fine, but the message ends too early
    ("too few elements", lambda: _body_with([10, "o", 3, 7, "echo", payload(100 * KiB)])),
    # an unknown kind carrying a large bin
    ("unknown kind", lambda: _body_with([99, "o", 3, payload(100 * KiB)])),
    # a failed result's payload must be a str
    ("bin for a failure's text", lambda: _body_with([13, "n", 4, 7, 1, payload(100 * KiB), 10])),
]


def bad_frame_streamed(envelope_mod: ModuleType, case: str,
                       read: Callable[[Any, bytes], Any]) -> tuple[Any, type[ProtocolError]]:
    """A good frame then the bad one ``case``, read by ``read(decoder, stream)``:
    the decoder, and the error class ``decode`` raises for that body (which
    reading the stream raised too)."""
    frame = dict(BAD_FRAMES)[case]()
    with pytest.raises(ProtocolError) as whole:
        envelope_mod.decode(frame[4:])
    good = envelope_mod.encode_frame(result(b"before"))
    decoder = envelope_mod.FrameDecoder()
    with pytest.raises(ProtocolError) as streamed:
        read(decoder, good + frame)
    assert type(streamed.value) is type(whole.value)
    assert isinstance(whole.value, (MalformedFrame, UnexpectedMessage))
    return decoder, type(whole.value)


@pytest.mark.parametrize("chunk", [4096, 1 << 30])
@pytest.mark.parametrize("case", [c for c, _ in BAD_FRAMES])
def test_a_bad_large_frame_raises_what_decode_raises(envelope_mod: ModuleType, case: str, chunk: int) -> None:
    decoder, error = bad_frame_streamed(envelope_mod, case, lambda d, s: feed_in(d, s, chunk))
    good = envelope_mod.encode_frame(result(b"before"))
    with pytest.raises(error):  # poisoned until reset
        decoder.feed(good)


def test_a_large_trailing_element_is_dropped(envelope_mod: ModuleType) -> None:
    # element 7 is the optional segments (empty: none); what follows is unknown
    frame = _body_with([13, "n", 4, 7, 0, b"out", 10, [], payload(100 * KiB)])
    [msg] = feed_in(envelope_mod.FrameDecoder(), frame, 5000)
    assert same(msg, envelope_mod.decode(frame[4:])) and msg.payload == b"out"


def test_the_frame_cap_holds_before_a_byte_of_the_value_is_taken(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(spawn(payload(200 * KiB)))
    decoder = envelope_mod.FrameDecoder(max_frame_bytes=100 * KiB)
    with pytest.raises(FrameTooLarge):
        decoder.feed(frame[:70_000])
    assert decoder.buffered == 0


@pytest.mark.parametrize("make", [lambda d: spawn(d), lambda d: result(d),
                                  lambda d: spawn(d, capability=payload(80 * KiB, 9))])
@pytest.mark.parametrize("size", [0, 100, 64 * KiB - 1, 64 * KiB, 3 * MiB])
def test_encode_frame_parts_is_the_frame(envelope_mod: ModuleType, make: Any, size: int) -> None:
    data = payload(size)
    msg = make(data)
    parts = envelope_mod.encode_frame_parts(msg)
    frame = envelope_mod.encode_frame(msg)
    if isinstance(parts, tuple):
        assert envelope_mod.IMPLEMENTATION == "c"
        assert b"".join(parts) == frame
        assert any(p is data for p in parts) == (size >= 64 * KiB)  # not copied
    else:
        assert parts == frame
        assert envelope_mod.IMPLEMENTATION == "py" or (size < 64 * KiB and len(frame) < 200 * KiB)


def test_encode_frame_parts_copies_what_may_change(envelope_mod: ModuleType) -> None:
    # a bytearray or memoryview may change after the call: it is copied into the frame
    for data in (bytearray(payload(100 * KiB)), memoryview(payload(100 * KiB))):
        parts = envelope_mod.encode_frame_parts(spawn(data))
        frame = parts if isinstance(parts, bytes) else b"".join(parts)
        assert frame == envelope_mod.encode_frame(spawn(bytes(data)))
        assert not isinstance(parts, tuple) or all(type(p) is bytes for p in parts)


def test_encode_frame_parts_refuses_what_encode_frame_refuses(envelope_mod: ModuleType) -> None:
    with pytest.raises(rsc.InvalidArgument):
        envelope_mod.encode_frame_parts(spawn("not bytes"))


@pytest.fixture(scope="module")
def one(module_cluster: Any) -> Any:
    return module_cluster(1)


async def echo_large_inputs(nodes: Any, sizes: list[int], small: int, tls: Any = None) -> None:
    """Echoes of inputs of ``sizes`` and ``small`` small ones on worker-1, all
    in flight at once (large frames interleave with small ones on both
    links): each comes back byte for byte, as bytes."""
    async with Runtime(nodes, tls=tls) as rt:
        cx = rt.cx()
        datas = [payload(n, seed=i) for i, n in enumerate(sizes)]
        handles = [spawn_remote(cx, "worker-1", "echo", d) for d in datas]
        smalls = [spawn_remote(cx, "worker-1", "echo", b"s%d" % i) for i in range(small)]
        for h, d in zip(handles, datas):
            out = await h.join()
            assert type(out) is bytes and out == d
        assert [await h.join() for h in smalls] == [b"s%d" % i for i in range(small)]


def test_a_node_echoes_large_inputs_byte_for_byte(one: Any) -> None:
    sizes = [64 * KiB - 1, 64 * KiB, 300 * KiB + 7, 5 * MiB, 16 * MiB]
    asyncio.run(asyncio.wait_for(echo_large_inputs(one.nodes, sizes, 50), 120))


def test_a_node_side_connection_reads_on_until_4_mib_of_replies_wait() -> None:
    # With the transport's default (64 KiB) one large result stopped the node
    # reading until the peer had taken it; the node side now allows 4 MiB.
    import socket

    from rsc.transport.connection import WRITE_HIGH_WATER, FramedConnection

    def make(pause: bool) -> FramedConnection:
        return FramedConnection(on_messages=lambda c, msgs: None, on_protocol_error=lambda c, e: None,
                                on_close=lambda c, e: None, pause_reading_on_backlog=pause)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        node_side, origin_side = make(True), make(False)
        ta, _ = await loop.create_unix_connection(lambda: node_side, sock=a)
        tb, _ = await loop.create_unix_connection(lambda: origin_side, sock=b)
        try:
            assert WRITE_HIGH_WATER == 4 * MiB
            assert ta.get_write_buffer_limits()[1] == WRITE_HIGH_WATER
            assert tb.get_write_buffer_limits()[1] == 64 * KiB  # the transport's own default
        finally:
            ta.close()
            tb.close()
            await asyncio.sleep(0)

    asyncio.run(main())
