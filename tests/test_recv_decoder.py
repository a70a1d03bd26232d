"""The decoder's receive buffer (issue 17): a large frame in progress offers
``receive_buffer()``, a writable view the stream's next bytes go straight
into, and ``received(n)`` hands back the messages they completed.

A reader that follows that contract (what a connection does with a
transport's ``get_buffer``/``buffer_updated``) must decode every stream
exactly as ``feed`` does, however the stream is cut, with the same errors and
the same poisoning, on both twins; and on the compiled twin the payload's
bytes go into the bytes object the message keeps, copied by no one.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from rsc.errors import InvalidArgument, MalformedFrame
from tests.conftest import _twin
from tests.test_large_frames import (BAD_FRAMES, STREAM_MESSAGES, bad_frame_streamed, payload, result,
                                     same, spawn)

KiB, MiB = 1024, 1024 * 1024


def reads(sizes: list[int]) -> Iterator[int]:
    """Read sizes: the list, then its last size for ever."""
    yield from sizes
    while True:
        yield sizes[-1]


def receive(decoder: Any, stream: bytes, sizes: list[int], counts: dict[str, int] | None = None
            ) -> list[Any]:
    """Read ``stream`` as a connection does: into the receive buffer while
    the decoder offers one (at most the next read size), else fed as data.
    ``counts`` adds up the bytes that took each path."""
    out: list[Any] = []
    pos = 0
    size = reads(sizes)
    while pos < len(stream):
        n = next(size)
        view = decoder.receive_buffer()
        if view is None:
            chunk = stream[pos:pos + n]
            out += decoder.feed(chunk)
            path = "fed"
        else:
            assert not view.readonly and len(view) > 0
            n = min(n, len(view), len(stream) - pos)
            view[:n] = stream[pos:pos + n]
            view.release()
            out += decoder.received(n)
            path = "received"
        if counts is not None:
            counts[path] = counts.get(path, 0) + min(n, len(stream) - pos)
        pos += n
    return out


def stream_of(envelope_mod: ModuleType, msgs: list[Any]) -> bytes:
    return b"".join(envelope_mod.encode_frame(msg) for msg in msgs)


def check_decoded(envelope_mod: ModuleType, got: list[Any], msgs: list[Any]) -> None:
    assert len(got) == len(msgs)
    for a, b in zip(got, msgs):
        assert same(a, envelope_mod.decode(envelope_mod.encode(b)))


# Read sizes that cut a large frame at every awkward place: inside its
# length, inside the payload's bin header, right after it, one byte at a
# time, and reads that hold several frames or a frame's end and the next.
SPLITS = {
    "header": [2, 1, 1, 4096],
    "bin header": [4 + 60, 1, 1, 1, 1, 70_000],
    "the first read ends where the payload starts": [4 + 62, 100_000],
    "4 KiB reads": [4096],
    "reads of 64 KiB": [65536],
    "odd reads": [4099, 12345, 1, 77_777],
    "one read for all": [1 << 30],
}


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("case", [c for c, _ in STREAM_MESSAGES])
def test_received_streams_decode_as_fed_ones(envelope_mod: ModuleType, case: str, split: str) -> None:
    msgs = dict(STREAM_MESSAGES)[case]()
    stream = stream_of(envelope_mod, msgs)
    decoder = envelope_mod.FrameDecoder()
    got = receive(decoder, stream, SPLITS[split])
    check_decoded(envelope_mod, got, msgs)
    assert decoder.buffered == 0 and decoder.receive_buffer() is None


def test_one_byte_at_a_time(envelope_mod: ModuleType) -> None:
    msgs = [result(b"a", rtid=1), spawn(payload(64 * KiB + 5, 1)), result(b"b", rtid=2),
            result(payload(64 * KiB, 2), rtid=3)]
    stream = stream_of(envelope_mod, msgs)
    decoder = envelope_mod.FrameDecoder()
    check_decoded(envelope_mod, receive(decoder, stream, [1]), msgs)


def test_a_large_frame_then_small_ones_in_the_same_read(envelope_mod: ModuleType) -> None:
    small = [result(b"s%d" % i, rtid=i) for i in range(20)]
    msgs = [spawn(payload(300 * KiB))] + small
    stream = stream_of(envelope_mod, msgs)
    big = len(envelope_mod.encode_frame(msgs[0]))
    decoder = envelope_mod.FrameDecoder()
    counts: dict[str, int] = {}
    # the first read ends mid-payload; the next holds the rest of it, the
    # large frame's end and every small frame
    got = receive(decoder, stream, [5000, big], counts)
    check_decoded(envelope_mod, got, msgs)
    assert counts["received"] > 200 * KiB


def test_the_payload_goes_through_the_receive_buffer(envelope_mod: ModuleType) -> None:
    """Past the first read, a large frame's bytes take the receive buffer:
    none of its payload is fed (as a connection's data_received would be)."""
    data = payload(2 * MiB + 3)
    frame = envelope_mod.encode_frame(result(data))
    decoder = envelope_mod.FrameDecoder()
    counts: dict[str, int] = {}
    [msg] = receive(decoder, frame, [4096, 256 * KiB], counts)
    assert msg.payload == data and type(msg.payload) is bytes
    assert counts["fed"] <= 4096 + 64  # the first read, and the frame's last bytes at most
    assert counts["received"] >= len(data) - 4096


def test_the_view_is_only_the_bytes_still_needed(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(spawn(payload(100 * KiB)))
    decoder = envelope_mod.FrameDecoder()
    assert decoder.receive_buffer() is None
    decoder.feed(frame[:3])
    assert decoder.receive_buffer() is None  # no length yet
    decoder.feed(frame[3:1000])
    view = decoder.receive_buffer()
    assert view is not None and 0 < len(view) <= len(frame) - 1000
    assert decoder.buffered == 1000
    view[:10] = frame[1000:1010]
    assert decoder.received(10) == [] and decoder.buffered == 1010
    assert len(decoder.receive_buffer()) == len(view) - 10
    assert decoder.received(0) == []


def test_small_frames_offer_no_receive_buffer(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(spawn(payload(60 * KiB)))
    decoder = envelope_mod.FrameDecoder()
    decoder.feed(frame[:5000])
    assert decoder.receive_buffer() is None
    [msg] = decoder.feed(frame[5000:])
    assert msg.input == payload(60 * KiB)


@pytest.mark.parametrize("n", [-1, "many"])
def test_received_refuses_a_count_the_view_did_not_hold(envelope_mod: ModuleType, n: Any) -> None:
    frame = envelope_mod.encode_frame(spawn(payload(100 * KiB)))
    decoder = envelope_mod.FrameDecoder()
    with pytest.raises((InvalidArgument, TypeError)):
        decoder.received(1)  # nothing in progress
    decoder.feed(frame[:5000])
    room = len(decoder.receive_buffer())
    with pytest.raises(InvalidArgument, match="receive buffer held"):
        decoder.received(room + 1)
    with pytest.raises((InvalidArgument, TypeError)):
        decoder.received(n)
    # nothing was taken: the stream still decodes
    [msg] = decoder.feed(frame[5000:])
    assert msg.input == payload(100 * KiB)


@pytest.mark.parametrize("split", ["4 KiB reads", "one read for all", "bin header"])
@pytest.mark.parametrize("case", [c for c, _ in BAD_FRAMES])
def test_a_bad_large_frame_received_raises_what_decode_raises(envelope_mod: ModuleType, case: str,
                                                              split: str) -> None:
    decoder, error = bad_frame_streamed(envelope_mod, case,
                                        lambda d, s: receive(d, s, SPLITS[split]))
    good = envelope_mod.encode_frame(result(b"before"))
    assert decoder.receive_buffer() is None  # poisoned: nothing more is read into it
    with pytest.raises(error):
        decoder.received(0)
    with pytest.raises(error):
        decoder.feed(good)
    decoder.reset()
    assert receive(decoder, good, [4096])[0].payload == b"before"


def test_an_error_in_the_frames_after_the_payload_carries_the_frames_before(
        envelope_mod: ModuleType) -> None:
    """Malformed bytes right after a large frame, in the read that completes it."""
    msgs = [result(payload(100 * KiB))]
    stream = stream_of(envelope_mod, msgs) + b"\x00\x00\x00\x00"  # a zero-length frame
    decoder = envelope_mod.FrameDecoder()
    with pytest.raises(MalformedFrame) as err:
        receive(decoder, stream, [5000, 95 * KiB, 1 << 30])
    got = getattr(err.value, "messages")
    # the large frame completed in the same read as the bad header (fed), or
    # in a read of its own (received) before it
    assert len(got) <= 1


def test_reset_mid_payload_forgets_the_frame(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(result(payload(500 * KiB)))
    decoder = envelope_mod.FrameDecoder()
    decoder.feed(frame[:5000])
    view = decoder.receive_buffer()
    view[:1000] = frame[5000:6000]
    decoder.received(1000)
    decoder.reset()
    assert decoder.buffered == 0 and decoder.receive_buffer() is None
    view[:5] = b"stale"  # a view kept past reset writes into nothing anyone holds
    [msg] = receive(decoder, frame, [70_000])
    assert msg.payload == payload(500 * KiB)


def peak_while(fn: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_compiled_decoder_keeps_one_copy_of_a_received_payload() -> None:
    """The compiled twin: a 16 MiB payload read through the receive buffer
    costs one 16 MiB allocation, the bytes the message keeps; fed as data
    it costs the copies the reads are (here one more 16 MiB)."""
    envelope_mod = _twin("envelope", "c")
    data = payload(16 * MiB)
    frame = envelope_mod.encode_frame(result(data))
    head = frame[:4096]
    rest = memoryview(frame)[4096:]

    def by_buffer() -> Any:
        decoder = envelope_mod.FrameDecoder()
        decoder.feed(head)
        view = decoder.receive_buffer()
        n = len(view)
        view[:] = rest[:n]
        view.release()
        out = decoder.received(n)
        return out + decoder.feed(rest[n:])

    def by_feed() -> Any:
        decoder = envelope_mod.FrameDecoder()
        decoder.feed(head)
        return decoder.feed(bytes(rest))  # what a data_received hands on: a bytes copy

    [msg], peak = peak_while(by_buffer)
    assert msg.payload == data
    [msg2], peak_fed = peak_while(by_feed)
    assert msg2.payload == data
    assert 16 * MiB <= peak < 16 * MiB + 256 * KiB, peak
    assert peak_fed >= 32 * MiB - 8192, peak_fed
