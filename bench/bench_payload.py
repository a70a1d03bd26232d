"""The payload sweep: what a task costs as its input and output grow.

Every size in ``SIZES`` (64 B to 16 MiB) goes through the same job: ``n``
calls whose input and output are ``size`` bytes, with up to ``window`` in
flight (the oldest call waited for, every later one already done taken with
it, and as many new ones started together), so a round
moves ``2 * n * size`` payload bytes whatever runs it. ``n`` and ``window``
shrink with the size (``plan``) to keep a round near a quarter of a second
and the bytes in flight under 32 MiB.

``payload-<size>`` groups, one per size:

``raw.<size>``
    The Unix socket's limit for that many bytes: frames of ``size`` body
    bytes echoed by ``bench/echo_peer.py --stream`` (every chunk written
    back as it is read) to ``SizedEchoClient`` (reads into one reusable
    buffer, only follows frame headers). Nobody decodes, nothing is copied
    but by the kernel and the server's one read buffer.
``rsc.bytes.<size>``
    ``spawn_remote(cx, node, "noop", data)`` with ``data`` a ``bytes`` of
    ``size``; ``join`` returns the same bytes back (codec None).
``rsc.msgpack.<size>``
    ``spawn_remote(cx, node, "noop_msgpack", {"id": 7, "blob": data})``: the
    value packed with MessagePack at the origin, unpacked and packed again
    by the node (``codec="msgpack"``), unpacked by ``join``. From 256 KiB the
    blob travels as a value segment both ways (both ends offer
    ``value_segments``): out of the packed value, as a bin of its own.
``rsc.msgpack-plain.<size>``
    The same, from a second runtime whose HELLO does not offer
    ``value_segments`` (an origin without the extension): the value is plain
    MessagePack both ways, the baseline of the segments in the same run.
``<peer>.bytes.<size>``, ``<peer>.msgpack.<size>``
    The peer's ``peer_noop`` on the same ``bytes`` / the same dict (pickled
    by the peer), same ``n`` and ``window``, two worker processes.

Each figure's ``extra_info`` holds ``size``, ``n``, ``window``,
``tasks_per_s`` and ``mb_per_s`` (payload bytes in both directions per
second, 1 MB = 10**6 bytes; median round). The report puts rsc's MB/s beside
the raw socket's at the same size (target: at least 50% from 1 MiB up) and
each peer's (target: ahead of every peer at every size).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from bench.conftest import bench_cluster, runtime_on
from bench.echo_peer import SizedEchoClient, frame
from bench.figures import record, run_on
from bench.peers import NAMES as PEER_NAMES
from bench.peers import Peer, describe, windowed
from rsc import Runtime, spawn_remote
from rsc._engine.node import DEFAULT_MAX_KEPT_RESULT_BYTES

pytestmark = pytest.mark.usefixtures("no_strays")

# RSC_BENCH_ORIGIN_KEEPS_MEMORY=1: the origin (this process) keeps freed memory
# for its next payload, as every rsc node does (rsc.heap.keep_freed_memory; it
# is not rsc's default in an origin, which is the caller's process)
if os.environ.get("RSC_BENCH_ORIGIN_KEEPS_MEMORY") == "1":
    from rsc.heap import keep_freed_memory

    keep_freed_memory()

KiB, MiB = 1024, 1024 * 1024
SIZES = (64, 4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB)
SIZE_LABEL = {64: "64B", 4 * KiB: "4KiB", 64 * KiB: "64KiB", 1 * MiB: "1MiB", 16 * MiB: "16MiB"}
KINDS = ("bytes", "msgpack")
ROUNDS = {"raw": 5, "rsc": 5, "processpool": 3, "pool": 3, "dask": 1, "ray": 1}
MAX_INPUT = 40 * MiB  # the node's --max-input-bytes: a 16 MiB blob in a msgpack map fits
# The node keeps each finished task's result for duplicates for --ttl seconds
# (300 by default), within its kept-result budget (--max-kept-result-bytes,
# 256 MiB by default): past it the oldest results are dropped, so a sweep of
# 16 MiB results runs with the defaults a user gets.


def plan(size: int) -> tuple[int, int]:
    """(calls per round, calls in flight) for payloads of ``size`` bytes."""
    n = max(8, min(2000, (64 * MiB) // size))
    window = max(2, min(256, (32 * MiB) // size))
    return n, window


def payload(size: int) -> bytes:
    return frame(size)[4:]  # the same bytes the raw echo carries


def value(kind: str, size: int) -> Any:
    data = payload(size)
    return data if kind == "bytes" else {"id": 7, "blob": data}


def figures(benchmark: Any, key: str, size: int, n: int, window: int, **extra: Any) -> None:
    record(benchmark, key, n, size=size, window=window, **extra)
    if benchmark.stats is not None:
        per_s = n / benchmark.stats.stats.median
        benchmark.extra_info.update(tasks_per_s=round(per_s, 1),
                                    mb_per_s=round(per_s * 2 * size / 1e6, 2))


# ------------------------------------------------------------------------------ raw limit


@pytest.fixture(scope="class")
def sized_echo(loop: asyncio.AbstractEventLoop, stream_echo_server: str) -> Iterator[SizedEchoClient]:
    client = loop.run_until_complete(SizedEchoClient.connect(stream_echo_server))
    loop.run_until_complete(client.pipelined(64, 64, 16))
    try:
        yield client
    finally:
        client.close()
        loop.run_until_complete(asyncio.sleep(0))


class TestRawPayload:
    @pytest.mark.parametrize("size", SIZES, ids=[SIZE_LABEL[s] for s in SIZES])
    def test_raw_payload(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                         sized_echo: SizedEchoClient, size: int) -> None:
        benchmark.group = f"payload-{SIZE_LABEL[size]}"
        n, window = plan(size)
        benchmark.pedantic(run_on(loop, lambda: sized_echo.pipelined(n, size, window)),
                           rounds=ROUNDS["raw"], warmup_rounds=1)
        figures(benchmark, f"payload.raw.{size}", size, n, window)


# ------------------------------------------------------------------------------------ rsc


@pytest.fixture(scope="class")
def payload_node() -> Iterator[Any]:
    """One node that takes inputs up to MAX_INPUT bytes (its other settings the defaults)."""
    yield from bench_cluster(1, "bench.registry:registry", extra_args=["--max-input-bytes", str(MAX_INPUT)])


@pytest.fixture(scope="class")
def payload_rt(loop: asyncio.AbstractEventLoop, payload_node: Any) -> Iterator[Runtime]:
    yield from runtime_on(loop, payload_node.nodes)


@pytest.fixture(scope="class")
def payload_rt_plain(loop: asyncio.AbstractEventLoop, payload_node: Any) -> Iterator[Runtime]:
    """A runtime whose HELLO does not offer value segments (as an origin of an
    older rsc): msgpack values travel plain both ways."""
    rt = Runtime(payload_node.nodes)
    rt.engine.features.pop("value_segments")
    loop.run_until_complete(rt.start())
    try:
        yield rt
    finally:
        loop.run_until_complete(rt.aclose())


def fill_calls(size: int, n: int) -> int:
    """How many calls of ``size`` fill the node's kept results past their byte
    budget (1.25x the default 256 MiB), at most four rounds' worth.

    A node keeps each result for its TTL under that budget, so until it is
    first full every result lands in memory the process has never touched
    (page faults, zeroed pages); after that the oldest are dropped and their
    memory is reused. Measured on a quiet machine, 64 KiB as bytes moved
    1.8-2.0 GB/s in the first 256 MiB and 3.6-4.4 GB/s after (4.1 GB/s from
    the start with ``--max-kept-result-bytes 0``): without the fill, whichever
    kind a size measured first paid the node's warm-up. The allocator reuses
    freed memory for blocks of about the same size only, so each size fills
    with its own."""
    return min(-(-5 * DEFAULT_MAX_KEPT_RESULT_BYTES // (4 * size)), 6 * n)


async def rsc_windowed(rt: Runtime, node: str, computation: str, data: Any, n: int,
                       window: int) -> Any:
    """``n`` spawns of ``computation(data)`` with up to ``window`` in flight; the
    last output. Waits for the oldest, takes every later one already finished,
    and spawns as many new ones together (one write for them all)."""
    cx = rt.cx()
    handles = deque(spawn_remote(cx, node, computation, data) for _ in range(min(n, window)))
    sent, out = len(handles), None
    while handles:
        out = await handles.popleft().join()
        done = 1
        while handles and handles[0].is_finished():
            out = handles.popleft().try_join()
            done += 1
        for _ in range(min(done, n - sent)):
            handles.append(spawn_remote(cx, node, computation, data))
        sent += min(done, n - sent)
    return out


class TestRscPayload:
    @pytest.mark.parametrize("kind", KINDS + ("msgpack-plain",))
    @pytest.mark.parametrize("size", SIZES, ids=[SIZE_LABEL[s] for s in SIZES])
    def test_rsc_payload(self, benchmark: Any, loop: asyncio.AbstractEventLoop, payload_rt: Runtime,
                         payload_rt_plain: Runtime, payload_node: Any, size: int, kind: str) -> None:
        benchmark.group = f"payload-{SIZE_LABEL[size]}"
        node = next(iter(payload_node.nodes))
        n, window = plan(size)
        data = value("msgpack" if kind == "msgpack-plain" else kind, size)
        computation = "noop" if kind == "bytes" else "noop_msgpack"
        if kind == "msgpack-plain":
            payload_rt = payload_rt_plain
        out = loop.run_until_complete(rsc_windowed(payload_rt, node, computation, data, 2, 2))
        assert out == data, "the echo came back different"
        segments = payload_rt.engine.link_for(node).segments
        assert segments is (kind == "msgpack" or kind == "bytes"), "value_segments not as meant"
        loop.run_until_complete(rsc_windowed(payload_rt, node, computation, data,
                                             fill_calls(size, n), window))
        benchmark.pedantic(run_on(loop, lambda: rsc_windowed(payload_rt, node, computation, data,
                                                             n, window)),
                           rounds=ROUNDS["rsc"], warmup_rounds=1)
        figures(benchmark, f"payload.rsc.{kind}.{size}", size, n, window, kind=kind)


# ---------------------------------------------------------------------------------- peers


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("peer", PEER_NAMES, indirect=True, scope="class")
class TestPeerPayload:
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("size", SIZES, ids=[SIZE_LABEL[s] for s in SIZES])
    def test_peer_payload(self, benchmark: Any, peer: Peer, size: int, kind: str) -> None:
        benchmark.group = f"payload-{SIZE_LABEL[size]}"
        n, window = plan(size)
        data = value(kind, size)
        assert windowed(peer, data, 2, 2) == data, "the echo came back different"
        benchmark.pedantic(windowed, args=(peer, data, n, window), rounds=ROUNDS[peer.name])
        figures(benchmark, f"payload.{peer.name}.{kind}.{size}", size, n, window, kind=kind,
                peer=describe(peer.name))


# ------------------------------------------------------------------- the decoder alone


class TestDecodeLargeFrame:
    """The compiled ``FrameDecoder`` on one 16 MiB RESULT_DELIVERY read 256 KiB
    at a time: from the frame's first byte, and with its first 3 bytes at the
    end of an earlier read (as a stream socket often cuts it). The two should
    cost the same: both receive the payload straight into the message's bytes."""

    @pytest.mark.parametrize("head", [0, 3], ids=["whole-reads", "short-first-read"])
    def test_decode_large_frame(self, benchmark: Any, head: int) -> None:
        from rsc._core import _envelope
        from rsc._core.messages import ResultDelivery

        benchmark.group = "payload-decode-16MiB"
        data = payload(16 * MiB)
        stream = memoryview(_envelope.encode_frame(ResultDelivery("node-1", 1, 7, 0, data, 5)))
        reads = ([stream[:head]] if head else []) + [stream[i:i + 256 * KiB]
                                                       for i in range(head, len(stream), 256 * KiB)]

        def decode() -> Any:
            decoder = _envelope.FrameDecoder()
            out = [msg for read in reads for msg in decoder.feed(read)]
            assert len(out) == 1
            return out

        benchmark.pedantic(decode, rounds=10, warmup_rounds=1)
        record(benchmark, f"payload.decode.16MiB.{'short' if head else 'whole'}", 1, size=16 * MiB)


