"""The TCP transport, with mutual TLS 1.3 (:class:`rsc.transport.tls.TlsConfig`).

``tcp:HOST:PORT`` (IPv4, a name, or IPv6 in brackets: ``tcp:[::1]:7000``)
carries the same frames and handshake as a Unix socket. What differs is who
can reach it: anyone on the network. So:

* a node refuses to listen on an address that is not loopback unless it has
  both TLS and a cluster key (:func:`check_exposure`), or is told
  ``--insecure``;
* with TLS, the node requires a client certificate from the cluster's CA, and
  an origin requires the node's certificate to name the NodeId it dialled
  (see :mod:`rsc.transport.tls`);
* a TLS handshake that does not finish within the node's handshake timeout is
  dropped (asyncio's ``ssl_handshake_timeout``). The frame timeouts, the
  64 KiB cap before AUTH and back-pressure then apply exactly as on a Unix
  socket, since they live above the transport.

:class:`TcpTransport` is this module as a :class:`rsc.transport.base.Transport`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Callable

from rsc.errors import InvalidArgument
from rsc.transport.address import Address
from rsc.transport.base import P, StreamProtocol
from rsc.transport.tls import TlsConfig

__all__ = ["InsecureListen", "TcpTransport", "check_exposure", "connect_tcp", "is_loopback",
           "listen_tcp"]


class InsecureListen(InvalidArgument):
    """A node was asked to listen on a non-loopback TCP address without both
    TLS and a cluster key (and without ``--insecure``)."""


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address
    (127.0.0.0/8, ::1). A wildcard (``0.0.0.0``, ``::``) or a name that
    resolves to anything else is not; a name that does not resolve is not."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback
                               for info in infos)


def check_exposure(address: Address, tls: TlsConfig | None, key: bytes | None,
                   insecure: bool = False) -> None:
    """Raise :class:`InsecureListen` when a node at ``address`` would serve
    the network without both mutual TLS and a cluster key, unless
    ``insecure``. Unix sockets and loopback TCP are never refused here."""
    if address.scheme != "tcp" or insecure or is_loopback(address.host):
        return
    lacking = [what for what, have in (("TLS (--tls-cert, --tls-key, --tls-ca)", tls),
                                       ("cluster key (--key-file)", key)) if have is None]
    if lacking:
        raise InsecureListen(
            f"refusing to listen on {address}: it is not a loopback address, so anyone who can "
            f"reach it could run this node's computations, and this node has no "
            f"{' and no '.join(lacking)}. Give it both, listen on 127.0.0.1 or [::1], or pass "
            "--insecure (NodeServer(insecure=True)) if the network itself is trusted")


async def connect_tcp(address: Address, protocol_factory: Callable[[], P],
                      tls: TlsConfig | None = None, server_name: str | None = None) -> P:
    """Connect to ``address``; with ``tls``, over mutual TLS, checking that
    the node's certificate names ``server_name`` (the NodeId dialled;
    default: the host). Raises ``OSError`` (``ssl.SSLError`` for a refused
    certificate) when it cannot."""
    if address.scheme != "tcp":
        raise InvalidArgument(f"the TCP transport serves tcp: addresses only, not {address}")
    loop = asyncio.get_running_loop()
    if tls is None:
        _t, protocol = await loop.create_connection(protocol_factory, address.host, address.port)  # type: ignore[type-var]  # asyncio calls only StreamProtocol's methods
    else:
        _t, protocol = await loop.create_connection(  # type: ignore[type-var]  # asyncio calls only StreamProtocol's methods
            protocol_factory, address.host, address.port, ssl=tls.client_context(),
            # a plain str: uvloop refuses a str subclass (a NodeId) here
            server_hostname=str(server_name or address.host))
    return protocol


async def listen_tcp(address: Address, protocol_factory: Callable[[], StreamProtocol],
                     tls: TlsConfig | None = None, handshake_timeout_s: float = 10.0
                     ) -> asyncio.AbstractServer:
    """Serve ``address`` (port 0: one the system picks, see :func:`bound_address`);
    with ``tls``, every connection must finish a mutual TLS handshake within
    ``handshake_timeout_s`` before its protocol sees a byte."""
    if address.scheme != "tcp":
        raise InvalidArgument(f"the TCP transport serves tcp: addresses only, not {address}")
    loop = asyncio.get_running_loop()
    host = address.host or None
    if tls is None:
        return await loop.create_server(protocol_factory, host, address.port, reuse_address=True)  # type: ignore[arg-type]  # asyncio calls only StreamProtocol's methods
    return await loop.create_server(
        protocol_factory, host, address.port,  # type: ignore[arg-type]  # asyncio calls only StreamProtocol's methods
        reuse_address=True, ssl=tls.server_context(), ssl_handshake_timeout=handshake_timeout_s)


def bound_address(server: asyncio.AbstractServer, address: Address) -> Address:
    """``address`` with the port the server actually bound (for port 0)."""
    socks = getattr(server, "sockets", None) or ()
    for sock in socks:
        port = sock.getsockname()[1]
        return Address("tcp", host=address.host, port=port)
    return address


class TcpTransport:
    """TCP, optionally with mutual TLS, as a :class:`rsc.transport.base.Transport`.
    ``handshake_timeout_s`` bounds a listener's TLS handshakes."""

    #: The address schemes it dials and serves (``Runtime`` refuses others at once).
    schemes = ("tcp",)

    def __init__(self, tls: TlsConfig | None = None, handshake_timeout_s: float = 10.0) -> None:
        if tls is not None and not isinstance(tls, TlsConfig):
            raise InvalidArgument(f"tls must be an rsc.TlsConfig, got {type(tls).__name__}")
        self.tls = tls
        self.handshake_timeout_s = handshake_timeout_s

    async def connect(self, address: Address, protocol_factory: Callable[[], P],
                      server_name: str | None = None) -> P:
        """Connect to ``address`` (over mutual TLS when the transport has a
        ``TlsConfig``; ``server_name`` is the NodeId the node's certificate must
        name); the protocol made by ``protocol_factory``."""
        return await connect_tcp(address, protocol_factory, self.tls, server_name)

    async def listen(self, address: Address, protocol_factory: Callable[[], StreamProtocol]
                     ) -> asyncio.AbstractServer:
        """Serve ``address``, each connection with a protocol made by
        ``protocol_factory``."""
        return await listen_tcp(address, protocol_factory, self.tls, self.handshake_timeout_s)

    def __repr__(self) -> str:
        return f"TcpTransport(tls={self.tls!r})"

