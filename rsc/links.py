"""The origin's connections to its nodes: one per node, opened on first use,
re-opened with backoff while the node has work or status waiters.

``Links`` dials through the runtime's transport (a ``rsc.transport.base.Transport``)
or, with none, Unix sockets for ``unix:`` and TCP for ``tcp:`` addresses (over
mutual TLS when the runtime has a ``TlsConfig``: the node's certificate must
then name the NodeId dialled). What
a connection carries is the origin engine's business: ``Links`` only tells the
engine when a link comes up or goes down and hands it the frames read.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, Callable, Protocol

from rsc.logs import get_logger
from rsc._signature import SourceSignature
from rsc._core.messages import HANDSHAKE_MAX_FRAME_BYTES, WELCOME
from rsc.clock import Clock
from rsc.errors import InvalidArgument, NodeUnreachable, ProtocolError
from rsc.transport.address import Address
from rsc.transport.base import Transport
from rsc.transport.connection import FramedConnection
from rsc.transport.tcp import connect_tcp
from rsc.transport.tls import TlsConfig
from rsc.types import NodeId

if TYPE_CHECKING:
    from rsc._engine.origin import OriginEngine

log = get_logger("rsc.origin")

BACKOFF_FIRST_S = 0.02  # the first retry after a failed connect; doubling up to backoff_max_s
CLOSE_WAIT_S = 1.0  # how long aclose waits for its connections to finish closing


class LinkOwner(Protocol):
    """What the links read from and call on the runtime that owns them (an ``rsc.Runtime``)."""

    engine: OriginEngine

    @property
    def clock(self) -> Clock:
        """The runtime's clock (deadlines and back-off read it)."""

    transport: Transport | None
    tls: TlsConfig | None
    _loop: asyncio.AbstractEventLoop

    def _wanted(self, node: str) -> bool: ...
    def _unreachable(self, node: str, err: BaseException) -> None: ...
    def _pump(self) -> None: ...
    def _on_messages(self, conn: FramedConnection, msgs: list[Any]) -> None: ...
    def _on_protocol_error(self, conn: FramedConnection, exc: ProtocolError) -> None: ...


