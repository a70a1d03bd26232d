"""rsc's pytest plugin (rsc.testing), as a project using rsc would meet it: the
example test file run by a fresh pytest through the installed entry point."""

from __future__ import annotations

import subprocess
import sys

import psutil

from tests.cluster import REPO_ROOT


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)


def test_the_plugin_example_passes_and_leaves_no_node_behind() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = _pytest("examples/test_square_example.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before


def test_a_missing_registry_is_a_clear_usage_error(tmp_path) -> None:
    test = tmp_path / "test_no_registry.py"
    test.write_text("def test_it(rsc_cluster):\n    pass\n")
    out = _pytest(str(test), "--rootdir", str(tmp_path))
    assert out.returncode != 0
    assert "rsc_cluster needs a registry" in out.stdout + out.stderr
