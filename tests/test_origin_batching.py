"""The origin's per-task path against a real node over a real Unix socket:
spawns made in one loop turn leave together, a settled handle's join, the
spawn's cached lease and node lookups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rsc
from rsc import InvalidArgument, Runtime, spawn_remote
from rsc._core import envelope
from rsc._core.messages import SpawnRequest
from rsc.launch import LocalCluster
from rsc.transport.connection import FLUSH_FRAMES
from rsc.types import NodeId


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def one(module_cluster: Any) -> LocalCluster:
    return module_cluster(1)


class WriteLog:
    """Records what the origin's connection writes to its (real) socket
    transport, passing every write on."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def spawns_per_write(self) -> list[int]:
        out = []
        for data in self.writes:
            msgs = envelope.FrameDecoder().feed(data)
            out.append(sum(1 for m in msgs if type(m) is SpawnRequest))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def connected(rt: Runtime, node: str) -> WriteLog:
    """Connect (one round trip), then log what the connection writes."""
    assert await spawn_remote(rt.cx(), node, "echo", b"x").join() == b"x"
    conn = rt._links[node].conn
    log = WriteLog(conn.transport)
    conn.transport = log
    return log


def test_the_spawns_of_one_loop_turn_leave_in_two_writes(one: LocalCluster) -> None:
    """The turn's first spawn is written at once; the rest share one pump and
    one write at the end of the turn."""
    async def main() -> None:
        async with Runtime(one.nodes) as rt:
            log = await connected(rt, "worker-1")
            hs = [spawn_remote(rt.cx(), "worker-1", "echo", b"0")]
            assert log.spawns_per_write() == [1] and not rt.engine.actions
            hs += [spawn_remote(rt.cx(), "worker-1", "echo", b"%d" % i) for i in range(1, 50)]
            assert log.spawns_per_write() == [1]  # the others wait for the turn's end
            assert len(rt.engine.actions) == 49  # queued in the engine, for one pump
            await asyncio.sleep(0)
            assert log.spawns_per_write() == [1, 49]
            assert [await h.join() for h in hs] == [b"%d" % i for i in range(50)]

    run(main())


def test_a_burst_leaves_every_flush_frames_spawns_while_it_is_made(one: LocalCluster) -> None:
    """A node starts on a burst's first spawns while the origin still makes the rest."""
    async def main() -> None:
        async with Runtime(one.nodes) as rt:
            log = await connected(rt, "worker-1")
            n = 2 * FLUSH_FRAMES + 10
            hs = [spawn_remote(rt.cx(), "worker-1", "echo", b"b") for _ in range(n)]
            within = log.spawns_per_write()
            assert sum(within) >= 2 * FLUSH_FRAMES  # written while the burst was made
            await asyncio.sleep(0)
            after = log.spawns_per_write()
            assert sum(after) == n and len(after) <= len(within) + 1 <= 5
            assert await asyncio.gather(*(h.join() for h in hs)) == [b"b"] * n

    run(main())


def test_join_of_a_settled_handle_is_a_coroutine_like_any_other(one: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(one.nodes) as rt:
            cx = rt.cx()
            h = spawn_remote(cx, "worker-1", "echo", b"done")
            assert await h.join() == b"done"
            again = h.join()  # settled now: the fast path
            assert asyncio.iscoroutine(again)
            assert await again == b"done"
            assert await asyncio.create_task(h.join()) == b"done"
            assert await asyncio.wait_for(h.join(), 5) == b"done"
            # values (msgpack) and failures go through the full path, raising when awaited
            v = spawn_remote(cx, "worker-1", "square", 7)
            assert await v.join() == 49 and await v.join() == 49
            bad = spawn_remote(cx, "worker-1", "boom", None)
            await bad.outcome()  # settled, not yet raised
            pending = bad.join()  # raises only when awaited
            with pytest.raises(rsc.RemoteFailed):
                await pending
            with pytest.raises(rsc.RemoteFailed):
                bad.try_join()

    run(main())


def test_a_region_lets_go_of_a_success_joined_on_the_fast_path(one: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(one.nodes) as rt:
            async with rsc.region(rt.cx()) as r:
                h = spawn_remote(r.cx, "worker-1", "echo", b"r")
                assert await h.join() == b"r"
                assert await h.join() == b"r"
                assert h not in r._handles

    run(main())


def test_the_lease_a_spawn_asks_for_is_checked_whatever_came_before(one: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(one.nodes, default_lease_s=30.0) as rt:
            cx = rt.cx()
            a = spawn_remote(cx, "worker-1", "echo", b"a")
            b = spawn_remote(cx, "worker-1", "echo", b"b", lease=2.5)
            c = spawn_remote(cx, "worker-1", "echo", b"c")
            for bad in (-1, 0, True, "5", 1e12):
                with pytest.raises(InvalidArgument, match="lease must be"):
                    spawn_remote(cx, "worker-1", "echo", b"x", lease=bad)
            d = spawn_remote(cx, "worker-1", "echo", b"d", lease=2.5)
            assert [h.lease.initial_duration for h in (a, b, c, d)] == [30.0, 2.5, 30.0, 2.5]
            assert [h._task.lease_ms for h in (a, b, c, d)] == [30_000, 2_500, 30_000, 2_500]
            assert [await h.join() for h in (a, b, c, d)] == [b"a", b"b", b"c", b"d"]

    run(main())


def test_a_node_is_found_by_any_string_equal_to_its_name(one: LocalCluster) -> None:
    class Name(str):
        pass

    async def main() -> None:
        async with Runtime(one.nodes) as rt:
            cx = rt.cx()
            plain = "".join(["worker", "-1"])  # a str that is not the interned one
            hs = [spawn_remote(cx, n, "echo", b"n") for n in ("worker-1", plain, NodeId("worker-1"),
                                                               Name("worker-1"))]
            assert [await h.join() for h in hs] == [b"n"] * 4
            assert {type(h.node) for h in hs} == {NodeId}
            with pytest.raises(InvalidArgument, match="known: worker-1"):
                spawn_remote(cx, "worker-9", "echo", b"n")

    run(main())
