"""Every public function and class of rsc says what it does, and
``inspect.signature`` works on it, compiled or not.

Public means: every name of ``rsc.__all__``, and in each public submodule
(no part of its dotted name starts with ``_``) the names of its ``__all__``,
or, for a module without one, every class and function it defines whose name
does not start with ``_``. For a public class, its public methods and
properties count too. The same check runs in this process (the compiled
build) and in a fresh interpreter with ``RSC_NO_EXTENSIONS=1`` (the pure
twins)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from types import ModuleType
from typing import Any

from tests.cluster import REPO_ROOT

# Entry points run as scripts, not imported by users.
SCRIPTS = {"rsc.__main__", "rsc.node.worker_main"}


def public_modules() -> list[ModuleType]:
    import rsc

    names = ["rsc"] + sorted(
        m.name for m in pkgutil.walk_packages(rsc.__path__, "rsc.")
        if not any(part.startswith("_") for part in m.name.split(".")) and m.name not in SCRIPTS)
    return [importlib.import_module(n) for n in names]


def public_names(module: ModuleType) -> list[str]:
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return [n for n in exported if n != "__version__"]
    return [n for n, obj in vars(module).items()
            if not n.startswith("_") and (inspect.isclass(obj) or inspect.isroutine(obj))
            and getattr(obj, "__module__", None) == module.__name__]


def _own_doc(obj: Any) -> str:
    """The docstring written for ``obj`` itself (not one inherited from a builtin base)."""
    doc = obj.__doc__ if not isinstance(obj, property) else (obj.fget.__doc__ if obj.fget else obj.__doc__)
    if inspect.isclass(obj) and doc is not None and any(doc is b.__doc__ for b in obj.__mro__[1:]
                                                        if b.__module__ == "builtins"):
        return ""
    return (doc or "").strip()


def _member_problems(where: str, cls: type) -> list[str]:
    problems = []
    fields = getattr(cls, "__dataclass_fields__", {})
    for name, member in vars(cls).items():
        if name.startswith("_") or name in fields:
            continue  # private, or a dataclass field (documented by the class)
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        kind = type(member).__name__
        if kind == "member_descriptor" or (kind == "getset_descriptor" and member.__doc__ is None):
            # an attribute slot: of __slots__, or declared in a compiled class's
            # .pxd (Cython gives those no doc; a compiled @property keeps its
            # docstring, and the pure twin's run checks every property)
            continue
        if not (isinstance(member, property) or kind == "getset_descriptor" or inspect.isroutine(member)):
            continue  # a class attribute: data, not behaviour
        if not _own_doc(member):
            problems.append(f"{where}.{name}: no docstring")
        if inspect.isroutine(member):
            try:
                inspect.signature(member)
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}.{name}: inspect.signature fails ({exc})")
    return problems


def problems() -> list[str]:
    """What is missing, one line per object: no docstring, or no signature."""
    found: list[str] = []
    seen: set[int] = set()
    for module in public_modules():
        for name in public_names(module):
            obj = getattr(module, name, None)
            where = f"{module.__name__}.{name}"
            if obj is None:
                found.append(f"{where}: in __all__ but not an attribute of the module")
                continue
            if not (inspect.isclass(obj) or inspect.isroutine(obj)) or id(obj) in seen:
                continue  # data (a constant, a type alias), or checked already under another name
            seen.add(id(obj))
            if not _own_doc(obj):
                found.append(f"{where}: no docstring")
            try:
                inspect.signature(obj)
            except (TypeError, ValueError) as exc:
                found.append(f"{where}: inspect.signature fails ({exc})")
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                found += _member_problems(where, obj)
    return found


def test_the_compiled_build_is_documented_and_has_signatures() -> None:
    import rsc.cx

    assert type(rsc.cx.Cx.checkpoint).__name__ != "function", "rsc.cx is not the compiled build"
    missing = problems()
    assert not missing, "\n".join(missing)


def test_the_pure_twins_are_documented_and_have_signatures() -> None:
    code = ("import json, rsc.cx; from tests.test_docs_api import problems; "
            "print(json.dumps([type(rsc.cx.Cx.checkpoint).__name__, problems()]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, text=True, capture_output=True,
                         env=dict(os.environ, RSC_NO_EXTENSIONS="1"), timeout=120)
    assert out.returncode == 0, out.stderr
    kind, missing = json.loads(out.stdout.splitlines()[-1])
    assert kind == "function", "RSC_NO_EXTENSIONS=1 did not run the pure twins"
    assert not missing, "\n".join(missing)


def test_the_lease_policies_are_documented() -> None:
    import rsc.lease

    for fn in (rsc.lease.fail, rsc.lease.cancel, rsc.lease.retry):
        assert _own_doc(fn), fn
        assert "LeaseExpired" in _own_doc(fn) or "idempotency key" in _own_doc(fn), fn


def test_docstrings_speak_of_rsc_alone() -> None:
    """A user reads only rsc: no docstring of rsc's sources points at a design
    or a document outside the repository."""
    from pathlib import Path

    outside = ("original design", "the seed's", "the seed design")
    hits = [f"{p.relative_to(REPO_ROOT)}: {phrase}"
            for p in sorted(Path(REPO_ROOT, "rsc").rglob("*.py"))
            for phrase in outside if phrase in p.read_text().lower()]
    assert not hits, hits
