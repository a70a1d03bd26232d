"""Tail latency under load, open loop: p50, p99 and p99.9 of a no-op's round trip.

A closed-loop benchmark (send, wait, send) slows its sending down whenever
the system stalls, so the stall is counted once instead of for every request
that should have gone out meanwhile (coordinated omission). Here requests go
out on a schedule: request ``i`` is due at ``t0 + i / rate``, it is sent as
soon as the sender sees it is due, and its latency is counted from the time
it was *due* to the time its result is back, so a stall anywhere (in the
system or in the sender) shows in every request it delayed.

For rsc and each peer, in the ``latency`` group:

``<who>.lat.unloaded``
    ``UNLOADED_N`` calls one at a time (each sent when the previous one is
    back): the unloaded round trip, the yardstick of the target.
``<who>.lat.max``
    The maximum rate, closed loop: ``MAX_N`` calls submitted at once, then
    every result collected (like ``e2e-bulk``). A burst spreads each
    wake-up, read and write over hundreds of calls, so it is an upper bound
    no open loop reaches; it is kept as a row, and it bounds the search below.
``<who>.lat.max.open``
    The maximum rate an open loop sustains, found by a search (``open_loop_max``):
    a rate is *sustained* when a run of ``PROBE_S`` seconds at it delivers
    every request within ``SUSTAIN_DELIVERED`` of the rate offered (the last
    result back within 1% of the run's length after the last request was
    due) and its latency stays level over the run (the median latency of
    each quarter of the requests, in the order they were due, at most twice
    the lowest quarter's plus ``GROWTH_SLACK_S``: neither a growing backlog
    nor one that took a quarter of the run to drain); one failed run is tried once more before the rate
    counts as not sustained (one stall of another process on a shared
    machine). Bisection between ``1/16`` of the closed-loop maximum (assumed
    sustained) and the closed-loop maximum, on a log scale, ``SEARCH_STEPS``
    probes: the highest rate seen sustained, to within 5%. ``extra_info``
    ``probes`` lists each probe (rate, delivered / offered, each quarter's
    median in us, sustained).
``<who>.lat.10``, ``<who>.lat.25``, ``<who>.lat.50``, ``<who>.lat.90``
    Open loop at 10%, 25%, 50% and 90% of the *open-loop* maximum for
    ``LOAD_S`` seconds: the load a service could actually be run at, and how
    the tail grows with it (at which load p99 leaves five times the unloaded
    p50).
``raw.lat.50.rsc_rate``
    The raw echo at the rate ``rsc.lat.50`` offered (50% of rsc's open-loop
    maximum, not of raw's): what the machine allows at that absolute rate,
    when the client and server only move the frame.
``rsc.lat.50.closed``
    rsc at 50% of the closed-loop maximum (what ``rsc.lat.50`` was before the
    open-loop maximum was measured), for comparison with earlier figures.

rsc runs ``noop`` on one node from one origin (this process, uvloop). Its
open-loop sender is a process of its own (``bench.latency_sender``: it
sleeps until the next request is due, with a 1 us timer slack instead of
Linux's 50 us, then writes one byte per request due to a Unix socket) whose
socket the origin's loop reads, as a service's loop reads its clients'
requests: the loop spawns each request as it arrives, and one coroutine
awaits the handles in order (``await h.join()``) and takes the time when each
returns, so the loop sleeps in its poll between requests and a result counts
when an awaiting coroutine would see it. Before its open-loop runs this
process calls ``gc.collect()`` and ``gc.freeze()`` (undone afterwards), as a
node does after start-up. Two senders it had before are measured at 50% in
the same run for comparison: ``rsc.lat.50.thread``, the same schedule on a
thread of this process handing requests to the loop with
``call_soon_threadsafe`` (that thread shares the interpreter lock and the
process's CPU time with the loop it measures; a service does not receive
requests that way), and ``rsc.lat.50.spin``, a coroutine on the loop that
yields with ``asyncio.sleep(0)`` between passes and polls ``is_finished()``,
so the loop never sleeps and the origin holds a core all the time. Peers
(``ProcessPoolExecutor(2)``, ``multiprocessing.Pool(2)``, Dask, Ray when
installed) have no event loop: the same schedule (``pace``) submits to them
from a thread of this process, and their completion times are taken by a
done-callback in the peer's own result thread.

``extra_info``: ``p50_us``, ``p99_us``, ``p999_us``, ``max_us``, ``samples``,
``rate`` (offered, per second), ``achieved`` (completions per second) and
``send_lag_p99_us`` (how late the sender handed requests over, p99: what
the harness adds, counted in the latencies); for rsc also the origin's garbage-collector passes during the run
(``gc_passes``, ``gc_passes_per_generation``, ``gc_total_ms``,
``gc_longest_us``), ``origin_cpu_us`` and ``node_cpu_us``, this process's
and the node's CPU time per request (with the thread sender, the thread's
own too), and ``origin_cpu_wait_ms`` and ``node_cpu_wait_ms``, how long each
waited, runnable, for a CPU during the run (Linux's schedstat: what a loaded
machine adds, and what every wake-up costs), and ``origin_sleeps`` and
``node_sleeps``, how many times each slept and was woken (voluntary context
switches), and the same of the process sender (``sender_cpu_us``,
``sender_cpu_wait_ms``, ``sender_sleeps``); for every open-loop run where
its slowest request was (``worst_at_s``, ``worst_send_lag_us``,
``send_lag_max_us``: whether the sender held it). The report judges rsc's p99 at 50% of the open-loop maximum (and at 50% of
the closed-loop one, ``rsc.lat.50.closed``) against five times its unloaded
p50.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from bench.conftest import ECHO_PIDS, bench_cluster, runtime_on, start_echo_server
from bench.echo_peer import OpenLoopEchoClient
from bench.figures import latency_figures, record, run_on, runqueue_wait_ns
from bench.latency_sender import SocketSender, ThreadSender, pace
from bench.peers import NAMES as PEER_NAMES
from bench.peers import Peer, describe
from rsc import Runtime, spawn_remote

pytestmark = pytest.mark.usefixtures("no_strays")

UNLOADED_N = 2000
MAX_N = 10_000
MAX_N_FOR = {"dask": 1000, "ray": 2000}
LOAD_S = 2.0
LOADS = (10, 25, 50, 90)
ROUNDS = 1
GROUP = "latency"
MAX_RATE: dict[str, float] = {}  # who -> the closed-loop maximum rate (per second), this run
OPEN_MAX_RATE: dict[str, float] = {}  # who -> the open-loop maximum rate (per second), this run
PROBE_S = 1.5  # each probe of the open-loop search
SUSTAIN_DELIVERED = 0.99  # delivered / offered for a rate to count as sustained
GROWTH_SLACK_S = 0.001  # a quarter's median may exceed twice the lowest quarter's by this much
SEARCH_STEPS = 6  # probes of the bisection: 16 ** (1 / 2 ** 6) = 4.4% resolution
SEARCH_FLOOR = 1 / 16  # the search's low end, a fraction of the closed-loop maximum
SENDER_USED: dict[str, int] = {}  # what the last process sender reported of itself (SENDER_STATS)


def load_figures(benchmark: Any, key: str, latencies: list[float], lags: list[float],
                 rate: float, elapsed: float, **extra: Any) -> None:
    record(benchmark, key, len(latencies), **latency_figures(latencies), rate=round(rate, 1),
           achieved=round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
           send_lag_p99_us=latency_figures(lags)["p99_us"] if lags else 0.0,
           **worst_request(latencies, lags, rate), **extra)


def worst_request(latencies: list[float], lags: list[float], rate: float) -> dict[str, float]:
    """Where the run's slowest request was, to tell whose stall it was:
    ``worst_at_s``, when in the run it was due; ``worst_send_lag_us``, how
    late the sender handed it over (close to its latency: the sender itself,
    or the machine, held it; small: the origin or the node did); and
    ``send_lag_max_us``, the sender's worst lateness in the run. Latencies
    and lags in the order the requests were due."""
    if not latencies:
        return {}
    k = max(range(len(latencies)), key=latencies.__getitem__)
    return {"worst_at_s": round(k / rate, 3), "worst_send_lag_us": round(lags[k] * 1e6, 1) if k < len(lags) else 0.0,
            "send_lag_max_us": round(max(lags) * 1e6, 1) if lags else 0.0}


# ------------------------------------------------------------ the open-loop maximum


Probe = Callable[[float, int], "tuple[list[float], list[float], float]"]


def sustained(latencies: list[float], elapsed: float, rate: float) -> tuple[bool, dict[str, Any]]:
    """Whether an open-loop run at ``rate`` kept up: delivered within
    ``SUSTAIN_DELIVERED`` of offered and latency not growing over the run.
    ``latencies`` in the order the requests were due; ``elapsed``: first due
    time to the last result. Also what it judged on (for ``probes``)."""
    n = len(latencies)
    delivered = n / elapsed / rate if elapsed > 0 else 0.0
    q = max(1, n // 4)
    medians = [sorted(part)[len(part) // 2] for part in
               (latencies[i * q:(i + 1) * q] for i in range(4)) if part]
    ok = delivered >= SUSTAIN_DELIVERED and max(medians) <= 2 * min(medians) + GROWTH_SLACK_S
    return ok, {"rate": round(rate, 1), "delivered": round(delivered, 4),
                "quarter_p50_us": [round(m * 1e6) for m in medians], "sustained": ok}


def open_loop_max(probe: Probe, closed_max: float) -> tuple[float, list[dict[str, Any]]]:
    """The highest rate ``probe`` (an open-loop run: rate, requests -> latencies,
    lags, seconds) sustains, by bisection on a log scale between
    ``SEARCH_FLOOR * closed_max`` and ``closed_max`` (see the module's
    docstring); and every probe's figures."""
    lo, hi = closed_max * SEARCH_FLOOR, closed_max
    probes: list[dict[str, Any]] = []
    for _ in range(SEARCH_STEPS):
        rate = (lo * hi) ** 0.5
        n = max(200, int(rate * PROBE_S))
        for _attempt in range(2):
            latencies, _lags, elapsed = probe(rate, n)
            ok, seen = sustained(latencies, elapsed, rate)
            probes.append(seen)
            if ok:
                break
        if ok:
            lo = rate
        else:
            hi = rate
    return lo, probes


