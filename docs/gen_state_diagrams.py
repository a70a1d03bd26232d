#!/usr/bin/env python3
"""Print the per-task state machines of rsc/_engine/states.py as Markdown.

For each side (origin, node) this prints the transition table and a mermaid
``stateDiagram-v2`` drawn from ``ORIGIN_TRANSITIONS`` / ``NODE_TRANSITIONS``,
in the tables' own order. docs/PROTOCOL.md pastes this output; re-run it and
paste again whenever states.py changes:

    .venv/bin/python docs/gen_state_diagrams.py
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from rsc._engine.states import (  # noqa: E402
    NODE_TERMINAL,
    NODE_TRANSITIONS,
    ORIGIN_TERMINAL,
    ORIGIN_TRANSITIONS,
)


def table(transitions: dict) -> list[str]:
    lines = ["| state | event | next state |", "|---|---|---|"]
    for (state, event), nxt in transitions.items():
        lines.append(f"| {state.name} | {event.name} | {nxt.name} |")
    return lines


def mermaid(transitions: dict, terminal: frozenset) -> list[str]:
    # One arrow per (state, next state); its label lists every event that takes it.
    edges: dict[tuple[str, str], list[str]] = {}
    for (state, event), nxt in transitions.items():
        edges.setdefault((state.name, nxt.name), []).append(event.name)
    first = next(iter(transitions))[0]
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {first.name}"]
    for (src, dst), events in edges.items():
        lines.append(f"    {src} --> {dst} : {' / '.join(events)}")
    for state in sorted(terminal, key=int):
        lines.append(f"    {state.name} --> [*]")
    lines.append("```")
    return lines


def main() -> None:
    out: list[str] = []
    for side, transitions, terminal in (("Origin", ORIGIN_TRANSITIONS, ORIGIN_TERMINAL),
                                        ("Node", NODE_TRANSITIONS, NODE_TERMINAL)):
        out.append(f"#### {side} side (`{side.upper()}_TRANSITIONS`)")
        out.append("")
        out.extend(table(transitions))
        out.append("")
        out.extend(mermaid(transitions, terminal))
        out.append("")
    print("\n".join(out).rstrip())


if __name__ == "__main__":
    main()
