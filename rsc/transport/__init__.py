"""asyncio drivers for the wire: addresses, framed connections, listeners."""
