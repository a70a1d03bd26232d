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


def test_the_lab_example_passes_through_the_plugins_rsc_lab_fixture() -> None:
    out = _pytest("examples/test_lab_example.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout


def test_rsc_lab_seeds_on_the_command_line_and_a_missing_registry(tmp_path) -> None:
    test = tmp_path / "test_lab_seeds.py"
    test.write_text(
        "import pytest\n"
        "@pytest.mark.rsc_lab(registry='examples.demo_registry:registry', seeds=5)\n"
        "def test_it(rsc_lab):\n"
        "    async def scenario(lab):\n"
        "        await lab.start_node('n1', rsc_lab.registry)\n"
        "    assert len(rsc_lab(scenario)) == 7\n"
        "def test_no_registry(rsc_lab):\n"
        "    rsc_lab.registry\n")
    out = _pytest(str(test), "--rsc-lab-seeds=7", "--rootdir", str(tmp_path))
    assert "1 failed, 1 passed" in out.stdout, out.stdout + out.stderr
    assert "rsc_lab needs a registry" in out.stdout
