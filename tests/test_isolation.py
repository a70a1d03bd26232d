"""Process isolation (issue 14), on real node processes and their workers.

One node (``shared``: 2 workers, a 0.5 s cancel grace, ``tests.registries_iso``)
serves most tests; the tests that kill a node start their own. Every process
is stopped by pid (the ``cluster`` fixtures check that none is left), and the
worker processes are found by pid in the node's STATUS (``worker_pids``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import rsc
from rsc import Runtime, spawn_remote
from rsc.errors import InvalidArgument, MemoryLimitExceeded, TimeLimitExceeded, WorkerCrashed
from rsc.launch import LocalCluster
from rsc.registry import Registry
from rsc.types import CancelKind

REGISTRY = "tests.registries_iso:iso"
GRACE = 0.5
ISO_ARGS = ["--workers", "2", "--cancel-grace", str(GRACE)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def shared(module_cluster: Any) -> LocalCluster:
    return module_cluster(1, registry=REGISTRY, extra_args=ISO_ARGS)


async def wait_busy(rt: Runtime, node: str, n: int = 1, timeout: float = 20.0) -> dict:
    """Poll the node's STATUS until ``n`` workers are running a task."""
    deadline = time.monotonic() + timeout
    while True:
        st = await rt.status(node)
        if st["workers_busy"] >= n:
            return st
        assert time.monotonic() < deadline, f"no worker became busy: {st}"
        await asyncio.sleep(0.02)


async def wait_pool_full(rt: Runtime, node: str, timeout: float = 20.0) -> dict:
    """Poll until every worker of the node's pool is alive again (replacements started)."""
    deadline = time.monotonic() + timeout
    while True:
        st = await rt.status(node)
        if st["workers_alive"] == st["workers"] and st["worker_queue"] == 0:
            return st
        assert time.monotonic() < deadline, f"the pool did not refill: {st}"
        await asyncio.sleep(0.02)


def gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """The pids among ``pids`` still alive (not zombies) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def node_children(c: LocalCluster, name: str = "worker-1") -> list[int]:
    """The node's live (non-zombie) child processes: its workers."""
    pids = []
    for p in psutil.Process(c.pids[name]).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                pids.append(p.pid)
        except psutil.NoSuchProcess:  # reaped between the listing and the look
            pass
    return pids


# ------------------------------------------------------------------ the node's life (own clusters: run before the shared node exists,
# whose replacement workers would look like strays to the cluster fixture)


def test_thread_is_the_default_and_process_the_flag(cluster: Any) -> None:
    c = cluster(1, registry=REGISTRY, extra_args=["--workers", "1"])
    pids = c.pids

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            assert await spawn_remote(rt.cx(), "worker-1", "pid_default", 0).join() == pids["worker-1"]
            st = await rt.status("worker-1")
            assert st["isolation"] == "thread" and st["workers"] == 1  # the registry has process ones

    run(main())
    p = cluster(1, registry=REGISTRY, name_prefix="proc", extra_args=["--workers", "1",
                                                                        "--isolation", "process"])

    async def main2() -> None:
        async with Runtime(p.nodes) as rt:
            st = await rt.status("proc-1")
            got = await spawn_remote(rt.cx(), "proc-1", "pid_default", 0).join()
            assert st["isolation"] == "process" and got in st["worker_pids"]
            # async computations are unaffected: they run on the node's loop
            assert await spawn_remote(rt.cx(), "proc-1", "pid_async", 0).join() == st["pid"]

    run(main2())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_orphan_workers_when_the_node_dies(cluster: Any, sig: int) -> None:
    """Workers die with their node, even one blocked in time.sleep(3600)."""
    c = cluster(1, registry=REGISTRY, extra_args=ISO_ARGS + ["--grace", "0.5"])

    async def main() -> list[int]:
        async with Runtime(c.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "sleep_p", 3600, lease=1.0)
            st = await wait_busy(rt, "worker-1")
            assert sorted(st["worker_pids"]) == sorted(node_children(c))
            c.kill("worker-1", sig)
            if sig == signal.SIGTERM:  # a drain: the blocked task is killed and reported
                with pytest.raises(rsc.RemoteCancelled) as e:
                    await asyncio.wait_for(h.join(), 30)
                assert e.value.reason.kind is CancelKind.SHUTDOWN
            else:
                with pytest.raises(rsc.LeaseExpired):
                    await asyncio.wait_for(h.join(), 30)
            assert c.procs["worker-1"].wait(30) is not None
            return st["worker_pids"]

    workers = run(main())
    assert len(workers) == 2
    assert gone(workers) == [], f"worker processes outlived their node ({signal.Signals(sig).name})"