# ------------------------------------------------------------------------------------ rsc


@pytest.fixture(scope="class")
def latency_node() -> Iterator[Any]:
    yield from bench_cluster(1, "bench.registry:registry")


@pytest.fixture(scope="class")
def latency_rt(loop: asyncio.AbstractEventLoop, latency_node: Any) -> Iterator[Runtime]:
    yield from runtime_on(loop, latency_node.nodes)


async def rsc_unloaded(rt: Runtime, node: str, n: int) -> list[float]:
    cx, out, clock = rt.cx(), [], time.perf_counter
    for _ in range(n):
        t0 = clock()
        await spawn_remote(cx, node, "noop", b"").join()
        out.append(clock() - t0)
    return out


async def rsc_max(rt: Runtime, node: str, n: int) -> None:
    cx = rt.cx()
    handles = [spawn_remote(cx, node, "noop", b"") for _ in range(n)]
    for h in handles:
        await h.join()


async def rsc_open_loop(rt: Runtime, node: str, rate: float, n: int,
                        sender: type[SocketSender] | type[ThreadSender] = SocketSender,
                        ) -> tuple[list[float], list[float], float]:
    """``n`` no-ops due at ``rate`` per second (``open_loop``)."""
    cx = rt.cx()
    return await open_loop(lambda: spawn_remote(cx, node, "noop", b""), _join, rate, n, sender)


