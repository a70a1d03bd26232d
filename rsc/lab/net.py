"""The lab's simulated network: byte streams between named processes, frame by frame.

:class:`SimNetwork` gives each process of the lab its own
:class:`rsc.transport.base.Transport` (:meth:`SimNetwork.transport_for`), so
the production ``Runtime`` and ``NodeServer`` talk through their usual
``FramedConnection`` over it. Every write is cut into the wire's frames
(docs/PROTOCOL.md section 1: a 4-byte big-endian length, then the body) and
each frame is given a fate drawn from the network's seeded random source and
the :class:`LinkProfile` of the pair of processes.

The model, for a reliable stream transport (rsc runs over streams, so a
frame is never silently missing from the middle of a connection):

* **latency, jitter, bandwidth.** A frame leaves its sender once the ones
  before it have (``size / bandwidth`` each) and arrives ``latency`` plus a
  uniform draw in ``[0, jitter]`` later, but never before the frame sent
  before it on the same connection: one connection is always in order.
  Frames of *different* connections (two origins, or an old and a new
  connection of one pair) interleave by their arrival times: that is the
  reordering a stream network produces.
* **loss.** A lost frame is what a stream shows of heavy loss: the
  connection is reset at the lost frame's arrival time. The frame and every
  frame after it on that connection, both ways, never arrive; both ends see
  ``connection_lost(ConnectionResetError)``.
* **duplication.** A duplicated frame arrives twice, back to back (a
  middlebox or a retrying proxy that replays a frame). Only frames after the
  handshake are duplicated: a replayed HELLO is a protocol error by design.
* **partition.** While two processes are partitioned their frames wait (as
  TCP retransmits); a partition that lasts ``reset_after_s`` resets the
  connections across it; a connect across it fails (host unreachable).
* **crash** (of a process): its connections are reset, what was in flight to
  it is lost, connects to it are refused until something listens again.
* **pause** (of a process): frames to and from it wait until it resumes.

Each delivery runs in the receiving process's context (``contexts``, set by
the lab), so what the reading sets off belongs to the receiver.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import itertools
import random
from dataclasses import dataclass, replace
from typing import Any, Callable

from rsc._core import envelope
from rsc.transport.address import Address
from rsc.transport.base import P, StreamProtocol

__all__ = ["LinkProfile", "PRESETS", "SimNetwork", "preset"]


@dataclass(frozen=True)
class LinkProfile:
    """How one link behaves. Times in seconds, bandwidth in bytes per second
    (None: unlimited); ``loss`` and ``duplicate`` are per-frame probabilities."""

    latency_s: float = 0.0001
    jitter_s: float = 0.0
    bandwidth: float | None = None
    loss: float = 0.0
    duplicate: float = 0.0
    reset_after_s: float = 1.0

    def with_(self, **changes: Any) -> LinkProfile:
        """A copy with ``changes`` applied (``preset("lan").with_(loss=0.01)``)."""
        return replace(self, **changes)


#: Named link profiles: ``local`` (one host), ``lan``, ``wan``, ``lossy`` (a
#: LAN that resets connections: about one frame in 200 lost), ``congested``
#: (slow, with jitter far above its latency and some loss).
PRESETS: dict[str, LinkProfile] = {
    "local": LinkProfile(latency_s=0.00005, jitter_s=0.00001),
    "lan": LinkProfile(latency_s=0.0005, jitter_s=0.0002, bandwidth=125e6),
    "wan": LinkProfile(latency_s=0.040, jitter_s=0.010, bandwidth=12.5e6),
    "lossy": LinkProfile(latency_s=0.0005, jitter_s=0.0005, bandwidth=125e6, loss=0.005,
                         duplicate=0.005),
    "congested": LinkProfile(latency_s=0.005, jitter_s=0.030, bandwidth=1e6, loss=0.001),
}


def preset(name: str) -> LinkProfile:
    """The named link profile (``local``, ``lan``, ``wan``, ``lossy``, ``congested``,
    ...); ValueError naming the presets for an unknown name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown network preset {name!r}; known: {', '.join(PRESETS)}") from None


_EOF = None  # in a direction's queue: the sender closed after what came before


class _Direction:
    """One direction of a connection: frames queued, each with its arrival time."""

    __slots__ = ("queue", "busy_until", "last_arrival")

    def __init__(self) -> None:
        self.queue: list[tuple[float, bytes | None]] = []  # (arrival, frame | _EOF), in order
        self.busy_until = 0.0
        self.last_arrival = 0.0


