"""The example programs of examples/ (listed in docs/guide/examples.md) run as a
user runs them: each in a fresh interpreter from the repository's root, with
its own real local cluster, and prints what the guide says it shows. Every
example program is run by some test of the suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.cluster import REPO_ROOT

EXAMPLES = Path(REPO_ROOT) / "examples"
TESTS = Path(REPO_ROOT) / "tests"


def run_example(*argv: str, timeout: float = 90.0) -> list[str]:
    """Run ``argv`` from the repository's root; its stdout lines. Fails on a
    non-zero exit, and if it left a process of its own behind."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, text=True, capture_output=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left, f"{argv[0]} left processes behind: {sorted(left)}"
    return out.stdout.splitlines()


def test_fan_out() -> None:
    lines = run_example("examples/fan_out.py")
    assert lines[0] == f"sum of 300 squares over 3 nodes: {sum(i * i for i in range(300))}"
    assert lines[1] == ("30 tasks of 0.2 s side by side, per node "
                        "{'worker-1': 10, 'worker-2': 10, 'worker-3': 10}")
    assert re.fullmatch(r"  they took \d+\.\d s together \(one after another: 6 s\)", lines[2])
    assert lines[3] == ("one task failed: remote task failed: TypeError: can't multiply sequence "
                        "by non-int of type 'str'")
    assert lines[4] == "its siblings ended Cancelled"


def test_cancel_on_disconnect() -> None:
    lines = run_example("examples/cancel_on_disconnect.py")
    assert lines[:3] == [
        "client 1 got an answer",
        "server: answered a 0.05 s job",
        "client 2 hung up after 0.3 s of a 30 s job",
    ]
    assert re.fullmatch(r"server: client went away: the node answered cancelled \(parent_cancelled: "
                        r"region-\d+ cancelled: user: client disconnected\)", lines[3])
    assert re.fullmatch(r"the node stopped the work \d+\.\d\d s after the hang-up", lines[4])


def test_failover_after_kill_9() -> None:
    assert run_example("examples/failover.py") == [
        "worker-1 killed with SIGKILL while it ran the task",
        "answer 49 from worker-2",
        "attempts: worker-1, worker-2",
    ]


def test_three_level_remote_tree() -> None:
    lines = run_example("examples/remote_tree.py")
    assert lines[0] == "a tree of 4 leaves, by node:"
    tree = lines[1:8]
    assert tree[0] == "  worker-1"
    levels = [(len(line) - len(line.lstrip())) // 2 for line in tree]
    assert levels == [1, 2, 3, 3, 2, 3, 3]
    # each child runs on a node other than its parent's
    parents: list[str] = []
    for level, line in zip(levels, tree):
        del parents[level - 1:]
        if parents:
            assert line.strip() != parents[-1], tree
        parents.append(line.strip())
    assert lines[8:] == ["cancelled the root after 0.5 s: it ended Cancelled, after every descendant",
                         "tasks still running on the nodes: 0"]


def test_the_guide_s_lab_scenario_runs_as_documented() -> None:
    command = "rsc lab run examples/lab/node_crash_retry.py --seed 1"
    guide = (Path(REPO_ROOT) / "docs" / "guide" / "concepts.md").read_text()
    assert command in guide
    lines = run_example("-m", "rsc", *command.split()[1:])
    assert lines[0] == "seed 1: all oracles hold"
    assert "  spawns: 20" in lines


def test_every_example_program_is_run_by_the_suite() -> None:
    """A program in examples/ (a file with a ``__main__`` block, or a pytest
    file) that no test runs would rot unseen."""
    tests = "\n".join(p.read_text() for p in TESTS.glob("test_*.py"))
    programs = [p for p in sorted(EXAMPLES.glob("*.py"))
                if "__main__" in p.read_text() or p.name.startswith("test_")]
    assert len(programs) >= 7
    unrun = [p.name for p in programs if f"examples/{p.name}" not in tests]
    assert not unrun, f"no test runs {unrun}"


@pytest.mark.parametrize("program", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_the_guide_lists_every_example(program: str) -> None:
    guide = (Path(REPO_ROOT) / "docs" / "guide" / "examples.md").read_text()
    assert f"examples/{program}" in guide


def test_the_guide_quotes_the_examples_as_they_are() -> None:
    """The code the examples page shows is the examples' own (no drift)."""
    guide = (Path(REPO_ROOT) / "docs" / "guide" / "examples.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    sources = {p: p.read_text() for p in EXAMPLES.glob("*.py")}
    assert len(blocks) >= 2
    for block in blocks:
        lines = [line.split("#")[0].strip() for line in block.splitlines()]
        lines = [line for line in lines if line and line != "..."]
        home = [p.name for p, src in sources.items() if all(line in src for line in lines)]
        assert home, f"no example holds every line of:\n{block}"
