"""A framed connection: an asyncio Protocol that decodes frames into messages
and coalesces writes.

Incoming bytes go through the envelope's streaming FrameDecoder; the messages
decoded from one read are handed to ``on_messages`` together, so a driver does
its bookkeeping once per read rather than once per message. A decode error is handed to
``on_protocol_error`` (which answers ERROR and closes this connection only).
When messages are written: the replies sent while the messages of one read
are handled (inside ``on_messages``) leave together in one ``write`` as soon
as that handling returns, or, when the handler called ``hold_replies``, at
the end of the loop turn with what the callbacks already scheduled send
before then (a node whose computations take their first step a loop turn
later: their results leave with their acknowledgements, one write and one
wake-up of the peer instead of two). Otherwise a message is written at once
when it is the first since the peer was last read from or since the last
flush: a request sent on an idle connection leaves with no delay, not a loop
turn later, and schedules nothing (when the peer does not keep up, the
transport only adds it to what it holds). The messages sent after it before
the peer is read from again are queued and leave together in one ``write``
at the end of the loop iteration (in writes of FLUSH_FRAMES frames when a
burst queues more), so a burst costs one write more than it would fully
coalesced, a lone request or reply waits for nothing, and the one loop
callback a write may need (the flush at the turn's end) is paid by the
second frame, not by every lone one. A message with a
large ``bytes`` value (an input or a result of 64 KiB or more) is written at
once, after what is queued, as the parts ``encode_frame_parts`` returns, so
the value itself goes to the transport without being copied into a frame.
On the receiving side, while such a frame is in progress (with at least
DIRECT_READ_MIN bytes of its value still to come) the transport reads
its value straight into the bytes object the message keeps: the connection
hands the transport a buffered protocol (``LargeFrameReceiver``) whose buffer
is the decoder's ``receive_buffer()``, and takes the transport back once the
value is in, so small frames still arrive through ``data_received`` (one
call per read, no buffer to hand out) and a large value is neither copied
out of the loop's read buffer nor into the message.

What a peer can make a connection hold is bounded (docs/PROTOCOL.md section 1):
before the handshake a frame is capped at the decoder's handshake cap; a
partial frame or an unfinished handshake is noticed by ``stalled``, which its
owner calls from one periodic sweep; and a server-side connection
(``pause_reading_on_backlog``) stops reading while the peer does not read.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from rsc._signature import SourceSignature
from rsc._core import USING_EXTENSIONS, envelope
from rsc._core.messages import DEFAULT_MAX_FRAME_BYTES, Message
from rsc.errors import ProtocolError

# The codec's encode_frame_parts, from the codec rsc._core.envelope is: the
# compiled build of this module cimports it from the compiled codec and calls
# it as C (connection.pxd), once for every frame sent.
if USING_EXTENSIONS:
    from rsc._core._envelope import encode_frame_parts as _encode_frame_parts
else:
    from rsc._core._envelope_py import encode_frame_parts as _encode_frame_parts

FLUSH_FRAMES = 256  # queued frames that are written at once, without waiting for the loop turn's end
# Replies to a read leave when its handling returns, and the first frame of a
# loop turn at once (see ``send``). False queues every frame until the end of
# the loop turn: the fewest writes, each frame a loop turn later (rsc's
# policy before; what a comparison of the two measures). Read when a
# connection is made, so set it before making the connections it should rule.
WRITE_AT_ONCE = True
# With pause_reading_on_backlog: the bytes a connection's transport may hold
# unsent before the connection stops reading. With the transports' default
# (64 KiB) one result of 64 KiB or more stopped reading until the peer had
# taken nearly all of it, so a node answering large results read and answered
# by turns, each turn waiting for the peer to be scheduled. What the buffer
# holds are mostly the results themselves, which a node keeps for duplicates
# anyway (large values are written as parts, not copied).
WRITE_HIGH_WATER = 4 * 1024 * 1024
# A large frame in progress whose payload still needs at least this many
# bytes is read straight into the message's bytes (``LargeFrameReceiver``).
# Less comes in one read of the loop's own buffer (256 KiB on uvloop and on
# asyncio's loop), whose one copy costs about what the two protocol switches
# would: measured, 64 KiB frames took more CPU through the stand-in, 256 KiB
# ones as much, larger ones less.
DIRECT_READ_MIN = 256 * 1024
# FLUSH_FRAMES as send reads it, once per frame: a C global when compiled
# (connection.pxd), where a module global is a dict lookup per read on 3.12+.
_FLUSH_FRAMES = FLUSH_FRAMES


class FramedConnection:
    """One byte stream carrying wire v1 frames: an asyncio protocol.

    It does not derive from ``asyncio.Protocol`` (a compiled class cannot
    derive from a Python one) but has every method a transport calls.
    """

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    def __init__(self, *, on_open: Callable[[FramedConnection], None] | None = None,
                 on_messages: Callable[[FramedConnection, list[Message]], None],
                 on_protocol_error: Callable[[FramedConnection, ProtocolError], None],
                 on_close: Callable[[FramedConnection, Exception | None], None],
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 handshake_max_frame_bytes: int | None = None,
                 handshake_last_kind: int | None = None,
                 pause_reading_on_backlog: bool = False) -> None:
        """``handshake_max_frame_bytes`` caps the peer's frames until one of kind
        ``handshake_last_kind`` arrives (see ``FrameDecoder``). With
        ``pause_reading_on_backlog`` the connection stops reading while its
        transport's write buffer is over the high-water mark: for a server,
        whose replies are all it writes. Never for both ends of one
        connection, or each could wait for the other to read."""
        self._on_open = on_open
        self._on_messages = on_messages
        self._on_protocol_error = on_protocol_error
        self._on_close = on_close
        self._decoder = envelope.FrameDecoder(max_frame_bytes, handshake_max_frame_bytes,
                                              handshake_last_kind)
        self._pause_reading = pause_reading_on_backlog
        self._reading_paused = False
        # Progress as the owner's sweep sees it: sweeps since the connection
        # opened, reads that completed a frame, the count at the last sweep,
        # and sweeps since a partial frame last saw a frame complete.
        self._sweeps = 0
        self._progress = 0
        self._progress_mark = 0
        self._stalled = 0
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._replying = False  # inside on_messages: what is sent is held until it returns
        self._hold = False  # on_messages asked for its replies to wait for the turn's end
        self._write_at_once = WRITE_AT_ONCE  # read once here, not on every send
        # A frame went at once with no flush behind it: the next waits for
        # one, until the peer is read from or a flush runs.
        self._wrote_at_once = False
        self._closing = False
        # Large frames are read straight into the decoder's buffer, unless
        # the transport turned out unable to switch protocols.
        self._receive_direct = True
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] | None = None
        self.tag: Any = None  # owner's bookkeeping (engine connection id, node name…)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio protocol callback: the transport is up."""
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        if self._pause_reading:
            try:
                transport.set_write_buffer_limits(WRITE_HIGH_WATER)  # type: ignore[attr-defined]
            except NotImplementedError:  # a transport without limits of its own
                pass
        if self._on_open is not None:
            self._on_open(self)

    def data_received(self, data: bytes) -> None:
        """asyncio protocol callback: cut ``data`` into frames and hand the messages on;
        a malformed frame is a protocol error that closes this connection."""
        if self._closing:
            return
        try:
            msgs = self._decoder.feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if msgs:
            self._deliver(msgs)
        if self._receive_direct and not self._closing:
            view = self._decoder.receive_buffer()
            if view is not None and len(view) >= DIRECT_READ_MIN:
                self._read_into(view)

    def _read_into(self, view: memoryview) -> None:
        """A large frame is in progress: until its bytes are in, the
        transport reads straight into the buffer the decoder hands out
        (``view`` first), through a buffered protocol standing in for this
        one, not into the loop's buffer and then a bytes copy of it."""
        try:
            self.transport.set_protocol(LargeFrameReceiver(self, view))  # type: ignore[union-attr]
        except NotImplementedError:  # a transport that cannot switch (in-memory): feed() copies
            self._receive_direct = False

    def _buffer_updated(self, nbytes: int) -> Any:
        """``nbytes`` were read into the decoder's receive buffer (through
        ``LargeFrameReceiver``): hand on the messages they completed. Returns
        the buffer the next read goes into, or None once the large frame
        needs no more (then the transport reads through ``data_received``
        again)."""
        if self._closing:
            return None
        try:
            msgs = self._decoder.received(nbytes)
        except ProtocolError as exc:
            self._back_to_data_received()
            self._protocol_error(exc)
            return None
        view = self._decoder.receive_buffer()
        if view is None:
            self._back_to_data_received()
        if msgs and not self._closing:
            self._deliver(msgs)
        return view

    def _back_to_data_received(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.set_protocol(self)  # type: ignore[arg-type]

    def _protocol_error(self, exc: ProtocolError) -> None:
        """Frames before the bad one were whole and valid: they are answered
        (e.g. a SPAWN_REQUEST still gets its ACK) before the ERROR."""
        before = getattr(exc, "messages", None)
        if before:
            self._on_messages(self, before)
        if not self._closing:
            self._on_protocol_error(self, exc)

    def _deliver(self, msgs: list) -> None:
        """Hand on the messages of one read, then send the replies to them."""
        self._progress += 1
        self._wrote_at_once = False  # the peer answered: the next lone frame goes at once
        self._replying = True
        self._hold = False
        try:
            self._on_messages(self, msgs)
        finally:
            self._replying = False
        if self._write_at_once and not self._hold:
            self._write_pending()  # the replies to this read, together, now
        elif self._pending and not self._flush_scheduled:
            # at the turn's end, after the callbacks scheduled while they were made
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)  # type: ignore[union-attr]

    def hold_replies(self) -> None:
        """From inside ``on_messages``: the replies to this read leave at the
        end of the loop turn, not when the handling returns, together with
        what the callbacks scheduled meanwhile send before then. For a
        handler that has scheduled work whose answers will follow a loop
        turn later (one write, and one wake-up of the peer, instead of two).
        Elsewhere it does nothing."""
        if self._replying:
            self._hold = True

    def hold_until_flush(self) -> None:
        """For an owner that will call ``flush`` itself before this loop turn
        ends: the frames sent until then are queued, none written at once and
        no flush scheduled for them, and that ``flush`` writes them together.
        One scheduler for the turn's end instead of two (a flush scheduled
        here would find nothing, and on uvloop a callback scheduled from a
        callback costs an extra poll of the loop). Inside ``on_messages`` it
        does nothing: the replies to a read already wait for its handling."""
        if not self._replying:
            self._flush_scheduled = True  # a flush is coming: send() queues and schedules nothing

    def eof_received(self) -> bool | None:
        """asyncio protocol callback: the peer closed its end; close ours."""
        return None  # close the transport

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: the peer is not
        reading what we send. With ``pause_reading_on_backlog``, stop reading
        what it sends until the buffer drains: every request read now would
        become a reply that only piles up here. (Writes still go to the
        transport's buffer; what that can hold is bounded by the work already
        admitted, see docs/PROTOCOL.md section 1.)"""
        if self._pause_reading and not self._reading_paused:
            self._reading_paused = True
            if self.transport is not None and not self._closing:
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The transport's buffer drained below its low-water mark: read again."""
        if self._reading_paused:
            self._reading_paused = False
            if self.transport is not None and not self._closing:
                self.transport.resume_reading()

    @property
    def reading_paused(self) -> bool:
        """True while reading stops because the peer does not read."""
        return self._reading_paused

    @property
    def in_handshake(self) -> bool:
        """True until the peer's last handshake frame arrived (only with a handshake cap)."""
        return self._decoder.in_handshake

    def stalled(self, handshake_sweeps: int, frame_sweeps: int) -> str | None:
        """One tick of the owner's periodic sweep: ``"handshake"`` once the
        handshake has been incomplete for more than ``handshake_sweeps``
        ticks, ``"frame"`` once a partial frame has stayed incomplete with no
        frame completing for ``frame_sweeps`` ticks (not while reading is
        paused: then it is we who are not reading), else None.

        Time is counted in sweeps, not by the clock: after the loop itself
        stalled (a long collection, a busy computation), the next sweep is one
        tick, so a peer whose bytes wait unread in the socket is not blamed
        for the node's own delay.
        """
        self._sweeps += 1
        if self._sweeps > handshake_sweeps and self._decoder.in_handshake:
            return "handshake"
        if (self._decoder.buffered and not self._reading_paused
                and self._progress == self._progress_mark):
            self._stalled += 1
            if self._stalled >= frame_sweeps:
                return "frame"
        else:
            self._stalled = 0
            self._progress_mark = self._progress
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio protocol callback: the connection is gone; drop what was queued and
        report the close."""
        self._closing = True
        self._pending.clear()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        self._on_close(self, exc)

    # -- sending --------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Send one message. Inside ``on_messages`` it is held and leaves
        with the other replies to that read when the handler returns (see
        ``hold_replies``). Otherwise the first one since the peer was last
        read from, or since the last flush, is written at once (latency: a
        lone request waits for nothing, and costs no loop callback); those
        after it are queued and leave together at the end of the loop turn,
        or as soon as FLUSH_FRAMES are queued (throughput: a burst of spawns
        costs a few writes, and reaches the peer while the rest are still
        being made, so both ends work at once)."""
        if self._closing:
            return
        frame = _encode_frame_parts(msg)
        if type(frame) is tuple:
            self._write_parts(frame)
            return
        # A reply (inside on_messages) needs no flush of its own: data_received
        # writes it when the handling returns (or schedules the flush then,
        # see hold_replies). Under the policy before (not WRITE_AT_ONCE) it does.
        if not (self._replying and self._write_at_once):
            if self.writes_at_once():
                self.transport.write(frame)  # type: ignore[arg-type,union-attr]  # bytes: a tuple returned above
                self._wrote_at_once = True
                return
            if not self._flush_scheduled:
                # Queued: it and those after it leave together at the turn's end.
                self._flush_scheduled = True
                self._loop.call_soon(self.flush)  # type: ignore[union-attr]
        pending = self._pending
        pending.append(frame)  # type: ignore[arg-type]  # bytes: a tuple returned above
        if len(pending) >= _FLUSH_FRAMES:
            self._write_pending()

    def writes_at_once(self) -> bool:
        """Whether a frame sent now would be written at once and schedule
        nothing: it would be the first since the peer was last read from or
        since the last flush, with nothing queued or held before it (and not
        a reply inside ``on_messages``, nor under the policy before, see
        ``WRITE_AT_ONCE``). The one place this rule is kept: ``send`` follows
        it, and an owner that batches its own sends (the runtime's pump) asks
        it whether to send now or at the turn's end. (``_pending`` holds
        frames with no flush scheduled only if a handler raised before its
        replies left: they go first.)"""
        return (self._write_at_once and not (self._replying or self._wrote_at_once or self._flush_scheduled
                                             or self._pending or self._closing)
                and self.transport is not None)

    def flush(self) -> None:
        """Write everything queued now, instead of at the end of the loop turn."""
        self._flush_scheduled = False
        self._wrote_at_once = False
        self._write_pending()

    def _write_pending(self) -> None:
        if self._pending and not self._closing and self.transport is not None:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self.transport.write(data)

    def _write_parts(self, parts: tuple) -> None:
        """A frame with a large value: what is queued first, then its parts in
        one ``writelines`` (the transport keeps a reference to each part
        until it is sent; none is copied on the way)."""
        self._write_pending()
        if not self._closing and self.transport is not None:
            self.transport.writelines(parts)

    def close(self) -> None:
        """Send what is queued, then close."""
        if self._closing:
            return
        self.flush()
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_closing(self) -> bool:
        """Whether the connection is closing or closed."""
        return self._closing


