"""pyflakes-level lint (ruff's F rules) over everything the repository ships
and runs: unused imports and names, undefined names, shadowed loop variables,
f-strings without placeholders. A finding fails the suite with ruff's report."""

from __future__ import annotations

import subprocess
import sys

from tests.cluster import REPO_ROOT


def test_ruff_finds_nothing() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F",
                           "rsc", "tests", "bench", "examples", "scripts"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
