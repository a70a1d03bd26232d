"""Nested remote work: computations spawn remote tasks with their own Cx, and
cancelling the top-level region cancels the whole tree across nodes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import rsc
from rsc import CancelReason, Runtime, spawn_remote
from tests.test_e2e_runtime import lines, settled


def test_three_level_tree_over_three_nodes_is_cancelled_whole(cluster: Any, tmp_path: Path) -> None:
    sock_dir = tmp_path / "sockets"
    peers = str(tmp_path / "peers.json")
    c = cluster(3, directory=str(sock_dir), cluster_file=peers, extra_args=["--peers", peers])
    marks = [str(tmp_path / f"level{i}") for i in range(3)]
    assert os.path.exists(peers)

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            req = {"level": 0, "marks": marks, "nodes": ["worker-2", "worker-3"], "lease": 2.0}
            async with rsc.region(rt.cx()) as r:
                h = spawn_remote(r.cx, "worker-1", "tree", req)
                for _ in range(1000):
                    if all(lines(Path(m)) == ["started"] for m in marks):
                        break
                    await asyncio.sleep(0.01)
                assert [lines(Path(m)) for m in marks] == [["started"]] * 3
                r.cancel(CancelReason.user("tear the tree down"))
            with_reason = await h.outcome()
            assert with_reason.value.kind is rsc.CancelKind.PARENT_CANCELLED
            # every level observed its cancellation, and every node is idle
            for _ in range(500):
                if all(lines(Path(m)) == ["started", "cancelled"] for m in marks):
                    break
                await asyncio.sleep(0.01)
            assert [lines(Path(m)) for m in marks] == [["started", "cancelled"]] * 3
            for node in sorted(c.nodes):
                for _ in range(300):
                    st = await rt.status(node)
                    if st["running"] == 0:
                        break
                    await asyncio.sleep(0.01)
                assert st["running"] == 0 and st["cancelled"] == 1, (node, st)
            await settled(rt)

    asyncio.run(main())