class LargeFrameReceiver(asyncio.BufferedProtocol):
    """The protocol a connection's transport reads into while a large frame
    is in progress: the transport writes the frame's bytes straight into the
    buffer the connection's decoder hands out (``receive_buffer``), so they
    are not first read into the loop's own buffer and copied into a new
    ``bytes`` for ``data_received``. Every other callback goes to the
    connection, which puts itself back once the frame needs no more bytes.

    A Python class: asyncio's transports read into a protocol's buffer only
    when it is an ``asyncio.BufferedProtocol`` instance (uvloop: when it has
    ``get_buffer`` and is no ``asyncio.Protocol``), and a compiled class cannot
    derive from a Python one. Its few calls happen once per read of a large
    frame, not per message.
    """

    __slots__ = ("_conn", "_view", "_scratch")

    def __init__(self, conn: FramedConnection, view: memoryview) -> None:
        self._conn = conn
        self._view: memoryview | None = view  # the next read's buffer, already made
        self._scratch: bytearray | None = None

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        """asyncio buffered-protocol callback: where the next read goes."""
        view = self._view
        self._view = None
        if view is None:
            view = self._conn._decoder.receive_buffer()
        if view is None:
            # The frame needs no more bytes, yet the transport reads through
            # this protocol (the connection is closing, or a transport asked
            # twice): read into a scratch buffer and hand it on as data.
            if self._scratch is None:
                self._scratch = bytearray(65536)
            return self._scratch
        self._scratch = None
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """asyncio buffered-protocol callback: ``nbytes`` were read into the buffer."""
        scratch = self._scratch
        if scratch is not None:
            self._scratch = None
            self.data_received(bytes(scratch[:nbytes]))
        else:
            self._view = self._conn._buffer_updated(nbytes)

    def data_received(self, data: bytes) -> None:
        """Data handed over anyway (by a transport that copies, or read into
        the scratch buffer): it goes where any data goes, and the transport
        back to the connection unless that chose a new stand-in."""
        self._view = None  # feeding moves the frame on: a view made before is stale
        conn = self._conn
        conn.data_received(data)
        transport = conn.transport
        if transport is not None and not conn.is_closing and transport.get_protocol() is self:
            transport.set_protocol(conn)  # type: ignore[arg-type]  # it has every method a transport calls

    def eof_received(self) -> bool | None:
        """asyncio protocol callback: the connection's ``eof_received``."""
        return self._conn.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio protocol callback: the connection's ``connection_lost``."""
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        """asyncio protocol callback: the connection's ``pause_writing``."""
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        """asyncio protocol callback: the connection's ``resume_writing``."""
        self._conn.resume_writing()
