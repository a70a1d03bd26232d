"""Honest placement: one-in-flight round trips with both ends pinned to cores.

On a 2-vCPU VM a one-in-flight round trip moves several-fold with where the
scheduler puts the two processes: on one core a request and its answer
hand the core over (no cross-core wake-up), on two cores each side wakes on
its own. So the raw echo and rsc are measured in the same three placements,
one right after the other, and compared within each:

``same``
    Both ends on CPU 0 (``os.sched_setaffinity`` on every thread of this
    process, of the echo server and of the rsc node).
``cross``
    This process on CPU 0, the echo server / the node on CPU 1.
``free``
    No pinning (every CPU allowed, as the other benchmarks run).

``placement`` group, figures ``place.<who>.<placement>`` with ``who`` ``raw``
(a 64-byte frame echoed by ``bench/echo_peer.py``, as ``raw.one``) or
``rsc`` (``spawn_remote(noop).join()``, as ``rsc.one``), ``ONE_N`` round
trips a round. The report shows rsc over raw for each placement. Skipped
where fewer than two CPUs are allowed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from bench.conftest import ECHO_PIDS, bench_cluster, runtime_on
from bench.echo_peer import EchoClient
from bench.figures import pin, record, run_on
from rsc import Runtime, spawn_remote

pytestmark = pytest.mark.usefixtures("no_strays")

ONE_N = 200
ROUNDS = {"raw": 20, "rsc": 10}
PLACEMENTS = ("same", "cross", "free")
ALLOWED = sorted(os.sched_getaffinity(0))


def cpus_for(placement: str) -> tuple[set[int], set[int]]:
    """(this process's CPUs, the server's CPUs)."""
    if placement == "same":
        return {ALLOWED[0]}, {ALLOWED[0]}
    if placement == "cross":
        return {ALLOWED[0]}, {ALLOWED[1]}
    return set(ALLOWED), set(ALLOWED)


@pytest.fixture(scope="module")
def placement_node() -> Iterator[Any]:
    yield from bench_cluster(1, "bench.registry:registry")


@pytest.fixture(scope="module")
def placement_rt(loop: asyncio.AbstractEventLoop, placement_node: Any) -> Iterator[Runtime]:
    yield from runtime_on(loop, placement_node.nodes)


@pytest.fixture(scope="module")
def placement_echo(loop: asyncio.AbstractEventLoop) -> Iterator[tuple[EchoClient, int]]:
    from bench.conftest import start_echo_server

    servers = start_echo_server()
    path = next(servers)
    client = loop.run_until_complete(EchoClient.connect(path))
    loop.run_until_complete(client.one_in_flight(100))
    try:
        yield client, ECHO_PIDS[path]
    finally:
        client.close()
        loop.run_until_complete(asyncio.sleep(0))
        next(servers, None)


@pytest.fixture(scope="module", autouse=True)
def _unpin_at_end() -> Iterator[None]:
    yield
    pin([0], set(ALLOWED))


@pytest.mark.skipif(len(ALLOWED) < 2, reason="placement needs two CPUs to pin to")
@pytest.mark.parametrize("who", ("raw", "rsc"))
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_one_in_flight_placed(benchmark: Any, loop: asyncio.AbstractEventLoop, placement: str, who: str,
                              placement_echo: tuple[EchoClient, int], placement_rt: Runtime,
                              placement_node: Any) -> None:
    benchmark.group = "placement"
    here, there = cpus_for(placement)
    if who == "raw":
        client, server_pid = placement_echo
        pin([server_pid], there)
        pin([0], here)
        target = run_on(loop, lambda: client.one_in_flight(ONE_N, 64))
    else:
        node, node_pid = next(iter(placement_node.nodes)), next(iter(placement_node.pids.values()))
        pin([node_pid], there)
        pin([0], here)
        cx = placement_rt.cx()

        async def one_at_a_time() -> None:
            for _ in range(ONE_N):
                await spawn_remote(cx, node, "noop", b"").join()

        target = run_on(loop, one_at_a_time)
    benchmark.pedantic(target, rounds=ROUNDS[who], warmup_rounds=2)
    record(benchmark, f"place.{who}.{placement}", ONE_N, placement=placement,
           here=sorted(here), there=sorted(there))
