"""A connection reads large frames straight into the message's bytes (issue 17).

While a large frame is in progress a ``FramedConnection`` hands its transport
a buffered protocol (``LargeFrameReceiver``) whose buffer is the decoder's
``receive_buffer()``, and takes the transport back when the frame's payload
is in. Checked here over real sockets: Unix socket pairs, TCP and TCP with
TLS, on asyncio's own loop and on uvloop, with the compiled connection and
decoder and with their pure twins; every stream arrives whole however it is
cut, the payload's bytes never reach ``data_received``, a malformed frame and
a connection lost mid-payload end that one connection and leave nothing
behind, and reading still pauses and resumes. Then real node processes echo
large inputs on both twins, both loops and over TLS.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

import rsc.transport.connection as compiled_connection
from rsc._core import envelope as selected_envelope
from rsc.errors import ProtocolError
from tests.conftest import _twin
from tests.pki import Pki
from tests.test_large_frames import BAD_FRAMES, echo_large_inputs, payload, result, spawn

KiB, MiB = 1024, 1024 * 1024


# ------------------------------------------------------------------ fixtures


def _pure_connection_module() -> Any:
    """connection.py's source as a module of its own, on the pure envelope twin."""
    path = compiled_connection.__file__
    source = os.path.join(os.path.dirname(path), "connection.py")
    spec = importlib.util.spec_from_file_location("rsc_recv_pure_connection", source)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.envelope = _twin("envelope", "py")
    return mod


@pytest.fixture(scope="module", params=["c", "py"])
def conn_mod(request: pytest.FixtureRequest) -> Any:
    if request.param == "c":
        assert not compiled_connection.__file__.endswith(".py"), "connection.py is not compiled"
        assert selected_envelope.IMPLEMENTATION == "c"
        return compiled_connection
    return _pure_connection_module()


@pytest.fixture(params=["asyncio", "uvloop"])
def new_loop(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    return asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop


def run(new_loop: Callable[[], asyncio.AbstractEventLoop], coro: Awaitable[Any]) -> Any:
    loop = new_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 60))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class Receiver:
    """The receiving end: a FramedConnection (of the twin under test) that
    counts the bytes handed to ``data_received``, and what it was told."""

    def __init__(self, conn_mod: Any, **kw: Any) -> None:
        self.msgs: list[Any] = []
        self.errors: list[ProtocolError] = []
        self.lost: list[Exception | None] = []
        self.fed = 0
        receiver = self

        class Counting(conn_mod.FramedConnection):  # type: ignore[misc, name-defined]
            def data_received(self, data: bytes) -> None:
                receiver.fed += len(data)
                super().data_received(data)

        def on_error(conn: Any, exc: ProtocolError) -> None:
            self.errors.append(exc)
            conn.abort()

        self.conn = Counting(on_messages=lambda c, msgs: self.msgs.extend(msgs),
                             on_protocol_error=on_error,
                             on_close=lambda c, exc: self.lost.append(exc), **kw)

    async def wait_for(self, what: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not what():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.002)


LINKS = ["unix", "tcp", "tls"]


async def open_link(link: str, receiver: Receiver, pki: Pki | None
                    ) -> tuple[asyncio.StreamWriter, Callable[[], Awaitable[None]]]:
    """A sender's stream writer joined to ``receiver.conn`` over ``link``,
    and a function that closes everything it opened."""
    loop = asyncio.get_running_loop()
    if link == "unix":
        a, b = socket.socketpair()
        await loop.create_unix_connection(lambda: receiver.conn, sock=a)
        _, writer = await asyncio.open_unix_connection(sock=b)
        server = None
    else:
        server_ctx = client_ctx = None
        if link == "tls":
            assert pki is not None
            server_ctx = pki.nodes.server_context()
            client_ctx = pki.origin.client_context()
        server = await loop.create_server(lambda: receiver.conn, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="worker-1" if client_ctx else None)
        await receiver.wait_for(lambda: receiver.conn.transport is not None)

    async def close() -> None:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
        receiver.conn.abort()
        await receiver.wait_for(lambda: bool(receiver.lost))
        if server is not None:
            server.close()
            await server.wait_closed()

    return writer, close


