"""End to end: rsc against the raw socket limit and against its peers, in one run.

Every figure is a pytest-benchmark in one of these groups; a round runs the
same number of operations for every contender of a group (except where noted),
and ``extra_info`` holds the derived figures (``us_per_op``, ``ops_per_s``
from the median round, ``bytes_per_task``, ...) plus ``figure``, the key
``bench/report.py`` reads them by.

``e2e-one-in-flight`` (200 calls a round, each awaited before the next)
    ``raw.one``: a 64-byte frame echoed by bench/echo_peer.py over a Unix
    socket, both ends on uvloop; ``rsc.one``: ``spawn_remote(noop).join()`` on
    one node; ``rsc.one_inline``: the same with ``noop_inline`` (a plain
    function registered ``inline=True``); ``<peer>.one``: the peer's submit-and-wait.
``e2e-bulk`` (10,000 no-ops a round; Dask 2,000, see below)
    ``raw.bulk``: 10,000 echoes with 256 in flight; ``rsc.bulk1`` / ``rsc.bulk2``:
    10,000 ``spawn_remote(noop)`` to one node / alternating over two, then
    ``join`` each; ``rsc.bulk1_inline``: ``noop_inline`` to one node;
    ``<peer>.bulk``: the peer's bulk submit (two workers).
``e2e-cpu`` (1,000 tasks of about 1 ms of pure Python a round)
    ``rsc.cpu1`` / ``rsc.cpu2``: over one node / two nodes; ``<peer>.cpu``: two
    workers. The work is calibrated once (``burn_work``) and is identical.
    Each task reports how long its work took: ``cores_busy`` (busy time over
    wall time) and ``burn_ms`` show how many cores a job kept busy and how fast
    the machine was meanwhile (its speed drifts on a shared VM).
``e2e-memory``
    ``rsc.memory``: origin memory per outstanding remote task, 100,000
    ``sleep`` tasks accepted and running over two nodes; traced Python memory
    (tracemalloc) and RSS, each as a delta over the idle, connected runtime.
    The round's time (spawning 100k with tracemalloc on) is not a speed figure.
``e2e-heartbeat``
    ``rsc.heartbeat10`` / ``rsc.heartbeat10000``: LEASE_RENEWAL(_BATCH) and
    LEASE_RENEWAL_DIGEST frames and bytes the origin receives from one node
    per second while that node runs 10 / 10,000 tasks (0.6 s leases, so a
    renewal every 0.2 s; 3 s window). ``ids_per_s`` counts the tasks those
    frames renewed (a digest renews its group's count).

Dask runs its bulk round with 2,000 tasks instead of 10,000 so that the whole
module stays near three minutes (Dask manages a few hundred no-ops a second
here); its per-task rate does not improve with a bigger batch, so this favours
Dask if anything. Peers that are not installed are skipped with a message.
Run: ``python -m pytest bench/bench_e2e.py -q -p no:cacheprovider --benchmark-only
--benchmark-autosave`` then ``python bench/report.py``.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from bench.conftest import open_runtime, runtime_on
from bench.echo_peer import EchoClient
from bench.figures import record, run_on
from bench.peers import NAMES as PEER_NAMES
from bench.peers import Peer, describe
from rsc import RemoteTaskState, Runtime, spawn_remote
from rsc._core import envelope
from rsc._core.messages import LeaseRenewal, LeaseRenewalBatch, LeaseRenewalDigest

ONE_N = 200  # calls per round, one in flight
# figure key suffix per no-op: the async one, and the plain one registered inline=True
SUFFIX = {"noop": "", "noop_inline": "_inline"}
BULK_N = 10_000  # no-ops per round, all in flight
BULK_N_FOR = {"dask": 2_000}  # see the module docstring
CPU_N = 1_000  # ~1 ms tasks per round
WINDOW = 256  # raw pipelined echoes in flight
MEMORY_TASKS = 100_000
HEARTBEAT_LEASE_S = 0.6
HEARTBEAT_WINDOW_S = 3.0
HEARTBEAT_SPAWN_CHUNK = 500
SLEEP_FOREVER = b"600000"  # ms: outstanding until cancelled

# rounds per figure: enough for a steady median, few enough for ~3 minutes in all
ONE_ROUNDS = {"raw": 30, "rsc": 15, "processpool": 10, "pool": 10, "ray": 3, "dask": 2}
BULK_ROUNDS = {"raw": 20, "rsc": 5, "processpool": 3, "pool": 5, "ray": 1, "dask": 1}
CPU_ROUNDS = {"rsc": 3, "processpool": 3, "pool": 3, "ray": 2, "dask": 1}


@pytest.fixture(scope="module", autouse=True)
def _stop_everything_started_here(no_strays: None) -> Iterator[None]:
    yield


def cpu_figures(rounds: list[tuple[int, float]]) -> dict[str, float]:
    """From (busy ns summed over the tasks, wall seconds) per round: ``cores_busy``,
    busy time over wall time (median round; 2.0 keeps both cores busy), and
    ``burn_ms``, the mean time one ``burn`` took (how fast the machine was)."""
    if not rounds:
        return {}
    busy = sorted(b / 1e9 / w for b, w in rounds)
    return dict(cores_busy=round(busy[len(busy) // 2], 3),
                burn_ms=round(sum(b for b, _ in rounds) / 1e6 / (CPU_N * len(rounds)), 3))


# ------------------------------------------------------------------------------ raw limit


@pytest.fixture(scope="class")
def echo(loop: asyncio.AbstractEventLoop, echo_server: str) -> Iterator[EchoClient]:
    """A connected, warmed-up client of the echo server."""
    client = loop.run_until_complete(EchoClient.connect(echo_server))
    loop.run_until_complete(client.one_in_flight(100))
    try:
        yield client
    finally:
        client.close()
        loop.run_until_complete(asyncio.sleep(0))


class TestRawEcho:
    def test_raw_echo_one_in_flight(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                                    echo: EchoClient) -> None:
        benchmark.group = "e2e-one-in-flight"
        benchmark.pedantic(run_on(loop, lambda: echo.one_in_flight(ONE_N, 64)),
                           rounds=ONE_ROUNDS["raw"], warmup_rounds=2)
        record(benchmark, "raw.one", ONE_N, frame_bytes=64)

    def test_raw_echo_pipelined(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                                echo: EchoClient) -> None:
        benchmark.group = "e2e-bulk"
        benchmark.pedantic(run_on(loop, lambda: echo.pipelined(BULK_N, WINDOW, 64)),
                           rounds=BULK_ROUNDS["raw"], warmup_rounds=2)
        record(benchmark, "raw.bulk", BULK_N, frame_bytes=64, in_flight=WINDOW)


# ------------------------------------------------------------------------------------ rsc


async def _join_all(handles: list[Any]) -> None:
    for h in handles:
        await h.join()


async def _wait_running(handles: list[Any], timeout_s: float = 120.0) -> None:
    """Until every handle's spawn was accepted (state RUNNING)."""
    deadline = time.monotonic() + timeout_s
    pending = [h for h in handles if h.state is RemoteTaskState.PENDING]
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(handles)} spawns not accepted in {timeout_s} s")
        await asyncio.sleep(0.05)
        pending = [h for h in pending if h.state is RemoteTaskState.PENDING]
    bad = [h for h in handles if h.state is not RemoteTaskState.RUNNING]
    if bad:
        raise RuntimeError(f"{len(bad)} tasks are not running, e.g. {bad[0]!r}")


