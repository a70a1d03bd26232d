#!/usr/bin/env python3
"""Capability tokens over a 2-node local cluster whose nodes require them.

The nodes are started with ``--require-capability --root-key-file``: they run
nothing without a token that allows it. The caller mints a token from the
root key, narrows it to what this job needs, and hands it to its Cx; a
computation on worker-1 spawns on worker-2 under the token it was called
with, narrowed further. A spawn the token does not allow is refused with
``CapabilityDenied``, naming the caveat that failed.
Run: python examples/capability_tokens.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import rsc  # noqa: E402
from rsc.capability import Capability  # noqa: E402
from rsc.launch import LocalCluster  # noqa: E402


async def job(nodes: dict[str, str], root_key: bytes) -> None:
    token = Capability.mint(root_key, key_id="2026-12", nodes=["worker-1", "worker-2"])
    job_token = token.attenuate(computations=["sum_of_squares", "square"],
                                expires_at=time.time() + 600)
    async with rsc.Runtime(nodes) as rt:
        cx = rt.cx()
        cx.remote_cap = cx.remote_cap.with_token(job_token)
        total = await rsc.spawn_remote(cx, "worker-1", "sum_of_squares",
                                       {"node": "worker-2", "xs": [1, 2, 3]}).join()
        print(f"sum of squares, nested on worker-2: {total}")
        only_square = cx.attenuate(computations=["square"])
        try:
            await rsc.spawn_remote(only_square, "worker-1", "sum_of_squares",
                                   {"node": "worker-2", "xs": [4]}).join()
        except rsc.CapabilityDenied as exc:
            print(f"refused: {exc.denied_by}")
        try:
            await rsc.spawn_remote(rt.cx(), "worker-1", "square", 5).join()
        except rsc.CapabilityDenied as exc:
            print(f"refused: {exc.denied_by}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        key_path = os.path.join(tmp, "root.key")
        root_key = os.urandom(32)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(root_key)
        peers = os.path.join(tmp, "cluster.json")  # nodes spawn on each other through it
        args = ["--require-capability", "--root-key-file", f"2026-12={key_path}", "--peers", peers]
        with LocalCluster(2, "examples.capability_registry:registry", extra_args=args,
                          cluster_file=peers) as c:
            asyncio.run(job(c.nodes, root_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
