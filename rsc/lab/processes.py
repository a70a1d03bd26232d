"""The production origin runtime and node server, wired into a lab run.

:class:`LabRuntime` and :class:`LabNode` are the real ``rsc.Runtime`` and
``rsc.node.server.NodeServer`` with three things changed from outside, all
through their public attributes: their clock is a :class:`LabClock` on
virtual time, every source of entropy (idempotency keys, handshake nonces,
the node's instance id) is drawn from the run's seed, and a node's sync
computations run on the lab's lockstep threads (:class:`rsc.lab.threads.LabPool`).
They override only the hooks the oracles watch (``_spawn``, ``_on_event``,
``_start``, ``_on_done``), each calling the production method unchanged.

Each process runs in a context of its own (:func:`rsc.lab.loop.process_context`),
so everything it schedules can be told apart from the others' (``pause``).
"""

from __future__ import annotations

import random
from typing import Any

from rsc._engine.origin import (EV_LEASE_EXPIRED, EV_NODE_RESTARTED, EV_REATTEMPT, EV_REJECTED,
                                EV_RESULT, EV_SETTLE)
from rsc.lab.loop import LabClock, ProcessTag, process_context
from rsc.lab.threads import LabPool
from rsc.cx import RemoteCap
from rsc.node.executor import Executor
from rsc.node.journal import open_journal
from rsc.node.server import NodeServer
from rsc.remote import Runtime


__all__ = ["LabNode", "LabRuntime", "TERMINAL_EVENTS"]

#: origin engine events that settle a handle
TERMINAL_EVENTS = frozenset({EV_RESULT, EV_REJECTED, EV_LEASE_EXPIRED, EV_NODE_RESTARTED, EV_SETTLE})
#: the outcomes the origin engine reports at most once per task (attempt);
#: EV_SETTLE is the escalation's verdict, not a report of the task's own end
REPORTED_OUTCOMES = frozenset({EV_RESULT, EV_REJECTED, EV_LEASE_EXPIRED, EV_NODE_RESTARTED})
_EVENT_NAMES = {EV_RESULT: "result", EV_REJECTED: "rejected", EV_LEASE_EXPIRED: "lease_expired",
                EV_NODE_RESTARTED: "node_restarted", EV_SETTLE: "settle_lease_expired"}


def _entropy(rng: random.Random) -> Any:
    return lambda n: rng.getrandbits(8 * n).to_bytes(n, "big")


class SpawnRecord:
    """One spawn as the oracles see it: its handle, the attempts it went
    through, the terminal events of its current attempt (``outcomes``: what
    could settle the handle), the outcomes the engine reported per attempt
    (``reported``), and results that came after the handle had settled
    (``late``)."""

    __slots__ = ("origin", "handle", "rtids", "current", "outcomes", "reported", "late", "seq",
                 "t_ns", "key")

    def __init__(self, origin: str, handle: Any, seq: int, t_ns: int, key: str) -> None:
        self.origin = origin
        self.handle = handle
        self.current = int(handle._task.rtid)
        self.rtids = [self.current]
        self.outcomes: list[tuple[str, int, int]] = []  # (event, seq, t_ns)
        self.reported: dict[int, list[tuple[str, int, int]]] = {}  # rtid -> (event, seq, t_ns)
        self.late: list[tuple[str, int, int]] = []
        self.seq = seq
        self.t_ns = t_ns
        self.key = key


class LabRuntime(Runtime):
    """An origin runtime inside a lab run (module docstring)."""

    def __init__(self, lab: Any, name: str, cluster: dict[str, str], rng: random.Random,
                 *, tag: ProcessTag | None = None, **kwargs: Any) -> None:
        self.lab = lab
        super().__init__(cluster, name=name, transport=lab.net.transport_for(name),
                         trace=lab.trace.for_process(name, self._lamport), **kwargs)
        self.clock = LabClock(lab.loop)
        self._seed(random.Random(rng.getrandbits(64)))
        self.engine._entropy = _entropy(rng)
        self.spawns: dict[int, SpawnRecord] = {}  # by every rtid the spawn had
        self.records: list[SpawnRecord] = []
        self.crashed = False
        # a node's nested runtime is part of the node's process: the same tag
        self.tag = ProcessTag(name) if tag is None else tag
        self.context = process_context(self.tag)
        #: id(RemoteCap) -> (the cap, parent origin, parent rtid): the node task
        #: whose computation holds the cap (a nested runtime's spawns only)
        self.parents: dict[int, tuple[Any, str, int]] = {}

    def _lamport(self) -> int:
        return self.engine.clock.time

    def _spawn(self, cx: Any, node: Any, computation: Any, input: Any, lease: Any, budget: Any,
               idempotency_key: Any, codec: Any, on_lease_expired: Any) -> Any:
        handle = super()._spawn(cx, node, computation, input, lease, budget, idempotency_key,
                                codec, on_lease_expired)
        lab = self.lab
        task = handle._task
        key = bytes(task.key).hex()
        fields = dict(rtid=task.rtid, node=str(node), computation=str(computation), key=key,
                      region_id=task.region, lease_ms=task.lease_ms)
        if self.parents:
            parent = self.parents.get(id(cx.remote_cap))
            if parent is not None:
                fields["parent"] = [parent[1], parent[2]]
        seq = lab.trace.emit(str(self.name), "spawn", fields, self._lamport())
        rec = SpawnRecord(str(self.name), handle, seq, lab.loop.now_ns(), key)
        self.spawns[rec.current] = rec
        self.records.append(rec)
        return handle

    def _on_event(self, ev: int, task: Any, detail: Any) -> None:
        rtid: int = task.rtid if task is not None else -1  # -1: no task, so no record
        rec = self.spawns.get(rtid)
        if rec is not None and ev in TERMINAL_EVENTS:
            seq = self.lab.trace.emit(str(self.name), "outcome", dict(
                rtid=rtid, how=_EVENT_NAMES[ev], current=rtid == rec.current,
                kind=detail[0] if ev == EV_RESULT else None), self._lamport())
            entry = (_EVENT_NAMES[ev], seq, self.lab.loop.now_ns())
            if ev in REPORTED_OUTCOMES:
                rec.reported.setdefault(rtid, []).append(entry)
            if rtid == rec.current:
                if rec.outcomes and ev == EV_RESULT:
                    rec.late.append(entry)  # the handle settled already: dropped, and counted
                else:
                    rec.outcomes.append(entry)
        elif rec is not None and rtid == rec.current:
            if ev == EV_REATTEMPT:
                rec.current = detail.rtid
                rec.rtids.append(detail.rtid)
                self.spawns[detail.rtid] = rec
                self.lab.trace.emit(str(self.name), "reattempt", dict(
                    rtid=rtid, new_rtid=detail.rtid, node=str(detail.node)), self._lamport())
        super()._on_event(ev, task, detail)


