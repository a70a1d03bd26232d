"""The stubs of the compiled core (``rsc/_core/_*.pyi``) say what both twins
are: mypy's stubtest holds each stub to its compiled module, and the check
below holds it to the pure twin (every public name, each function's and
method's parameters, properties, constants) and to the compiled module's
names, so type checkers see the API that runs whichever twin is loaded."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rsc._core import NAMES, load
from tests.cluster import REPO_ROOT

CORE = os.path.join(REPO_ROOT, "rsc", "_core")
ALLOWLIST = os.path.join(REPO_ROOT, "tests", "typecheck", "stubtest_allowlist.txt")
# C-level (cdef) methods of the compiled heap: callable from compiled code only
# (the allowlist says the same to stubtest); the pure twin has them in Python.
C_LEVEL = {("leaseheap", "LeaseHeap", "add_raw"), ("leaseheap", "LeaseHeap", "renew_raw"),
           ("leaseheap", "LeaseHeap", "discard_raw")}

Params = list[tuple[str, str, bool]]  # (name, kind, has a default), self left out


def test_stubtest_holds_each_stub_to_its_compiled_module(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *(f"rsc._core._{n}" for n in NAMES),
         "--mypy-config-file", os.path.join(REPO_ROOT, "pyproject.toml"),
         "--allowlist", ALLOWLIST],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
        env={**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "cache"), "RSC_NO_EXTENSIONS": "0"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "unused allowlist entry" not in out.stdout + out.stderr


def _params(fn: ast.FunctionDef) -> Params:
    a = fn.args
    positional = [(p.arg, "posonly") for p in a.posonlyargs] + [(p.arg, "regular") for p in a.args]
    first_default = len(positional) - len(a.defaults)
    out = [(name, kind, i >= first_default) for i, (name, kind) in enumerate(positional)]
    if a.vararg is not None:
        out.append((a.vararg.arg, "vararg", False))
    out += [(p.arg, "kwonly", d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg is not None:
        out.append((a.kwarg.arg, "kwarg", False))
    return [p for p in out if p[0] not in ("self", "cls")]


def _decorated(fn: ast.FunctionDef, name: str) -> bool:
    return any(isinstance(d, ast.Name) and d.id == name for d in fn.decorator_list)


def _stub_api(name: str) -> dict[str, Any]:
    """``{name: ("value",) | ("function", params) | ("class", {member: ...})}`` of a stub."""
    with open(os.path.join(CORE, f"_{name}.pyi"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    api: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            api[node.target.id] = ("value",)
        elif isinstance(node, ast.FunctionDef):
            api[node.name] = ("function", _params(node))
        elif isinstance(node, ast.ClassDef):
            members: dict[str, Any] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members[item.name] = (("property",) if _decorated(item, "property")
                                          else ("function", _params(item)))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members[item.target.id] = ("value",)
            api[node.name] = ("class", members)
    return {k: v for k, v in api.items() if not k.startswith("_") or k.startswith("__")}


def _runtime_params(obj: Any) -> Params | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None  # a compiled function without a signature (stubtest covers those)
    kinds = {inspect.Parameter.POSITIONAL_ONLY: "posonly",
             inspect.Parameter.POSITIONAL_OR_KEYWORD: "regular",
             inspect.Parameter.VAR_POSITIONAL: "vararg", inspect.Parameter.KEYWORD_ONLY: "kwonly",
             inspect.Parameter.VAR_KEYWORD: "kwarg"}
    params = [(p.name, kinds[p.kind], p.default is not inspect.Parameter.empty)
              for p in sig.parameters.values() if p.name not in ("self", "cls")]
    if [kind for _n, kind, _d in params] == ["vararg", "kwarg"] and compiled_slot(obj):
        return None  # a compiled class's C-level __init__: its parameters are not visible
    return params


def compiled_slot(obj: Any) -> bool:
    return type(obj).__name__ in ("wrapper_descriptor", "method-wrapper", "slot wrapper")


def _fits(stub: Params, runtime: Params) -> bool:
    """The runtime accepts what the stub promises: same parameters in order,
    defaults alike; a stub's positional-only parameter may be a regular one."""
    if len(stub) != len(runtime):
        return False
    for (sname, skind, sdef), (rname, rkind, rdef) in zip(stub, runtime):
        if sdef != rdef:
            return False
        if skind == "posonly":
            if rkind not in ("posonly", "regular"):
                return False
        elif (sname, skind) != (rname, rkind):
            return False
    return True


def _mismatches(name: str, compiled: bool) -> list[str]:
    mod = load(name, compiled=compiled)
    where = mod.__name__
    bad: list[str] = []

    def check(label: str, spec: Any, obj: Any, owner: Any = None, member: str = "") -> None:
        if spec[0] == "property":
            raw = inspect.getattr_static(owner, member)
            if not isinstance(raw, property) and type(raw).__name__ != "getset_descriptor":
                bad.append(f"{label} is a property in the stub, {type(raw).__name__} at run time")
        elif spec[0] == "function":
            if not callable(obj):
                bad.append(f"{label} is a function in the stub, not callable at run time")
                return
            runtime = _runtime_params(obj)
            if runtime is not None and not _fits(spec[1], runtime):
                bad.append(f"{label}: stub parameters {spec[1]}, run time {runtime}")

    for attr, spec in _stub_api(name).items():
        if not hasattr(mod, attr):
            bad.append(f"{where}.{attr} is in the stub, not at run time")
            continue
        obj = getattr(mod, attr)
        if spec[0] != "class":
            check(f"{where}.{attr}", spec, obj)
            continue
        if not isinstance(obj, type):
            bad.append(f"{where}.{attr} is a class in the stub, {type(obj).__name__} at run time")
            continue
        for member, mspec in spec[1].items():
            if compiled and (name, attr, member) in C_LEVEL:
                continue
            if not hasattr(obj, member) and mspec[0] != "value":  # instance attributes: not on the class
                bad.append(f"{where}.{attr}.{member} is in the stub, not at run time")
                continue
            if mspec[0] != "value":
                check(f"{where}.{attr}.{member}", mspec, getattr(obj, member), obj, member)
    stub_names = set(_stub_api(name))
    exported = set(getattr(mod, "__all__", ()))
    if not exported <= stub_names:
        bad.append(f"{where}.__all__ names {sorted(exported - stub_names)}, which the stub lacks")
    return bad


@pytest.mark.parametrize("compiled", [True, False], ids=["c", "py"])
@pytest.mark.parametrize("name", NAMES)
def test_each_twin_has_the_api_its_stub_declares(name: str, compiled: bool) -> None:
    api = _stub_api(name)
    assert api, name  # the stub was read
    assert _mismatches(name, compiled) == []


def test_the_check_finds_a_stub_that_no_longer_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parameter renamed, one added and a name removed are each reported."""
    real = _stub_api("leaseheap")
    members = dict(real["LeaseHeap"][1])
    members["renew"] = ("function", [("lease", "regular", False), ("expires_at", "regular", False)])
    members["pop_expired"] = ("function", [("now", "regular", False)])
    members["grow"] = ("function", [])
    monkeypatch.setitem(globals(), "_stub_api", lambda name: {**real, "LeaseHeap": ("class", members),
                                                               "gone": ("value",)})
    bad = _mismatches("leaseheap", compiled=False)
    assert any("LeaseHeap.renew:" in b for b in bad) and any("pop_expired:" in b for b in bad)
    assert any("LeaseHeap.grow is in the stub" in b for b in bad)
    assert any(".gone is in the stub" in b for b in bad)
