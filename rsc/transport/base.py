"""The transport interface: how rsc opens and accepts byte streams.

A :class:`Transport` turns an :class:`~rsc.transport.address.Address` into a
connected asyncio protocol (``connect``) or a server that makes one per
incoming connection (``listen``). Everything above it, the framing
(:class:`~rsc.transport.connection.FramedConnection`) and the protocol
engines, sees only the protocol's callbacks (``connection_made``,
``data_received``, ``eof_received``, ``connection_lost``) and the handful of
asyncio transport methods a framed connection calls (``write``, ``close``,
``abort``, ``pause_reading``, ``resume_reading``, ``is_closing``).

Implementations in rsc:

* :class:`rsc.transport.uds.UnixTransport`: Unix domain sockets, with the
  socket permissions of docs/PROTOCOL.md (0600 socket in a safe directory).
* :class:`rsc.transport.memory.MemoryTransport`: in-process pipes on one event
  loop, for unit tests: no files, no sockets, and every connection can be
  recorded (``record=True``).

``Transport`` is a :class:`typing.Protocol`: a transport of your own (TCP, a
simulated network, a wrapper that records or injects faults) needs no base
class, only these two coroutines. See docs/DESIGN.md ("Transports") for an
example.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Protocol, TypeVar, runtime_checkable

from rsc.transport.address import Address

__all__ = ["Listener", "ProtocolFactory", "StreamProtocol", "Transport"]


class StreamProtocol(Protocol):
    """The protocol object a transport makes per connection and drives: the
    callbacks of an ``asyncio.Protocol``. Any ``asyncio.Protocol`` is one;
    so is rsc's framed connection, a compiled class with these methods and no
    Python base (asyncio itself only calls the methods)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The connection is up; ``transport`` writes to it."""
    def data_received(self, data: bytes) -> None:
        """Bytes arrived."""
    def eof_received(self) -> bool | None:
        """The peer closed its side; True keeps ours open."""
    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone (``exc`` None for a clean close)."""


P = TypeVar("P", bound=StreamProtocol)
#: Makes the protocol object for one new connection (one per connection).
ProtocolFactory = Callable[[], P]


@runtime_checkable
class Listener(Protocol):
    """What ``Transport.listen`` returns: a server accepting connections."""

    def close(self) -> None:
        """Stop accepting new connections (open ones stay open)."""

    async def wait_closed(self) -> None:
        """Return once the listener has stopped accepting."""


@runtime_checkable
class Transport(Protocol):
    """Opens and accepts byte streams for rsc's wire protocol.

    A transport may also have a ``schemes`` attribute, the address schemes it
    dials (``("unix",)``, ``("tcp",)``): a ``Runtime`` then refuses a cluster
    address of another scheme when it is created. Without it (a transport for
    tests, say) every address is handed to ``connect``. It is not a protocol
    member, so a transport without it still passes ``isinstance``."""

    async def connect(self, address: Address, protocol_factory: Callable[[], P]) -> P:
        """Connect to ``address``; return the protocol ``protocol_factory`` made
        for the connection, once its ``connection_made`` has been called.
        Raises ``OSError`` (``ConnectionRefusedError``, ``FileNotFoundError``)
        when nothing listens there."""
        ...

    async def listen(self, address: Address,
                     protocol_factory: Callable[[], StreamProtocol]) -> Listener:
        """Accept connections at ``address``, each with a new protocol from
        ``protocol_factory``, until the returned listener is closed."""
        ...
