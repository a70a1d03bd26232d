"""Sans-I/O protocol engines: decoded messages and clock readings in, messages
to send, events and timer deadlines out.

Nothing in this package imports asyncio, socket, selectors, time or uvloop;
``tests/test_engine_sansio.py`` checks that in a fresh interpreter. The asyncio
driver (rsc.transport, rsc.node) and the lab simulator drive the same engines.

``logical``, ``node`` and ``origin`` carry every task, so a normal build
compiles them from their source (``rsc._compiled``).
"""

from __future__ import annotations

from rsc._compiled import bind

COMPILED = ("deadlines", "logical", "node", "origin", "renewal")

bind(__name__, COMPILED)
