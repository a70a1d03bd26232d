"""Process isolation (issue 14): what a worker process costs per task.

One rsc node (``bench.registry_iso:registry``, a pool of 2 worker processes)
runs the same no-op as a plain function in a thread of the node
(``noop_thread``) and in a worker process (``noop_process``); the stdlib's
``ProcessPoolExecutor(2)`` and ``multiprocessing.Pool(2)`` (the stand-in for
Celery's prefork pool) run it too, in the same run, so every ratio compares
figures measured minutes apart on the same machine.

=====================  ==========================================================
group / figure         what
=====================  ==========================================================
``iso-one``            ``ONE_N`` calls one at a time: round trip.
``iso-bulk``           ``BULK_N`` calls submitted at once, then every result.
``iso-start``          ``WorkerPool(size=1).start()``: a worker spawned, rsc and
                       the registry imported, READY (the start-up cost).
``iso-ratio``          ``PAIRS`` pairs of process-mode bulk then
                       ProcessPoolExecutor bulk, back to back: the median of
                       the pairs' ratios (the figure the target is judged on).
=====================  ==========================================================

After the benchmark tables, ``bench/conftest.py`` prints each figure and the ratios the issue
asks for (target: process-mode bulk at least 3x ProcessPoolExecutor's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from bench.conftest import bench_cluster
from bench.peers import PoolPeer, ProcessPoolPeer, stop_multiprocessing_helpers
from rsc import Runtime, spawn_remote

# The stdlib pools' semaphores are finalized whenever the collector gets to
# them, after their resource tracker is stopped: other people's warnings, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ONE_N = 200
BULK_N = 5_000
RESULTS: dict[str, float] = {}  # figure -> ops per second (median round)
RESULTS_RATIO: dict[str, tuple[float, list[float]]] = {}  # ratio -> (median, every pair's)


@pytest.fixture(scope="module", autouse=True)
def _stop_everything_started_here(no_strays: None) -> Iterator[None]:
    yield


def report_lines(r: dict[str, float]) -> list[str]:
    out = ["", "process isolation (issue 14), median rounds, same run:"]
    for fig in sorted(r):
        if fig.endswith("start"):
            out.append(f"  {fig:<24} {1e3 / r[fig]:8.1f} ms")
        else:
            out.append(f"  {fig:<24} {r[fig]:10.0f} /s  ({1e6 / r[fig]:7.1f} us each)")

    def ratio(a: str, b: str, target: float | None = None) -> None:
        if a in r and b in r:
            verdict = "" if target is None else ("  PASS" if r[a] / r[b] >= target else "  FAIL") + \
                f" (target >= {target:g}x)"
            out.append(f"  {a} / {b}: {r[a] / r[b]:.2f}x{verdict}")

    ratio("process.bulk", "processpool.bulk", 3.0)
    ratio("process.bulk", "pool.bulk")
    ratio("process.bulk", "thread.bulk")
    ratio("process.one", "processpool.one")
    ratio("process.one", "pool.one")
    ratio("process.one", "thread.one")
    for name, (median, pairs) in RESULTS_RATIO.items():
        verdict = "PASS" if median >= 3.0 else "FAIL"
        out.append(f"  {name}: median {median:.2f}x  {verdict} (target >= 3x); pairs "
                   + ", ".join(f"{r:.2f}" for r in pairs))
    return out


def record(benchmark: Any, figure: str, ops: int) -> None:
    benchmark.extra_info["figure"] = "iso." + figure
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info.update(us_per_op=round(median / ops * 1e6, 2), ops_per_s=round(ops / median, 1))
        RESULTS[figure] = ops / median


@pytest.fixture(scope="module")
def iso_node() -> Iterator[Any]:
    yield from bench_cluster(1, "bench.registry_iso:registry", extra_args=["--workers", "2"])


@pytest.fixture(scope="module")
def iso_rt(loop: asyncio.AbstractEventLoop, iso_node: Any) -> Iterator[Runtime]:
    rt = Runtime(iso_node.nodes)

    async def warm() -> None:
        await rt.start()
        for name in ("noop_thread", "noop_process"):
            for _ in range(50):
                assert await spawn_remote(rt.cx(), "worker-1", name, b"w").join() == b"w"

    loop.run_until_complete(warm())
    try:
        yield rt
    finally:
        loop.run_until_complete(rt.aclose())


PAIRS = 7


@pytest.mark.filterwarnings("ignore")
def test_bulk_ratio_interleaved(benchmark: Any, loop: asyncio.AbstractEventLoop, iso_rt: Runtime) -> None:
    """The issue's target measured pairwise: rounds of process-mode bulk and
    ProcessPoolExecutor bulk alternate, so both see the same machine, and the
    figure is the median of the per-pair ratios (load on a shared VM moves
    each rate by up to 2x within a minute; a pair moves together).

    It runs first, on a fresh node, so that it does not depend on what the
    other figures leave behind (a run of all of them holds 100,000 records
    for the TTL); the spread between runs here is the machine's load."""
    import time

    benchmark.group = "iso-ratio"
    cx = iso_rt.cx()
    peer = ProcessPoolPeer()
    peer.one(4)
    peer.bulk(8)

    async def spawn_then_join() -> None:
        handles = [spawn_remote(cx, "worker-1", "noop_process", b"") for _ in range(BULK_N)]
        for h in handles:
            await h.join()

    ratios = []
    try:
        def pairs() -> None:
            for _ in range(PAIRS):
                t0 = time.perf_counter()
                loop.run_until_complete(spawn_then_join())
                t1 = time.perf_counter()
                peer.bulk(BULK_N)
                t2 = time.perf_counter()
                ratios.append((t2 - t1) / (t1 - t0))

        benchmark.pedantic(pairs, rounds=1, iterations=1)
    finally:
        # Not stop_multiprocessing_helpers() here: the Pool of another test may
        # still hold forkserver children (the module's no_strays stops them).
        peer.stop()
    ratios.sort()
    median = ratios[len(ratios) // 2]
    benchmark.extra_info.update(figure="iso.ratio.process_vs_processpool_bulk", ratio=round(median, 2),
                                ratios=[round(r, 2) for r in ratios])
    RESULTS_RATIO["process.bulk / processpool.bulk, interleaved pairs"] = (median, ratios)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_rsc_one_in_flight(benchmark: Any, loop: asyncio.AbstractEventLoop, iso_rt: Runtime,
                           mode: str) -> None:
    benchmark.group = "iso-one"
    cx, name = iso_rt.cx(), f"noop_{mode}"

    async def one_at_a_time() -> None:
        for _ in range(ONE_N):
            await spawn_remote(cx, "worker-1", name, b"").join()

    benchmark.pedantic(lambda: loop.run_until_complete(one_at_a_time()), rounds=7, warmup_rounds=1)
    record(benchmark, f"{mode}.one", ONE_N)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_rsc_bulk(benchmark: Any, loop: asyncio.AbstractEventLoop, iso_rt: Runtime, mode: str) -> None:
    benchmark.group = "iso-bulk"
    cx, name = iso_rt.cx(), f"noop_{mode}"

    async def spawn_then_join() -> None:
        handles = [spawn_remote(cx, "worker-1", name, b"") for _ in range(BULK_N)]
        for h in handles:
            await h.join()

    benchmark.pedantic(lambda: loop.run_until_complete(spawn_then_join()), rounds=7, warmup_rounds=1)
    record(benchmark, f"{mode}.bulk", BULK_N)


@pytest.fixture(scope="module", params=["processpool", "pool"])
def stdlib_peer(request: pytest.FixtureRequest) -> Iterator[Any]:
    peer = ProcessPoolPeer() if request.param == "processpool" else PoolPeer()
    peer.one(4)
    peer.bulk(8)
    try:
        yield peer
    finally:
        try:
            peer.stop()
        finally:
            stop_multiprocessing_helpers()


@pytest.mark.filterwarnings("ignore")
def test_stdlib_one_in_flight(benchmark: Any, stdlib_peer: Any) -> None:
    benchmark.group = "iso-one"
    benchmark.pedantic(lambda: stdlib_peer.one(ONE_N), rounds=7, warmup_rounds=1)
    record(benchmark, f"{stdlib_peer.name}.one", ONE_N)


@pytest.mark.filterwarnings("ignore")
def test_stdlib_bulk(benchmark: Any, stdlib_peer: Any) -> None:
    benchmark.group = "iso-bulk"
    benchmark.pedantic(lambda: stdlib_peer.bulk(BULK_N), rounds=5, warmup_rounds=1)
    record(benchmark, f"{stdlib_peer.name}.bulk", BULK_N)


def test_worker_start_up(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Spawn one worker, import rsc and the registry, READY; then close it."""
    from rsc.node.workers import WorkerPool

    benchmark.group = "iso-start"

    async def start_and_close() -> None:
        pool = WorkerPool("bench.registry_iso:registry", size=1, finish=lambda *a: None)
        await pool.start()
        await pool.aclose()

    benchmark.pedantic(lambda: loop.run_until_complete(start_and_close()), rounds=5, warmup_rounds=1)
    record(benchmark, "worker.start", 1)

