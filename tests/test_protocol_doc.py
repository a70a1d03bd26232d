"""docs/PROTOCOL.md sections 6-8 name, beside each rule, the code that keeps it.
Every one of those names must exist, so a reader who follows one lands on it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from tests.cluster import REPO_ROOT

# classes a table names without their module
_MODULES = ("rsc._engine.node", "rsc._engine.origin", "rsc._engine.escalation",
            "rsc._engine.states", "rsc._engine.deadlines", "rsc._core._idemtable_py",
            "rsc.remote", "rsc.handle", "rsc.links", "rsc.node.server", "rsc.node.executor",
            "rsc.node.journal", "rsc.transport.connection", "rsc.lease")
# a bare ``_name`` is a method of one of these
_BARE_OWNERS = ("NodeEngine", "OriginEngine", "IdemTable", "Runtime", "NodeServer")


def _classes() -> dict[str, type]:
    out: dict[str, type] = {}
    for mod in _MODULES:
        for name, value in vars(importlib.import_module(mod)).items():
            if isinstance(value, type):
                out.setdefault(name, value)
    return out


def _code_names() -> list[str]:
    text = (Path(REPO_ROOT) / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    section = text[text.index("## 6. Per-task state machines"):text.index("## 9. Errors")]
    section = re.sub(r"```.*?```", "", section, flags=re.S)  # the diagrams
    return [t.strip() for t in re.findall(r"`([^`\n]+)`", section)]


def _missing(token: str, classes: dict[str, type]) -> bool:
    m = re.fullmatch(r"(?:([\w.]+):)?([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?(?:\(.*\))?", token)
    if not m:
        return False  # not a code name (a value, a message, a path)
    module, first, second = m.groups()
    if module:
        obj = importlib.import_module(module)
        if not hasattr(obj, first):
            return True
        return second is not None and not hasattr(getattr(obj, first), second)
    if second is not None and first in classes:
        return not hasattr(classes[first], second)
    if second is None and first.startswith("_"):
        return not any(hasattr(classes[c], first) for c in _BARE_OWNERS)
    return False


def test_every_function_protocol_md_names_for_a_rule_exists() -> None:
    classes = _classes()
    names = _code_names()
    assert len(names) > 100  # the tables were read
    assert [t for t in names if _missing(t, classes)] == []
