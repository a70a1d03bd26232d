#!/usr/bin/env python3
"""A three-level remote tree on a 3-node local cluster.

The origin spawns ``tree`` of depth 2 on worker-1; it spawns two children of
depth 1 on the other nodes, and each of those spawns two leaves on the nodes
other than its own: 1 + 2 + 4 computations over three levels of nodes, each
level started by the one above it through the node's ``--peers`` cluster
file. Every level runs its children in a region, so the tree is structured:
cancelling the root (here, a second tree of 30 s leaves, after 0.5 s)
reaches every descendant on every node, and the root's region exits only
once all of them have ended.
Run: python examples/remote_tree.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import rsc  # noqa: E402
from rsc.launch import LocalCluster  # noqa: E402


def show(answer: dict, indent: str = "  ") -> None:
    print(f"{indent}{answer['node']}")
    for child in answer.get("children", []):
        show(child, indent + "  ")


async def trees(nodes: dict[str, str]) -> None:
    names = sorted(nodes)
    async with rsc.Runtime(nodes) as rt:
        answer = await rsc.spawn_remote(rt.cx(), "worker-1", "tree",
                                        {"depth": 2, "fanout": 2, "nodes": names}).join()
        print(f"a tree of {answer['leaves']} leaves, by node:")
        show(answer)

        async with rsc.region(rt.cx()) as r:
            h = rsc.spawn_remote(r.cx, "worker-1", "tree",
                                 {"depth": 2, "fanout": 2, "nodes": names, "leaf_s": 30.0})
            await asyncio.sleep(0.5)
            r.cancel()
        # the root's outcome comes only once its own region has drained, and
        # each child's only once its region has: every descendant has ended
        print(f"cancelled the root after 0.5 s: it ended {h.state}, after every descendant")
        running = {n: (await rt.status(n))["running"] for n in names}
        print(f"tasks still running on the nodes: {sum(running.values())}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        peers = os.path.join(tmp, "cluster.json")  # how a node finds the others
        with LocalCluster(3, "examples.guide_registry:registry", cwd=ROOT,
                          extra_args=["--peers", peers], cluster_file=peers) as cluster:
            asyncio.run(trees(cluster.nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
