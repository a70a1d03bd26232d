"""The raw limit: a length-prefixed echo over a Unix socket between two processes.

Frames are a u32 big-endian length and that many bytes, as on rsc's wire. The
server (``python bench/echo_peer.py PATH``, one process on uvloop) cuts the
incoming bytes into whole frames and writes every whole frame it got in one
``data_received`` back in one ``write``; a partial frame waits for the rest.
There is no decoding, no state and no allocation per frame beyond asyncio's
own: whatever rsc adds on top of this is rsc's cost.

The client (:class:`EchoClient`, in the benchmark process on uvloop) offers
the two shapes the benchmarks compare rsc against:

- ``one_in_flight(n)``: ``n`` sequential round trips, each awaiting an
  ``asyncio.Future`` that ``data_received`` resolves (as awaiting
  ``RemoteHandle.join`` does);
- ``pipelined(n, window)``: ``n`` requests with ``window`` in flight; every
  ``data_received`` that completes ``k`` responses sends up to ``k`` more in
  one ``write``.

With ``--stream`` the server is the byte-stream limit instead: it writes
every chunk back as it arrives (one ``write`` per read, no framing, no
buffering), which is what echoing large frames costs at the least; the
payload sweep measures against it with :class:`SizedEchoClient`, a client
that reads into one reusable buffer (``asyncio.BufferedProtocol``: no copy
of its own) and only counts frame boundaries.

The server prints ``READY <pid>`` once it listens, exits on SIGTERM/SIGINT,
and also when its stdin closes (the benchmark process holds it: a benchmark
that dies leaves no echo server behind).
"""

from __future__ import annotations

import asyncio
from collections import deque
import os
import signal
import sys
from typing import Any

HEADER = 4


def frame(size: int) -> bytes:
    """One frame whose body is ``size`` bytes."""
    return size.to_bytes(HEADER, "big") + bytes(range(256)) * (size // 256) + bytes(range(size % 256))


def whole_frames_end(buf: bytearray) -> tuple[int, int]:
    """(bytes of whole frames at the start of ``buf``, how many frames)."""
    pos, count, size = 0, 0, len(buf)
    while size - pos >= HEADER:
        end = pos + HEADER + int.from_bytes(buf[pos:pos + HEADER], "big")
        if end > size:
            break
        pos = end
        count += 1
    return pos, count


# ----------------------------------------------------------------------------- server


class EchoServerProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end, _ = whole_frames_end(buf)
        if end:
            self.transport.write(bytes(buf[:end]))  # type: ignore[union-attr]
            del buf[:end]


class StreamEchoServerProtocol(asyncio.Protocol):
    """``--stream``: every chunk read is written straight back."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.write = transport.write  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.write(data)


class _Lifeline(asyncio.Protocol):
    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


async def serve(path: str, stream: bool = False) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not sys.stdin.isatty():
        await loop.connect_read_pipe(lambda: _Lifeline(stop), sys.stdin)
    if os.path.exists(path):
        os.unlink(path)
    server = await loop.create_unix_server(StreamEchoServerProtocol if stream else EchoServerProtocol,
                                           path)
    print(f"READY {os.getpid()}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- client


class _Client:
    """What both clients share: the connection, and the state of a run."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None  # one_in_flight's round trip
        # pipelined state
        self._frame = b""
        self._to_send = 0
        self._to_receive = 0
        self._done: asyncio.Future[None] | None = None

    @classmethod
    async def connect(cls, path: str) -> Any:
        """A connected client of the echo server listening at ``path``."""
        loop = asyncio.get_running_loop()
        _t, proto = await loop.create_unix_connection(cls, path)  # type: ignore[arg-type]
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        err = ConnectionError(f"echo connection lost: {exc}")
        for fut in (self._waiter, self._done):
            if fut is not None and not fut.done():
                fut.set_exception(err)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class EchoClient(_Client, asyncio.Protocol):
    """One connection to the echo server; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end, count = whole_frames_end(buf)
        if not count:
            return
        del buf[:end]
        if self._done is not None:
            self._to_receive -= count
            more = min(count, self._to_send)
            if more:
                self._to_send -= more
                self.transport.write(self._frame * more)  # type: ignore[union-attr]
            if self._to_receive <= 0 and not self._done.done():
                self._done.set_result(None)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def one_in_flight(self, n: int, size: int = 64) -> None:
        """``n`` sequential round trips of a frame with a ``size``-byte body."""
        loop = asyncio.get_running_loop()
        data = frame(size)
        write = self.transport.write  # type: ignore[union-attr]
        for _ in range(n):
            self._waiter = fut = loop.create_future()
            write(data)
            await fut
        self._waiter = None

    async def pipelined(self, n: int, window: int = 256, size: int = 64) -> None:
        """``n`` requests with up to ``window`` in flight."""
        loop = asyncio.get_running_loop()
        self._frame = data = frame(size)
        first = min(n, window)
        self._to_send = n - first
        self._to_receive = n
        self._done = done = loop.create_future()
        self.transport.write(data * first)  # type: ignore[union-attr]
        try:
            await done
        finally:
            self._done = None


class OpenLoopEchoClient(_Client, asyncio.Protocol):
    """One connection to the echo server for requests that come one by one,
    as an open loop sends them: ``request()`` writes one 64-byte frame at once
    and returns a future that the frame's echo resolves (echoes come back in
    the order the frames went out). The raw counterpart of a spawn."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray()
        self.waiting: deque[asyncio.Future[None]] = deque()
        self._frame = frame(64)

    def request(self) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.transport.write(self._frame)  # type: ignore[union-attr]
        return fut

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end, count = whole_frames_end(buf)
        if count:
            del buf[:end]
            waiting = self.waiting
            for _ in range(count):
                waiting.popleft().set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        err = ConnectionError(f"echo connection lost: {exc}")
        for fut in self.waiting:
            if not fut.done():
                fut.set_exception(err)


