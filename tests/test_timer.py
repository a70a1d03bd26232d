"""EngineTimer.follow: the one timer each driver keeps at its engine's next deadline."""

from __future__ import annotations

import asyncio

from rsc.clock import SimClock
from rsc.transport.timer import EngineTimer

S = 1_000_000_000


class FakeEngine:
    def __init__(self, deadline: int | None) -> None:
        self.deadline = deadline
        self.deadline_hint: int | None = None
        self.reads = 0

    def next_deadline(self) -> int | None:
        self.reads += 1
        return self.deadline


def test_follow_reads_the_engine_only_when_a_deadline_could_move_the_timer() -> None:
    async def main() -> None:
        clock = SimClock()
        fired: list[int] = []
        timer = EngineTimer(asyncio.get_running_loop(), clock, lambda: fired.append(1))
        engine = FakeEngine(None)
        timer.follow(engine)  # nothing due: nothing armed
        assert timer.at is None and engine.reads == 1
        engine.deadline = engine.deadline_hint = 50 * S
        timer.follow(engine)
        assert timer.at == 50 * S and engine.reads == 2 and engine.deadline_hint is None
        timer.follow(engine)  # armed, no hint: the engine is not read
        assert engine.reads == 2
        engine.deadline_hint = 60 * S  # later than armed: left for after the timer fires
        timer.follow(engine)
        assert engine.reads == 2 and engine.deadline_hint == 60 * S and timer.at == 50 * S
        engine.deadline = engine.deadline_hint = 0  # earlier: re-read, re-armed, fires
        timer.follow(engine)
        assert timer.at == 0 and engine.reads == 3 and engine.deadline_hint is None
        await asyncio.sleep(0.01)
        assert fired == [1] and timer.at is None
        timer.cancel()

    asyncio.run(main())
