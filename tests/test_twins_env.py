"""RSC_NO_EXTENSIONS=1 selects the pure twins everywhere, and a node plus an
origin on the twins interoperate with nodes on the compiled core."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import rsc._core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ORIGIN = r"""
import asyncio, sys
import rsc._core
from rsc import Runtime, spawn_remote
assert rsc._core.envelope.__name__.endswith("_py"), rsc._core.envelope
assert rsc._core.idemtable.__name__.endswith("_py")
assert rsc._core.leaseheap.__name__.endswith("_py")
import rsc._engine.origin
assert rsc._engine.origin.__file__.endswith(".py"), rsc._engine.origin.__file__
nodes = dict(arg.split("=", 1) for arg in sys.argv[1:])
async def main():
    async with Runtime(nodes) as rt:
        cx = rt.cx()
        got = await asyncio.gather(*(spawn_remote(cx, n, "square", i).join()
                                     for i, n in enumerate(sorted(nodes) * 50)))
        assert got == [i * i for i in range(len(got))], got
        print("ok", len(got))
asyncio.run(main())
"""


def test_env_var_selects_twins_in_a_fresh_interpreter() -> None:
    code = "import rsc._core as c; print(c.USING_EXTENSIONS, c.envelope.__name__, c.idemtable.__name__, c.leaseheap.__name__)"
    env = dict(os.environ, RSC_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "rsc._core._envelope_py", "rsc._core._idemtable_py",
                                  "rsc._core._leaseheap_py"]


def test_default_is_compiled() -> None:
    assert rsc._core.USING_EXTENSIONS
    assert rsc._core.envelope.__name__ == "rsc._core._envelope"


def test_twin_node_and_twin_origin_interoperate_with_compiled_node(cluster: Any) -> None:
    twin = cluster(1, env={"RSC_NO_EXTENSIONS": "1"}, name_prefix="twin")
    compiled = cluster(1, name_prefix="fast")
    nodes = {**twin.nodes, **compiled.nodes}
    env = dict(os.environ, RSC_NO_EXTENSIONS="1", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", ORIGIN, *(f"{k}={v}" for k, v in nodes.items())],
                         env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "100"]


@pytest.mark.parametrize("name", rsc._core.NAMES)
def test_load_refuses_unknown_and_names_the_fix(name: str) -> None:
    assert rsc._core.load(name, compiled=False).__name__ == f"rsc._core._{name}_py"
    with pytest.raises(ValueError):
        rsc._core.load("nope")


PURE_MODE_PACKAGES = ("rsc", "rsc._engine", "rsc.node", "rsc.transport")


def _pure_mode_modules() -> list[str]:
    import importlib

    return [f"{p}.{n}" for p in PURE_MODE_PACKAGES for n in importlib.import_module(p).COMPILED]


def test_every_module_with_a_pxd_is_bound_by_its_package() -> None:
    """setup.py compiles every rsc/[<package>/]<name>.py that has a .pxd beside
    it; its package must bind it (else a stale build could run unchecked)."""
    found = sorted(str(p.relative_to(ROOT).with_suffix("")).replace(os.sep, ".")
                   for p in Path(ROOT, "rsc").rglob("*.pxd") if p.parent.name != "_core")
    assert found == sorted(_pure_mode_modules())


def test_pure_mode_modules_are_compiled_by_default_and_pure_under_the_env_var() -> None:
    import importlib

    names = _pure_mode_modules()
    for name in names:
        mod = importlib.import_module(name)
        assert mod.__file__ is not None and not mod.__file__.endswith(".py"), mod.__file__
    code = f"import importlib; print(*(importlib.import_module(n).__file__ for n in {names!r}))"
    env = dict(os.environ, RSC_NO_EXTENSIONS="1", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert [f.endswith(".py") for f in out.stdout.split()] == [True] * len(names), out.stdout


def test_engine_and_executor_tests_pass_on_the_pure_sources() -> None:
    """The same sources run interpreted: the engine and executor tests again, in
    a fresh interpreter with RSC_NO_EXTENSIONS=1 (the rest of the suite runs
    compiled; test_twin_node_and_twin_origin_... runs a pure node server)."""
    env = dict(os.environ, RSC_NO_EXTENSIONS="1", PYTHONPATH=ROOT)
    files = ["tests/test_engine_sansio.py", "tests/test_engine_pair.py", "tests/test_trace.py",
             "tests/test_states.py", "tests/test_executor.py", "tests/test_logical.py",
             "tests/test_origin_transitions.py", "tests/test_ack_by_result.py",
             "tests/test_segments_engines.py",
             "tests/test_fingerprint_plain.py::test_a_drawn_key_spawn_does_not_walk_its_segmented_input",
             # the engine-level journal, expiry and restart-detection tests
             "tests/test_journal.py::test_records_outcomes_and_tombstones_replay",
             "tests/test_journal.py::test_compaction_keeps_the_live_state_only",
             "tests/test_idem_eviction.py::test_engine_records_expiry_is_a_deadline_of_its_own",
             "tests/test_idem_eviction.py::test_engine_evicts_a_pile_up_in_bounded_steps",
             "tests/test_retry_routing.py::test_engine_reports_tasks_on_a_new_instance_instead_of_resending"]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                         env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout, out.stdout[-2000:]


def test_a_missing_or_stale_compiled_module_is_an_error_that_says_what_to_do(tmp_path: Any) -> None:
    from rsc._compiled import check_compiled

    source, built = tmp_path / "node.py", tmp_path / "node.so"
    source.write_text("")
    with pytest.raises(ImportError, match="not built.*RSC_NO_EXTENSIONS=1"):
        check_compiled("rsc._engine.node", str(source), None)
    built.write_text("")
    os.utime(built, (1000, 1000))
    os.utime(source, (1000.5, 1000.5))
    check_compiled("rsc._engine.node", str(source), str(built))  # within the install slack
    os.utime(source, (2000, 2000))
    with pytest.raises(ImportError, match="compiled before .* changed.*Rebuild"):
        check_compiled("rsc._engine.node", str(source), str(built))
