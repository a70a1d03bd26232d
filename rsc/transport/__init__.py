"""asyncio drivers for the wire: addresses, framed connections, listeners.

``connection`` carries every frame and ``timer`` follows every batch of engine
work, so a normal build compiles both from their source (``rsc._compiled``).
"""

from __future__ import annotations

from rsc._compiled import bind

COMPILED = ("connection", "timer")

bind(__name__, COMPILED)