def _join(h: Any) -> Any:
    return h.join()


def _itself(fut: Any) -> Any:
    return fut


async def open_loop(submit: Callable[[], Any], wait: Callable[[Any], Any], rate: float, n: int,
                    sender: type[SocketSender] | type[ThreadSender] = SocketSender,
                    ) -> tuple[list[float], list[float], float]:
    """``n`` requests due at ``rate`` per second: (latencies from due time, send lags, seconds).

    As a service receives requests: ``sender`` (by default a process of its
    own writing to a socket this loop reads) delivers each request when it is
    due; the loop spawns it, and one coroutine awaits the handles in order
    (``await h.join()``, which returns at once for a handle already finished)
    and takes the time. The loop sleeps in its poll between requests, as a
    service's does. Send lags: how late the sender handed each request over.
    ``submit()`` sends one request (a spawn, a raw frame); ``wait(it)`` is
    what awaiting its answer takes."""
    loop = asyncio.get_running_loop()
    clock = time.monotonic
    interval = 1.0 / rate
    pending: deque[tuple[float, Any]] = deque()
    latencies: list[float] = []
    idle: list[asyncio.Future[None] | None] = [None]  # the collector's wait for a spawn
    t0: list[float] = [0.0]
    SENDER_USED.clear()

    def spawn(i: int, j: int) -> None:  # on the loop
        for k in range(i, j):
            pending.append((t0[0] + k * interval, submit()))
        waiting = idle[0]
        if waiting is not None:
            idle[0] = None
            waiting.set_result(None)

    async with sender(interval, n, spawn) as s:
        t0[0] = s.t0
        while len(latencies) < n:
            if not pending:
                idle[0] = loop.create_future()
                await idle[0]
                continue
            due, h = pending.popleft()
            await wait(h)
            latencies.append(clock() - due)
        end = clock()  # the last result (not the sender process's exit, waited for below)
    lags = [sent / 1e9 - (s.t0 + k * interval) for k, sent in enumerate(s.sent)]
    SENDER_USED.update(getattr(s, "stats", {}))
    return latencies, lags, end - s.t0