class SizedEchoClient(_Client, asyncio.BufferedProtocol):
    """One connection to the echo server for frames of any size.

    It reads into one reusable buffer and only follows the frame headers,
    so receiving costs no copy of its own: what it measures is the socket.
    ``pipelined(n, size, window)`` sends ``n`` frames of ``size`` body bytes
    with up to ``window`` in flight (a prebuilt frame, written as it is).
    """

    READ_BYTES = 256 * 1024

    def __init__(self) -> None:
        super().__init__()
        self._scratch = memoryview(bytearray(self.READ_BYTES))
        self._header = bytearray()
        self._left = 0  # body bytes of the current frame still to come

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        view, pos, done = self._scratch, 0, 0
        while pos < nbytes:
            if self._left:
                take = min(self._left, nbytes - pos)
                self._left -= take
                pos += take
                if not self._left:
                    done += 1
                continue
            take = min(HEADER - len(self._header), nbytes - pos)
            self._header += view[pos:pos + take]
            pos += take
            if len(self._header) == HEADER:
                self._left = int.from_bytes(self._header, "big")
                self._header.clear()
                if not self._left:
                    done += 1
        if done and self._done is not None:
            self._to_receive -= done
            more = min(done, self._to_send)
            if more:
                self._to_send -= more
                self._send(more)
            if self._to_receive <= 0 and not self._done.done():
                self._done.set_result(None)

    def _send(self, k: int) -> None:
        """``k`` frames: small ones joined into one write, large ones written
        as they are (no copy)."""
        write = self.transport.write  # type: ignore[union-attr]
        if len(self._frame) < 65536:
            write(self._frame * k)
        else:
            for _ in range(k):
                write(self._frame)

    async def pipelined(self, n: int, size: int, window: int) -> None:
        """``n`` frames of ``size`` body bytes, up to ``window`` in flight."""
        loop = asyncio.get_running_loop()
        if len(self._frame) != HEADER + size:
            self._frame = frame(size)
        first = min(n, window)
        self._to_send = n - first
        self._to_receive = n
        self._done = done = loop.create_future()
        self._send(first)
        try:
            await done
        finally:
            self._done = None


def main(argv: list[str]) -> int:
    stream = "--stream" in argv
    argv = [a for a in argv if a != "--stream"]
    if len(argv) != 1:
        print("usage: python bench/echo_peer.py SOCKET_PATH [--stream]", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an rsc dependency on POSIX
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        runner.run(serve(argv[0], stream))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
