"""What the durable idempotency journal (``rsc node --state-dir``) costs.

``e2e-journal``: one node, the same rounds with and without a journal:

``rsc.journal_off.one`` / ``rsc.journal_on.one``
    200 ``spawn_remote(noop).join()`` a round, one in flight: every task pays
    its own sync (admission and outcome land in the same loop turn, so one
    ``fdatasync`` per task at best).
``rsc.journal_off.bulk`` / ``rsc.journal_on.bulk``
    5,000 no-ops spawned at once, then joined: the syncs are shared by every
    task admitted or finished in one loop turn.

The state directory is made under ``RSC_BENCH_STATE_DIR`` if set (to measure a
real disk), else under the system's temporary directory (often tmpfs, where
an fsync costs little: say which when quoting figures).
Run: ``python -m pytest bench/bench_journal.py -q -p no:cacheprovider --benchmark-only``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from bench.bench_e2e import _join_all
from bench.conftest import READY_TIMEOUT_S, REPO_ROOT, open_runtime
from bench.figures import record, run_on
from rsc import Runtime, spawn_remote
from rsc.launch import LocalCluster

ONE_N = 200
BULK_N = 5_000


@pytest.fixture(scope="module", autouse=True)
def _stop_everything_started_here(no_strays: None) -> Iterator[None]:
    yield


@pytest.fixture(scope="module", params=["off", "on"])
def journal_rt(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Iterator[tuple[str, Runtime]]:
    """A one-node cluster, with (``on``) or without a journal, and a warmed Runtime."""
    base = tempfile.mkdtemp(prefix="rsc-journal-bench-", dir=os.environ.get("RSC_BENCH_STATE_DIR"))
    state = os.path.join(base, "state") if request.param == "on" else None
    cluster = LocalCluster(1, "bench.registry:registry", cwd=REPO_ROOT, capacity=200_000,
                           ready_timeout=READY_TIMEOUT_S, state_dir=state)
    cluster.start()
    try:
        rt = loop.run_until_complete(open_runtime(cluster.nodes))
        try:
            yield request.param, rt
        finally:
            loop.run_until_complete(rt.aclose())
    finally:
        left = cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
        if left:
            raise RuntimeError(f"rsc nodes still alive after stop (SIGKILLed): {left}")


def test_journal_one_in_flight(benchmark: Any, loop: asyncio.AbstractEventLoop,
                               journal_rt: tuple[str, Runtime]) -> None:
    mode, rt = journal_rt
    benchmark.group = "e2e-journal"
    cx = rt.cx()

    async def one_at_a_time() -> None:
        for _ in range(ONE_N):
            await spawn_remote(cx, "worker-1", "noop", b"").join()

    benchmark.pedantic(run_on(loop, one_at_a_time), rounds=10, warmup_rounds=1)
    record(benchmark, f"rsc.journal_{mode}.one", ONE_N)


def test_journal_bulk(benchmark: Any, loop: asyncio.AbstractEventLoop,
                      journal_rt: tuple[str, Runtime]) -> None:
    mode, rt = journal_rt
    benchmark.group = "e2e-journal"
    cx = rt.cx()

    async def spawn_then_join() -> None:
        await _join_all([spawn_remote(cx, "worker-1", "noop", b"") for _ in range(BULK_N)])

    benchmark.pedantic(run_on(loop, spawn_then_join), rounds=5, warmup_rounds=1)
    record(benchmark, f"rsc.journal_{mode}.bulk", BULK_N)
