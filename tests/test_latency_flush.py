"""When a FramedConnection writes: the first frame since the peer was last
read from (or the last flush) at once (a lone request waits for nothing), the
frames after it together at the loop turn's end or every FLUSH_FRAMES (a burst
costs a few writes).

Both builds of rsc.transport.connection run each test: the compiled one (what
rsc imports) and its pure-Python source, loaded beside it. The latency ones
use real Unix sockets on both event loops (asyncio and uvloop); the write
counts use the in-memory transport, which records every chunk written.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any

import pytest
import uvloop

from rsc._core import envelope
from rsc._core.messages import Ping, Pong
from rsc.errors import ProtocolError
from rsc.transport import connection as compiled_connection
from rsc.transport.address import Address
from rsc.transport.memory import MemoryTransport


def _source_twin() -> ModuleType:
    """rsc.transport.connection loaded from its .py source (the pure twin)."""
    path = os.path.splitext(compiled_connection.__file__)[0].split(".cpython")[0] + ".py"
    spec = importlib.util.spec_from_file_location("rsc_transport_connection_twin", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TWINS = {"compiled": compiled_connection, "pure": _source_twin()}
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(TWINS))
def conn_mod(request: pytest.FixtureRequest) -> ModuleType:
    return TWINS[request.param]


def run_on(loop_name: str, coro: Coroutine[Any, Any, None]) -> None:
    loop = LOOPS[loop_name]()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


def _never(conn: Any, exc: ProtocolError) -> None:  # pragma: no cover - a failure if called
    raise AssertionError(f"unexpected protocol error {exc!r}")


def make_conn(mod: ModuleType, received: list[Any] | None = None) -> Any:
    sink = received if received is not None else []
    return mod.FramedConnection(on_messages=lambda c, msgs: sink.extend(msgs),
                                on_protocol_error=_never, on_close=lambda c, exc: None)


def ping(n: int) -> Ping:
    return Ping("origin", 1, n)


def test_the_compiled_twin_is_the_built_module() -> None:
    assert not TWINS["compiled"].__file__.endswith(".py")  # the pure twin is tested beside it
    assert TWINS["pure"].__file__.endswith("connection.py")


def recv_now(sock: socket.socket) -> bytes:
    """What the socket holds right now (b"" if nothing): no waiting."""
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


def on_socket(loop_name: str, make: Callable[[], Any],
              body: Callable[[Any, socket.socket], Coroutine[Any, Any, None]]) -> None:
    """Run ``body(conn, theirs)`` on ``loop_name``: ``conn = make()`` is the
    protocol of one end of a real Unix socket pair, connected and idle;
    ``theirs`` is the other end, a plain non-blocking socket."""

    async def main() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.setblocking(False)
        transport, conn = await asyncio.get_running_loop().connect_accepted_socket(make, ours)
        try:
            await asyncio.sleep(0)  # connected, idle
            await body(conn, theirs)
        finally:
            transport.close()
            await asyncio.sleep(0)
            theirs.close()

    run_on(loop_name, main())


async def next_turn() -> None:
    """Let the loop finish this turn and start the next."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_frame_sent_on_an_idle_connection_is_on_the_socket_when_send_returns(
        conn_mod: ModuleType, loop_name: str) -> None:
    """No loop turn between ``send`` and the write: the peer can read the frame
    before the sender's loop runs again."""

    async def body(conn: Any, theirs: socket.socket) -> None:
        conn.send(ping(1))
        got = recv_now(theirs)  # before this coroutine yields to the loop
        assert envelope.FrameDecoder(1 << 20).feed(got) == [ping(1)]
        theirs.send(envelope.encode_frame(Pong("node", 2, 1)))  # the peer answers
        await next_turn()  # ... and is read: the next lone frame goes at once too
        conn.send(ping(2))
        assert envelope.FrameDecoder(1 << 20).feed(recv_now(theirs)) == [ping(2)]

    on_socket(loop_name, lambda: make_conn(conn_mod), body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_frames_after_the_first_of_a_turn_leave_together_at_the_turns_end(
        conn_mod: ModuleType, loop_name: str) -> None:
    async def body(conn: Any, theirs: socket.socket) -> None:
        for n in range(1, 6):
            conn.send(ping(n))
        decoder = envelope.FrameDecoder(1 << 20)
        assert decoder.feed(recv_now(theirs)) == [ping(1)]  # the first: at once
        await next_turn()
        assert decoder.feed(recv_now(theirs)) == [ping(n) for n in range(2, 6)]

    on_socket(loop_name, lambda: make_conn(conn_mod), body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_replies_to_one_read_leave_together_when_its_handling_returns(
        conn_mod: ModuleType, loop_name: str) -> None:
    """A node answering a read of three PINGs: the three PONGs are on the
    socket, in one write, when the connection's data_received returns (not
    the first alone, not at the end of the loop turn)."""

    def answer(conn: Any, msgs: list[Any]) -> None:
        for m in msgs:
            conn.send(Pong("node", 2, m.nonce))

    async def body(conn: Any, theirs: socket.socket) -> None:
        # what the transport does when three frames arrive in one read
        conn.data_received(b"".join(envelope.encode_frame(ping(n)) for n in (1, 2, 3)))
        got = recv_now(theirs)
        assert envelope.FrameDecoder(1 << 20).feed(got) == [Pong("node", 2, n) for n in (1, 2, 3)]

    on_socket(loop_name, lambda: conn_mod.FramedConnection(
        on_messages=answer, on_protocol_error=_never, on_close=lambda c, exc: None), body)


def test_a_burst_costs_one_write_more_than_fully_coalesced(conn_mod: ModuleType) -> None:
    """600 frames in one turn: the first alone, then FLUSH_FRAMES at a time, the
    rest at the turn's end; every frame once, in order."""
    net = MemoryTransport(record=True)
    address = Address.parse("unix:/mem/burst.sock")
    received: list[Any] = []
    flush_frames = conn_mod.FLUSH_FRAMES
    n = 2 * flush_frames + 88

    async def main() -> None:
        await net.listen(address, lambda: make_conn(conn_mod, received))
        client = make_conn(conn_mod)
        await net.connect(address, lambda: client)
        for i in range(n):
            client.send(ping(i))
        assert len(net.records) == 3  # the first, then two of FLUSH_FRAMES
        for _ in range(10):
            await asyncio.sleep(0)

    asyncio.run(main())
    sizes = [len(envelope.FrameDecoder(1 << 20).feed(r.data)) for r in net.records]
    assert sizes == [1, flush_frames, flush_frames, n - 1 - 2 * flush_frames]
    assert received == [ping(i) for i in range(n)]


def test_close_after_sends_delivers_every_frame_in_order(conn_mod: ModuleType) -> None:
    net = MemoryTransport()
    address = Address.parse("unix:/mem/close.sock")
    received: list[Any] = []

    async def main() -> None:
        await net.listen(address, lambda: make_conn(conn_mod, received))
        client = make_conn(conn_mod)
        await net.connect(address, lambda: client)
        for i in range(5):
            client.send(ping(i))
        client.close()
        client.send(ping(99))  # after close: dropped
        await client.closed
        for _ in range(10):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert received == [ping(i) for i in range(5)]