async def rsc_open_loop_thread(rt: Runtime, node: str, rate: float,
                               n: int) -> tuple[list[float], list[float], float]:
    """As ``rsc_open_loop``, with the sender on a thread of this process."""
    return await rsc_open_loop(rt, node, rate, n, ThreadSender)


async def rsc_open_loop_spin(rt: Runtime, node: str, rate: float, n: int) -> tuple[list[float], list[float], float]:
    """The sender this benchmark had before, kept for comparison: a coroutine on
    the runtime's own loop that yields with ``asyncio.sleep(0)`` between passes
    (so the loop never sleeps: the process holds a core all the time) and
    polls ``is_finished()`` for completions."""
    cx, clock = rt.cx(), time.perf_counter
    interval = 1.0 / rate
    pending: deque[tuple[float, Any]] = deque()
    latencies: list[float] = []
    lags: list[float] = []
    sent = 0
    t0 = clock() + 0.001
    while len(latencies) < n:
        now = clock()
        while sent < n and t0 + sent * interval <= now:
            due = t0 + sent * interval
            pending.append((due, spawn_remote(cx, node, "noop", b"")))
            lags.append(now - due)
            sent += 1
        while pending and pending[0][1].is_finished():
            due, h = pending.popleft()
            latencies.append(clock() - due)
            h.try_join()
        await asyncio.sleep(0)
    return latencies, lags, clock() - t0


