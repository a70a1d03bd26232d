"""The lab: a whole rsc cluster simulated deterministically in one process.

The production origin runtime and node server run unmodified on a
virtual-time event loop, over a simulated network, under faults drawn from
one seed; after each run the oracles check rsc's guarantees. See docs/LAB.md.
"""

from rsc.lab.cluster import Lab, address_of
from rsc.lab.loop import InlinePool, LabClock, Stuck, TimeLimit, VirtualLoop
from rsc.lab.net import PRESETS, LinkProfile, SimNetwork, preset
from rsc.lab.oracles import Report, Violation
from rsc.lab.processes import LabNode, LabRuntime

__all__ = ["InlinePool", "Lab", "LabClock", "LabNode", "LabRuntime", "LinkProfile", "PRESETS",
           "Report", "SimNetwork", "Stuck", "TimeLimit", "Violation", "VirtualLoop", "address_of",
           "preset"]
