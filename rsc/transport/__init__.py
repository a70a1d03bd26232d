"""asyncio drivers for the wire: addresses, framed connections, listeners.

``connection`` carries every frame, so a normal build compiles it from its
source (``rsc._compiled``).
"""

from __future__ import annotations

from rsc._compiled import bind

COMPILED = ("connection",)

bind(__name__, COMPILED)
