"""Asking running nodes for their stats over a real handshake.

:func:`probe` connects to each node as an origin would (HELLO/WELCOME, the
key's proof when the cluster is keyed), sends a STATUS_REQUEST and returns
what each node answered. ``LocalCluster`` uses it to decide that a node has
started; ``rsc status`` uses it to show a cluster.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rsc.transport.tls import TlsConfig

__all__ = ["LaunchInterrupted", "probe"]


class LaunchInterrupted(RuntimeError):
    """Starting, restarting or probing nodes was interrupted: the ``abort``
    event of :func:`probe` (``LocalCluster.interrupt``) was set."""

    def __init__(self, message: str) -> None:
        """``message`` says what was being waited for."""
        super().__init__(message)


async def _probe_async(nodes: Mapping[str, str], timeout_s: float,
                       abort: threading.Event | None, key: bytes | None = None,
                       tls: TlsConfig | None = None) -> dict[str, dict | BaseException]:
    """Handshake + STATUS_REQUEST with every node at once; name -> stats or error."""
    from rsc.remote import Runtime

    out: dict[str, dict | BaseException] = {}
    async with Runtime(dict(nodes), connect_timeout_s=min(5.0, timeout_s), key=key, tls=tls) as rt:
        tasks = {asyncio.ensure_future(rt.status(name, timeout_s)): name for name in nodes}
        pending = set(tasks)
        try:
            while pending:
                if abort is not None and abort.is_set():
                    raise LaunchInterrupted("interrupted while waiting for handshakes")
                done, pending = await asyncio.wait(pending, timeout=0.05)
                for t in done:
                    exc = t.exception()
                    out[tasks[t]] = exc if exc is not None else t.result()
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
    return out


def probe(nodes: Mapping[str, str], timeout_s: float = 5.0,
          abort: threading.Event | None = None, key: bytes | None = None,
          tls: TlsConfig | None = None) -> dict[str, dict | BaseException]:
    """Ask each node for its stats over a real handshake; name -> stats dict or
    the exception that prevented it. Blocks the calling thread only: the probe
    runs on its own event loop in a helper thread, so it is safe to call from
    inside a running loop (but better via ``asyncio.to_thread``)."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(asyncio.run(_probe_async(nodes, timeout_s, abort, key, tls)))
        except BaseException as exc:  # carried to the caller's thread
            result.append(exc)

    t = threading.Thread(target=target, name="rsc-launch-probe", daemon=True)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]

