"""A user's service type-checks against rsc's public API: ``mypy --strict``
sees the real classes behind the lazily resolved ``rsc.*`` names (editable
install included), and ``@registry.computation`` keeps the function's type."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import rsc
from tests.cluster import REPO_ROOT

SERVICE = os.path.join(REPO_ROOT, "tests", "typecheck", "user_service.py")


def _static_names() -> set[str]:
    with open(os.path.join(REPO_ROOT, "rsc", "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return {a.asname or a.name for imp in node.body if isinstance(imp, ast.ImportFrom)
                    for a in imp.names if a.asname}
    raise AssertionError("no TYPE_CHECKING block in rsc/__init__.py")


def test_the_names_type_checkers_see_are_the_names_rsc_exports() -> None:
    lazy = {name for names in rsc._EXPORTS.values() for name in names}
    assert _static_names() == lazy
    assert lazy <= set(rsc.__all__)


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

