"""The lab: a whole rsc cluster simulated deterministically in one process.

The production origin runtime and node server run unmodified on a
virtual-time event loop, over a simulated network, under faults drawn from
one seed; after each run the oracles check rsc's guarantees. See docs/LAB.md.

Names resolve on first use, so ``rsc lab`` and ``rsc trace`` start without
importing the node and the runtime until they run something.
"""

from __future__ import annotations

from rsc._lazy import lazy_exports

_EXPORTS = {
    "rsc.lab.cluster": ("Lab", "address_of"),
    "rsc.lab.disk": ("SimDisk", "SimFiles"),
    "rsc.lab.loop": ("LabClock", "ProcessTag", "Stuck", "TimeLimit", "VirtualLoop"),
    "rsc.lab.net": ("LinkProfile", "PRESETS", "SimNetwork", "preset"),
    "rsc.lab.oracles": ("Report", "Violation"),
    "rsc.lab.processes": ("LabNode", "LabRuntime"),
    "rsc.lab.scenario": ("Scenario", "load_scenario", "run_seed"),
    "rsc.lab.threads": ("LabPool", "LabThreads", "ProcessDied"),
}
__getattr__ = lazy_exports(__name__, globals(), _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = sorted(name for names in _EXPORTS.values() for name in names)
