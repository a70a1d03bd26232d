"""What a request costs in writes and loop callbacks, counted (not timed).

A node answers a spawn with an ACK and, once the computation has run, a
RESULT. On 3.11 an async computation takes its first step a loop turn after
the read that started it, so a node that wrote a read's replies as soon as
it had handled the read wrote the ACK alone and the RESULT a turn later: two
writes, and two wake-ups and reads of the origin, for one no-op. The node
now asks its connection to hold such a read's replies to the end of the
loop turn (``FramedConnection.hold_replies``), so a computation that ends in
its first step has its RESULT leave with its ACK in one write.

And the replies to a read no longer schedule a flush of their own: the
connection writes them when the read's handling returns (or schedules one
flush then, when held), so a read costs no loop callback it does not use.
Nor does a lone request: the first frame since the peer was last read from
is written at once and schedules nothing (it scheduled a flush for the turn's
end, which found nothing, and the runtime a pump for the turn's end, which
found nothing: two loop callbacks per lone spawn, and on uvloop an extra
poll of the loop); the frames after it before the peer answers are queued
for the turn's end as before.

Both builds of rsc.transport.connection run the connection tests (the
compiled one and its pure-Python source, loaded beside it), on real Unix
sockets; the node tests run a real node (in this process) on a real socket,
on both event loops, with whatever build rsc imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from types import ModuleType
from typing import Any

import pytest
import uvloop

from rsc import Runtime, spawn_remote
from rsc._core import envelope
from rsc._core.messages import Ping, Pong
from rsc.node.server import NodeServer
from tests.registries import basic
from tests.test_latency_flush import TWINS, _never, next_turn, recv_now
from tests.test_origin_batching import WriteLog

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(TWINS))
def conn_mod(request: pytest.FixtureRequest) -> ModuleType:
    return TWINS[request.param]


class CountingLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, counting the callbacks ``call_soon`` is given, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.soon: list[str] = []

        self.callbacks: list[Any] = []

    def call_soon(self, callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        self.soon.append(getattr(callback, "__name__", repr(callback)))
        self.callbacks.append(callback)
        return super().call_soon(callback, *args, **kwargs)


def on_socket(make: Callable[[], Any],
              body: Callable[[Any, socket.socket, CountingLoop], Coroutine[Any, Any, None]]) -> None:
    """``body(conn, theirs, loop)``: ``conn = make()`` on one end of a real Unix
    socket pair (its transport counting writes), ``theirs`` the other end."""
    loop = CountingLoop()

    async def main() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.setblocking(False)
        transport, conn = await loop.connect_accepted_socket(make, ours)
        conn.transport = WriteLog(transport)
        try:
            await asyncio.sleep(0)  # connected, idle
            await body(conn, theirs, loop)
        finally:
            transport.close()
            await asyncio.sleep(0)
            theirs.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@contextlib.asynccontextmanager
async def node_and_origin(tmp: str) -> AsyncIterator[tuple[NodeServer, Runtime, Any]]:
    """A node (in this process) on a real Unix socket under ``tmp``, and a
    runtime connected to it (one ``echo`` done): (node, runtime, its cx)."""
    address = f"unix:{tmp}/node.sock"
    node = NodeServer("worker-1", address, basic, capacity=1000)
    await node.start()
    try:
        async with Runtime({"worker-1": address}) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "echo", b"x").join() == b"x"  # connected
            yield node, rt, cx
    finally:
        await node.shutdown(0.5)


async def echo_one_at_a_time(cx: Any, n: int) -> None:
    for _ in range(n):
        assert await spawn_remote(cx, "worker-1", "echo", b"x").join() == b"x"


def three_pings() -> bytes:
    return b"".join(envelope.encode_frame(Ping("origin", 1, n)) for n in (1, 2, 3))


def pongs(*nonces: int) -> list[Pong]:
    return [Pong("node", 2, n) for n in nonces]


def test_replies_to_a_read_schedule_no_flush_of_their_own(conn_mod: ModuleType) -> None:
    """Three PINGs in one read, three PONGs back in one write when the read's
    handling returns, and no loop callback scheduled for them (a flush was,
    which found nothing to write)."""

    def answer(conn: Any, msgs: list[Any]) -> None:
        for m in msgs:
            conn.send(Pong("node", 2, m.nonce))

    async def body(conn: Any, theirs: socket.socket, loop: CountingLoop) -> None:
        loop.soon.clear()
        conn.data_received(three_pings())  # what the transport does when they arrive in one read
        assert loop.soon == []
        assert len(conn.transport.writes) == 1
        assert envelope.FrameDecoder(1 << 20).feed(recv_now(theirs)) == pongs(1, 2, 3)

    on_socket(lambda: conn_mod.FramedConnection(on_messages=answer, on_protocol_error=_never,
                                                on_close=lambda c, exc: None), body)


def test_held_replies_leave_at_the_turns_end_with_what_the_turn_sends(conn_mod: ModuleType) -> None:
    """A handler that holds its replies and schedules work that answers a turn
    later (a computation's first step): the reply and that answer leave in
    one write at the turn's end, not the reply alone when the read is handled."""

    def answer(conn: Any, msgs: list[Any]) -> None:
        conn.send(Pong("node", 2, msgs[0].nonce))  # the ACK
        asyncio.get_running_loop().call_soon(conn.send, Pong("node", 2, 99))  # the first step's RESULT
        conn.hold_replies()

    async def body(conn: Any, theirs: socket.socket, loop: CountingLoop) -> None:
        conn.data_received(envelope.encode_frame(Ping("origin", 1, 1)))
        assert recv_now(theirs) == b"" and conn.transport.writes == []  # held
        await next_turn()
        assert len(conn.transport.writes) == 1
        assert envelope.FrameDecoder(1 << 20).feed(recv_now(theirs)) == pongs(1, 99)

    on_socket(lambda: conn_mod.FramedConnection(on_messages=answer, on_protocol_error=_never,
                                                on_close=lambda c, exc: None), body)


def test_held_replies_leave_at_the_turns_end_when_nothing_follows(conn_mod: ModuleType) -> None:
    """Held replies wait for the turn's end only: with nothing sent after them
    they still leave then (a computation that suspends does not hold its ACK)."""

    def answer(conn: Any, msgs: list[Any]) -> None:
        for m in msgs:
            conn.send(Pong("node", 2, m.nonce))
        conn.hold_replies()

    async def body(conn: Any, theirs: socket.socket, loop: CountingLoop) -> None:
        conn.data_received(three_pings())
        assert conn.transport.writes == []
        await next_turn()
        assert envelope.FrameDecoder(1 << 20).feed(recv_now(theirs)) == pongs(1, 2, 3)
        conn.hold_replies()  # outside a read's handling: nothing
        conn.send(Pong("node", 2, 4))  # so the turn's first frame goes at once, as ever
        assert envelope.FrameDecoder(1 << 20).feed(recv_now(theirs)) == pongs(4)

    on_socket(lambda: conn_mod.FramedConnection(on_messages=answer, on_protocol_error=_never,
                                                on_close=lambda c, exc: None), body)


def test_a_frame_after_a_handler_that_raised_keeps_its_order(conn_mod: ModuleType) -> None:
    """A handler that sent a reply and then raised: the reply is not lost or
    overtaken; the next frame sent leaves after it."""

    def answer(conn: Any, msgs: list[Any]) -> None:
        conn.send(Pong("node", 2, 1))
        raise RuntimeError("a bug in the handler")

    async def body(conn: Any, theirs: socket.socket, loop: CountingLoop) -> None:
        with pytest.raises(RuntimeError):
            conn.data_received(envelope.encode_frame(Ping("origin", 1, 1)))
        conn.send(Pong("node", 2, 2))
        await next_turn()
        assert envelope.FrameDecoder(1 << 20).feed(recv_now(theirs)) == pongs(1, 2)

    on_socket(lambda: conn_mod.FramedConnection(on_messages=answer, on_protocol_error=_never,
                                                on_close=lambda c, exc: None), body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_node_answers_a_lone_async_noop_in_one_write(loop_name: str) -> None:
    """A real node on a real socket, 200 ``echo`` calls (an async computation
    that returns in its first step) one at a time: the node writes once per
    call, its ACK and RESULT together (it wrote twice on 3.11 before)."""
    n = 200

    async def main(tmp: str) -> int:
        async with node_and_origin(tmp) as (node, _rt, cx):
            (conn,) = node._conns.values()
            counting = conn.transport = WriteLog(conn.transport)
            await echo_one_at_a_time(cx, n)
            return len(counting.writes)

    with tempfile.TemporaryDirectory(prefix="rsc-writes-") as tmp:
        loop = LOOPS[loop_name]()
        try:
            writes = loop.run_until_complete(main(tmp))
        finally:
            loop.close()
    assert writes == n, f"{writes} writes for {n} calls one at a time"


def test_a_lone_frame_is_written_at_once_and_schedules_nothing(conn_mod: ModuleType) -> None:
    async def body(conn: Any, theirs: socket.socket, loop: CountingLoop) -> None:
        loop.soon.clear()
        conn.send(Ping("origin", 1, 1))
        assert envelope.FrameDecoder(1 << 20).feed(recv_now(theirs)) == [Ping("origin", 1, 1)]
        assert loop.soon == []

    on_socket(lambda: conn_mod.FramedConnection(on_messages=lambda c, m: None, on_protocol_error=_never,
                                                on_close=lambda c, exc: None), body)


def test_frames_before_the_peer_answers_wait_for_the_turns_end(conn_mod: ModuleType) -> None:
    """After a frame written at once, the next (even a loop turn later) waits
    for the end of its turn, unless the peer has been read from meanwhile;
    after that flush the next lone frame goes at once again."""

    async def body(conn: Any, theirs: socket.socket, loop: CountingLoop) -> None:
        decoder = envelope.FrameDecoder(1 << 20)
        conn.send(Ping("origin", 1, 1))
        assert decoder.feed(recv_now(theirs)) == [Ping("origin", 1, 1)]
        await next_turn()
        loop.soon.clear()
        conn.send(Ping("origin", 1, 2))
        conn.send(Ping("origin", 1, 3))
        assert recv_now(theirs) == b"" and loop.soon == ["flush"]
        await next_turn()
        assert decoder.feed(recv_now(theirs)) == [Ping("origin", 1, 2), Ping("origin", 1, 3)]
        assert len(conn.transport.writes) == 2
        conn.send(Ping("origin", 1, 4))
        assert decoder.feed(recv_now(theirs)) == [Ping("origin", 1, 4)]

    on_socket(lambda: conn_mod.FramedConnection(on_messages=lambda c, m: None, on_protocol_error=_never,
                                                on_close=lambda c, exc: None), body)


def test_lone_spawns_cost_the_origin_no_loop_callback(tmp_path: Any) -> None:
    """A runtime spawning one at a time (each after the last one's result):
    neither the runtime (its turn's pump) nor its connection (the turn's
    flush) schedules a loop callback for a spawn; and a burst of ten in one
    turn still reaches the node in two writes (the first at once, the rest
    together at the turn's end)."""
    loop = CountingLoop()

    async def main() -> tuple[list[Any], int]:
        async with node_and_origin(str(tmp_path)) as (_node, rt, cx):
            conn = rt._links["worker-1"].conn
            loop.callbacks.clear()
            await echo_one_at_a_time(cx, 50)
            ours = [cb for cb in loop.callbacks if getattr(cb, "__self__", None) in (rt, conn)]
            counting = conn.transport = WriteLog(conn.transport)
            handles = [spawn_remote(cx, "worker-1", "echo", b"x") for _ in range(10)]
            assert [await h.join() for h in handles] == [b"x"] * 10
            return ours, len(counting.writes)

    try:
        ours, burst_writes = loop.run_until_complete(main())
    finally:
        loop.close()
    assert [getattr(cb, "__name__", cb) for cb in ours] == []
    assert burst_writes == 2