class _End(asyncio.Transport):
    """One end of a simulated connection, as its protocol sees it."""

    def __init__(self, conn: _SimConnection, side: int, protocol: StreamProtocol) -> None:
        super().__init__()
        self._conn = conn
        self._side = side
        self.protocol = protocol
        self.closing = False
        self.lost = False
        self.paused = False
        self.handshake_frames = 0  # frames this end has sent (a handshake takes the first two)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing and not self.lost:
            self._conn.net._send(self._conn, self._side, bytes(data))

    def close(self) -> None:
        if self.closing or self.lost:
            return
        self.closing = True
        net = self._conn.net
        net._send_eof(self._conn, self._side)
        net._loop.call_soon(self._lose, None, context=net.contexts.get(self._conn.names[self._side]))

    def abort(self) -> None:
        if self.lost:
            return
        self.closing = True
        self._conn.net._reset(self._conn, ConnectionAbortedError("aborted by this end"), quiet_side=self._side)

    def is_closing(self) -> bool:
        return self.closing or self.lost

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self._conn.net._kick(self._conn, 1 - self._side)

    def is_reading(self) -> bool:
        return not self.paused and not self.is_closing()

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._conn.ends_names[1 - self._side]
        return default

    def _lose(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(exc)


class _SimConnection:
    __slots__ = ("net", "id", "names", "ends_names", "ends", "dirs", "scheduled", "dead", "decoders")

    def __init__(self, net: SimNetwork, cid: int, client: str, server: str) -> None:
        self.net = net
        self.id = cid
        self.names = (client, server)
        self.ends_names = (f"{client}#{cid}", server)
        self.ends: list[_End] = []
        self.dirs = (_Direction(), _Direction())  # index = sending side (0 client, 1 server)
        self.scheduled = [False, False]
        self.dead = False
        # what the lab decodes to record each frame (kept apart from the ends' own decoders)
        self.decoders = (envelope.FrameDecoder(), envelope.FrameDecoder())


class _ProcessTransport:
    """The :class:`rsc.transport.base.Transport` of one process of the lab."""

    def __init__(self, net: SimNetwork, process: str) -> None:
        self._net = net
        self.process = process

    async def connect(self, address: Address, protocol_factory: Callable[[], P]) -> P:
        return await self._net._connect(self.process, str(address), protocol_factory)

    async def listen(self, address: Address,
                     protocol_factory: Callable[[], StreamProtocol]) -> _SimListener:
        return self._net._listen(self.process, str(address), protocol_factory)


class _SimListener:
    def __init__(self, net: SimNetwork, process: str, address: str,
                 factory: Callable[[], StreamProtocol]) -> None:
        self._net = net
        self.process = process
        self.address = address
        self.factory = factory
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._net._listeners.get(self.address) is self:
                del self._net._listeners[self.address]

    async def wait_closed(self) -> None:
        return None


#: ``on_frame(conn_id, sender, receiver, message, to_client)`` after the receiver
#: has read it (``to_client``: the receiving end is the one that connected)
FrameObserver = Callable[[int, str, str, Any, bool], None]


class SimNetwork:
    """Simulated links between the processes of one lab run (module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random,
                 default: LinkProfile | str = "local") -> None:
        self._loop = loop
        self._rng = rng
        self.default = preset(default) if isinstance(default, str) else default
        self._profiles: dict[tuple[str, str], LinkProfile] = {}
        self._listeners: dict[str, _SimListener] = {}
        self._conns: dict[int, _SimConnection] = {}
        self._ids = itertools.count(1)
        self._cuts: dict[tuple[str, str], float] = {}  # pair -> virtual time the cut began
        self.paused: set[str] = set()
        self.dead: set[str] = set()
        #: the context each process's callbacks run in (rsc.lab.loop.process_context)
        self.contexts: dict[str, contextvars.Context] = {}
        self._own = contextvars.Context()  # the network's own timers belong to no process
        self.on_frame: FrameObserver | None = None
        self.on_event: Callable[[str, dict[str, Any]], object] | None = None
        #: what the network did, counted: frames, bytes, lost, duplicated, resets
        self.counts = dict(frames=0, bytes=0, lost=0, duplicated=0, resets=0, refused=0)

    # -- configuration ---------------------------------------------------------------
    def transport_for(self, process: str) -> _ProcessTransport:
        """The transport process ``process`` connects and listens through."""
        return _ProcessTransport(self, process)

    def set_link(self, a: str, b: str, profile: LinkProfile | str) -> None:
        """The profile of the link between processes ``a`` and ``b`` (both ways)."""
        self._profiles[_pair(a, b)] = preset(profile) if isinstance(profile, str) else profile

    def profile(self, a: str, b: str) -> LinkProfile:
        """The profile of the link between ``a`` and ``b``."""
        return self._profiles.get(_pair(a, b), self.default)

    # -- faults ----------------------------------------------------------------------------
    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        """Cut every link between a process of ``side_a`` and one of ``side_b``."""
        now = self._loop.time()
        for a in side_a:
            for b in side_b:
                if a != b:
                    self._cuts.setdefault(_pair(a, b), now)
                    self._loop.call_later(self.profile(a, b).reset_after_s, self._reset_if_cut,
                                          a, b, now, context=self._own)
        self._emit("partition", a=sorted(side_a), b=sorted(side_b))

    def heal(self) -> None:
        """Remove every cut; what waited is sent on."""
        self._cuts.clear()
        self._emit("heal")
        self._kick_all()

    def is_cut(self, a: str, b: str) -> bool:
        """Whether the link between ``a`` and ``b`` is cut by a partition."""
        return _pair(a, b) in self._cuts

    def pause(self, process: str) -> None:
        """Stop delivering to and from ``process`` (a paused process), until ``resume``."""
        self.paused.add(process)

    def resume(self, process: str) -> None:
        """Deliver to and from ``process`` again."""
        self.paused.discard(process)
        self._kick_all()

    def crash(self, process: str) -> None:
        """``process`` dies: its listener goes, its connections reset."""
        self.dead.add(process)
        for addr, lst in list(self._listeners.items()):
            if lst.process == process:
                lst.close()
        for conn in sorted(self._conns.values(), key=lambda c: c.id):
            if process in conn.names:
                self._reset(conn, ConnectionResetError(f"{process} crashed"))

    def revive(self, process: str) -> None:
        """``process`` runs again (a restart: it must listen anew)."""
        self.dead.discard(process)

    # -- connect / listen ------------------------------------------------------------------
    def _listen(self, process: str, address: str,
                factory: Callable[[], StreamProtocol]) -> _SimListener:
        if address in self._listeners:
            raise OSError(errno.EADDRINUSE, f"address already in use: {address}")
        lst = self._listeners[address] = _SimListener(self, process, address, factory)
        return lst

    async def _connect(self, process: str, address: str, factory: Callable[[], P]) -> P:
        listener = self._listeners.get(address)
        server = listener.process if listener is not None else None
        prof = self.profile(process, server) if server is not None else self.default
        await asyncio.sleep(2 * prof.latency_s)  # the handshake of the stream itself
        listener = self._listeners.get(address)
        if listener is None or process in self.dead:
            self.counts["refused"] += 1
            raise ConnectionRefusedError(f"nothing listens at {address}")
        if self.is_cut(process, listener.process) or listener.process in self.paused:
            self.counts["refused"] += 1
            raise OSError(errno.EHOSTUNREACH, f"{listener.process} unreachable from {process}")
        conn = _SimConnection(self, next(self._ids), process, listener.process)
        self._conns[conn.id] = conn
        client_proto = factory()
        server_proto = listener.factory()
        client, srv = _End(conn, 0, client_proto), _End(conn, 1, server_proto)
        conn.ends = [client, srv]
        self._emit("connect", conn=conn.id, client=process, server=listener.process)
        server_proto.connection_made(srv)
        client_proto.connection_made(client)
        return client_proto

    # -- the frames ---------------------------------------------------------------------------
    def _send(self, conn: _SimConnection, side: int, data: bytes) -> None:
        if conn.dead:
            return
        sender = conn.names[side]
        if sender in self.dead:
            return
        prof = self.profile(*conn.names)
        d = conn.dirs[side]
        end = conn.ends[side]
        now = self._loop.time()
        rng = self._rng
        for frame in _frames(data):
            self.counts["frames"] += 1
            self.counts["bytes"] += len(frame)
            depart = max(now, d.busy_until)
            if prof.bandwidth:
                depart += len(frame) / prof.bandwidth
            d.busy_until = depart
            arrive = depart + prof.latency_s + (rng.random() * prof.jitter_s if prof.jitter_s else 0.0)
            arrive = max(arrive, d.last_arrival)
            d.last_arrival = arrive
            # the client's HELLO and AUTH, the server's WELCOME: never lost or replayed
            after_handshake = end.handshake_frames >= (2 if side == 0 else 1)
            end.handshake_frames += 1
            if prof.loss and after_handshake and rng.random() < prof.loss:
                self.counts["lost"] += 1
                self._loop.call_at(arrive, self._lose_at, conn, context=self._own)
                d.queue.append((arrive, b""))  # a marker: nothing after it gets through
                break
            d.queue.append((arrive, frame))
            if prof.duplicate and after_handshake and rng.random() < prof.duplicate:
                self.counts["duplicated"] += 1
                d.queue.append((arrive, frame))
        self._schedule(conn, side)

    def _send_eof(self, conn: _SimConnection, side: int) -> None:
        d = conn.dirs[side]
        arrive = max(self._loop.time() + self.profile(*conn.names).latency_s, d.last_arrival)
        d.last_arrival = arrive
        d.queue.append((arrive, _EOF))
        self._schedule(conn, side)

    def _schedule(self, conn: _SimConnection, side: int) -> None:
        if conn.scheduled[side] or conn.dead or not conn.dirs[side].queue:
            return
        conn.scheduled[side] = True
        self._loop.call_at(conn.dirs[side].queue[0][0], self._deliver, conn, side,
                           context=self.contexts.get(conn.names[1 - side]))

    def _kick(self, conn: _SimConnection, side: int) -> None:
        self._schedule(conn, side)

    def _kick_all(self) -> None:
        for conn in sorted(self._conns.values(), key=lambda c: c.id):
            self._schedule(conn, 0)
            self._schedule(conn, 1)

    def _deliver(self, conn: _SimConnection, side: int) -> None:
        """Hand the frames due now, in order, to the receiving end (one read)."""
        conn.scheduled[side] = False
        if conn.dead:
            return
        sender, receiver = conn.names[side], conn.names[1 - side]
        if (self.is_cut(sender, receiver) or sender in self.paused or receiver in self.paused):
            return  # waits; heal/resume kick it again
        end = conn.ends[1 - side]
        if end.paused:
            return  # resume_reading kicks it
        q = conn.dirs[side].queue
        now = self._loop.time()
        chunk: list[bytes] = []
        eof = False
        while q and q[0][0] <= now:
            _, frame = q.pop(0)
            if frame is _EOF:
                eof = True
                break
            if frame == b"":  # lost: _lose_at resets the connection
                q.clear()
                break
            chunk.append(frame)
        if chunk:
            data = b"".join(chunk)
            end.protocol.data_received(data)
            if self.on_frame is not None:
                for msg in conn.decoders[side].feed(data):
                    self.on_frame(conn.id, sender, receiver, msg, side == 1)
        if eof and not end.lost:
            keep = end.protocol.eof_received()
            if not keep:
                end.close()
        if q:
            self._schedule(conn, side)
        if eof and all(e.lost or e.closing for e in conn.ends):
            self._conns.pop(conn.id, None)

    def _lose_at(self, conn: _SimConnection) -> None:
        if not conn.dead:
            self._reset(conn, ConnectionResetError("connection reset (frame lost)"))

    def _reset_if_cut(self, a: str, b: str, since: float) -> None:
        if self._cuts.get(_pair(a, b)) != since:
            return  # healed (and maybe cut again) meanwhile
        for conn in sorted(self._conns.values(), key=lambda c: c.id):
            if set(conn.names) == {a, b} or (a == b == conn.names[0] == conn.names[1]):
                self._reset(conn, ConnectionResetError(f"partition between {a} and {b}"))

    def _reset(self, conn: _SimConnection, exc: Exception, quiet_side: int | None = None) -> None:
        if conn.dead:
            return
        conn.dead = True
        self.counts["resets"] += 1
        self._conns.pop(conn.id, None)
        for d in conn.dirs:
            d.queue.clear()
        self._emit("reset", conn=conn.id, why=str(exc))
        for i, end in enumerate(conn.ends):
            end.closing = True
            ctx = self.contexts.get(conn.names[i])
            if conn.names[i] in self.dead and i != quiet_side:
                # a dead process's protocol objects hear nothing more
                self._loop.call_soon(_mark_lost, end, context=ctx)
            else:
                self._loop.call_soon(end._lose, None if i == quiet_side else exc, context=ctx)

    def _emit(self, event: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(event, fields)

    @property
    def open_connections(self) -> int:
        """How many simulated connections are open."""
        return len(self._conns)


def _mark_lost(end: _End) -> None:
    end.lost = True


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _frames(data: bytes) -> list[bytes]:
    """Cut a write into frames. A FramedConnection writes whole frames only;
    a trailing partial frame (never seen from rsc) is kept as one piece."""
    out = []
    i, n = 0, len(data)
    while i < n:
        if n - i < 4:
            out.append(data[i:])
            break
        size = int.from_bytes(data[i:i + 4], "big")
        out.append(data[i:i + 4 + size])
        i += 4 + size
    return out

