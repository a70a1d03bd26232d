"""Computations of the isolation benchmarks (``bench.registry_iso:registry``).

The same no-op as ``bench.registry.peer_noop`` (returns its input), registered
twice as a plain function: once to run in a thread of the node, once in a
worker process of the node's pool. Node and worker processes import this
module by name, so keep it free of test-only imports.
"""

from __future__ import annotations

from typing import Any

from rsc import Registry

registry = Registry()


@registry.computation("noop_thread", isolation="thread")
def noop_thread(cx: Any, data: bytes) -> bytes:
    return data


@registry.computation("noop_process", isolation="process")
def noop_process(cx: Any, data: bytes) -> bytes:
    return data
