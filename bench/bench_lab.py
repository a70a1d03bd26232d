"""The lab's speed: seeds a minute of bench/lab_scenario.py (4 nodes, one
origin, 200 tasks, 3 faults a seed drawn from the seed), on the compiled
build. A report (``bench/report.py``, target >= 1,000 seeds a minute), never
a timed assertion.

Run: ``python -m pytest bench/bench_lab.py -q -p no:cacheprovider --benchmark-only
--benchmark-autosave`` then ``python bench/report.py``.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import pytest

from rsc.lab import load_scenario, run_seed

SCENARIO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lab_scenario.py")
SEEDS_PER_ROUND = 50


@pytest.mark.benchmark(group="lab")
def test_lab_seeds_per_minute(benchmark: Any) -> None:
    scenario = load_scenario(SCENARIO)
    start = iter(range(0, 10**6, SEEDS_PER_ROUND))
    reports: list[Any] = []
    cpu_s: list[float] = []

    def one_round() -> None:
        cpu = time.process_time()
        first = next(start)
        for seed in range(first, first + SEEDS_PER_ROUND):
            report = run_seed(scenario, seed)
            assert report.ok, report.format()
            reports.append(report)
        cpu_s.append(time.process_time() - cpu)

    benchmark.pedantic(one_round, rounds=5, warmup_rounds=1)
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update(
        figure="lab.seeds", seeds_per_min=SEEDS_PER_ROUND / median_s * 60,
        # this process's own CPU time: what the rate would be on an idle core
        # (the wall-clock rate drops when other work shares the 2 cores)
        cpu_seeds_per_min=SEEDS_PER_ROUND / statistics.median(cpu_s) * 60,
        spawns_per_seed=statistics.mean(r.figures["spawns"] for r in reports),
        faults_per_seed=statistics.mean(r.figures["faults"] for r in reports),
        virtual_s_per_seed=statistics.mean(r.figures["virtual_s"] for r in reports))
