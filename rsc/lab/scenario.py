"""Scenario files: what ``rsc lab run`` and ``rsc lab explore`` run.

A scenario is a plain Python file using rsc's public API. Its entry point is

    async def scenario(lab: rsc.lab.Lab) -> None

which starts nodes (``await lab.start_node(name, registry)``) and origins
(``await lab.start_origin(name)``), schedules faults (``lab.at(t, lab.crash,
"n1")``, ``lab.chaos(...)``) and does its work with ``spawn_remote``,
regions and sagas as any program would. Optionally the file sets ``LAB``, a
dict of :class:`rsc.lab.Lab` options (``network``, ``shuffle``,
``settle_s``, ``time_limit_s``). The file's own directory is importable
while it loads, so it can import the registry module beside it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import IO, Any, Awaitable, Callable

from rsc.lab.cluster import Lab
from rsc.lab.oracles import Report

__all__ = ["Scenario", "load_scenario", "run_seed"]


@dataclass
class Scenario:
    path: str
    fn: Callable[[Lab], Awaitable[Any]]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The scenario file's name without ``.py``."""
        return os.path.splitext(os.path.basename(self.path))[0]


def _import(path: str) -> ModuleType:
    path = os.path.abspath(path)
    name = "rsc_lab_scenario_" + os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == path:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load scenario {path}")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if added:
            sys.path.remove(folder)
    return module


def load_scenario(path: str) -> Scenario:
    """Load the scenario file at ``path`` (module docstring)."""
    module = _import(path)
    fn = getattr(module, "scenario", None)
    if fn is None or not callable(fn):
        raise ValueError(f"{path} has no `async def scenario(lab)`")
    return Scenario(os.path.abspath(path), fn, dict(getattr(module, "LAB", {}) or {}))


def run_seed(scenario: Scenario, seed: int, *, trace_sink: IO[str] | None = None,
             **overrides: Any) -> Report:
    """Run ``scenario`` once for ``seed``; its Report. ``overrides`` replace
    the scenario's LAB options (and may name engine variants)."""
    opts = dict(scenario.options)
    opts.update({k: v for k, v in overrides.items() if v is not None})
    lab = Lab(seed, trace_sink=trace_sink, **opts)
    report = lab.run(scenario.fn)
    report.figures["scenario"] = scenario.name
    return report
