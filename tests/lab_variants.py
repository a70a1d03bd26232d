"""Deliberately broken engines, each breaking one promise the lab's oracles
check (tests/test_lab_oracles.py shows each is caught). Never use them
outside a test."""

from __future__ import annotations

from typing import Any

from rsc._engine.logical import LamportClock
from rsc._engine.node import NodeEngine
from rsc._engine.origin import EV_RESULT, OriginEngine
from rsc.lab.disk import SimDisk
from rsc.sagas import AsyncSaga


class RunsDuplicates(NodeEngine):
    """A node that forgets to deduplicate: a spawn it already holds (same key,
    or same origin and task id) is admitted and run again."""

    def _rule_key_known(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        return None

    def _rule_task_id_held(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        return None


class NeverCancelsOrphans(NodeEngine):
    """A node that never notices a silent origin: its orphans run on."""

    def tick(self, now: int) -> None:
        for origin in list(self._last_heard):
            self._last_heard[origin] = now
        super().tick(now)


class TwoOutcomes(OriginEngine):
    """An origin engine that reports every result twice."""

    def take_events(self) -> list:
        events = super().take_events()
        return events + [e for e in events if e[0] == EV_RESULT]


class ForgetfulClock(LamportClock):
    """A Lamport clock that ticks on send but ignores the times it receives."""

    def merge(self, wire_time: Any) -> int:
        return self.time


class ForgetsOnCrash(SimDisk):
    """A disk on which a crash loses everything, synced or not (a journal
    that never really reached stable storage)."""

    def crash(self) -> None:
        for ino in self.names.values():
            ino.synced = 0
        self._durable = {}
        super().crash()


class LateOrphanCheck(NodeEngine):
    """A node that believes it heard each origin half a second after it did:
    its silence check cancels an orphan half a second late."""

    def receive(self, conn: Any, msg: Any, now: int) -> None:
        super().receive(conn, msg, now)
        self._heard_late(conn, now)

    def receive_all(self, conn: Any, msgs: list, now: int) -> None:  # what the node's server calls
        super().receive_all(conn, msgs, now)
        self._heard_late(conn, now)

    def _heard_late(self, conn: Any, now: int) -> None:
        c = self._conns.get(conn)
        if c is not None and c.origin is not None and c.origin in self._last_heard:
            self._last_heard[c.origin] = now + 500_000_000


class CompensatesFirstToLast(AsyncSaga):
    """A saga that undoes its steps in the order they were done."""

    async def _compensate(self) -> list:
        self._entries = list(reversed(self._entries))
        return await super()._compensate()