def test_killed_attempt_retried_runs_once_more_and_only_once(cluster: Any, tmp_path: Path) -> None:
    """A task whose node (and so its worker) is SIGKILLed mid-run is retried by
    the origin's policy on another node: it ran twice in all, the killed run
    never finished, and nothing runs it a third time."""
    c = cluster(2, registry=REGISTRY, extra_args=ISO_ARGS)
    marks = tmp_path / "marks"

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            req = {"path": str(marks), "token": "run", "seconds": 2.0}
            h = spawn_remote(rt.cx(), "worker-1", "mark_then_sleep_p", req, lease=1.0,
                             on_lease_expired=rsc.lease.retry(1, nodes=["worker-2"]))
            deadline = time.monotonic() + 20
            while not marks.exists():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            first_worker = int(marks.read_text().split()[1])
            c.kill("worker-1", signal.SIGKILL)
            assert await asyncio.wait_for(h.join(), 30) == "done"
            assert gone([first_worker]) == []
            await asyncio.sleep(1.0)  # time for a stray third run to show

    run(main())
    lines = marks.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["run", "run", "done"], lines
    assert len({ln.split()[1] for ln in lines[:2]}) == 2


def test_process_isolation_on_the_pure_twins(cluster: Any) -> None:
    """The same path with RSC_NO_EXTENSIONS=1 (node, executor and workers on
    the sources): a task, a crash, a cancel that kills."""
    c = cluster(1, registry=REGISTRY, env={"RSC_NO_EXTENSIONS": "1"},
                extra_args=["--workers", "1", "--cancel-grace", str(GRACE)])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            assert (await spawn_remote(rt.cx(), "worker-1", "square_p", 5).join())[0] == 25
            with pytest.raises(WorkerCrashed):
                await spawn_remote(rt.cx(), "worker-1", "crash_p", "segv").join()
            h = spawn_remote(rt.cx(), "worker-1", "sleep_p", 3600)
            await wait_busy(rt, "worker-1")
            h.abort()
            with pytest.raises(rsc.RemoteCancelled):
                await asyncio.wait_for(h.join(), 30)
            assert (await spawn_remote(rt.cx(), "worker-1", "square_p", 6).join())[0] == 36

    run(main())


# ------------------------------------------------------------------ jobs written behind a running one


def test_jobs_behind_a_blocked_one_are_taken_back(cluster: Any) -> None:
    """One worker, blocked in time.sleep: tasks written behind it are taken
    back when cancelled (Cancelled at once, the worker not killed), and when
    the worker is killed they run on its replacement (never Panicked)."""
    c = cluster(1, registry=REGISTRY, extra_args=["--workers", "1", "--cancel-grace", str(GRACE)])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            blocked = spawn_remote(cx, "worker-1", "sleep_p", 3600)
            await wait_busy(rt, "worker-1")
            behind = [spawn_remote(cx, "worker-1", "square_p", i) for i in range(3)]
            await asyncio.sleep(0.3)  # written to the worker's pipe behind the sleeper
            before = await rt.status("worker-1")
            behind[0].abort()
            with pytest.raises(rsc.RemoteCancelled):
                await asyncio.wait_for(behind[0].join(), 10)
            assert (await rt.status("worker-1"))["worker_kills"] == before["worker_kills"]
            blocked.abort()
            with pytest.raises(rsc.RemoteCancelled):
                await asyncio.wait_for(blocked.join(), 30)
            got = [(await asyncio.wait_for(h.join(), 30))[0] for h in behind[1:]]
            assert got == [1, 4]
            after = await rt.status("worker-1")
            assert after["worker_kills"] == before["worker_kills"] + 1
            assert after["worker_crashes"] == before["worker_crashes"]

    run(main())


