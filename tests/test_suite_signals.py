"""The suite's SIGINT tests hold however the suite is started.

A shell without job control (a CI script's ``make test &``, ``nohup``) starts
a background command with SIGINT ignored, and every process it starts inherits
that. ``rsc status --watch`` ends on Ctrl-C; its test sends SIGINT and waits.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.cluster import REPO_ROOT


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_tests_pass_when_the_suite_starts_with_sigint_ignored() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_status.py",
         "-k", "watch_json_prints_one_object_per_refresh"],
        cwd=REPO_ROOT, preexec_fn=_ignore_sigint, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout, out.stdout[-2000:]
