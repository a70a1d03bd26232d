"""Helpers the end-to-end benchmark modules share: recording a figure, running a
coroutine as a benchmark target, percentiles, and pinning processes to cores."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import Any

import psutil


def record(benchmark: Any, figure: str, ops: int, **extra: Any) -> None:
    """Tag the benchmark with its figure key and per-operation figures (median round)."""
    # the machine's 1-minute load average when the figure was taken (it is shared)
    info: dict[str, Any] = dict(figure=figure, ops=ops, loadavg_1m=round(os.getloadavg()[0], 2), **extra)
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        info.update(us_per_op=round(median / ops * 1e6, 2), ops_per_s=round(ops / median, 1))
    benchmark.extra_info.update(info)


def run_on(loop: asyncio.AbstractEventLoop, make: Callable[[], Any]) -> Callable[[], Any]:
    """A sync benchmark target that runs the coroutine ``make()`` to completion on ``loop``."""
    return lambda: loop.run_until_complete(make())


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ascending values, nearest rank."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def latency_figures(seconds: Iterable[float]) -> dict[str, float]:
    """p50, p99, p99.9 and the maximum, in microseconds."""
    s = sorted(seconds)
    return {"p50_us": round(percentile(s, 0.50) * 1e6, 1), "p99_us": round(percentile(s, 0.99) * 1e6, 1),
            "p999_us": round(percentile(s, 0.999) * 1e6, 1), "max_us": round(s[-1] * 1e6, 1) if s else 0.0,
            "samples": len(s)}


def pin(pids: Iterable[int], cpus: set[int]) -> None:
    """Every thread of each process in ``pids`` (0: this one) may run on ``cpus`` only.

    ``sched_setaffinity`` binds one thread; threads started later inherit the
    affinity of the thread that starts them, so every existing one is set."""
    for pid in pids:
        proc = psutil.Process(pid or os.getpid())
        for t in proc.threads():
            try:
                os.sched_setaffinity(t.id, cpus)
            except ProcessLookupError:  # the thread ended meanwhile
                pass


def runqueue_wait_ns(pid: int) -> int:
    """How long the threads of process ``pid`` have waited, runnable, for a
    CPU (Linux's /proc/PID/task/*/schedstat, second field; 0 elsewhere)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):  # the thread ended meanwhile
            pass
    return total


def write_past_capture(request: Any, lines: list[str]) -> None:
    """Write ``lines`` to pytest's terminal past output capture (after a
    module's benchmarks, from a module fixture: ``request``), preceded by an
    empty line; nothing when there are none or no terminal reporter."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not lines:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