class TestRscLatency:
    def test_rsc_unloaded(self, benchmark: Any, loop: asyncio.AbstractEventLoop, latency_rt: Runtime,
                          latency_node: Any) -> None:
        benchmark.group = GROUP
        node = next(iter(latency_node.nodes))
        got: list[list[float]] = []
        benchmark.pedantic(run_on(loop, lambda: _keep(got, rsc_unloaded(latency_rt, node, UNLOADED_N))),
                           rounds=ROUNDS, warmup_rounds=1)
        record(benchmark, "rsc.lat.unloaded", UNLOADED_N, **latency_figures(got[-1]))

    def test_rsc_max(self, benchmark: Any, loop: asyncio.AbstractEventLoop, latency_rt: Runtime,
                     latency_node: Any) -> None:
        benchmark.group = GROUP
        node = next(iter(latency_node.nodes))
        benchmark.pedantic(run_on(loop, lambda: rsc_max(latency_rt, node, MAX_N)), rounds=3,
                           warmup_rounds=1)
        record(benchmark, "rsc.lat.max", MAX_N)
        MAX_RATE["rsc"] = MAX_N / benchmark.stats.stats.median

    def test_rsc_max_open(self, benchmark: Any, loop: asyncio.AbstractEventLoop, latency_rt: Runtime,
                          latency_node: Any) -> None:
        benchmark.group = GROUP
        if "rsc" not in MAX_RATE:
            pytest.skip("rsc's closed-loop maximum was not measured in this run (run test_rsc_max)")
        node = next(iter(latency_node.nodes))

        def probe(rate: float, n: int) -> tuple[list[float], list[float], float]:
            with frozen_heap():
                return loop.run_until_complete(rsc_open_loop(latency_rt, node, rate, n))

        search_max(benchmark, "rsc", probe)

    @pytest.mark.parametrize("load", LOADS)
    def test_rsc_open_loop(self, benchmark: Any, loop: asyncio.AbstractEventLoop, latency_rt: Runtime,
                           latency_node: Any, load: int) -> None:
        rsc_under_load(benchmark, loop, latency_rt, latency_node, load, rsc_open_loop, f"rsc.lat.{load}")

    def test_rsc_open_loop_closed(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                                  latency_rt: Runtime, latency_node: Any) -> None:
        """At 50% of the closed-loop maximum, as ``rsc.lat.50`` was measured
        before the open-loop maximum: for comparison with earlier figures."""
        rsc_under_load(benchmark, loop, latency_rt, latency_node, 50, rsc_open_loop, "rsc.lat.50.closed",
                       of=MAX_RATE)

    def test_rsc_open_loop_thread(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                                  latency_rt: Runtime, latency_node: Any) -> None:
        """The sender this benchmark had before, a thread of this process, at
        50%: in the same run as the current one, to show what it added."""
        rsc_under_load(benchmark, loop, latency_rt, latency_node, 50, rsc_open_loop_thread,
                       "rsc.lat.50.thread")

    def test_rsc_open_loop_spin(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                                latency_rt: Runtime, latency_node: Any) -> None:
        """The sender this benchmark had before the thread, at 50%: in the same
        run as the current one, to show what it added."""
        rsc_under_load(benchmark, loop, latency_rt, latency_node, 50, rsc_open_loop_spin,
                       "rsc.lat.50.spin")


@pytest.fixture(scope="class")
def latency_echo() -> Iterator[str]:
    """The raw echo server in its own process (its pid in ``ECHO_PIDS``); its socket path."""
    yield from start_echo_server()


@pytest.fixture(scope="class")
def open_echo(loop: asyncio.AbstractEventLoop, latency_echo: str) -> Iterator[OpenLoopEchoClient]:
    """A connected, warmed-up open-loop client of the raw echo server."""
    client = loop.run_until_complete(OpenLoopEchoClient.connect(latency_echo))

    async def warm() -> None:
        for _ in range(100):
            await client.request()

    loop.run_until_complete(warm())
    try:
        yield client
    finally:
        client.close()
        loop.run_until_complete(asyncio.sleep(0))


async def raw_unloaded(client: OpenLoopEchoClient, n: int) -> list[float]:
    out, clock = [], time.perf_counter
    for _ in range(n):
        t0 = clock()
        await client.request()
        out.append(clock() - t0)
    return out


async def raw_max(client: OpenLoopEchoClient, n: int) -> None:
    futs = [client.request() for _ in range(n)]
    for f in futs:
        await f


