"""Every task state change on both sides goes through its engine's one path and fits the tables.

A recording engine notes each transition of a long randomized engine-pair run
(spawns, duplicates, resends, conflicting keys, cancels before and after the
spawn, disconnects, finishes, time passing) and each is checked against
``states.NODE_TRANSITIONS``; after every step, every task object holds the state
its last recorded transition left it in, so nothing else changed it. The
origin engine of the same runs records its transitions (``OriginEngine.record``),
each checked against ``states.ORIGIN_TRANSITIONS``, and every origin task holds
the state its last one left it in.
"""

from __future__ import annotations

import random

from rsc._core.messages import CancelRequest, SpawnRequest
from rsc._engine.node import NodeEngine
from rsc._engine.states import (
    NODE_TRANSITIONS,
    ORIGIN_TRANSITIONS,
    NodeEvent,
    NodeState,
    OriginEvent,
    OriginState,
)
from tests.engine_link import MS, Link, entropy_from, wire

RUNS = 1_000
STEPS = 40
CANCEL_USER = (1, "user")


class RecordingNode(NodeEngine):
    """A NodeEngine that records every call of its one state-changing path."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[object, NodeState, int, NodeState | None]] = []
        self.last: dict[int, tuple[object, NodeState]] = {}  # id(holder) -> (holder, state)

    def process(self, task, event):
        before = task.state
        after = super().process(task, event)
        self.log.append((task, before, event, after))
        self.last[id(task)] = (task, task.state)
        return after


def _recording_link(rng: random.Random) -> Link:
    link = Link(capacity=rng.choice([2, 4, 8]), ttl_ns=rng.choice([500, 5_000]) * MS)
    link.node = RecordingNode("node-1", link.node.admission, capacity=link.node.capacity,
                              max_input_bytes=1024, ttl_ns=link.node.ttl_ns,
                              entropy=entropy_from(1),
                              trace=lambda e, f: link.traces.append((e, f)))
    return link


def _direct(link: Link, msg: object) -> None:
    """Hand the node a message the origin engine would not write (a conflicting
    resend, a cancel for a task it never spawned), through the codec."""
    link.collect()
    link.node.receive(link.conn, wire(msg), link.now)
    link.flush()


def _check_origin(link: Link, seen: int) -> int:
    record = link.origin.record
    last: dict[int, OriginState] = {}
    for rtid, before, event, after in record[seen:]:
        assert ORIGIN_TRANSITIONS.get((OriginState(before), OriginEvent(event))) == after, (
            rtid, OriginState(before).name, OriginEvent(event).name, after)
    for rtid, _b, _e, after in record:
        last[rtid] = after
    for rtid, state in last.items():
        task = link.origin.get(rtid)
        if task is not None:
            assert task.state == state, (task, state)  # changed outside _process()
    return len(record)


def _check(node: RecordingNode, seen: int) -> int:
    for holder, before, event, after in node.log[seen:]:
        assert NODE_TRANSITIONS.get((NodeState(before), NodeEvent(event))) == after, (
            holder, NodeState(before).name, NodeEvent(event).name, after)
    for holder, state in node.last.values():
        assert holder.state == state, (holder, state)  # changed outside process()
    return len(node.log)


def _run(seed: int) -> RecordingNode:
    rng = random.Random(seed)
    link = _recording_link(rng)
    node = link.node
    link.origin.record = []
    link.connect()
    rtids: list[int] = []
    next_rtid = 1
    connected = True
    seen = seen_origin = 0
    for _ in range(STEPS):
        op = rng.random()
        if not connected:
            if op < 0.6:
                link.connect()
                connected = True
            elif op < 0.8 and link.started:
                link.finish(rng.choice(link.started))
            else:
                link.advance(rng.choice([10, 400, 3_000]))
        elif op < 0.30:
            key = None
            if rtids and rng.random() < 0.3:  # a duplicate of an earlier task's key
                key = rng.choice(rtids).to_bytes(16, "big")
            link.spawn("echo" if rng.random() < 0.9 else "nope", key=key,
                       rtid=next_rtid, lease_ms=rng.choice([150, 3_000]))
            rtids.append(next_rtid)
            next_rtid += 1
        elif op < 0.40 and rtids:
            link.origin.cancel(rng.choice(rtids), CANCEL_USER, link.now)
            link.flush()
        elif op < 0.48:  # a cancel that overtakes its spawn (or names a task never spawned)
            rtid = next_rtid + rng.randrange(3)
            _direct(link, CancelRequest("origin-a", 1, rtid, CANCEL_USER, "origin-a"))
        elif op < 0.56:  # a spawn under a task id of the origin's choosing (resend or conflict)
            rtid = rng.choice(rtids) if rtids and rng.random() < 0.5 else next_rtid + rng.randrange(3)
            key = rng.choice([rtid, rtid + 1]).to_bytes(16, "big")
            _direct(link, SpawnRequest("origin-a", 1, rtid, "echo", rng.choice([b"in", b"other"]),
                                       3_000, key, None, "origin-a", 7, 8, None))
        elif op < 0.75 and link.started:
            task = rng.choice(link.started)
            kind, payload = rng.choice([(0, b"out"), (0, b"out"), (1, "boom"), (2, CANCEL_USER)])
            link.finish(task, kind=kind, payload=payload)
        elif op < 0.82:
            link.disconnect()
            connected = False
        elif op < 0.86:
            node.begin_drain() if rng.random() < 0.3 else None
        else:
            link.advance(rng.choice([1, 50, 400, 1_200, 6_000]))
        seen = _check(node, seen)
        seen_origin = _check_origin(link, seen_origin)
    ORIGIN_SEEN.update((int(b), int(e)) for _r, b, e, _a in link.origin.record)
    return node


ORIGIN_SEEN: set[tuple[int, int]] = set()


def test_every_node_transition_of_a_randomized_run_fits_the_table() -> None:
    kinds: set[tuple[int, int]] = set()
    for seed in range(RUNS):
        node = _run(seed)
        kinds.update((int(b), int(e)) for _h, b, e, a in node.log if a is not None)
    # the run reaches every edge the engine can take
    S, E = NodeState, NodeEvent
    for edge in [(S.INIT, E.RECV_SPAWN), (S.SPAWN_RECEIVED, E.SEND_ACK_ACCEPTED),
                 (S.SPAWN_RECEIVED, E.SEND_ACK_REJECTED), (S.RUNNING, E.SEND_RESULT),
                 (S.RUNNING, E.RECV_CANCEL), (S.RUNNING, E.ORIGIN_SILENT),
                 (S.RUNNING, E.RECV_DUPLICATE_SPAWN), (S.CANCEL_RECEIVED, E.SEND_RESULT),
                 (S.INIT, E.RECV_CANCEL), (S.TOMBSTONED, E.RECV_SPAWN),
                 (S.TOMBSTONED, E.SEND_ACK_ACCEPTED), (S.TOMBSTONED, E.RECV_CANCEL),
                 (S.COMPLETED, E.RECV_CANCEL), (S.COMPLETED, E.RECV_DUPLICATE_SPAWN)]:
        assert (int(edge[0]), int(edge[1])) in kinds, edge
    O, OE = OriginState, OriginEvent
    for edge in [(O.INIT, OE.SEND_SPAWN), (O.SPAWNED, OE.ACK_ACCEPTED), (O.SPAWNED, OE.ACK_REJECTED),
                 (O.RUNNING, OE.RESULT), (O.RUNNING, OE.SEND_CANCEL), (O.RUNNING, OE.RENEWAL),
                 (O.CANCEL_SENT, OE.RESULT)]:
        assert (int(edge[0]), int(edge[1])) in ORIGIN_SEEN, edge


def test_state_of_reads_the_state_from_what_holds_it() -> None:
    link = _recording_link(random.Random(0))
    node = link.node
    link.connect()
    a = link.spawn()
    assert node.state_of("origin-a", a.rtid) is NodeState.RUNNING
    link.origin.cancel(a.rtid, CANCEL_USER, link.now)
    link.flush()
    assert node.state_of("origin-a", a.rtid) is NodeState.CANCEL_RECEIVED
    link.finish(link.started[0], kind=2, payload=CANCEL_USER)
    assert node.state_of("origin-a", a.rtid) is NodeState.COMPLETED
    _direct(link, CancelRequest("origin-a", 1, 99, CANCEL_USER, "origin-a"))
    assert node.state_of("origin-a", 99) is NodeState.TOMBSTONED
    assert node.state_of("origin-a", 100) is NodeState.INIT
    link.spawn("nope", rtid=100)  # rejected: nothing is kept
    assert node.state_of("origin-a", 100) is NodeState.INIT
    assert [(NodeState(b).name, NodeEvent(e).name) for _t, b, e, _a in node.log[-2:]] == [
        ("INIT", "RECV_SPAWN"), ("SPAWN_RECEIVED", "SEND_ACK_REJECTED")]
