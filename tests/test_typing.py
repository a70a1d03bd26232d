"""A user's service type-checks against rsc's public API: ``mypy --strict``
and pyright (strict) see the real classes behind the lazily resolved ``rsc.*``
names (editable install included), and ``@registry.computation`` keeps the
function's type. rsc's own code passes mypy with the configuration in
pyproject.toml."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rsc
from tests.cluster import REPO_ROOT

SERVICE = os.path.join(REPO_ROOT, "tests", "typecheck", "user_service.py")


def _static_names(submodules: bool = False) -> set[str]:
    """The names rsc/__init__.py re-exports to type checkers (``import X as X``):
    its classes and functions, or (``submodules``) its submodules."""
    with open(os.path.join(REPO_ROOT, "rsc", "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return {a.asname for imp in node.body if isinstance(imp, ast.ImportFrom)
                    and (imp.module == "rsc") == submodules for a in imp.names if a.asname}
    raise AssertionError("no TYPE_CHECKING block in rsc/__init__.py")


def test_the_names_type_checkers_see_are_the_names_rsc_exports() -> None:
    lazy = {name for names in rsc._EXPORTS.values() for name in names}
    assert _static_names() == lazy
    assert lazy <= set(rsc.__all__)
    # pyright reports a submodule reached as rsc.lease unless it is re-exported; the
    # launcher is not (it imports the node, which imports rsc: a circle)
    assert _static_names(submodules=True) == set(rsc._SUBMODULES) - {"launch"}


def test_mypy_strict_sees_the_real_types_of_a_users_service(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                          "--cache-dir", str(tmp_path / "cache"), SERVICE],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr
    revealed = [line.split("Revealed type is ", 1)[1] for line in lines if "Revealed type is" in line]
    assert len(revealed) == 3 and not any(r == '"Any"' for r in revealed), lines
    assert "-> rsc.handle.RemoteHandle" in revealed[0]  # spawn_remote
    assert revealed[1] == '"def (cx: rsc.cx.Cx, x: int) -> int"'  # the decorator kept it
    assert "-> rsc.types.Budget" in revealed[2]



def test_rsc_passes_mypy_with_its_configuration(tmp_path: Path) -> None:
    """``mypy`` run as a developer runs it, from the checkout, with the
    ``[tool.mypy]`` settings of pyproject.toml (files = rsc), on a fresh cache."""
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout, out.stdout


def test_pyright_strict_sees_the_real_types_of_a_users_service(tmp_path: Path) -> None:
    if importlib.util.find_spec("basedpyright") is None:  # installed by the test extras
        pytest.skip("basedpyright is not installed (pip install -e '.[test]')")
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({"typeCheckingMode": "strict"}))
    out = subprocess.run([sys.executable, "-m", "basedpyright", "--outputjson",
                          "--project", str(tmp_path / "pyrightconfig.json"),
                          "--pythonpath", sys.executable, SERVICE],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout)
    problems = [d for d in report["generalDiagnostics"] if d["severity"] != "information"]
    assert problems == [] and out.returncode == 0, json.dumps(problems, indent=1) + out.stderr
    revealed = [d["message"] for d in report["generalDiagnostics"] if d["severity"] == "information"]
    assert len(revealed) == 3 and not any("Unknown" in r or '"Any"' in r for r in revealed), revealed
    assert "-> RemoteHandle" in revealed[0]  # spawn_remote
    assert revealed[1] == 'Type of "square" is "(cx: Cx, x: int) -> int"'  # the decorator kept it
    assert revealed[2] == 'Type of "rsc.Budget" is "type[Budget]"'


def test_mypy_strict_sees_the_fields_of_wire_messages(tmp_path: Path) -> None:
    """The message classes built from the schema are declared with their
    fields' types: a field reads as its type, a constructor checks its arguments."""
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                          "--cache-dir", str(tmp_path / "cache"),
                          os.path.join(REPO_ROOT, "tests", "typecheck", "wire_messages.py")],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    revealed = [line.split("Revealed type is ", 1)[1] for line in lines if "Revealed type is" in line]
    assert revealed == ['"int"', '"tuple[int | None, int | None, int | None, int] | None"',
                        '"bytes | None"'], lines
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and 'Argument 3 to "ResultDelivery" has incompatible type "str"' in errors[0], lines
