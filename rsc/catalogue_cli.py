"""``rsc status --computations``: what the nodes of a cluster serve, as a
table or as JSON (their catalogues, ``rsc.catalogue``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from rsc.catalogue import ComputationInfo

if TYPE_CHECKING:
    from rsc.transport.tls import TlsConfig

__all__ = ["fetch_computations", "print_computations"]


async def _fetch(nodes: Mapping[str, str], timeout_s: float, key: bytes | None,
                 tls: TlsConfig | None) -> dict[str, tuple[ComputationInfo, ...] | BaseException]:
    from rsc.remote import Runtime

    async with Runtime(dict(nodes), connect_timeout_s=min(5.0, timeout_s), key=key, tls=tls) as rt:
        names = list(nodes)
        got = await asyncio.gather(*(rt.computations(n, timeout_s) for n in names),
                                   return_exceptions=True)
    return dict(zip(names, got))


def fetch_computations(nodes: Mapping[str, str], timeout_s: float = 5.0, key: bytes | None = None,
                       tls: TlsConfig | None = None) -> dict[str, tuple[ComputationInfo, ...] | BaseException]:
    """Each node's catalogue (``Runtime.computations``), or the error that
    prevented it (``CatalogueUnavailable`` for a node that publishes none)."""
    return asyncio.run(_fetch(nodes, timeout_s, key, tls))


def print_computations(results: Mapping[str, tuple[ComputationInfo, ...] | BaseException],
                       out: IO[str], as_json: bool = False) -> None:
    """One table per node (NAME CODEC KIND ISOLATION DESCRIPTION), or one
    JSON object ``{"nodes": {node: {"computations": [...]} | {"error": ...}}}``."""
    if as_json:
        doc: dict[str, Any] = {"nodes": {}}
        for node, r in results.items():
            doc["nodes"][node] = ({"error": f"{type(r).__name__}: {r}"} if isinstance(r, BaseException)
                                  else {"computations": [
                                      dict(name=c.name, codec=c.codec, kind=c.kind,
                                           isolation=c.isolation, doc=c.doc) for c in r]})
        print(json.dumps(doc, indent=2), file=out)
        return
    cols = ["NAME", "CODEC", "KIND", "ISOLATION", "DESCRIPTION"]
    for i, (node, r) in enumerate(results.items()):
        if i:
            print(file=out)
        if isinstance(r, BaseException):
            print(f"{node}: {type(r).__name__}: {r}", file=out)
            continue
        print(f"{node}: {len(r)} computation{'s' if len(r) != 1 else ''}", file=out)
        rows = [cols] + [[c.name, c.codec, c.kind, c.isolation, c.doc] for c in r]
        widths = [max(len(row[j]) for row in rows) for j in range(len(cols) - 1)]
        for row in rows:
            print("  ".join(f"{v:<{widths[j]}}" for j, v in enumerate(row[:-1])) + "  " + row[-1],
                  file=out)
    out.flush()
