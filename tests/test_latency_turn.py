"""One scheduler for the end of a loop turn, counted (not timed).

A runtime writes the first spawn since its node last answered at once and
pumps the ones after it in the same loop turn together at the turn's end
(``Runtime._pump_turn``), which flushes what it sent. The connection, seeing
those frames arrive after one it wrote at once, also scheduled a flush of
its own for the turn's end: that callback found nothing (the runtime's pump
had flushed), and because it was scheduled from a loop callback, uvloop
polled once more (``epoll_pwait`` with a zero timeout) before it slept. A
burst of spawns in one turn, one read of an open-loop sender's requests,
cost the origin two callbacks and an extra poll instead of one callback.

Now the runtime tells each connection it will flush it before the turn ends
(``FramedConnection.hold_until_flush``): the frames its pump sends are
queued and schedule nothing, and its flush writes them. And whether a spawn
goes at once is the connection's rule alone (``writes_at_once``), which
the runtime asks instead of keeping a rule of its own that counted one
spawn at once per turn whatever its node.

The connection tests run both builds of rsc.transport.connection (the
compiled one and its pure-Python source) on real Unix sockets; the runtime
test runs a real node (in this process) on a real socket, on both event
loops, with whatever build rsc imports.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import uvloop

from rsc import Runtime, spawn_remote
from rsc._core import envelope
from rsc._core.messages import Ping
from rsc.node.server import NodeServer
from tests.registries import basic
from tests.test_latency_flush import TWINS, _never, recv_now
from tests.test_latency_writes import node_and_origin, on_socket
from tests.test_origin_batching import WriteLog


@pytest.fixture(params=sorted(TWINS))
def conn_mod(request: pytest.FixtureRequest) -> ModuleType:
    return TWINS[request.param]


def counting(base: type) -> type:
    """A subclass of the event loop class ``base`` that records every callback
    given to ``call_soon`` (uvloop's loop calls it too for what rsc schedules)."""

    class Counting(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.callbacks: list[Any] = []

        def call_soon(self, callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
            self.callbacks.append(callback)
            return super().call_soon(callback, *args, **kwargs)

    return Counting


LOOPS: dict[str, Callable[[], Any]] = {"asyncio": counting(asyncio.SelectorEventLoop),
                                       "uvloop": counting(uvloop.Loop)}


def test_frames_held_until_flush_schedule_nothing_and_leave_in_it(conn_mod: ModuleType) -> None:
    """After ``hold_until_flush`` a frame is not written at once (even the
    first of a turn) and schedules no flush; ``flush`` writes what was held
    in one write, and the next lone frame goes at once again."""

    async def body(conn: Any, theirs: socket.socket, loop: Any) -> None:
        loop.soon.clear()
        conn.hold_until_flush()
        for nonce in (1, 2, 3):
            conn.send(Ping("origin", 1, nonce))
        assert conn.transport.writes == []
        assert loop.soon == []
        conn.flush()
        assert len(conn.transport.writes) == 1
        decoder = envelope.FrameDecoder()
        assert [m.nonce for m in decoder.feed(recv_now(theirs))] == [1, 2, 3]
        conn.send(Ping("origin", 1, 4))  # after the flush: a lone frame, at once, nothing scheduled
        assert len(conn.transport.writes) == 2
        assert [m.nonce for m in decoder.feed(recv_now(theirs))] == [4]
        assert loop.soon == []

    on_socket(lambda: conn_mod.FramedConnection(on_messages=lambda c, m: None, on_protocol_error=_never,
                                                on_close=lambda c, exc: None), body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_burst_of_spawns_schedules_one_callback_for_its_turn(loop_name: str, tmp_path: Any) -> None:
    """Ten spawns in one loop turn (after one answered, so the first goes at
    once): the runtime and its connection schedule one callback between
    them (the runtime's turn pump), not two, and the burst still reaches the
    node in two writes (the first at once, the rest at the turn's end), and
    every result comes back."""
    loop = LOOPS[loop_name]()

    async def main() -> tuple[list[str], int]:
        async with node_and_origin(str(tmp_path)) as (_node, rt, cx):
            conn = rt._links["worker-1"].conn
            counting = conn.transport = WriteLog(conn.transport)
            loop.callbacks.clear()
            handles = [spawn_remote(cx, "worker-1", "echo", b"x") for _ in range(10)]
            assert [await h.join() for h in handles] == [b"x"] * 10
            ours = [getattr(cb, "__name__", repr(cb)) for cb in loop.callbacks
                    if getattr(cb, "__self__", None) in (rt, conn)]
            return ours, len(counting.writes)

    try:
        ours, writes = loop.run_until_complete(main())
    finally:
        loop.close()
    # scheduled within the burst's turn, and at its end (the pump's flush), by rsc's two layers
    assert ours == ["_pump_turn"]
    assert writes == 2


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_the_first_spawn_to_each_node_in_a_turn_goes_at_once(loop_name: str, tmp_path: Any) -> None:
    """Whether a spawn goes at once is its connection's rule
    (``FramedConnection.writes_at_once``), kept there alone: in one loop
    turn, the first spawn to node 1 and then the first to node 2 are each
    written before the turn ends (the runtime kept a rule of its own, one
    spawn at once per turn whatever the node, so node 2's waited for the
    turn's end); a second spawn to node 1 in the same turn still waits for
    it. Every result comes back."""
    loop = LOOPS[loop_name]()

    async def main() -> tuple[list[int], list[int]]:
        nodes = [NodeServer(f"worker-{i}", f"unix:{tmp_path}/n{i}.sock", basic, capacity=100) for i in (1, 2)]
        for node in nodes:
            await node.start()
        try:
            async with Runtime({f"worker-{i}": f"unix:{tmp_path}/n{i}.sock" for i in (1, 2)}) as rt:
                cx = rt.cx()
                names = ("worker-1", "worker-2")
                for name in names:  # connected
                    assert await spawn_remote(cx, name, "echo", b"x").join() == b"x"
                logs = []
                for name in names:
                    conn = rt._links[name].conn
                    log = conn.transport = WriteLog(conn.transport)
                    logs.append(log)
                first = spawn_remote(cx, "worker-1", "echo", b"a")
                other = spawn_remote(cx, "worker-2", "echo", b"b")
                second = spawn_remote(cx, "worker-1", "echo", b"c")
                in_turn = [len(log.writes) for log in logs]
                assert [await h.join() for h in (first, other, second)] == [b"a", b"b", b"c"]
                return in_turn, [len(log.writes) for log in logs]
        finally:
            for node in nodes:
                await node.shutdown(0.5)

    try:
        in_turn, after = loop.run_until_complete(main())
    finally:
        loop.close()
    assert in_turn == [1, 1]  # node 1's first spawn and node 2's, at once
    assert after == [2, 1]  # node 1's second at the turn's end
