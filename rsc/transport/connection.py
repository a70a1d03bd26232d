"""A framed connection: an asyncio Protocol that decodes frames into messages
and coalesces writes.

Incoming bytes go through the envelope's streaming FrameDecoder; the messages
decoded from one read are handed to ``on_messages`` together, so a driver does
its bookkeeping once per read rather than once per message. A decode error is handed to
``on_protocol_error`` (which answers ERROR and closes this connection only).
Outgoing messages queued in one loop iteration leave in one ``write`` (in
writes of FLUSH_FRAMES frames when a burst queues more).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from rsc._core import envelope
from rsc._core.messages import DEFAULT_MAX_FRAME_BYTES, Message
from rsc.errors import ProtocolError


FLUSH_FRAMES = 256  # queued frames that are written at once, without waiting for the loop turn's end


class FramedConnection:
    """One byte stream carrying wire v1 frames: an asyncio protocol.

    It does not derive from ``asyncio.Protocol`` (a compiled class cannot
    derive from a Python one) but has every method a transport calls.
    """

    def __init__(self, *, on_open: Callable[[FramedConnection], None] | None = None,
                 on_messages: Callable[[FramedConnection, list[Message]], None],
                 on_protocol_error: Callable[[FramedConnection, ProtocolError], None],
                 on_close: Callable[[FramedConnection, Exception | None], None],
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._on_open = on_open
        self._on_messages = on_messages
        self._on_protocol_error = on_protocol_error
        self._on_close = on_close
        self._decoder = envelope.FrameDecoder(max_frame_bytes)
        self._encode_frame = envelope.encode_frame
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._closing = False
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] | None = None
        self.tag: Any = None  # owner's bookkeeping (engine connection id, node name…)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        if self._on_open is not None:
            self._on_open(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            msgs = self._decoder.feed(data)
        except ProtocolError as exc:
            # Frames before the bad one were whole and valid: they are answered
            # (e.g. a SPAWN_REQUEST still gets its ACK) before the ERROR.
            before = getattr(exc, "messages", None)
            if before:
                self._on_messages(self, before)
            if not self._closing:
                self._on_protocol_error(self, exc)
            return
        if msgs:
            self._on_messages(self, msgs)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark. Writes still queue
        there (the peer's reads bound it); nothing to stop here."""

    def resume_writing(self) -> None:
        """The transport's buffer drained below its low-water mark."""

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._pending.clear()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        self._on_close(self, exc)

    # -- sending --------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Queue one message; queued messages leave together at the end of this
        loop turn, or as soon as FLUSH_FRAMES are queued: a burst of spawns then
        reaches the peer while the rest are still being made, so both ends work
        at once instead of one waiting for the other's whole batch."""
        if self._closing:
            return
        pending = self._pending
        pending.append(self._encode_frame(msg))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)  # type: ignore[union-attr]
        elif len(pending) >= FLUSH_FRAMES:
            self._write_pending()

    def flush(self) -> None:
        self._flush_scheduled = False
        self._write_pending()

    def _write_pending(self) -> None:
        if self._pending and not self._closing and self.transport is not None:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self.transport.write(data)

    def close(self) -> None:
        """Send what is queued, then close."""
        if self._closing:
            return
        self.flush()
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_closing(self) -> bool:
        return self._closing
