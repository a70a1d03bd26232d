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
when done, the time (monotonic ns) at which it wrote each request, then what
the sending cost the sender itself (``SENDER_STATS``, over the schedule only:
its start-up is left out).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
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
# What the process sender reports of itself over its schedule (``SocketSender.stats``):
# CPU used, time waited runnable for a CPU (schedstat), voluntary context
# switches (each a sleep and a wake-up), involuntary ones (preempted), the
# writes it made and the sleeps it asked for.
SENDER_STATS = ("cpu_ns", "wait_ns", "voluntary", "involuntary", "writes", "sleeps")


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
         lags: list[float], clock: Callable[[], float] = time.perf_counter) -> int:
    """The open-loop schedule: request ``k`` is due at ``t0 + k * interval``;
    sleep until the next one is due, then ``hand(i, j)`` over requests ``i``
    to ``j - 1``, every one due by then. ``lags``: how late each was handed
    over (what the sender adds). Returns how many times it slept."""
    set_timer_slack_ns()
    i = sleeps = 0
    while i < n:
        wait = t0 + i * interval - clock()
        if wait > 0:
            time.sleep(wait)
            sleeps += 1
        now = clock()
        j = i + 1
        while j < n and t0 + j * interval <= now:
            j += 1
        lags.extend(now - (t0 + k * interval) for k in range(i, j))
        hand(i, j)
        i = j
    return sleeps


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

    def __init__(self, interval: float, n: int, on_arrival: Callable[[int, int], None],
                 on_start: Callable[[int], None] | None = None) -> None:
        """``on_start(pid)``, if given, is called as soon as the sender
        process is started, ``START_LEAD_S`` before its first request (to
        attach a counter to it)."""
        self.interval, self.n, self._on_arrival, self._on_start = interval, n, on_arrival, on_start
        self.t0 = 0.0
        self.sent = array("q")
        self.stats: dict[str, int] = {}  # SENDER_STATS, once it has finished
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
        if self._on_start is not None:
            self._on_start(self._proc.pid)
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
                self.sent.frombytes(f.read(8 * self.n))
                stats = array("q", f.read())
            self.stats = dict(zip(SENDER_STATS, stats))
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
    writes = [0]

    def hand(i: int, j: int) -> None:
        t = now_ns()  # before the write: the origin may read it before the write returns
        for k in range(i, j):
            sent[k] = t
        write(bytes(j - i))
        writes[0] += 1

    before = _own_usage()
    sleeps = pace(t0, interval, n, hand, [], time.monotonic)
    used = [b - a for a, b in zip(before, _own_usage())]
    sock.close()
    with open(out, "wb") as f:
        f.write(sent.tobytes())
        f.write(array("q", used + [writes[0], sleeps]).tobytes())


def _own_usage() -> list[int]:
    """This process's CPU (ns), run-queue wait (ns, Linux's schedstat; 0
    elsewhere) and voluntary and involuntary context switches so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/schedstat") as f:
            wait = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):  # pragma: no cover - not Linux
        wait = 0
    return [int((ru.ru_utime + ru.ru_stime) * 1e9), wait, ru.ru_nvcsw, ru.ru_nivcsw]


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