async def send_in(writer: asyncio.StreamWriter, stream: bytes, cuts: list[int]) -> None:
    """Write ``stream`` cut at ``cuts`` (then in 256 KiB pieces), letting the
    loop run between writes so the pieces tend to arrive as reads of their own."""
    pos = 0
    for end in cuts + list(range(cuts[-1] if cuts else 0, len(stream), 256 * KiB))[1:] + [len(stream)]:
        if end <= pos:
            continue
        writer.write(stream[pos:end])
        await writer.drain()
        pos = end
        for _ in range(3):
            await asyncio.sleep(0)


def stream_of(msgs: list[Any]) -> bytes:
    return b"".join(selected_envelope.encode_frame(m) for m in msgs)


def check_same(got: list[Any], msgs: list[Any]) -> None:
    assert len(got) == len(msgs)
    for a, b in zip(got, msgs):
        assert type(a) is type(b)
        value = getattr(a, "input", None) if hasattr(b, "input") else a.payload
        want = b.input if hasattr(b, "input") else b.payload
        assert type(value) is bytes and value == want


# ------------------------------------------------------------------ streams


def mixed() -> list[Any]:
    return ([result(b"a", rtid=1), spawn(payload(1 * MiB + 3, 1), rtid=2)]
            + [result(b"s%d" % i, rtid=10 + i) for i in range(20)]
            + [result(payload(3 * MiB, 2), rtid=3), spawn(payload(64 * KiB, 3), rtid=4),
               result(b"z", rtid=5)])


CUTS = {
    # the first frame's header and the large frame's header and bin header one byte at a time
    "headers byte by byte": lambda s: [1, 2, 3] + list(range(20, 120)),
    "the payload's first byte alone": lambda s: [17 + 70, 17 + 71],
    "a large frame and small ones in one write": lambda s: [17 + 5000, len(s) - 3 * MiB - 1000],
    "all at once": lambda s: [],
}


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("cut", list(CUTS))
def test_streams_arrive_whole_and_the_payload_skips_data_received(
        conn_mod: Any, new_loop: Any, pki: Pki, link: str, cut: str) -> None:
    msgs = mixed()
    stream = stream_of(msgs)
    payload_bytes = 1 * MiB + 3 * MiB + 64 * KiB

    async def main() -> None:
        r = Receiver(conn_mod)
        writer, close = await open_link(link, r, pki)
        try:
            await send_in(writer, stream, CUTS[cut](stream))
            await r.wait_for(lambda: len(r.msgs) >= len(msgs))
            check_same(r.msgs, msgs)
            assert not r.errors
            assert r.conn._decoder.buffered == 0
            # Each large frame's first read went to data_received (a read of the
            # loop's own: up to 256 KiB); the rest of its payload did not.
            assert r.fed < len(stream) - payload_bytes + 3 * 256 * KiB + 64 * KiB, r.fed
            assert r.conn.transport.get_protocol() is r.conn  # taken back
        finally:
            await close()

    run(new_loop, main())


@pytest.mark.parametrize("link", LINKS)
def test_a_malformed_frame_mid_payload_closes_only_that_connection(
        conn_mod: Any, new_loop: Any, pki: Pki, link: str) -> None:
    good = stream_of([result(b"before")])
    bad = dict(BAD_FRAMES)["too few elements"]()
    with pytest.raises(ProtocolError) as expected:
        selected_envelope.decode(bad[4:])

    async def main() -> None:
        r = Receiver(conn_mod)
        other = Receiver(conn_mod)
        writer, close = await open_link(link, r, pki)
        writer2, close2 = await open_link(link, other, pki)
        try:
            await send_in(writer, good + bad, [len(good) + 3000, len(good) + 50_000])
            await r.wait_for(lambda: bool(r.errors))
            assert type(r.errors[0]) is type(expected.value)
            assert [m.payload for m in r.msgs] == [b"before"]
            await r.wait_for(lambda: bool(r.lost))  # that connection closed
            # the other connection still carries large frames
            msgs = [result(payload(2 * MiB, 5))]
            await send_in(writer2, stream_of(msgs), [4000])
            await other.wait_for(lambda: len(other.msgs) == 1)
            check_same(other.msgs, msgs)
            assert not other.lost
        finally:
            await close()
            await close2()

    run(new_loop, main())