class TestRawLatency:
    """The raw echo (``bench/echo_peer.py``, a 64-byte frame over a Unix
    socket, the server in its own process) under the same harness as rsc:
    the same process sender, the same search for the open-loop maximum, the
    same loads. What two cores shared by a sender, a client and a server
    allow when the client and server do nothing but move the frame: the
    yardstick for rsc's tail target."""

    def test_raw_unloaded(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                          open_echo: OpenLoopEchoClient) -> None:
        benchmark.group = GROUP
        got: list[list[float]] = []
        benchmark.pedantic(run_on(loop, lambda: _keep(got, raw_unloaded(open_echo, UNLOADED_N))),
                           rounds=ROUNDS, warmup_rounds=1)
        record(benchmark, "raw.lat.unloaded", UNLOADED_N, **latency_figures(got[-1]))

    def test_raw_max(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                     open_echo: OpenLoopEchoClient) -> None:
        benchmark.group = GROUP
        benchmark.pedantic(run_on(loop, lambda: raw_max(open_echo, MAX_N)), rounds=3, warmup_rounds=1)
        record(benchmark, "raw.lat.max", MAX_N)
        MAX_RATE["raw"] = MAX_N / benchmark.stats.stats.median

    def test_raw_max_open(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                          open_echo: OpenLoopEchoClient) -> None:
        benchmark.group = GROUP
        if "raw" not in MAX_RATE:
            pytest.skip("the raw echo's closed-loop maximum was not measured in this run (run test_raw_max)")

        def probe(rate: float, n: int) -> tuple[list[float], list[float], float]:
            with frozen_heap():
                return loop.run_until_complete(open_loop(open_echo.request, _itself, rate, n))

        search_max(benchmark, "raw", probe)

    @pytest.mark.parametrize("load", LOADS)
    def test_raw_open_loop(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                           open_echo: OpenLoopEchoClient, latency_echo: str, load: int) -> None:
        under_load(benchmark, loop, "raw", ECHO_PIDS[latency_echo],
                   lambda rate, n: open_loop(open_echo.request, _itself, rate, n), load, f"raw.lat.{load}")

    def test_raw_at_rsc_rate(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                             open_echo: OpenLoopEchoClient, latency_echo: str) -> None:
        """At the rate ``rsc.lat.50`` offered: the machine's allowance at that absolute rate."""
        if "rsc" not in OPEN_MAX_RATE:
            pytest.skip("rsc's open-loop maximum was not measured in this run (run TestRscLatency first)")
        under_load(benchmark, loop, "raw", ECHO_PIDS[latency_echo],
                   lambda rate, n: open_loop(open_echo.request, _itself, rate, n), 50, "raw.lat.50.rsc_rate",
                   of={"raw": OPEN_MAX_RATE["rsc"]}, of_label="rsc-open")


def search_max(benchmark: Any, who: str, probe: Probe) -> None:
    """Record ``<who>.lat.max.open``, the open-loop maximum (``open_loop_max``)."""
    got: list[tuple[float, list[dict[str, Any]]]] = []
    benchmark.pedantic(lambda: got.append(open_loop_max(probe, MAX_RATE[who])), rounds=1)
    rate, probes = got[-1]
    OPEN_MAX_RATE[who] = rate
    record(benchmark, f"{who}.lat.max.open", 1, rate=round(rate, 1), closed_loop_rate=round(MAX_RATE[who], 1),
           # no probe sustained: the search's floor, never seen sustained, is all it can say
           floor_assumed=not any(p["sustained"] for p in probes), probes=probes)


class frozen_heap:
    """What a service is advised to do once it has started (and what a node
    does): move what is already alive out of the collector's way, so a full
    collection does not walk this process's whole heap while requests wait
    (a 77 ms pause at 50% load here without it). Undone at the exit."""

    def __enter__(self) -> None:
        gc.collect()
        gc.freeze()

    def __exit__(self, *exc: object) -> None:
        gc.unfreeze()


def rsc_under_load(benchmark: Any, loop: asyncio.AbstractEventLoop, rt: Runtime, cluster: Any,
                   load: int, sender: Callable[..., Any], key: str,
                   of: dict[str, float] = OPEN_MAX_RATE) -> None:
    """rsc at ``load`` percent of its maximum in ``of`` (by default the open-loop one)."""
    node = next(iter(cluster.nodes))
    under_load(benchmark, loop, "rsc", cluster.pids[node], lambda rate, n: sender(rt, node, rate, n),
               load, key, of, process_sender=sender is rsc_open_loop)


