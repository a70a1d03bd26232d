"""An in-memory transport for unit tests: connections are pipes inside one
event loop, addresses are just names.

:class:`MemoryTransport` is a :class:`rsc.transport.base.Transport`. Hand the
same instance to both ends: what one ``listen``\\ s at, the other can
``connect`` to. Bytes written on one end reach the other end's
``data_received`` on a later turn of the loop, in order; closing one end
delivers end-of-file to the other after everything written before it. With
``record=True`` every chunk written is kept in ``transport.records`` as a
:class:`Record` (which connection, which direction, the bytes), so a test can
check exactly what went over the wire (decode it with
``rsc._core.envelope.FrameDecoder``).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from dataclasses import dataclass
from typing import Any, Callable

from rsc.transport.address import Address
from rsc.transport.base import P, StreamProtocol

__all__ = ["MemoryListener", "MemoryTransport", "Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """One chunk written on a recorded connection. ``connection`` numbers the
    connections of one transport from 1; ``direction`` is ``"out"`` for bytes
    the connecting side wrote, ``"in"`` for bytes the listening side wrote."""

    connection: int
    address: str
    direction: str
    data: bytes


class _Pipe(asyncio.Transport):
    """One end of an in-memory connection: an asyncio transport whose writes
    reach the other end's protocol on the next turn of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: StreamProtocol,
                 peername: str, record: Callable[[bytes], None] | None) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._peername = peername
        self._record = record
        self.peer: _Pipe | None = None
        self._closing = False
        self._lost = False
        self._paused = False
        self._held: list[bytes | None] = []  # arrived while reading was paused; None: EOF

    # -------------------------------------------------------- what the protocol calls
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.peer is None:
            return
        chunk = bytes(data)
        if self._record is not None:
            self._record(chunk)
        self._loop.call_soon(self.peer._arrive, chunk)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.peer is not None:  # after every write made before it (call_soon is FIFO)
            self._loop.call_soon(self.peer._peer_closed)
        self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            held, self._held = self._held, []
            for chunk in held:
                if chunk is not None:
                    self._loop.call_soon(self._arrive, chunk)
                else:
                    self._loop.call_soon(self._peer_closed)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peername if name == "peername" else default

    # -------------------------------------------------------- what the other end calls
    def _arrive(self, chunk: bytes) -> None:
        if self._lost:
            return
        if self._paused:
            self._held.append(chunk)
            return
        self._protocol.data_received(chunk)

    def _peer_closed(self, _: None = None) -> None:
        if self._lost:
            return
        if self._paused:  # like a socket's EOF, read only after the bytes before it
            self._held.append(None)
            return
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def _connection_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._protocol.connection_lost(exc)


class MemoryListener:
    """What :meth:`MemoryTransport.listen` returns."""

    def __init__(self, transport: MemoryTransport, address: str,
                 factory: Callable[[], StreamProtocol]) -> None:
        self._transport = transport
        self.address = address
        self.factory = factory
        self.closed = False

    def close(self) -> None:
        """Stop accepting: a later connect to this address is refused."""
        if not self.closed:
            self.closed = True
            self._transport._listeners.pop(self.address, None)

    async def wait_closed(self) -> None:
        """Return at once: an in-memory listener has nothing to wait for."""
        return None


class MemoryTransport:
    """In-process connections on one event loop (see the module docstring)."""

    def __init__(self, *, record: bool = False) -> None:
        self._listeners: dict[str, MemoryListener] = {}
        self._ids = itertools.count(1)
        self.record = record
        #: every chunk written, in order, when made with ``record=True``
        self.records: list[Record] = []

    async def listen(self, address: Address,
                     protocol_factory: Callable[[], StreamProtocol]) -> MemoryListener:
        """Accept connections at ``address``; raises ``OSError`` (EADDRINUSE)
        when something already listens there."""
        key = str(address)
        if key in self._listeners:
            raise OSError(errno.EADDRINUSE, f"address already in use: {key}")
        listener = self._listeners[key] = MemoryListener(self, key, protocol_factory)
        return listener

    async def connect(self, address: Address, protocol_factory: Callable[[], P]) -> P:
        """Connect to a listener of this transport; raises
        ``ConnectionRefusedError`` when nothing listens at ``address``."""
        key = str(address)
        listener = self._listeners.get(key)
        if listener is None:
            raise ConnectionRefusedError(f"nothing listens at {key}")
        loop = asyncio.get_running_loop()
        n = next(self._ids)
        client_proto = protocol_factory()
        server_proto = listener.factory()
        client = _Pipe(loop, client_proto, key, self._recorder(n, key, "out"))
        server = _Pipe(loop, server_proto, f"memory-client-{n}", self._recorder(n, key, "in"))
        client.peer, server.peer = server, client
        server_proto.connection_made(server)
        client_proto.connection_made(client)
        return client_proto

    def _recorder(self, n: int, address: str, direction: str) -> Callable[[bytes], None] | None:
        if not self.record:
            return None
        return lambda data: self.records.append(Record(n, address, direction, data))

    def __repr__(self) -> str:
        return f"MemoryTransport(listening={sorted(self._listeners)}, record={self.record})"
