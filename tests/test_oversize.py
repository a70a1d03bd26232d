"""Inputs and outputs too large for a frame, and leases that reconnects cannot
keep alive: refused or turned into typed failures at once, never looped on.

Engine-level rules run over the in-memory link in virtual time; the rest
against real node processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rsc
from rsc import Runtime, spawn_remote
from rsc._core.messages import (
    DEFAULT_MAX_FRAME_BYTES,
    FRAME_OVERHEAD_BYTES,
    MAX_FAILURE_MESSAGE_CHARS,
    REJECT_INVALID_INPUT,
    SpawnRequest,
)
from rsc._engine import origin as O
from rsc._engine.node import NodeEngine
from rsc.errors import ResultTooLarge, failed_error
from rsc.launch import LocalCluster
from tests.engine_link import FakeAdmission, Link, entropy_from

MIB = 1024 * 1024


def small_frame_link(max_frame_bytes: int = 8192) -> Link:
    """A Link whose node takes frames of at most ``max_frame_bytes``."""
    link = Link()
    link.node = NodeEngine("node-1", FakeAdmission({"echo"}), max_frame_bytes=max_frame_bytes,
                           entropy=entropy_from(1))
    return link


# -- the node: an output too large for a frame -----------------------------------------------
def test_oversized_output_is_delivered_as_result_too_large() -> None:
    link = small_frame_link(8192)
    link.connect()
    t = link.spawn("echo", b"x")
    (task,) = link.started
    link.finish(task, 0, b"y" * 5000)  # over 8192 - FRAME_OVERHEAD_BYTES
    ((_, got, (kind, message, _ns)),) = link.events_of(O.EV_RESULT)
    assert got is t and kind == 1  # FAILED on the wire: an older origin shows a RemoteFailed
    err = failed_error(message)
    assert isinstance(err, ResultTooLarge) and isinstance(err, rsc.RemoteFailed)
    assert (err.size, err.limit) == (5000, 8192 - FRAME_OVERHEAD_BYTES)
    assert "'echo'" in str(err) and "5000 bytes" in str(err)
    assert link.node.counters["failed"] == 1 and link.node.counters["completed"] == 0
    # a duplicate after the end is answered with the same failure, not the output
    link.disconnect()
    link.connect()
    assert link.node.idempotency_records == 1


def test_an_output_at_the_limit_is_delivered() -> None:
    link = small_frame_link(8192)
    link.connect()
    link.spawn("echo", b"x")
    link.finish(link.started[0], 0, b"y" * (8192 - FRAME_OVERHEAD_BYTES))
    assert link.events_of(O.EV_RESULT)[0][2][:2] == (0, b"y" * (8192 - FRAME_OVERHEAD_BYTES))


def test_a_huge_failure_message_is_cut_to_fit() -> None:
    link = Link()
    link.connect()
    link.spawn("echo", b"x")
    link.finish(link.started[0], 3, "z" * (MAX_FAILURE_MESSAGE_CHARS + 10))  # panicked
    ((_, _t, (kind, message, _ns)),) = link.events_of(O.EV_RESULT)
    assert kind == 3 and message.startswith("z" * MAX_FAILURE_MESSAGE_CHARS)
    assert message.endswith("[10 more characters cut by the node]")


def test_a_failure_that_only_looks_like_result_too_large_stays_remote_failed() -> None:
    assert type(failed_error("ResultTooLarge: nonsense")) is rsc.RemoteFailed
    assert type(failed_error("ValueError: boom")) is rsc.RemoteFailed
    text = ResultTooLarge.text("a\nb", 10, 5)
    assert (failed_error(text).size, failed_error(text).limit) == (10, 5)


# -- the origin: the node's limits from WELCOME ----------------------------------------------
def test_welcome_carries_the_limits_and_the_origin_learns_them() -> None:
    link = Link(max_input_bytes=1024)
    assert link.origin.input_limit("node-1") == DEFAULT_MAX_FRAME_BYTES - FRAME_OVERHEAD_BYTES
    link.connect()
    assert link.origin.input_limit("node-1") == 1024
    features = dict(link.node.features)
    assert isinstance(features.pop("instance"), str)
    assert features.pop("renewal_digest") == 1  # compact renewals offered (PROTOCOL.md section 4)
    assert features.pop("drawn_keys") == 1  # SPAWN_REQUEST's drawn flag understood (section 4)
    assert features.pop("value_segments") == 1  # value segments taken and sent (section 4)
    assert features == dict(max_frame_bytes=DEFAULT_MAX_FRAME_BYTES, max_input_bytes=1024,
                            max_result_bytes=DEFAULT_MAX_FRAME_BYTES - FRAME_OVERHEAD_BYTES)


def test_a_spawn_queued_before_welcome_over_the_limit_is_refused_unsent() -> None:
    link = Link(max_input_bytes=1024)
    big = link.spawn("echo", b"b" * 2000, flush=False)
    small = link.spawn("echo", b"s", flush=False)
    link.connect(complete=False)
    sent: list[Any] = []
    link.collect()
    while link.to_node or link.to_origin:
        sent += link.to_node
        for m in link.to_node:
            link.node.receive(link.conn, m, link.now)
        link.to_node.clear()
        for m in link.to_origin:
            link.origin.receive("node-1", m, link.now)
        link.to_origin.clear()
        link.collect()
    assert [m.remote_task_id for m in sent if isinstance(m, SpawnRequest)] == [small.rtid]
    ((_, task, (code, detail)),) = link.events_of(O.EV_REJECTED)
    assert task is big and code == REJECT_INVALID_INPUT
    assert "2000 bytes" in detail and "at most 1024" in detail
    assert link.node.counters["rejected"] == 0  # the node never saw it


# -- leases: only progress renews ------------------------------------------------------------
def test_the_answer_to_a_resend_does_not_renew_the_lease() -> None:
    link = Link()
    link.connect()
    t = link.spawn(lease_ms=3_000)
    first = link.origin.lease_deadline(t.rtid)
    for _ in range(5):  # reconnects that make no progress: each resend is ACKed again
        link.now += 500 * 1_000_000
        link.disconnect()
        link.connect()
        assert link.origin.lease_deadline(t.rtid) == first
    link.advance(1)  # 2.5 s in, no renewal batch delivered yet: not lapsed
    assert not link.events_of(O.EV_LEASE_EXPIRED)
    link.disconnect()
    link.advance(600)
    assert link.events_of(O.EV_LEASE_EXPIRED)[0][1] is t


# -- real nodes ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one(module_cluster: Any) -> LocalCluster:
    return module_cluster(1)


def test_an_input_over_the_frame_cap_is_refused_at_once(one: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(one.nodes) as rt:
            cx = rt.cx()
            huge = b"\0" * DEFAULT_MAX_FRAME_BYTES  # before any handshake: the frame cap decides
            with pytest.raises(rsc.InvalidInput, match=f"input is {DEFAULT_MAX_FRAME_BYTES} bytes"):
                spawn_remote(cx, "worker-1", "echo", huge, lease=1.0)
            assert await spawn_remote(cx, "worker-1", "echo", b"hi").join() == b"hi"
            # now the node's WELCOME has said its own limit (16 MiB by default)
            with pytest.raises(rsc.InvalidInput, match=r"accepts at most 16777216") as info:
                spawn_remote(cx, "worker-1", "echo", b"\0" * (17 * MIB))
            assert info.value.code == REJECT_INVALID_INPUT and info.value.node == "worker-1"
            stats = await rt.status("worker-1")
            assert stats["rejected"] == 0  # neither reached the node
            assert rt.debug_counts() == dict(handles=0, tasks=0, leases=0)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_an_output_over_the_frame_cap_fails_with_result_too_large(one: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(one.nodes) as rt:
            cx = rt.cx()
            h = spawn_remote(cx, "worker-1", "big", DEFAULT_MAX_FRAME_BYTES, lease=5.0)
            with pytest.raises(ResultTooLarge) as info:
                await asyncio.wait_for(h.join(), 60)  # before: re-delivered forever, never joined
            assert info.value.limit == DEFAULT_MAX_FRAME_BYTES - FRAME_OVERHEAD_BYTES
            assert info.value.size > DEFAULT_MAX_FRAME_BYTES
            assert h.state is rsc.RemoteTaskState.FAILED
            assert await spawn_remote(cx, "worker-1", "echo", b"alive").join() == b"alive"

    asyncio.run(main())


def test_a_long_lived_region_lets_go_of_settled_handles(one: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(one.nodes) as rt:
            async with rsc.region(rt.cx()) as r:
                for i in range(2_000):
                    assert (await spawn_remote(r.cx, "worker-1", "square_inline", i).join())[0] == i * i
                    assert r.live_children()["handles"] == 0
                assert len(r._handles) == 0  # not merely finished: gone
                with pytest.raises(rsc.RemoteFailed):
                    await spawn_remote(r.cx, "worker-1", "boom", None).join()
                assert len(r._handles) == 0  # an observed failure is the caller's
                unobserved = spawn_remote(r.cx, "worker-1", "boom", None)
                while not unobserved.is_finished():
                    await asyncio.sleep(0.01)
                assert list(r._handles) == [unobserved]  # kept: it is raised at exit
                del unobserved
            assert False, "the unobserved failure must be raised at exit"  # pragma: no cover

    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(main())
    assert [type(e) for e in info.value.exceptions] == [rsc.RemoteFailed]


def test_region_memory_stays_flat_over_many_cycles(one: LocalCluster) -> None:
    import tracemalloc

    async def cycles(r: rsc.Region, n: int) -> None:
        for i in range(n):
            await spawn_remote(r.cx, "worker-1", "square_inline", i).join()

    async def main() -> tuple[int, int]:
        async with Runtime(one.nodes) as rt:
            async with rsc.region(rt.cx()) as r:
                await cycles(r, 2_000)  # warm up: caches, free lists, the key buffer
                tracemalloc.start()
                try:
                    await cycles(r, 2_000)
                    early = tracemalloc.get_traced_memory()[0]
                    await cycles(r, 20_000)
                    late = tracemalloc.get_traced_memory()[0]
                finally:
                    tracemalloc.stop()
                return early, late

    early, late = asyncio.run(main())
    # before: every handle was kept, ~500 bytes each (10 MB over these 20,000)
    assert late - early < 1 * MIB, (early, late)
