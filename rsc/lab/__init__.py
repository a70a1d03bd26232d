"""The lab: a whole rsc cluster simulated deterministically in one process.

The production origin runtime and node server run unmodified on a
virtual-time event loop, over a simulated network, under faults drawn from
one seed; after each run the oracles check rsc's guarantees. See docs/LAB.md.

Names resolve on first use, so ``rsc lab`` and ``rsc trace`` start without
importing the node and the runtime until they run something.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "rsc.lab.cluster": ("Lab", "address_of"),
    "rsc.lab.loop": ("InlinePool", "LabClock", "Stuck", "TimeLimit", "VirtualLoop"),
    "rsc.lab.net": ("LinkProfile", "PRESETS", "SimNetwork", "preset"),
    "rsc.lab.oracles": ("Report", "Violation"),
    "rsc.lab.processes": ("LabNode", "LabRuntime"),
    "rsc.lab.scenario": ("Scenario", "load_scenario", "run_seed"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> object:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'rsc.lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = sorted(_WHERE)