# ------------------------------------------------------------------ cancel always wins


@pytest.mark.parametrize("computation", ["mark_then_sleep_p", "recv_p"])
def test_blocked_computation_cancelled_within_grace(shared: LocalCluster, computation: str,
                                                    tmp_path: Path) -> None:
    """time.sleep(3600) / a blocking socket.recv: the cancel is answered within
    grace + a few seconds of slack, Cancelled with the original reason, the
    worker is killed and replaced, and the node serves the next task.

    The cancel is sent once the computation has marked a file just before it
    blocks: a node counts a worker busy as soon as it hands it the task, and a
    cancel that reaches the worker before the task starts is answered without
    a kill (which this test once saw, under load)."""
    mark = tmp_path / "started"
    arg: Any = (str(mark) if computation == "recv_p"
                else {"path": str(mark), "token": "run", "seconds": 3600})

    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            before = await rt.status("worker-1")
            h = spawn_remote(rt.cx(), "worker-1", computation, arg)
            busy = await wait_busy(rt, "worker-1")
            deadline = time.monotonic() + 20
            while not mark.exists():
                assert time.monotonic() < deadline, "the computation never started"
                await asyncio.sleep(0.02)
            t0 = time.monotonic()
            h.abort(rsc.CancelReason(CancelKind.USER, "stop it"))
            with pytest.raises(rsc.RemoteCancelled) as e:
                await asyncio.wait_for(h.join(), 30)
            waited = time.monotonic() - t0
            assert e.value.reason.kind is CancelKind.USER and e.value.reason.message == "stop it"
            assert waited < GRACE + 3.0, f"cancel answered after {waited:.2f} s"
            assert (await spawn_remote(rt.cx(), "worker-1", "square_p", 9).join())[0] == 81
            after = await wait_pool_full(rt, "worker-1")
            assert after["worker_kills"] == before["worker_kills"] + 1, (before, busy, after)
            assert after["worker_restarts"] >= before["worker_restarts"] + 1
            killed = set(busy["worker_pids"]) - set(after["worker_pids"])
            assert len(killed) == 1 and gone(list(killed)) == []

    run(main())


def test_cooperative_cancel_keeps_the_worker(shared: LocalCluster) -> None:
    """A computation that checks cx.checkpoint() stops by itself: Cancelled,
    and its worker is not killed."""

    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            before = await rt.status("worker-1")
            h = spawn_remote(rt.cx(), "worker-1", "checkpoint_p", 60)
            await wait_busy(rt, "worker-1")
            h.abort()
            with pytest.raises(rsc.RemoteCancelled):
                await asyncio.wait_for(h.join(), 30)
            after = await rt.status("worker-1")
            assert after["worker_kills"] == before["worker_kills"]
            assert after["worker_pids"] == before["worker_pids"]

    run(main())