# ------------------------------------------------------------------- the packer alone


class TestPackValue:
    """Packing the sweep's msgpack value at 1 and 16 MiB: ``msgpack.packb``
    (a 256 KiB buffer grown by ``realloc``, then copied into a new ``bytes``)
    against ``rsc.value_codec.pack_value`` (a buffer of the guessed size, and
    a view of it: one copy of the blob) and ``pack_segmented`` (the blob out
    of band: no copy), and unpacking it (``unpackb`` copies the blob into a
    new ``bytes``, whatever it is given; a segmented value's unpack puts the
    segment object itself in its place), and joining a segmented value into
    plain MessagePack for a peer without segments: ``Segmented.joined`` (a
    splice, one copy of the blob) against unpacking and packing it again
    with ``packb`` (``repack``, what ``joined`` did before)."""

    @pytest.mark.parametrize("how", ["packb", "pack_value", "unpackb", "pack_segmented",
                                     "unpack_segmented", "joined", "repack"])
    @pytest.mark.parametrize("size", [1 * MiB, 16 * MiB], ids=["1MiB", "16MiB"])
    def test_pack_value(self, benchmark: Any, size: int, how: str) -> None:
        import msgpack

        from rsc.value_codec import pack_segmented, pack_value, unpack_value

        benchmark.group = f"payload-pack-{SIZE_LABEL[size]}"
        v = value("msgpack", size)
        packed = msgpack.packb(v, use_bin_type=True)
        segmented = pack_segmented(v)
        fn = {"packb": lambda: msgpack.packb(v, use_bin_type=True), "pack_value": lambda: pack_value(v),
              "unpackb": lambda: msgpack.unpackb(packed),
              "pack_segmented": lambda: pack_segmented(v),
              "unpack_segmented": lambda: unpack_value(segmented),
              "joined": segmented.joined,
              "repack": lambda: msgpack.packb(unpack_value(segmented), use_bin_type=True)}[how]
        if how.startswith("unpack"):
            assert fn() == v
        elif how in ("joined", "repack"):
            assert fn() == packed
        else:
            out = fn()
            assert (out.joined() if how == "pack_segmented" else bytes(out)) == packed
        benchmark.pedantic(fn, rounds=20 if size == MiB else 5, iterations=5 if size == MiB else 1,
                           warmup_rounds=1)
        record(benchmark, f"payload.pack.{how}.{size}", 1, size=size)
