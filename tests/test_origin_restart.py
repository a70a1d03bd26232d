"""An origin restarted under the same name is a new run to the nodes: its
remote task ids do not meet the ids its earlier run used, which the nodes hold
(records, aliases, tombstones) for the idempotency TTL."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

from rsc.remote import first_task_id
from tests.cluster import REPO_ROOT, ClusterFactory

_ORIGIN = textwrap.dedent("""
    import asyncio, sys
    from rsc import Runtime, spawn_remote

    async def main():
        async with Runtime({"worker-1": sys.argv[1]}, name="billing") as rt:
            for i in range(3):
                assert await spawn_remote(rt.cx(), "worker-1", "square", i).join() == i * i
        print("ok")

    asyncio.run(main())
""")


def _run_origin(address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _ORIGIN, address], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_an_origin_restarted_under_its_name_is_served_at_once(cluster: ClusterFactory) -> None:
    c = cluster(1)
    address = c.nodes["worker-1"]
    for run in range(3):  # each process is a restart of the origin "billing"
        done = _run_origin(address)
        assert done.returncode == 0 and done.stdout.strip() == "ok", (run, done.stderr[-2000:])


def test_task_ids_start_at_a_random_point_below_2_52() -> None:
    starts = {first_task_id(random.Random(seed)) for seed in range(1000)}
    assert len(starts) == 1000
    assert all(1 <= s <= 2**52 for s in starts)
    assert max(starts) > 2**50  # spread over the range, not near 1