def test_region_deadline_on_a_blocked_computation(shared: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            budget = rsc.Budget(deadline_ns=rt.clock.now_ns() + 300_000_000)
            t0 = time.monotonic()
            async with rsc.region(rt.cx(), budget=budget) as r:
                h = spawn_remote(r.cx, "worker-1", "sleep_p", 3600)
                await h.join()
                raise AssertionError("not reached")
            assert r.cancel_reason.kind is CancelKind.DEADLINE
            assert time.monotonic() - t0 < 0.3 + GRACE + 5.0
            with pytest.raises(rsc.RemoteCancelled) as e:
                h.try_join()
            assert e.value.reason.kind is CancelKind.DEADLINE

    run(main())


# ------------------------------------------------------------------ crashes and limits


def test_crashes_are_outcomes_and_healthy_tasks_complete(shared: LocalCluster) -> None:
    """SIGSEGV, abort() and _exit(3) in computations: each task Panicked
    (WorkerCrashed naming the signal or status) while 100 healthy tasks on the
    same node all complete; the pool never holds more than its size."""

    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            before = await rt.status("worker-1")
            cx = rt.cx()
            crashes = [spawn_remote(cx, "worker-1", "crash_p", how) for how in ("segv", "abort", "exit")]
            healthy = [spawn_remote(cx, "worker-1", "square_p", i) for i in range(100)]
            most = 0
            while not all(h.is_finished() for h in healthy + crashes):
                most = max(most, len(node_children(shared)))
                await asyncio.sleep(0.01)
            assert [(await h.join())[0] for h in healthy] == [i * i for i in range(100)]
            got = []
            for h in crashes:
                with pytest.raises(WorkerCrashed) as e:
                    await h.join()
                got.append((e.value.signal, e.value.exit_status))
            assert got == [(signal.SIGSEGV, None), (signal.SIGABRT, None), (None, 3)]
            assert isinstance(e.value, rsc.RemotePanicked)
            assert most <= 2, f"the node had {most} worker processes at once (pool size 2)"
            after = await wait_pool_full(rt, "worker-1")
            assert after["worker_crashes"] == before["worker_crashes"] + 3
            assert after["worker_restarts"] >= before["worker_restarts"] + 3
            assert len(node_children(shared)) == 2

    run(main())


def test_memory_limit_is_a_typed_failure_and_spares_the_node(shared: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            before = await rt.status("worker-1")
            assert await spawn_remote(rt.cx(), "worker-1", "alloc_p", 8 << 20).join() == 8 << 20
            with pytest.raises(MemoryLimitExceeded) as e:
                await spawn_remote(rt.cx(), "worker-1", "alloc_p", 1 << 30).join()
            assert e.value.limit == 64 << 20 and isinstance(e.value, rsc.RemoteFailed)
            assert "raise memory_limit=" in str(e.value)
            after = await wait_pool_full(rt, "worker-1")
            assert after["worker_recycles"] == before["worker_recycles"] + 1  # a spoiled worker leaves
            assert after["rss_bytes"] - before["rss_bytes"] < 16 << 20

    run(main())


def test_time_limit_kills_the_worker(shared: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            assert await spawn_remote(rt.cx(), "worker-1", "limited_p", 0.01).join() == "in time"
            with pytest.raises(TimeLimitExceeded) as e:
                await asyncio.wait_for(spawn_remote(rt.cx(), "worker-1", "limited_p", 3600).join(), 30)
            assert e.value.limit_s == 1.0
            await wait_pool_full(rt, "worker-1")

    run(main())


def test_worker_recycled_after_max_tasks(shared: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            pids = [await spawn_remote(rt.cx(), "worker-1", "recycled_p", 0).join() for _ in range(9)]
            assert max(pids.count(p) for p in pids) <= 3  # recycled_p: max_tasks_per_worker=3
            assert len(set(pids)) >= 3
            await wait_pool_full(rt, "worker-1")

    run(main())


# ------------------------------------------------------------------ registration and start-up errors


def _fn(cx: Any, data: bytes) -> bytes:
    return data


async def _afn(cx: Any, data: bytes) -> bytes:
    return data


@pytest.mark.parametrize("kw, fix", [
    (dict(isolation="fork"), "isolation must be 'thread', 'process' or None"),
    (dict(isolation="thread", time_limit=1.0), "register it with isolation='process'"),
    (dict(time_limit=0), "time_limit must be seconds > 0"),
    (dict(memory_limit=1.5), "memory_limit must be bytes > 0"),
    (dict(memory_limit=1000), "at least 1 MiB"),
    (dict(max_tasks_per_worker=0), "max_tasks_per_worker must be an int >= 1"),
    (dict(isolation="process", inline=True), "cannot also run in a worker process"),
])
def test_registration_errors_say_what_to_fix(kw: dict, fix: str) -> None:
    with pytest.raises(InvalidArgument, match=fix):
        Registry().register("f", _fn, **kw)


def test_async_computations_are_not_process_isolated() -> None:
    with pytest.raises(InvalidArgument, match="process isolation is for plain functions"):
        Registry().register("f", _afn, isolation="process")
    with pytest.raises(InvalidArgument, match="drop time_limit="):
        Registry().register("f", _afn, time_limit=1.0)
    assert Registry().register("f", _fn, memory_limit=1 << 20).isolation == "process"


def test_registry_spec_is_known_or_refused() -> None:
    from rsc.node.server import NodeServer
    from tests.registries_iso import iso

    assert iso.import_spec() == REGISTRY
    local = Registry()
    local.register("f", _fn, isolation="process")
    with pytest.raises(InvalidArgument, match="import the registry by name"):
        NodeServer("n", "unix:/tmp/rsc-never.sock", local)


def test_worker_pool_that_cannot_load_its_registry_says_why() -> None:
    from rsc.node.workers import WorkerPool, WorkerStartError

    async def main() -> None:
        pool = WorkerPool("tests.registries:not_a_registry", size=1, finish=lambda *a: None)
        with pytest.raises(WorkerStartError, match="not an rsc Registry"):
            await pool.start(timeout_s=30)
        assert pool.pids == []

    run(main())


def test_node_flags_are_checked() -> None:
    import argparse

    from rsc.node.main import parse_bytes
    from rsc.node.workers import check_pool_options

    assert parse_bytes("512MiB") == 512 << 20 and parse_bytes("2G") == 2 << 30
    assert parse_bytes("1048576") == 1 << 20
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_bytes("lots")
    with pytest.raises(InvalidArgument, match="--workers must be an int >= 1"):
        check_pool_options(0, None, None, None)
    with pytest.raises(InvalidArgument, match="--time-limit must be seconds > 0"):
        check_pool_options(None, -1.0, None, None)


def test_failure_texts_parse_back() -> None:
    from rsc.errors import failed_error, panicked_error

    e = failed_error(TimeLimitExceeded.text("f", 2.5))
    assert isinstance(e, TimeLimitExceeded) and e.limit_s == 2.5
    e2 = failed_error(MemoryLimitExceeded.text("f", 1 << 20, "MemoryError"))
    assert isinstance(e2, MemoryLimitExceeded) and e2.limit == 1 << 20
    c = panicked_error(WorkerCrashed.text("f", 12, -9))
    assert isinstance(c, WorkerCrashed) and c.signal == 9 and "OOM" in c.message
    assert type(panicked_error("KeyboardInterrupt: ")) is rsc.RemotePanicked


def test_rsc_status_counts_worker_restarts(shared: LocalCluster, capsys: Any) -> None:
    import argparse

    from rsc import status

    async def main() -> dict:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            with pytest.raises(WorkerCrashed):
                await spawn_remote(rt.cx(), "worker-1", "crash_p", "exit").join()
            return await wait_pool_full(rt, "worker-1")

    st = run(main())
    assert status.run(argparse.Namespace(cluster=shared.cluster_file, json=False, key_file=None)) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    cols = dict(zip(header.replace("RSS MiB", "RSS_MiB").split(), row.split()))
    assert cols["WORKERS"] == "2/2"
    assert int(cols["RESTARTS"]) >= st["worker_restarts"] >= 1


def test_short_tasks_do_not_wait_behind_a_long_one(shared: LocalCluster) -> None:
    """Two workers, one blocked for an hour: a burst of short tasks all
    complete on the other (those written behind the sleeper are taken back)."""

    async def main() -> None:
        async with Runtime(shared.nodes) as rt:
            await wait_pool_full(rt, "worker-1")
            cx = rt.cx()
            blocked = spawn_remote(cx, "worker-1", "sleep_p", 3600)
            await wait_busy(rt, "worker-1")
            burst = [spawn_remote(cx, "worker-1", "square_p", i) for i in range(40)]
            got = await asyncio.wait_for(asyncio.gather(*(h.join() for h in burst)), 30)
            assert [g[0] for g in got] == [i * i for i in range(40)]
            assert not blocked.is_finished()
            blocked.abort()
            with pytest.raises(rsc.RemoteCancelled):
                await asyncio.wait_for(blocked.join(), 30)
            await wait_pool_full(rt, "worker-1")

    run(main())


def test_rsc_launch_passes_isolation_flags_to_its_nodes() -> None:
    import argparse

    from rsc.launch import _node_isolation_args, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--registry", REGISTRY, "--isolation", "process", "--workers", "3",
                         "--memory-limit", "256MiB"])
    assert _node_isolation_args(args) == ["--isolation", "process", "--workers", "3",
                                          "--memory-limit", "256MiB"]
    assert _node_isolation_args(p.parse_args(["--registry", REGISTRY])) == []