class _TracingExecutor(Executor):
    """A node's executor that gives each computation's Cx the node's trace, so
    that the regions a computation opens (nested remote work) record their
    closing, as an origin's regions do."""

    trace: Any = None

    def start(self, key: Any, comp: Any, data: bytes, cx: Any, on_done: Any) -> None:
        cx.trace = self.trace
        super().start(key, comp, data, cx, on_done)


class LabNode(NodeServer):
    """A node inside a lab run (module docstring). ``incarnation`` counts its
    restarts: a restart is a new LabNode under the same name and address."""

    def __init__(self, lab: Any, name: str, address: str, registry: Any, rng: random.Random,
                 incarnation: int, *, durable: bool = False, **kwargs: Any) -> None:
        self.lab = lab
        self.durable = durable
        self._rng = rng
        super().__init__(name, address, registry, transport=lab.net.transport_for(name),
                         trace=lab.trace.for_process(name, self._lamport), **kwargs)
        self.clock = LabClock(lab.loop)
        if self.peers is not None:
            old = self.executor
            self.executor = _TracingExecutor(max_threads=old.max_threads,
                                             cancel_grace_s=old.cancel_grace_s,
                                             isolation=old.isolation)
            self.executor.trace = lab.trace.for_process(name, self._lamport)
        self.engine._entropy = _entropy(rng)
        self.engine.features["instance"] = rng.getrandbits(64).to_bytes(8, "big").hex()
        self.executor._clock_ns = self.clock.now_ns
        self.executor._pool = LabPool(lab.threads, self.executor.max_threads)  # type: ignore[assignment]  # submit and shutdown, on lab threads
        self.tag = ProcessTag(name)
        self.context = process_context(self.tag)
        self.incarnation = incarnation
        self.crashed = False
        self.started_keys: dict[bytes, list[int]] = {}  # idempotency key -> trace positions
        self.finished_count = 0  # executions that reported their outcome
        self.restored = 0  # idempotency records its journal gave it at start

    def _lamport(self) -> int:
        return self.engine.clock.time

    def open_journal(self, disk: Any) -> None:
        """Keep the idempotency records on ``disk`` (a ``SimDisk``): the
        production journal, replayed from what an earlier incarnation of this
        node made durable (what ``--state-dir`` does for a real node)."""
        self._journal = open_journal(f"/rsc-lab/{self.name}", self.engine, self.clock.now_ns(),
                                     disk.mount(self.clock))
        self.restored = self.engine.idempotency_records

    def _remote_cap(self, task: Any) -> Any:
        """A computation's RemoteCap on a node given ``peers``: the node's nested
        runtime, a lab runtime on the lab's network inside this node's process
        (the production one would dial real sockets)."""
        if self.peers is None:
            return None
        rt: Any = self._runtime
        if rt is None:
            rt = self._runtime = self.lab._start_nested(self)
        cap = RemoteCap(rt, token=task.capability)
        rt.parents[id(cap)] = (cap, str(task.origin), task.rtid)
        return cap

    def _start(self, task: Any) -> None:
        if self.crashed:
            return  # a start queued behind its journal's sync: a dead process starts nothing
        seq = self.lab.trace.emit(str(self.name), "execute", dict(
            rtid=task.rtid, origin=str(task.origin), computation=str(task.computation),
            key=bytes(task.key).hex(), incarnation=self.incarnation), self._lamport())
        self.started_keys.setdefault(bytes(task.key), []).append(seq)
        super()._start(task)

    def _on_done(self, task: Any, kind: int, payload: Any, exec_ns: Any) -> None:
        if self.crashed:
            return  # a dead process reports nothing
        self.finished_count += 1
        self.lab.trace.emit(str(self.name), "finished", dict(
            rtid=task.rtid, origin=str(task.origin), kind=kind), self._lamport())
        super()._on_done(task, kind, payload, exec_ns)