@pytest.mark.parametrize("link", LINKS)
def test_a_connection_lost_mid_payload_leaves_nothing(conn_mod: Any, new_loop: Any, pki: Pki,
                                                      link: str) -> None:
    frame = stream_of([result(payload(8 * MiB))])

    async def main() -> weakref.ref[Any]:
        r = Receiver(conn_mod)
        writer, close = await open_link(link, r, pki)
        await send_in(writer, frame[:3 * MiB], [5000])
        await r.wait_for(lambda: r.conn._decoder.buffered >= 3 * MiB - 300 * KiB)
        assert r.conn.transport.get_protocol() is not r.conn  # reading into the buffer
        transport = writer.transport
        transport.abort()  # the peer is gone mid-payload
        await r.wait_for(lambda: bool(r.lost))
        assert r.msgs == [] and not r.errors
        assert r.conn.closed.done() and r.conn.is_closing
        await close()
        return weakref.ref(r.conn)  # r goes with this frame

    ref = run(new_loop, main())
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())
    assert not [o for o in gc.get_objects() if type(o).__name__ == "LargeFrameReceiver"]


@pytest.mark.parametrize("link", ["unix", "tls"])
def test_reading_pauses_and_resumes_mid_payload(conn_mod: Any, new_loop: Any, pki: Pki,
                                                link: str) -> None:
    """A transport whose peer does not read calls pause_writing on the
    protocol it holds, mid-payload the stand-in: the connection stops
    reading until resume_writing, then the frame completes."""
    msgs = [result(payload(6 * MiB, 7))]
    stream = stream_of(msgs)

    async def main() -> None:
        r = Receiver(conn_mod, pause_reading_on_backlog=True)
        writer, close = await open_link(link, r, pki)
        try:
            writer.write(stream[:2 * MiB])
            await r.wait_for(lambda: r.conn._decoder.buffered >= 1 * MiB)
            stand_in = r.conn.transport.get_protocol()
            assert stand_in is not r.conn
            stand_in.pause_writing()
            assert r.conn.reading_paused
            writer.write(stream[2 * MiB:])
            await asyncio.sleep(0.05)
            held = r.conn._decoder.buffered
            await asyncio.sleep(0.1)
            assert r.conn._decoder.buffered == held < len(stream)  # nothing read meanwhile
            assert not r.msgs
            stand_in.resume_writing()
            assert not r.conn.reading_paused
            await r.wait_for(lambda: len(r.msgs) == 1)
            check_same(r.msgs, msgs)
        finally:
            await close()

    run(new_loop, main())


@pytest.mark.parametrize("link", ["unix", "tls"])
def test_data_handed_to_the_stand_in_goes_where_data_goes(conn_mod: Any, new_loop: Any, pki: Pki,
                                                          link: str) -> None:
    """A transport may still call data_received on the stand-in (a TLS
    transport that copies): the bytes are fed, and reading goes on into the
    right place, for the rest of the frame and for the frames after it."""
    msgs = [result(payload(1 * MiB, 3), rtid=1), result(payload(200 * KiB, 4), rtid=2),
            result(b"small", rtid=3)]
    stream = stream_of(msgs)

    async def main() -> None:
        r = Receiver(conn_mod)
        writer, close = await open_link(link, r, pki)
        try:
            await send_in(writer, stream[:300 * KiB], [5000])
            await r.wait_for(lambda: r.conn._decoder.buffered == 300 * KiB)
            stand_in = r.conn.transport.get_protocol()
            assert stand_in is not r.conn
            stand_in.data_received(stream[300 * KiB:600 * KiB])  # mid-payload
            assert r.conn._decoder.buffered == 600 * KiB
            first = len(selected_envelope.encode_frame(msgs[0]))
            r.conn.transport.get_protocol().data_received(stream[600 * KiB:first + 100])
            assert len(r.msgs) == 1  # the frame completed while fed
            await send_in(writer, stream[first + 100:], [first + 5000])
            await r.wait_for(lambda: len(r.msgs) == 3)
            check_same(r.msgs, msgs)
            assert r.conn.transport.get_protocol() is r.conn
        finally:
            await close()

    run(new_loop, main())


