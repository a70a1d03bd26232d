"""Every shipped lab scenario (examples/lab/) over a few hundred seeds: every
oracle holds on every seed, and a seed replays to the same digest.

A longer exploration of the same scenarios is ``make lab``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rsc.lab import load_scenario, run_seed

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "lab"

# (scenario, seeds): sized so that all twelve take about 30 s of CPU together
# on the 2-core development machine.
SEEDS = {
    "happy_path": 200,
    "lossy_retries": 300,
    "duplicates": 300,
    "partition_heal": 300,
    "node_crash_retry": 200,
    "origin_crash": 200,
    "region_cancel": 200,
    "cancel_race": 300,
    "saga_partition": 300,
    "chaos": 200,
    "durable_restart": 200,
    "nested_tree": 200,
}


def _nothing_reran_and_records_came_back(report: Any) -> None:
    assert report.figures["reexecuted_after_crash"] == 0, report.format()
    assert report.figures["records_restored"] > 0, report.format()


def _every_level_spawned(report: Any) -> None:
    assert report.figures["spawns"] == 4 + 8 + 16, report.format()


# what a scenario must show on every seed beyond the oracles
CHECKS = {"durable_restart": _nothing_reran_and_records_came_back,
          "nested_tree": _every_level_spawned}


def test_every_shipped_scenario_is_listed() -> None:
    shipped = {p.stem for p in SCENARIOS.glob("*.py") if p.stem != "lab_registry"}
    assert shipped == set(SEEDS)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_a_shipped_scenario_holds_every_oracle_over_its_seeds(name: str) -> None:
    scenario = load_scenario(str(SCENARIOS / f"{name}.py"))
    failures = []
    spawns = faults = 0
    for seed in range(SEEDS[name]):
        report = run_seed(scenario, seed)
        if name in CHECKS and report.ok:
            CHECKS[name](report)
        spawns += report.figures["spawns"]
        faults += report.figures["faults"]
        if not report.ok:
            failures.append(report.format())
            break
    assert not failures, failures[0]
    assert spawns >= SEEDS[name]  # every seed really spawned work
    if name in ("partition_heal", "node_crash_retry", "origin_crash", "saga_partition", "chaos",
                "durable_restart", "nested_tree"):
        assert faults >= SEEDS[name]  # and really suffered its faults


@pytest.mark.parametrize("name", ["lossy_retries", "cancel_race", "node_crash_retry", "region_cancel",
                                  "origin_crash", "saga_partition", "chaos", "durable_restart",
                                  "nested_tree"])
def test_a_seed_replays_to_the_same_digest_and_another_seed_differs(name: str) -> None:
    scenario = load_scenario(str(SCENARIOS / f"{name}.py"))
    a = run_seed(scenario, 7)
    others = [run_seed(scenario, seed).digest for seed in (8, 9)]  # the process moves on...
    ballast = [object() for _ in range(10_000)]  # ...and its objects land elsewhere
    b = run_seed(scenario, 7)
    assert a.digest == b.digest and a.figures == b.figures and ballast
    assert a.digest not in others
