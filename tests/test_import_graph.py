"""rsc's modules import each other without a circle.

The graph counts every import statement of every module under rsc/: module
level, inside functions (a deferred import still ties the two modules), and
under ``if TYPE_CHECKING:`` (a circle a type checker must untangle is still a
circle for a reader). A module that needs only the shape of something from a
module above it names that shape as a Protocol (``rsc.cx.CapRuntime``,
``rsc.errors.CancelReasonLike``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import REPO_ROOT

RSC = Path(REPO_ROOT) / "rsc"


def _modules() -> dict[str, Path]:
    out = {}
    for path in RSC.rglob("*.py"):
        parts = list(path.relative_to(RSC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The rsc modules ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from rsc import cx`
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = _graph()
    assert "rsc.errors" in graph["rsc.types"]
    assert "rsc.cx" in graph["rsc.remote"]
    assert "rsc.remote" in graph["rsc.probe"]  # a deferred import counts
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_rsc_modules_import_each_other_without_a_circle() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("module", ["rsc.cx", "rsc.errors", "rsc.types", "rsc.remote", "rsc.launch",
                                    "rsc.cluster_file", "rsc.transport.memory"])
def test_each_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    # Importing it first is what would trip over a circle at run time.
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO_ROOT, check=True, timeout=60)