@pytest.mark.parametrize("size, switches", [(200 * KiB, False), (600 * KiB, True)])
def test_only_a_remainder_past_one_loop_read_is_read_directly(conn_mod: Any, new_loop: Any,
                                                              size: int, switches: bool) -> None:
    """Less than DIRECT_READ_MIN still to come is read as data (one read of
    the loop's buffer); more, through the stand-in."""
    msgs = [result(payload(size, 6))]
    stream = stream_of(msgs)

    async def main() -> None:
        r = Receiver(conn_mod)
        writer, close = await open_link("unix", r, None)
        try:
            writer.write(stream[:5000])
            await r.wait_for(lambda: r.conn._decoder.buffered == 5000)
            assert (r.conn.transport.get_protocol() is not r.conn) is switches
            assert (len(stream) - 5000 >= conn_mod.DIRECT_READ_MIN) is switches
            writer.write(stream[5000:])
            await r.wait_for(lambda: len(r.msgs) == 1)
            check_same(r.msgs, msgs)
            assert (r.fed < 64 * KiB) is switches
        finally:
            await close()

    run(new_loop, main())


def test_an_in_memory_pipe_still_carries_large_frames(conn_mod: Any) -> None:
    """The in-memory transport cannot switch protocols: the connection stays
    on data_received (the decoder copies) and says nothing."""
    from rsc.transport.address import Address
    from rsc.transport.memory import MemoryTransport

    msgs = [result(payload(300 * KiB, 4)), result(b"after", rtid=8)]

    async def main() -> None:
        mem = MemoryTransport()
        r = Receiver(conn_mod)
        listener = await mem.listen(Address.parse("unix:/mem/recv.sock"), lambda: r.conn)
        sender = Receiver(conn_mod)
        await mem.connect(Address.parse("unix:/mem/recv.sock"), lambda: sender.conn)
        for m in msgs:
            sender.conn.send(m)
        await r.wait_for(lambda: len(r.msgs) == 2)
        check_same(r.msgs, msgs)
        sender.conn.close()
        listener.close()
        await r.wait_for(lambda: bool(r.lost))

    asyncio.run(main())


# ------------------------------------------------------------ node processes


def echo_large(nodes: Any, tls: Any = None) -> Callable[[], Awaitable[None]]:
    return lambda: echo_large_inputs(nodes, [64 * KiB, 300 * KiB + 7, 5 * MiB], 30, tls)


NODE_BUILDS = {
    "compiled, uvloop": {},
    "compiled, asyncio loop": {"RSC_NO_UVLOOP": "1"},
    "pure twins, uvloop": {"RSC_NO_EXTENSIONS": "1"},
    "pure twins, asyncio loop": {"RSC_NO_EXTENSIONS": "1", "RSC_NO_UVLOOP": "1"},
}


@pytest.mark.parametrize("origin_loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("build", list(NODE_BUILDS))
def test_a_node_echoes_large_inputs(cluster: Any, build: str, origin_loop: str) -> None:
    c = cluster(1, env=NODE_BUILDS[build])
    loop = asyncio.new_event_loop if origin_loop == "asyncio" else uvloop.new_event_loop
    run(loop, echo_large(c.nodes)())


@pytest.mark.parametrize("build", ["compiled, uvloop", "pure twins, asyncio loop"])
def test_a_node_echoes_large_inputs_over_tls(cluster: Any, pki: Pki, build: str) -> None:
    c = cluster(1, tcp_host="127.0.0.1", tls=pki.nodes, env=NODE_BUILDS[build])
    for loop in (asyncio.new_event_loop, uvloop.new_event_loop):
        run(loop, echo_large(c.nodes, tls=pki.origin)())

