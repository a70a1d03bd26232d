"""An origin that runs as its own process, for the fault tests (kill -9 the origin).

    python -m tests.origin_proc '{"worker-1": "unix:...", ...}' --tasks 100 --lease 1.0

Spawns ``--tasks`` long ``sleep_ms`` tasks round-robin over every node of the
cluster with the given lease, waits until every one is acknowledged (state
RUNNING), prints ``SPAWNED <origin name> <count>`` on stdout, then sleeps and
keeps its leases alive (pings, renewals) until it is killed. If nobody kills
it, it gives up after ``--max-life`` seconds (so a broken test never leaves it
running for long).

Like tests/registries.py, this module imports only rsc and the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import rsc
from rsc import Runtime, spawn_remote


async def main(nodes: dict[str, str], tasks: int, lease: float, sleep_ms: int,
               max_life: float) -> int:
    names = sorted(nodes)
    async with Runtime(nodes) as rt:
        cx = rt.cx()
        hs = [spawn_remote(cx, names[i % len(names)], "sleep_ms", sleep_ms, lease=lease)
              for i in range(tasks)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30.0
        while not all(h.state is rsc.RemoteTaskState.RUNNING for h in hs):
            finished = [h for h in hs if h.is_finished()]
            if finished:
                print(f"FAILED a task finished before all were running: {finished[0]!r}", flush=True)
                return 1
            if loop.time() > deadline:
                print("FAILED not all tasks running within 30 s", flush=True)
                return 1
            await asyncio.sleep(0.01)
        print(f"SPAWNED {rt.name} {len(hs)}", flush=True)
        await asyncio.sleep(max_life)
        print("TIMEOUT nobody killed this origin", flush=True)
        return 2


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nodes", help="JSON object: node name -> address")
    p.add_argument("--tasks", type=int, default=100)
    p.add_argument("--lease", type=float, default=1.0)
    p.add_argument("--sleep-ms", type=int, default=600_000)
    p.add_argument("--max-life", type=float, default=120.0)
    a = p.parse_args()
    sys.exit(asyncio.run(main(json.loads(a.nodes), a.tasks, a.lease, a.sleep_ms, a.max_life)))