async def _cancel_all(handles: list[Any]) -> float:
    """Abort every handle and wait for their outcomes; seconds it took."""
    t0 = time.perf_counter()
    for h in handles:
        h.abort()
    await asyncio.gather(*(h.outcome() for h in handles), return_exceptions=True)
    return time.perf_counter() - t0


@pytest.fixture(scope="class")
def nodes(rsc_cluster: Any) -> list[str]:
    return list(rsc_cluster.nodes)


@pytest.fixture(scope="class")
def rt(loop: asyncio.AbstractEventLoop, rsc_cluster: Any) -> Iterator[Runtime]:
    """A Runtime connected to both nodes (shared by the speed figures)."""
    yield from runtime_on(loop, rsc_cluster.nodes)


class TestRsc:
    @pytest.mark.parametrize("computation", ["noop", "noop_inline"])
    def test_rsc_noop_one_in_flight(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                                    rt: Runtime, nodes: list[str], computation: str) -> None:
        benchmark.group = "e2e-one-in-flight"
        cx, node = rt.cx(), nodes[0]

        async def one_at_a_time() -> None:
            for _ in range(ONE_N):
                await spawn_remote(cx, node, computation, b"").join()

        benchmark.pedantic(run_on(loop, one_at_a_time), rounds=ONE_ROUNDS["rsc"], warmup_rounds=1)
        record(benchmark, "rsc.one" + SUFFIX[computation], ONE_N)

    @pytest.mark.parametrize("n_nodes, computation", [(1, "noop"), (2, "noop"), (1, "noop_inline")])
    def test_rsc_noop_bulk(self, benchmark: Any, loop: asyncio.AbstractEventLoop, rt: Runtime,
                           nodes: list[str], n_nodes: int, computation: str) -> None:
        benchmark.group = "e2e-bulk"
        cx, targets = rt.cx(), nodes[:n_nodes]

        async def spawn_then_join() -> None:
            await _join_all([spawn_remote(cx, targets[i % n_nodes], computation, b"")
                             for i in range(BULK_N)])

        benchmark.pedantic(run_on(loop, spawn_then_join), rounds=BULK_ROUNDS["rsc"], warmup_rounds=1)
        record(benchmark, f"rsc.bulk{n_nodes}" + SUFFIX[computation], BULK_N, nodes=n_nodes)

    @pytest.mark.parametrize("n_nodes", [1, 2])
    def test_rsc_cpu(self, benchmark: Any, loop: asyncio.AbstractEventLoop, rt: Runtime,
                     nodes: list[str], n_nodes: int, burn_work: int) -> None:
        benchmark.group = "e2e-cpu"
        cx, targets, work = rt.cx(), nodes[:n_nodes], str(burn_work).encode()
        rounds: list[tuple[int, float]] = []

        async def spawn_then_join() -> None:
            t0 = time.perf_counter()
            handles = [spawn_remote(cx, targets[i % n_nodes], "cpu", work) for i in range(CPU_N)]
            busy_ns = 0
            for h in handles:
                busy_ns += int(await h.join())
            rounds.append((busy_ns, time.perf_counter() - t0))

        benchmark.pedantic(run_on(loop, spawn_then_join), rounds=CPU_ROUNDS["rsc"], warmup_rounds=1)
        record(benchmark, f"rsc.cpu{n_nodes}", CPU_N, nodes=n_nodes, burn_work=burn_work,
               **cpu_figures(rounds[1:]))

    def test_rsc_memory_per_outstanding_task(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                                             rsc_cluster: Any, nodes: list[str]) -> None:
        benchmark.group = "e2e-memory"
        proc = psutil.Process()
        state: dict[str, Any] = {}

        def setup() -> None:
            state["rt"] = loop.run_until_complete(open_runtime(rsc_cluster.nodes))
            gc.collect()
            tracemalloc.start()
            state["traced0"] = tracemalloc.get_traced_memory()[0]
            state["rss0"] = proc.memory_info().rss

        async def spawn_outstanding() -> None:
            cx = state["rt"].cx()
            handles = [spawn_remote(cx, nodes[i % 2], "sleep", SLEEP_FOREVER) for i in range(MEMORY_TASKS)]
            await _wait_running(handles)
            state["handles"] = handles

        rt: Runtime | None = None
        try:
            benchmark.pedantic(run_on(loop, spawn_outstanding), setup=setup, rounds=1)
            rt = state["rt"]
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] - state["traced0"]
            rss = proc.memory_info().rss - state["rss0"]
            live = rt.debug_counts()
        finally:
            if tracemalloc.is_tracing():
                tracemalloc.stop()
            handles = state.pop("handles", [])
            cancel_s = loop.run_until_complete(_cancel_all(handles)) if handles else None
            if "rt" in state:
                loop.run_until_complete(state["rt"].aclose())
        assert live["handles"] == MEMORY_TASKS, live
        record(benchmark, "rsc.memory", MEMORY_TASKS,
               bytes_per_task=round(traced / MEMORY_TASKS, 1),
               rss_bytes_per_task=round(rss / MEMORY_TASKS, 1),
               outstanding=MEMORY_TASKS, nodes=2, cancel_all_s=round(cancel_s or 0.0, 2))

    @pytest.mark.parametrize("tasks", [10, 10_000])
    def test_rsc_heartbeat_traffic(self, benchmark: Any, loop: asyncio.AbstractEventLoop,
                                   rsc_cluster: Any, nodes: list[str], tasks: int) -> None:
        benchmark.group = "e2e-heartbeat"
        node = nodes[0]
        counts = {"frames": 0, "bytes": 0, "ids": 0}
        state: dict[str, Any] = {}

        def count_renewals(rt: Runtime) -> None:
            # Wraps the callback of the connection to ``node`` (the compiled
            # Runtime and engine are closed classes: their methods cannot be
            # replaced, a connection's callback can).
            conn = rt._links[node].conn
            assert conn is not None, "the connection to the node is up once its tasks run"
            on_messages = conn._on_messages

            def counting(c: Any, msgs: list[Any]) -> None:
                for msg in msgs:
                    kind = type(msg)
                    if kind is LeaseRenewalBatch or kind is LeaseRenewal or kind is LeaseRenewalDigest:
                        counts["frames"] += 1
                        counts["bytes"] += len(envelope.encode_frame(msg))
                        counts["ids"] += (len(msg.remote_task_ids) if kind is LeaseRenewalBatch
                                          else msg.task_count if kind is LeaseRenewalDigest else 1)
                on_messages(c, msgs)

            conn._on_messages = counting

        async def start_tasks() -> None:
            rt = state["rt"] = await open_runtime(rsc_cluster.nodes)
            cx = rt.cx()
            handles = state["handles"] = []
            # In chunks: a spawn still queued behind thousands of others when its
            # short lease runs out is (rightly) LeaseExpired before its ACK arrives.
            for start in range(0, tasks, HEARTBEAT_SPAWN_CHUNK):
                chunk = [spawn_remote(cx, node, "sleep", SLEEP_FOREVER, lease=HEARTBEAT_LEASE_S)
                         for _ in range(min(HEARTBEAT_SPAWN_CHUNK, tasks - start))]
                handles.extend(chunk)
                await _wait_running(chunk)
            count_renewals(rt)
            await asyncio.sleep(HEARTBEAT_LEASE_S)  # renewals for the whole set are under way
            counts.update(frames=0, bytes=0, ids=0)

        def setup() -> None:
            loop.run_until_complete(start_tasks())

        try:
            benchmark.pedantic(run_on(loop, lambda: asyncio.sleep(HEARTBEAT_WINDOW_S)),
                               setup=setup, rounds=1)
            seen = dict(counts)  # renewals keep coming while the tasks are cancelled below
            alive = sum(1 for h in state["handles"] if h.state is RemoteTaskState.RUNNING)
        finally:
            if state.get("handles"):
                loop.run_until_complete(_cancel_all(state["handles"]))
            if "rt" in state:
                loop.run_until_complete(state["rt"].aclose())
        assert alive == tasks, f"only {alive} of {tasks} tasks kept their lease"
        seconds = benchmark.stats.stats.median if benchmark.stats is not None else HEARTBEAT_WINDOW_S
        record(benchmark, f"rsc.heartbeat{tasks}", 1, tasks=tasks, lease_s=HEARTBEAT_LEASE_S,
               window_s=round(seconds, 3),
               frames_per_s=round(seen["frames"] / seconds, 2),
               bytes_per_s=round(seen["bytes"] / seconds, 1),
               ids_per_s=round(seen["ids"] / seconds, 1))