def under_load(benchmark: Any, loop: asyncio.AbstractEventLoop, who: str, server_pid: int,
               run: Callable[[float, int], Any], load: int, key: str,
               of: dict[str, float] = OPEN_MAX_RATE, process_sender: bool = True,
               of_label: str | None = None) -> None:
    """``who`` (rsc, or the raw echo) at ``load`` percent of its maximum in
    ``of``: ``run(rate, n)`` is the open loop; ``server_pid`` the process that
    answers (the node, the echo server), whose CPU is accounted as the node's.
    ``of_label``: what the figure's ``of_maximum`` says the rate is a share of
    (by default ``open`` or ``closed``, by ``of``)."""
    benchmark.group = GROUP
    if who not in of:
        pytest.skip(f"{who}'s maximum rate was not measured in this run (run test_{who}_max, "
                    f"test_{who}_max_open)")
    rate = of[who] * load / 100
    n = max(200, int(rate * LOAD_S))
    got: list[tuple[list[float], list[float], float]] = []
    with frozen_heap(), GcPauses() as pauses, CpuUse(server_pid) as cpu:
        benchmark.pedantic(run_on(loop, lambda: _keep(got, run(rate, n))), rounds=ROUNDS)
    latencies, lags, elapsed = got[-1]
    ok, _ = sustained(latencies, elapsed, rate)
    used = dict(SENDER_USED) if process_sender else {}
    load_figures(benchmark, key, latencies, lags, rate, elapsed, load=load, of_maximum=of_label or (
        "open" if of is OPEN_MAX_RATE else "closed"), sustained=ok,
                 gc_gen0_threshold=gc.get_threshold()[0], **cpu.figures(n), **pauses.figures(),
                 **sender_figures(used, n))


def sender_figures(used: dict[str, int], n: int) -> dict[str, float]:
    """The process sender's own cost (``SocketSender.stats``) per request, as
    ``CpuUse.figures`` gives the origin's and the node's: ``sender_cpu_us``,
    ``sender_cpu_wait_ms`` and ``sender_sleeps``."""
    if not used:
        return {}
    return {"sender_cpu_us": round(used["cpu_ns"] / n / 1e3, 1),
            "sender_cpu_wait_ms": round(used["wait_ns"] / 1e6, 1), "sender_sleeps": int(used["voluntary"])}


class CpuUse:
    """While entered: the CPU time this process and the node used, and how long
    each waited, runnable, for a CPU (what a loaded machine adds)."""

    def __init__(self, node_pid: int) -> None:
        self.node, self.origin = psutil.Process(node_pid), psutil.Process()

    def _now(self) -> tuple[float, float, int, int, int, int]:
        return (sum(os.times()[:2]), sum(self.node.cpu_times()[:2]),
                runqueue_wait_ns(os.getpid()), runqueue_wait_ns(self.node.pid),
                # each sleep (in the loop's poll) ends in a wake-up that may wait for a CPU
                self.origin.num_ctx_switches().voluntary, self.node.num_ctx_switches().voluntary)

    def __enter__(self) -> CpuUse:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self._used = [b - a for a, b in zip(self._start, self._now())]

    def figures(self, n: int) -> dict[str, float]:
        origin_s, node_s, origin_wait_ns, node_wait_ns, origin_sleeps, node_sleeps = self._used
        return {"origin_cpu_us": round(origin_s / n * 1e6, 1), "node_cpu_us": round(node_s / n * 1e6, 1),
                "origin_cpu_wait_ms": round(origin_wait_ns / 1e6, 1),
                "node_cpu_wait_ms": round(node_wait_ns / 1e6, 1),
                "origin_sleeps": int(origin_sleeps), "node_sleeps": int(node_sleeps)}


async def _keep(into: list[Any], coro: Any) -> None:
    into.append(await coro)


