"""The transport interface (rsc.transport.base) and its two implementations:
Unix sockets (real sockets in a temporary directory) and the in-memory pipes
a user's unit tests can use. Both carry framed wire messages the same way."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from rsc._core import envelope
from rsc._core.messages import Message, Ping, Pong
from rsc.errors import InvalidArgument, ProtocolError
from rsc.transport.address import Address
from rsc.transport.base import Listener, Transport
from rsc.transport.connection import FramedConnection
from rsc.transport.memory import MemoryTransport, Record
from rsc.transport.uds import UnixListener, UnixTransport


class Peer:
    """A FramedConnection factory that answers every Ping with a Pong and
    remembers what it received and when it closed."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.received: list[Message] = []
        self.closed: list[Exception | None] = []
        self.conns: list[FramedConnection] = []
        self.got = asyncio.Event()

    def factory(self) -> FramedConnection:
        conn = FramedConnection(on_messages=self._on_messages, on_protocol_error=self._on_error,
                                on_close=lambda c, exc: self.closed.append(exc))
        self.conns.append(conn)
        return conn

    def _on_messages(self, conn: FramedConnection, msgs: list[Message]) -> None:
        self.received.extend(msgs)
        for m in msgs:
            if self.answer and isinstance(m, Ping):
                conn.send(Pong("server", 2, m.nonce))
        self.got.set()

    def _on_error(self, conn: FramedConnection, exc: ProtocolError) -> None:  # pragma: no cover
        raise AssertionError(f"unexpected protocol error {exc!r}")


async def wait_for(cond: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


def transports(tmp_path: Path) -> list[tuple[Transport, Address]]:
    return [(UnixTransport(), Address.parse(f"unix:{tmp_path}/sock/n1.sock")),
            (MemoryTransport(), Address.parse("unix:/nowhere/n1.sock"))]


@pytest.mark.parametrize("kind", ["unix", "memory"])
def test_a_transport_carries_frames_both_ways_and_closes_both_ends(tmp_path: Path, kind: str) -> None:
    transport, address = dict(zip(["unix", "memory"], transports(tmp_path)))[kind]
    assert isinstance(transport, Transport)

    async def main() -> None:
        server, client = Peer(answer=True), Peer(answer=False)
        listener = await transport.listen(address, server.factory)
        assert isinstance(listener, Listener)
        conn = await transport.connect(address, client.factory)
        assert conn is client.conns[0] and conn.transport is not None
        for nonce in (1, 2, 3):
            conn.send(Ping("origin", 1, nonce))
        await wait_for(lambda: len(client.received) == 3, "three pongs")
        assert [m.nonce for m in server.received] == [1, 2, 3]
        assert [(type(m), m.nonce) for m in client.received] == [(Pong, 1), (Pong, 2), (Pong, 3)]
        conn.close()
        await wait_for(lambda: client.closed and server.closed, "both ends closed")
        listener.close()
        await listener.wait_closed()
        with pytest.raises(OSError):
            await transport.connect(address, client.factory)

    asyncio.run(main())


def test_the_unix_listener_keeps_the_socket_permissions_and_removes_only_its_socket(tmp_path: Path) -> None:
    path = tmp_path / "d" / "n.sock"

    async def main() -> None:
        listener = await UnixTransport().listen(Address.parse(f"unix:{path}"), Peer(True).factory)
        assert isinstance(listener, UnixListener)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        listener.close()
        await listener.wait_closed()
        assert listener.remove_socket() and not path.exists()
        assert not listener.remove_socket()

    asyncio.run(main())


def test_the_unix_transport_refuses_other_schemes() -> None:
    async def main() -> None:
        with pytest.raises(InvalidArgument, match="unix: addresses only"):
            await UnixTransport().connect(Address.parse("tcp:127.0.0.1:9"), Peer(False).factory)

    asyncio.run(main())


def test_memory_transport_records_every_chunk_and_refuses_a_second_listener() -> None:
    transport = MemoryTransport(record=True)
    address = Address.parse("unix:/mem/n1.sock")

    async def main() -> None:
        server, client = Peer(answer=True), Peer(answer=False)
        await transport.listen(address, server.factory)
        with pytest.raises(OSError, match="in use"):
            await transport.listen(address, server.factory)
        conn = await transport.connect(address, client.factory)
        conn.send(Ping("origin", 1, 9))
        await wait_for(lambda: client.received, "the pong")
        conn.close()
        await wait_for(lambda: server.closed, "the server end closed")

    asyncio.run(main())
    assert [(r.connection, r.address, r.direction) for r in transport.records] == [
        (1, "unix:/mem/n1.sock", "out"), (1, "unix:/mem/n1.sock", "in")]
    out = envelope.FrameDecoder(1 << 20).feed(transport.records[0].data)
    back = envelope.FrameDecoder(1 << 20).feed(transport.records[1].data)
    assert out == [Ping("origin", 1, 9)] and back == [Pong("server", 2, 9)]
    assert isinstance(transport.records[0], Record)


def test_memory_pipe_holds_bytes_while_reading_is_paused_and_delivers_eof_after_them() -> None:
    transport = MemoryTransport()
    address = Address.parse("unix:/mem/n2.sock")

    async def main() -> None:
        server, client = Peer(answer=False), Peer(answer=False)
        await transport.listen(address, server.factory)
        conn = await transport.connect(address, client.factory)
        server_end = server.conns[0].transport
        server_end.pause_reading()
        conn.send(Ping("origin", 1, 1))
        conn.send(Ping("origin", 1, 2))
        conn.flush()
        conn.close()  # written before the close: still delivered, then EOF
        for _ in range(5):
            await asyncio.sleep(0)
        assert server.received == [] and server.closed == []
        server_end.resume_reading()
        await wait_for(lambda: server.closed, "the server end closed")
        assert [m.nonce for m in server.received] == [1, 2]

    asyncio.run(main())


def test_the_transport_example_in_design_md_runs() -> None:
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    example = re.search(r"## Transports.*?```python\n(.*?)```", text, re.S)
    assert example is not None
    exec(compile(example.group(1), "DESIGN.md (Transports)", "exec"), {"__name__": "design_example"})