# ---------------------------------------------------------------------------------- peers


# Peers are other people's code: their warnings (ports, unclosed sockets at
# shutdown) are not ours to turn into errors.
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("peer", PEER_NAMES, indirect=True, scope="class")
class TestPeers:
    def test_peer_noop_one_in_flight(self, benchmark: Any, peer: Peer) -> None:
        benchmark.group = "e2e-one-in-flight"
        benchmark.pedantic(peer.one, args=(ONE_N,), rounds=ONE_ROUNDS[peer.name])
        record(benchmark, f"{peer.name}.one", ONE_N, peer=describe(peer.name))

    def test_peer_noop_bulk(self, benchmark: Any, peer: Peer) -> None:
        benchmark.group = "e2e-bulk"
        n = BULK_N_FOR.get(peer.name, BULK_N)
        benchmark.pedantic(peer.bulk, args=(n,), rounds=BULK_ROUNDS[peer.name])
        record(benchmark, f"{peer.name}.bulk", n, peer=describe(peer.name))

    def test_peer_cpu(self, benchmark: Any, peer: Peer, burn_work: int) -> None:
        benchmark.group = "e2e-cpu"
        rounds: list[tuple[int, float]] = []

        def one_round() -> None:
            t0 = time.perf_counter()
            busy_ns = sum(int(r) for r in peer.cpu(CPU_N, burn_work))
            rounds.append((busy_ns, time.perf_counter() - t0))

        benchmark.pedantic(one_round, rounds=CPU_ROUNDS[peer.name])
        record(benchmark, f"{peer.name}.cpu", CPU_N, peer=describe(peer.name), burn_work=burn_work,
               **cpu_figures(rounds))