class GcPauses:
    """The collector's passes in this process while it is entered: how many,
    and the total and longest pause (a pause delays every request due in it)."""

    def __init__(self) -> None:
        self.count, self.total_s, self.longest_s, self._t0 = 0, 0.0, 0.0, 0.0
        self.per_generation = [0, 0, 0]

    def _on(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            self.per_generation[info["generation"]] += 1
        else:
            took = time.perf_counter() - self._t0
            self.count += 1
            self.total_s += took
            self.longest_s = max(self.longest_s, took)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._on)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on)

    def figures(self) -> dict[str, float]:
        return {"gc_passes": self.count, "gc_passes_per_generation": list(self.per_generation), "gc_total_ms": round(self.total_s * 1e3, 2),
                "gc_longest_us": round(self.longest_s * 1e6, 1)}


# ---------------------------------------------------------------------------------- peers


def peer_open_loop(peer: Peer, rate: float, n: int) -> tuple[list[float], list[float], float]:
    """As ``rsc_open_loop``, for a peer: the same sender (``pace``), submitting
    from its thread; completion times are taken by the peer's done-callbacks."""
    clock = time.perf_counter
    interval = 1.0 / rate
    done_at = [0.0] * n
    lags: list[float] = []
    finished = threading.Semaphore(0)

    def on_done(i: int) -> None:
        done_at[i] = clock()
        finished.release()

    def submit(i: int, j: int) -> None:
        for k in range(i, j):
            peer.submit_then(b"", lambda k=k: on_done(k))

    t0 = clock() + 0.001
    pace(t0, interval, n, submit, lags)
    for _ in range(n):
        if not finished.acquire(timeout=60):
            raise TimeoutError("a peer call did not come back within 60 s")
    end = max(done_at)
    return [done_at[i] - (t0 + i * interval) for i in range(n)], lags, end - t0


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("peer", PEER_NAMES, indirect=True, scope="class")
class TestPeerLatency:
    def test_peer_unloaded(self, benchmark: Any, peer: Peer) -> None:
        benchmark.group = GROUP
        n = UNLOADED_N if peer.name in ("processpool", "pool") else 200
        got: list[float] = []

        def one_at_a_time() -> None:
            got.clear()
            clock = time.perf_counter
            for _ in range(n):
                t0 = clock()
                peer.submit(b"").result()
                got.append(clock() - t0)

        benchmark.pedantic(one_at_a_time, rounds=ROUNDS, warmup_rounds=1)
        record(benchmark, f"{peer.name}.lat.unloaded", n, peer=describe(peer.name), **latency_figures(got))

    def test_peer_max(self, benchmark: Any, peer: Peer) -> None:
        benchmark.group = GROUP
        n = MAX_N_FOR.get(peer.name, MAX_N)
        benchmark.pedantic(peer.bulk, args=(n,), rounds=1, warmup_rounds=1)
        record(benchmark, f"{peer.name}.lat.max", n, peer=describe(peer.name))
        MAX_RATE[peer.name] = n / benchmark.stats.stats.median

    def test_peer_max_open(self, benchmark: Any, peer: Peer) -> None:
        benchmark.group = GROUP
        if peer.name not in MAX_RATE:
            pytest.skip(f"{peer.name}'s closed-loop maximum was not measured in this run")
        search_max(benchmark, peer.name, lambda rate, n: peer_open_loop(peer, rate, n))

    @pytest.mark.parametrize("load", LOADS)
    def test_peer_open_loop(self, benchmark: Any, peer: Peer, load: int) -> None:
        benchmark.group = GROUP
        if peer.name not in OPEN_MAX_RATE:
            pytest.skip(f"{peer.name}'s open-loop maximum was not measured in this run")
        rate = OPEN_MAX_RATE[peer.name] * load / 100
        n = max(200, int(rate * LOAD_S))
        got: list[tuple[list[float], list[float], float]] = []
        benchmark.pedantic(lambda: got.append(peer_open_loop(peer, rate, n)), rounds=ROUNDS)
        latencies, lags, elapsed = got[-1]
        ok, _ = sustained(latencies, elapsed, rate)
        load_figures(benchmark, f"{peer.name}.lat.{load}", latencies, lags, rate, elapsed, load=load,
                     of_maximum="open", sustained=ok, peer=describe(peer.name))