class NodeLink:
    """One node's connection: its address, the open connection (or None), the
    task that keeps it open, and since when connecting has failed."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    __slots__ = ("node", "address", "conn", "connector", "failed_since", "connects",
                 "unreachable_logged")

    def __init__(self, node: NodeId, address: Address) -> None:
        self.node = node
        self.address = address
        self.conn: FramedConnection | None = None
        self.connector: asyncio.Task[None] | None = None
        self.failed_since: float | None = None
        self.connects = 0  # connections opened (Runtime.stats: reconnects are the later ones)
        self.unreachable_logged = False  # said once per outage, not once per attempt


class Links:
    """Every node link of one runtime (``rt``), keyed by NodeId."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    def __init__(self, rt: LinkOwner, cluster: dict[NodeId, Address], connect_timeout_s: float,
                 backoff_max_s: float) -> None:
        self.rt = rt
        schemes = getattr(rt.transport, "schemes", None)  # what a transport of rsc's dials
        for n, a in cluster.items():
            if schemes is not None and a.scheme not in schemes:
                raise InvalidArgument(f"node {n} is at {a}, but this runtime's transport "
                                      f"({rt.transport!r}) dials {' and '.join(schemes)}: addresses "
                                      "only")
        self.by_node: dict[str, NodeLink] = {n: NodeLink(n, a) for n, a in cluster.items()}
        # The same links keyed by plain, interned ``str`` names, which ``get``
        # reads on every spawn: a dict whose keys are all exact ``str`` is
        # searched by the interpreter's string fast path, where NodeId keys
        # (a str subclass) cost a generic comparison per lookup.
        self.by_name: dict[str, NodeLink] = {sys.intern(str.__str__(n)): link
                                             for n, link in self.by_node.items()}
        self.connect_timeout_s = connect_timeout_s
        self.backoff_max_s = backoff_max_s

    def get(self, node: str) -> NodeLink:
        """The link to ``node``, or InvalidArgument naming the nodes there are."""
        link = self.by_name.get(node)  # a NodeId finds its entry too (equal strings)
        if link is None:
            raise InvalidArgument(f"node {node!r} is not in this runtime's cluster; known: "
                                  f"{', '.join(sorted(self.by_node))}")
        return link

    def reconnects(self) -> int:
        """Connections opened to a node that had been connected before."""
        return sum(max(0, link.connects - 1) for link in list(self.by_node.values()))

    def open_connections(self) -> int:
        """How many nodes this runtime has a connection to now."""
        return sum(1 for link in list(self.by_node.values()) if link.conn is not None)

    def ensure(self, link: NodeLink) -> None:
        """Make sure something is connecting ``link`` (or holding it open)."""
        if link.connector is None or link.connector.done():
            link.connector = self.rt._loop.create_task(self._connect_loop(link))

    async def _connect_loop(self, link: NodeLink) -> None:
        rt = self.rt
        backoff = BACKOFF_FIRST_S
        while rt._wanted(link.node):
            try:
                conn = await self._connect(link)
            except OSError as exc:
                self._connect_failed(link, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            except InvalidArgument as exc:  # an address this runtime's transport cannot dial
                log.error("cannot connect to node %s: %s", link.node, exc)
                rt._unreachable(link.node, NodeUnreachable(link.node, str(exc)))
                return
            link.failed_since = None
            link.unreachable_logged = False
            backoff = BACKOFF_FIRST_S
            assert conn.closed is not None
            # shielded: cancelling this loop (aclose) must not cancel the
            # future aclose then waits on for the close to finish
            await asyncio.shield(conn.closed)
            link.conn = None
            log.info("connection to node %s at %s closed", link.node, link.address)
            rt.engine.link_down(link.node, rt.clock.now_ns())
            rt._pump()

    async def _connect(self, link: NodeLink) -> FramedConnection:
        rt = self.rt
        factory: Callable[[], FramedConnection] = lambda: FramedConnection(  # noqa: E731
            on_messages=rt._on_messages, on_protocol_error=rt._on_protocol_error,
            on_close=_ignore_close, handshake_max_frame_bytes=HANDSHAKE_MAX_FRAME_BYTES,
            handshake_last_kind=WELCOME)  # a node's frames before WELCOME are small too
        addr, loop, timeout = link.address, rt._loop, self.connect_timeout_s
        if rt.transport is not None:
            conn = await asyncio.wait_for(rt.transport.connect(addr, factory), timeout)
        elif addr.scheme == "unix":
            _t, conn = await asyncio.wait_for(
                loop.create_unix_connection(factory, addr.path), timeout)  # type: ignore[type-var]  # asyncio calls only StreamProtocol's methods
        else:
            conn = await asyncio.wait_for(connect_tcp(addr, factory, rt.tls, link.node), timeout)
        conn.tag = link.node
        link.conn = conn
        link.connects += 1
        log.info("%s node %s at %s", "connected to" if link.connects == 1 else "reconnected to",
                 link.node, link.address)
        rt.engine.link_up(link.node, rt.clock.now_ns())
        rt._pump()
        return conn

    def _connect_failed(self, link: NodeLink, exc: BaseException) -> None:
        now = self.rt._loop.time()
        if link.failed_since is None:
            link.failed_since = now
            log.debug("cannot reach node %s at %s: %s", link.node, link.address, exc)
        if now - link.failed_since >= self.connect_timeout_s:
            if not link.unreachable_logged:
                link.unreachable_logged = True
                log.warning("node %s at %s unreachable for %.1f s: %s", link.node, link.address,
                            now - link.failed_since, exc)
            self.rt._unreachable(link.node, NodeUnreachable(link.node, f"{link.address}: {exc}"))

    async def aclose(self) -> None:
        """Close every connection and stop every connector. A TLS connection
        closes with an exchange of close_notify alerts, so the closes are
        awaited (for at most CLOSE_WAIT_S, then aborted): a loop that ends
        right after would otherwise leave their sockets open."""
        closing = []
        for link in self.by_node.values():
            if link.connector is not None:
                link.connector.cancel()
            if link.conn is not None:
                link.conn.close()
                if link.conn.closed is not None and not link.conn.closed.done():
                    closing.append(link.conn)
        if closing:
            await asyncio.wait([c.closed for c in closing if c.closed is not None],
                               timeout=CLOSE_WAIT_S)
            for conn in closing:
                if conn.closed is not None and not conn.closed.done():
                    conn.abort()
        for link in self.by_node.values():
            if link.connector is not None:
                try:
                    await link.connector
                except asyncio.CancelledError:
                    pass
                link.connector = None


def _ignore_close(conn: FramedConnection, exc: Exception | None) -> None:
    """The connect loop notices a closed connection through ``conn.closed``."""
