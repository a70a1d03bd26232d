"""Envelope codec (wire v1): compiled vs its pure twin vs plain msgpack on a dict.

Groups (each compares ``compiled``, ``twin`` and ``msgpack`` in the same run):

- ``envelope-spawn-encode`` / ``-decode`` / ``-roundtrip``: one SPAWN_REQUEST
  with a 64-byte input, a budget and no capability (the issue's target: the
  compiled round trip under 1 us and at least 2x the twin).
- ``envelope-result-roundtrip``: one RESULT_DELIVERY with a 256-byte output.
- ``envelope-feed-1mib``: a 1 MiB chunk of coalesced frames (spawns, acks,
  results, renewals, pings) through a fresh ``FrameDecoder``.

``msgpack`` is the obvious approach: ``msgpack.packb``/``unpackb`` of a dict
holding the same fields, with no validation and no message objects. Each test
prints ns per message; the module prints the ratios at the end. Run with
``python -m pytest bench/bench_envelope.py --benchmark-only``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from bench.figures import write_past_capture
from rsc._core import _envelope, _envelope_py
from rsc._core import messages as m

# Warm up first: without it the first rounds of a sub-microsecond benchmark run
# on a cold CPU and caches and the figures swing by half.
pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=50_000)

IMPLS = ("compiled", "twin", "msgpack")
MODULES = {"compiled": _envelope, "twin": _envelope_py}

SPAWN = m.SpawnRequest("origin-7f3a", 1_000_017, 4_242, "images.thumbnail", bytes(range(64)),
                       30_000, bytes(range(100, 116)), (5_000, None, 250_000, 3), "origin-7f3a",
                       12, 98_765, None)
RESULT = m.ResultDelivery("node-b", 2_000_003, 4_242, m.OUTCOME_SUCCESS, bytes(range(256)),
                          18_250_000)
MIXED = [
    SPAWN,
    m.SpawnAck("node-b", 2_000_001, 4_242, m.ACK_ACCEPTED, 0, "", "node-b"),
    m.LeaseRenewal("node-b", 2_000_002, 4_242, 30_000, 1, "node-b"),
    RESULT,
    m.Ping("origin-7f3a", 1_000_018, 77),
    m.LeaseRenewalBatch("node-b", 2_000_004, 30_000, "node-b", list(range(4_000, 4_032))),
]


def as_dict(msg: m.Message) -> dict[str, Any]:
    """The same fields as a plain dict, for the msgpack baseline."""
    return {"kind": msg.kind, **{name: getattr(msg, name) for name in msg.__slots_all__()}}


def msgpack_encode(d: dict[str, Any]) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


def msgpack_decode(body: Any) -> Any:
    return msgpack.unpackb(body, raw=False)


def msgpack_feed(chunk: bytes) -> list[Any]:
    """Length-prefixed frames of msgpack dicts, cut and unpacked plainly."""
    out = []
    view = memoryview(chunk)
    pos, size = 0, len(chunk)
    while size - pos >= 4:
        length = int.from_bytes(view[pos:pos + 4], "big")
        end = pos + 4 + length
        if end > size:
            break
        out.append(msgpack.unpackb(view[pos + 4:end], raw=False))
        pos = end
    return out


def mixed_chunk(encode_frame: Callable[[Any], bytes], items: list[Any]) -> tuple[bytes, int]:
    """About 1 MiB of whole frames cycling through ``items``; and the frame count."""
    frames: list[bytes] = []
    size = 0
    index = 0
    while size < 1 << 20:
        frame = encode_frame(items[index % len(items)])
        frames.append(frame)
        size += len(frame)
        index += 1
    return b"".join(frames), len(frames)


# --- reporting -----------------------------------------------------------------------

_results: dict[str, dict[str, float]] = {}


def _record(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str,
            per_call: int = 1, unit: str = "message") -> None:
    if benchmark.stats is None:  # --benchmark-disable: ran once as a plain test
        return
    ns = benchmark.stats.stats.min / per_call * 1e9
    benchmark.extra_info.update(impl=impl, ns_per_message=round(ns, 1), messages_per_call=per_call)
    _results.setdefault(benchmark.group, {})[impl] = ns
    with capsys.disabled():
        print(f" {benchmark.group} {impl}: {ns:.0f} ns/{unit} (best)")


@pytest.fixture(scope="module", autouse=True)
def _ratios(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not _results:
        return
    lines = ["envelope: ns per message (best round); in brackets, how many times the compiled codec's time"]
    for group, by_impl in sorted(_results.items()):
        compiled = by_impl.get("compiled")
        parts = []
        for impl in IMPLS:
            if impl in by_impl:
                ratio = (f" ({by_impl[impl] / compiled:.1f}x)"
                         if compiled and impl != "compiled" else "")
                parts.append(f"{impl} {by_impl[impl]:.0f}{ratio}")
        lines.append(f"  {group:28} " + ", ".join(parts))
    write_past_capture(request, lines)


# --- SPAWN_REQUEST ---------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_spawn_encode(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "envelope-spawn-encode"
    if impl == "msgpack":
        d = as_dict(SPAWN)
        body = benchmark(msgpack_encode, d)
        assert msgpack_decode(body)["input"] == SPAWN.input
    else:
        body = benchmark(MODULES[impl].encode, SPAWN)
        assert body == _envelope_py.encode(SPAWN)
    _record(benchmark, capsys, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_spawn_decode(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "envelope-spawn-decode"
    if impl == "msgpack":
        body = msgpack_encode(as_dict(SPAWN))
        assert benchmark(msgpack_decode, body)["remote_task_id"] == SPAWN.remote_task_id
    else:
        body = _envelope_py.encode(SPAWN)
        assert benchmark(MODULES[impl].decode, body) == SPAWN
    _record(benchmark, capsys, impl)


def _roundtrip(encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]) -> Callable:
    def run(msg: Any) -> Any:
        return decode(encode(msg))
    return run


@pytest.mark.parametrize("impl", IMPLS)
def test_spawn_roundtrip(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "envelope-spawn-roundtrip"
    if impl == "msgpack":
        benchmark(_roundtrip(msgpack_encode, msgpack_decode), as_dict(SPAWN))
    else:
        module = MODULES[impl]
        assert benchmark(_roundtrip(module.encode, module.decode), SPAWN) == SPAWN
    _record(benchmark, capsys, impl)


# --- RESULT_DELIVERY -------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_result_roundtrip(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "envelope-result-roundtrip"
    if impl == "msgpack":
        benchmark(_roundtrip(msgpack_encode, msgpack_decode), as_dict(RESULT))
    else:
        module = MODULES[impl]
        assert benchmark(_roundtrip(module.encode, module.decode), RESULT) == RESULT
    _record(benchmark, capsys, impl)


# --- FrameDecoder.feed on a 1 MiB chunk -------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_feed_1mib(benchmark: Any, capsys: pytest.CaptureFixture[str], impl: str) -> None:
    benchmark.group = "envelope-feed-1mib"
    if impl == "msgpack":
        chunk, frames = mixed_chunk(
            lambda d: len(body := msgpack_encode(d)).to_bytes(4, "big") + body,
            [as_dict(x) for x in MIXED])
        out = benchmark.pedantic(msgpack_feed, args=(chunk,), rounds=5, iterations=1,
                                 warmup_rounds=1)
    else:
        module = MODULES[impl]
        chunk, frames = mixed_chunk(_envelope_py.encode_frame, MIXED)

        def feed() -> list[m.Message]:
            return module.FrameDecoder().feed(chunk)

        out = benchmark.pedantic(feed, rounds=5, iterations=1, warmup_rounds=1)
        assert out[:len(MIXED)] == MIXED
    assert len(out) == frames
    benchmark.extra_info.update(chunk_bytes=len(chunk), frames=frames)
    _record(benchmark, capsys, impl, per_call=frames, unit="frame")
