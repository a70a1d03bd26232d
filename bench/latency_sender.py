"""The open-loop senders of the latency benchmarks: when each request is due,
and how it reaches the process under test.

``pace`` keeps the schedule: request ``k`` is due at ``t0 + k * interval``;
it sleeps until the next one is due and then hands over every request due by
then. Two ways to run it:

``SocketSender`` (what ``bench_latency.py`` and ``latency_budget.py`` measure)
    ``pace`` in a process of its own that writes one byte per request to a
    Unix socket the origin's event loop reads, as a service's loop reads
    requests from its clients' sockets. Nothing of the sender runs in the
    origin's process: no thread shares its interpreter lock, no allocation
    of the sender's counts against its collector.
``ThreadSender`` (kept for comparison)
    ``pace`` on a thread of the origin's process handing requests to the loop
    with ``call_soon_threadsafe``. That thread shares the interpreter lock
    with the loop: when it wakes while the loop runs Python it waits for the
    lock, up to the switch interval (5 ms by default), and so does the loop
    once the thread holds it. A service does not receive requests that way.

Run as ``python -m bench.latency_sender FD T0 INTERVAL N OUT``, the process
sender: ``FD`` the socket (inherited), ``T0`` the first due time on
``time.monotonic()``'s clock (which every process shares), ``INTERVAL``
seconds between requests, ``N`` requests, ``OUT`` a file to which it writes,
when done, the time (monotonic ns) at which it wrote each request.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

PR_SET_TIMERSLACK = 29  # prctl(2)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_LEAD_S = 0.5  # the first request is due this long after the sender process is started


def set_timer_slack_ns(ns: int = 1000) -> None:
    """This thread's timer slack (Linux; elsewhere nothing): how late the kernel
    may wake a sleep to batch wake-ups, 50 us by default, which would be the
    sender's lag on every request."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def pace(t0: float, interval: float, n: int, hand: Callable[[int, int], None],
         lags: list[float], clock: Callable[[], float] = time.perf_counter) -> None:
    """The open-loop schedule: request ``k`` is due at ``t0 + k * interval``;
    sleep until the next one is due, then ``hand(i, j)`` over requests ``i``
    to ``j - 1``, every one due by then. ``lags``: how late each was handed
    over (what the sender adds)."""
    set_timer_slack_ns()
    i = 0
    while i < n:
        wait = t0 + i * interval - clock()
        if wait > 0:
            time.sleep(wait)
        now = clock()
        j = i + 1
        while j < n and t0 + j * interval <= now:
            j += 1
        lags.extend(now - (t0 + k * interval) for k in range(i, j))
        hand(i, j)
        i = j


# ------------------------------------------------------------------ the process sender


class _Arrivals(asyncio.Protocol):
    """The origin's end of the sender's socket: byte ``k`` is request ``k``."""

    def __init__(self, on_arrival: Callable[[int, int], None]) -> None:
        self._on_arrival = on_arrival
        self._got = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        i = self._got
        self._got = i + len(data)
        self._on_arrival(i, self._got)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class SocketSender:
    """``n`` requests due every ``interval`` seconds from ``t0`` (monotonic),
    sent by a process of its own over a Unix socket this process's running
    loop reads; ``on_arrival(i, j)`` runs on the loop when requests ``i`` to
    ``j - 1`` arrive. ``t0`` is ``START_LEAD_S`` after ``start``.

    ``async with SocketSender(...) as s``: the process is started, and at the
    exit waited for (stopped by pid if it has not finished) and its send
    times read into ``s.sent`` (monotonic ns per request)."""

    def __init__(self, interval: float, n: int, on_arrival: Callable[[int, int], None]) -> None:
        self.interval, self.n, self._on_arrival = interval, n, on_arrival
        self.t0 = 0.0
        self.sent = array("q")
        self._proc: subprocess.Popen | None = None

    async def __aenter__(self) -> SocketSender:
        import tempfile

        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd, self._out = tempfile.mkstemp(prefix="rsc-sender-")
        os.close(fd)
        try:
            self.t0 = time.monotonic() + START_LEAD_S
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "bench.latency_sender", str(theirs.fileno()), repr(self.t0),
                 repr(self.interval), str(self.n), self._out],
                pass_fds=(theirs.fileno(),), cwd=REPO_ROOT)
        finally:
            theirs.close()
        _, self._arrivals = await loop.create_connection(lambda: _Arrivals(self._on_arrival), sock=ours)
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        assert proc is not None
        try:
            await self._arrivals.closed  # the sender closes its end when done
            while proc.poll() is None:
                await asyncio.sleep(0.01)
            with open(self._out, "rb") as f:
                self.sent.frombytes(f.read())
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
            os.unlink(self._out)


def sender_main(fd: int, t0: float, interval: float, n: int, out: str) -> None:
    """The sender process: ``pace`` writing one byte per request to ``fd``."""
    sock = socket.socket(fileno=fd)
    sent = array("q", bytes(8 * n))
    write, now_ns = sock.sendall, time.monotonic_ns

    def hand(i: int, j: int) -> None:
        t = now_ns()  # before the write: the origin may read it before the write returns
        for k in range(i, j):
            sent[k] = t
        write(bytes(j - i))

    pace(t0, interval, n, hand, [], time.monotonic)
    sock.close()
    with open(out, "wb") as f:
        f.write(sent.tobytes())


# ------------------------------------------------------------------- the thread sender


class ThreadSender:
    """As ``SocketSender``, but ``pace`` runs on a thread of this process and
    hands requests to the loop with ``call_soon_threadsafe`` (for comparison:
    see the module's docstring)."""

    def __init__(self, interval: float, n: int, on_arrival: Callable[[int, int], None]) -> None:
        self.interval, self.n, self._on_arrival = interval, n, on_arrival
        self.t0 = 0.0
        self.sent = array("q", bytes(8 * n))
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> ThreadSender:
        loop = asyncio.get_running_loop()
        sent, now_ns = self.sent, time.monotonic_ns

        def hand(i: int, j: int) -> None:
            t = now_ns()
            for k in range(i, j):
                sent[k] = t
            loop.call_soon_threadsafe(self._on_arrival, i, j)

        self.t0 = time.monotonic() + 0.005
        self._thread = threading.Thread(target=pace, name="bench-sender", daemon=True,
                                        args=(self.t0, self.interval, self.n, hand, [], time.monotonic))
        self._thread.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._thread is not None
        while self._thread.is_alive():
            await asyncio.sleep(0.01)
        self._thread.join()


SENDERS: dict[str, type[SocketSender] | type[ThreadSender]] = {"proc": SocketSender, "thread": ThreadSender}


if __name__ == "__main__":
    sender_main(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
