"""A large frame whose first bytes come in a short read.

A read of a stream socket can end anywhere: a large SPAWN_REQUEST or
RESULT_DELIVERY often begins in the last few bytes of a read that held the
frames before it. The compiled decoder then holds those bytes, and once the
bytes holding the payload's bin header are there it receives the payload
straight into the bytes the message keeps, as it does for a frame that starts
at the beginning of a read (buffered whole, the payload was copied three more
times: 37-42 ms instead of 2-6 ms per 16 MiB frame here). Whatever the path,
the messages and the errors must be what ``decode`` gives for each body
(bench/bench_payload.py measures the cost).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import msgpack
import pytest

from rsc._core import messages as m
from rsc.errors import MalformedFrame, ProtocolError

KiB = 1024
KEY = bytes(range(16))


def blob(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + bytes(n % 256)


def spawn(data: bytes, drawn: bool) -> m.SpawnRequest:
    return m.SpawnRequest("origin-1", 3, 7, "echo", data, 30_000, KEY, None, "origin-1", 1, 2, None,
                          drawn)


def result(data: bytes) -> m.ResultDelivery:
    return m.ResultDelivery("node-1", 4, 7, 0, data, 10)


def cut_after(stream: bytes, at: int, chunk: int) -> list[bytes]:
    """The stream read as ``stream[:at]``, then ``chunk`` bytes at a time."""
    return [stream[:at]] + [stream[i:i + chunk] for i in range(at, len(stream), chunk)]


@pytest.mark.parametrize("large", ["spawn", "spawn drawn", "result"])
@pytest.mark.parametrize("head", [1, 3, 4, 5, 9, 17, 30, 60, 200, 4099, 4100, 4101])
def test_a_large_frame_starting_in_a_short_read_decodes_as_its_body(
        envelope_mod: ModuleType, large: str, head: int) -> None:
    before, after = m.Ping("origin-1", 1, 5), result(b"after")
    big = {"spawn": spawn(blob(300 * KiB), False), "spawn drawn": spawn(blob(300 * KiB), True),
           "result": result(blob(300 * KiB + 7))}[large]
    first = envelope_mod.encode_frame(before)
    stream = first + envelope_mod.encode_frame(big) + envelope_mod.encode_frame(after)
    for chunk in (7, 4096, 65_536, 1 << 20):
        decoder = envelope_mod.FrameDecoder()
        got: list[Any] = []
        for part in cut_after(stream, len(first) + head, chunk):
            got += decoder.feed(part)
        assert got == [before, big, after], (head, chunk)
        assert type(got[1].input if large != "result" else got[1].payload) is bytes
        assert decoder.buffered == 0


def _frame(elements: list[Any]) -> bytes:
    body = msgpack.packb(elements, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


BAD = [
    # a large frame with no large bin (a str where a success has its bin): buffered whole
    ("a large str", [13, "n", 4, 7, 0, "x" * (100 * KiB), 10], MalformedFrame),
    # a large bin where a str belongs
    ("bin for a str", [10, "o", 3, 7, blob(100 * KiB), b"x", 30_000, KEY, None, "o", 1, 2, None],
     MalformedFrame),
    # the flag after a large input, of the wrong type
    ("flag not a bool", [10, "o", 3, 7, "echo", blob(100 * KiB), 30_000, KEY, None, "o", 1, 2, None,
                         "yes"], MalformedFrame),
    # the message ends too early after its large input
    ("too few elements", [10, "o", 3, 7, "echo", blob(100 * KiB)], MalformedFrame),
]


@pytest.mark.parametrize("head", [2, 6, 40])
@pytest.mark.parametrize("case", [c for c, _, _ in BAD])
def test_a_bad_large_frame_starting_in_a_short_read_raises_what_decode_raises(
        envelope_mod: ModuleType, case: str, head: int) -> None:
    elements, error = {c: (e, x) for c, e, x in BAD}[case]
    frame = _frame(elements)
    with pytest.raises(error):
        envelope_mod.decode(frame[4:])
    good = envelope_mod.encode_frame(m.Ping("o", 1, 5))
    decoder = envelope_mod.FrameDecoder()
    got: list[Any] = []
    with pytest.raises(ProtocolError) as raised:
        for part in cut_after(good + frame, len(good) + head, 65_536):
            got += decoder.feed(part)
    assert type(raised.value) is error
    assert raised.value.messages == [m.Ping("o", 1, 5)] or got == [m.Ping("o", 1, 5)]


def test_a_frame_too_large_is_refused_from_its_header_in_a_short_read(envelope_mod: ModuleType) -> None:
    decoder = envelope_mod.FrameDecoder(max_frame_bytes=200 * KiB)
    frame = envelope_mod.encode_frame(result(blob(300 * KiB)))
    assert decoder.feed(frame[:3]) == []
    with pytest.raises(ProtocolError, match="limit|too large|exceeds"):
        decoder.feed(frame[3:70_000])
