"""The node process: server, executor, graceful shutdown, CLI entry.

``executor`` and ``server`` carry every task, so a normal build compiles them
from their source (``rsc._compiled``).
"""

from __future__ import annotations

from rsc._compiled import bind

COMPILED = ("executor", "server")

bind(__name__, COMPILED)
