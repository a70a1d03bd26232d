"""EngineTimer.follow: the one timer each driver keeps at its engine's next deadline."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvloop

from rsc._engine.deadlines import NO_DEADLINE, Deadlines
from rsc.clock import SystemClock, SimClock
from rsc.transport.timer import EngineTimer, after_io

S = 1_000_000_000


class CountingDeadlines(Deadlines):
    """An engine's Deadlines that counts how often the timer reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def next_deadline(self) -> int | None:
        self.reads += 1
        return super().next_deadline()


def test_follow_reads_the_engine_only_when_a_deadline_could_move_the_timer() -> None:
    async def main() -> None:
        clock = SimClock()
        fired: list[int] = []
        timer = EngineTimer(asyncio.get_running_loop(), clock, lambda: fired.append(1))
        timers = CountingDeadlines()
        timer.follow(timers)  # nothing due: nothing armed
        assert timer.at is None and timers.reads == 1
        timers.add(0, 1, 50 * S)
        timer.follow(timers)
        assert timer.at == 50 * S and timers.reads == 2 and timers.hint == NO_DEADLINE
        timer.follow(timers)  # armed, nothing set since: the deadlines are not read
        assert timers.reads == 2
        timers.add(0, 2, 60 * S)  # later than armed: left for after the timer fires
        timer.follow(timers)
        assert timers.reads == 2 and timers.hint == 60 * S and timer.at == 50 * S
        timers.add(0, 3, 0)  # earlier: re-read, re-armed, fires
        timer.follow(timers)
        assert timer.at == 0 and timers.reads == 3 and timers.hint == NO_DEADLINE
        await asyncio.sleep(0.01)
        assert fired == [1] and timer.at is None
        timer.cancel()

    asyncio.run(main())


def _stall_then_fire(new_loop, use_after_io: bool = False) -> list[str]:
    """A peer's frame arrives while the process is stalled (here: in the middle of
    handling another socket's data) past a deadline. Once the loop goes on, which
    runs first: the read of that frame or the engine's timer?"""
    loop = new_loop()
    busy, busy_peer = socket.socketpair()
    ping, ping_peer = socket.socketpair()
    log: list[str] = []
    try:
        for s in (busy, busy_peer, ping, ping_peer):
            s.setblocking(False)
        timers = Deadlines()
        timer = EngineTimer(loop, SystemClock(), lambda: log.append("due"))

        def on_ping() -> None:
            ping.recv(64)
            log.append("read")

        def on_busy() -> None:
            busy.recv(64)
            if use_after_io:
                loop.call_later(0.01, after_io, loop, log.append, "due")
            else:
                timers.add(0, 1, timer._clock.now_ns() + 10_000_000)
                timer.follow(timers)
            ping_peer.send(b"ping")  # the peer's frame lands in the buffer ...
            time.sleep(0.05)         # ... while this process is stalled past the deadline

        loop.add_reader(ping.fileno(), on_ping)
        loop.add_reader(busy.fileno(), on_busy)
        busy_peer.send(b"work")
        loop.run_until_complete(asyncio.sleep(0.1))
        loop.remove_reader(ping.fileno())
        loop.remove_reader(busy.fileno())
        assert timer.at is None
        return log
    finally:
        loop.close()
        for s in (busy, busy_peer, ping, ping_peer):
            s.close()


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("use_after_io", [False, True], ids=["EngineTimer", "after_io"])
def test_a_due_timer_runs_after_the_sockets_are_read(new_loop, use_after_io: bool) -> None:
    assert _stall_then_fire(new_loop, use_after_io) == ["read", "due"]


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_cancel_stops_a_timer_that_fired_but_has_not_called_on_due_yet(new_loop) -> None:
    async def main() -> None:
        fired: list[int] = []
        timer = EngineTimer(asyncio.get_running_loop(), SimClock(), lambda: fired.append(1))
        timers = CountingDeadlines()
        timers.add(0, 1, 0)
        timer.follow(timers)
        while isinstance(timer._handle, asyncio.TimerHandle):
            await asyncio.sleep(0)
        assert timer._handle is not None and timer.at == 0 and not fired  # between the hops
        timer.follow(timers)  # still armed for the due time: nothing new is scheduled
        assert timers.reads == 1
        timer.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not fired and timer.at is None

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
