"""The oracles can fail: a deliberately broken engine (tests/lab_variants.py)
is caught within the seeds the suite runs, and the violation names the
oracle, the seed, the virtual time and the trace position."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsc.lab import load_scenario, run_seed
from tests.lab_variants import NeverCancelsOrphans, RunsDuplicates, TwoOutcomes

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "lab"


@pytest.mark.parametrize(("scenario", "variant", "oracles"), [
    ("duplicates", dict(node_engine=RunsDuplicates), {"at_most_once"}),
    ("lossy_retries", dict(node_engine=RunsDuplicates), {"at_most_once"}),
    ("origin_crash", dict(node_engine=NeverCancelsOrphans), {"no_orphans", "closed_region"}),
    ("happy_path", dict(origin_engine=TwoOutcomes), {"exactly_one_outcome"}),
    ("cancel_race", dict(origin_engine=TwoOutcomes), {"exactly_one_outcome"}),
])
def test_a_broken_engine_is_caught_within_the_suites_seeds(scenario: str, variant: dict,
                                                           oracles: set[str]) -> None:
    s = load_scenario(str(SCENARIOS / f"{scenario}.py"))
    for seed in range(50):
        report = run_seed(s, seed, **variant)
        if not report.ok:
            break
    else:
        pytest.fail(f"{variant} ran 50 seeds of {scenario} without a violation")
    v = report.violations[0]
    assert {x.oracle for x in report.violations} & oracles, report.format()
    assert v.seed == seed and v.t_ns > 0 and v.position > 0
    assert f"seed {seed}" in str(v) and v.oracle in str(v)
    # the same seed replays the same violation
    again = run_seed(s, seed, **variant)
    assert again.digest == report.digest and again.violations == report.violations


def test_orphans_of_a_crashed_origin_are_named_as_such() -> None:
    s = load_scenario(str(SCENARIOS / "origin_crash.py"))
    found = set()
    for seed in range(20):
        found |= {v.oracle for v in run_seed(s, seed, node_engine=NeverCancelsOrphans).violations}
        if "no_orphans" in found:
            break
    assert "no_orphans" in found, found
