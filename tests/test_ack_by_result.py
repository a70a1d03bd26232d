"""A RESULT that stands for its ACK (PROTOCOL.md section 4, "A result that
stands for its ACK"; the ``ack_by_result`` feature).

The rules checked here, on the engines (both twins through
tests/test_twins_env.py) and on real node processes:

- the node holds an accepted spawn's SPAWN_ACK until its pump has run the
  started computations' first steps, only on a connection whose HELLO
  offered ``ack_by_result`` and only if it offers it itself; a task that
  ended by then is answered by its RESULT_DELIVERY alone;
- every other spawn still gets its ACK: one that has not ended, a rejected
  one, a duplicate or resend, a tombstoned one, and any spawn from an
  origin (or to a node) without the feature;
- a held ACK is never overtaken by what names its task or ends its
  connection: a renewal, a resync's list, an ERROR, a close;
- the origin takes such a RESULT as the accept and the outcome at once: one
  outcome, the task accepted, no view of a renewal group left behind, no
  late ACK dropped.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import msgpack
import pytest

from rsc import Runtime, spawn_remote
from rsc._core import messages as m
from rsc._engine import node as N
from rsc._engine import origin as O
from rsc._engine.states import NodeState, OriginState
from tests.engine_link import FakeAdmission, Link, wire
from tests.rawclient import ACCEPTED, PONG, RESULT_DELIVERY, SPAWN_ACK, RawClient

FEATURE = m.ACK_BY_RESULT_FEATURE
CANCELLED = m.OUTCOME_CANCELLED


def _link(node: bool = True, origin: bool = True, **kw: Any) -> Link:
    link = Link(ack_by_result=node, **kw)
    if not origin:  # an origin from before the feature
        del link.origin.features[FEATURE]
    link.connect()
    return link


def _pump(link: Link, finish: bool = True, payload: Any = b"out") -> list[Any]:
    """Deliver what the origin queued and carry it out as ``NodeServer._pump``
    does: starts first, then each started task's first step (it ends there
    when ``finish``), then the ACKs still due. Returns what the node sent, in
    order (and leaves it in ``link.to_origin``)."""
    link.collect()
    while link.to_node:
        link.node.receive(link.conn, link.to_node.pop(0), link.now)
    sent: list[Any] = []
    while True:
        actions = link.node.take_actions(False)
        if not actions:
            if not link.node._acks_due:
                break
            link.node.flush_acks()
            continue
        for op, target, arg in actions:
            if op == N.START:
                link.started.append(target)
                if finish:
                    link.node.task_finished(target, 0, payload, 5, link.now)
            elif op == N.SEND and target == link.conn:
                sent.append(wire(arg))
    link.to_origin.extend(sent)
    return sent


def _kinds(msgs: list[Any]) -> list[tuple[str, int]]:
    return [(type(x).__name__, x.remote_task_id) for x in msgs]


def test_offers_ack_by_result_reads_only_an_int() -> None:
    assert m.offers_ack_by_result({FEATURE: 1}) and m.offers_ack_by_result({FEATURE: 2})
    for features in ({}, {FEATURE: True}, {FEATURE: "1"}, {FEATURE: 0}, None, [FEATURE]):
        assert not m.offers_ack_by_result(features)


@pytest.mark.parametrize("node, origin", [(True, True), (True, False), (False, True)])
def test_the_feature_is_offered_and_used_only_when_both_ends_offer_it(node: bool, origin: bool) -> None:
    link = _link(node, origin)
    assert (FEATURE in link.node.features) is node and (FEATURE in link.origin.features) is origin
    assert link.node._conns[link.conn].ack_by_result is (node and origin)
    t = link.spawn(flush=False)
    sent = _pump(link)
    if node and origin:
        assert _kinds(sent) == [("ResultDelivery", t.rtid)]
    else:
        assert _kinds(sent) == [("SpawnAck", t.rtid), ("ResultDelivery", t.rtid)]
    link.flush()
    assert t.state is OriginState.COMPLETED and t.accepted
    assert [e[0] for e in link.events if e[1] is t] == [O.EV_ACCEPTED, O.EV_RESULT]
    assert link.origin.live_tasks == 0 and link.origin.dropped == 0
    assert link.node.state_of("origin-a", t.rtid) is NodeState.COMPLETED


def test_a_task_that_has_not_ended_gets_its_ack_at_the_end_of_the_pump() -> None:
    link = _link()
    a, b = link.spawn(flush=False), link.spawn(flush=False)
    sent = _pump(link, finish=False)
    assert _kinds(sent) == [("SpawnAck", a.rtid), ("SpawnAck", b.rtid)]
    link.flush()
    assert a.state is b.state is OriginState.RUNNING
    link.finish(link.started[0])
    assert a.state is OriginState.COMPLETED and link.origin.dropped == 0


def _group_ids(link: Link) -> set[int]:
    return {rtid for g in link.node._renew.values() for rtid in g.ids}


def test_a_task_joins_its_renewal_group_with_its_ack_and_never_without_one() -> None:
    link = _link()
    ended = link.spawn(flush=False)
    _pump(link)
    assert _group_ids(link) == set() and not link.node._renew  # no group was ever made
    running = link.spawn(flush=False)
    link.collect()
    while link.to_node:
        link.node.receive(link.conn, link.to_node.pop(0), link.now)
    (task,) = [t for op, t, _a in link.node.take_actions(False) if op == N.START]
    assert _group_ids(link) == set()  # admitted, its ACK held: not in a group yet
    link.node.flush_acks()
    assert _group_ids(link) == {running.rtid}
    link.flush()
    assert ended.state is OriginState.COMPLETED and running.state is OriginState.RUNNING
    # the group's silence check watches it: the origin goes silent for the lease
    link.now += 3_001 * 1_000_000
    link.node.tick(link.now)
    assert task.cancel_reason == N.CANCEL_LEASE_EXPIRED


def test_a_held_ack_is_not_overtaken_by_a_renewal_or_a_resync_list() -> None:
    for how in ("tick", "resync"):
        link = _link()
        t = link.spawn(flush=False)
        link.collect()
        while link.to_node:
            link.node.receive(link.conn, link.to_node.pop(0), link.now)
        assert [op for op, _c, _a in link.node.take_actions(False)] == [N.START]
        if how == "tick":  # a renewal period comes before the pump's end
            link.now += 1_001 * 1_000_000
            link.node.tick(link.now)
        else:  # a resync request in the same read as the spawn
            link.node.receive(link.conn, m.LeaseResyncRequest("origin-a", 99, 3_000), link.now)
        sent = [a for op, _c, a in link.node.take_actions(False) if op == N.SEND]
        assert type(sent[0]) is m.SpawnAck and sent[0].remote_task_id == t.rtid, (how, sent)
        assert len(sent) == 2 and type(sent[1]) in (m.LeaseRenewalDigest, m.LeaseRenewalBatch)
        assert not link.node._acks_due


def test_a_held_ack_comes_before_an_error_and_the_close() -> None:
    link = _link()
    t = link.spawn(flush=False)
    link.collect()
    while link.to_node:
        link.node.receive(link.conn, link.to_node.pop(0), link.now)
    link.node.receive(link.conn, m.Welcome("origin-a", 99, 1, bytes(32), None, {}), link.now)
    acts = [(op, type(tg if op == N.START else a).__name__)
            for op, tg, a in link.node.take_actions(False)]
    assert acts == [(N.START, "NodeTask"), (N.SEND, "SpawnAck"), (N.SEND, "Error"),
                    (N.CLOSE, "NoneType")]
    assert link.node.state_of("origin-a", t.rtid) is NodeState.RUNNING


def test_an_ack_due_on_a_closed_connection_is_not_sent() -> None:
    link = _link()
    link.spawn(flush=False)
    link.collect()
    while link.to_node:
        link.node.receive(link.conn, link.to_node.pop(0), link.now)
    link.node.take_actions(False)
    link.node.close_connection(link.conn, link.now)
    assert link.node.take_actions() == [] and not link.node._acks_due


def test_a_cancel_crossing_the_spawn_is_answered_by_the_cancelled_result_alone() -> None:
    link = _link()
    t = link.spawn(flush=False)
    link.origin.cancel(t.rtid, (m.CANCEL_KIND_USER, "changed my mind"), link.now)
    link.collect()
    while link.to_node:
        link.node.receive(link.conn, link.to_node.pop(0), link.now)
    acts = link.node.take_actions(False)
    (task,) = [a for op, a, _r in acts if op == N.START]
    assert [op for op, _a, _r in acts] == [N.START, N.CANCEL]
    # its first step finds it cancelled: the executor reports the cancel
    link.node.task_finished(task, CANCELLED, task.cancel_reason, 0, link.now)
    link.node.flush_acks()
    sent = [a for op, _c, a in link.node.take_actions(False) if op == N.SEND]
    assert _kinds(sent) == [("ResultDelivery", t.rtid)] and sent[0].outcome_kind == CANCELLED
    link.to_origin.extend(sent)
    link.flush()
    assert t.state is OriginState.COMPLETED and link.origin.live_tasks == 0
    (ev,) = link.events_of(O.EV_RESULT)
    assert ev[2][:2] == (CANCELLED, (m.CANCEL_KIND_USER, "changed my mind"))


def test_rejects_duplicates_resends_and_tombstones_are_always_acked() -> None:
    link = _link(names={"echo"})
    # rejected: unknown computation
    bad = link.spawn("nope", flush=False)
    assert _kinds(_pump(link)) == [("SpawnAck", bad.rtid)]
    link.flush()
    assert bad.state is OriginState.REJECTED
    # a finished task, then a duplicate of its key under another task id
    first = link.spawn(flush=False, key=b"k" * 16)
    assert _kinds(_pump(link)) == [("ResultDelivery", first.rtid)]
    link.flush()
    dup = link.spawn(flush=False, key=b"k" * 16)
    assert _kinds(_pump(link)) == [("SpawnAck", dup.rtid), ("ResultDelivery", dup.rtid)]
    link.flush()
    # a resend of the finished task (as after a reconnect): its ACK, then its result
    link.node.receive(link.conn, m.SpawnRequest("origin-a", 50, first.rtid, "echo", b"in", 3_000,
                                                b"k" * 16, None, "origin-a", 7, 8, None), link.now)
    sent = [a for op, _c, a in link.node.take_actions(False) if op == N.SEND]
    assert _kinds(sent) == [("SpawnAck", first.rtid), ("ResultDelivery", first.rtid)]
    # a tombstone, then its spawn: acked and answered Cancelled, nothing runs
    link.node.receive(link.conn, m.CancelRequest("origin-a", 51, 77, (0, "early"), "origin-a"),
                      link.now)
    link.node.receive(link.conn, m.SpawnRequest("origin-a", 52, 77, "echo", b"in", 3_000,
                                                b"t" * 16, None, "origin-a", 7, 8, None), link.now)
    sent = [a for op, _c, a in link.node.take_actions(False) if op == N.SEND]
    assert _kinds(sent) == [("SpawnAck", 77), ("ResultDelivery", 77)]
    assert not link.node._acks_due


def test_an_alias_is_acked_and_gets_the_result_with_its_owner() -> None:
    link = _link()
    owner = link.spawn(flush=False, key=b"a" * 16)
    alias = link.spawn(flush=False, key=b"a" * 16)
    sent = _pump(link)
    assert _kinds(sent) == [("SpawnAck", alias.rtid), ("ResultDelivery", owner.rtid),
                            ("ResultDelivery", alias.rtid)]
    link.flush()
    assert owner.state is alias.state is OriginState.COMPLETED and link.origin.dropped == 0


def test_a_result_held_for_a_disconnected_origin_and_the_resend_after_reconnect() -> None:
    """The node loses the connection after the spawn, before its pump ends:
    the ACK is not written; the origin resends on its next connection and gets
    the ACK and the held result (answered once, never run twice)."""
    link = _link()
    t = link.spawn(flush=False)
    link.collect()
    while link.to_node:
        link.node.receive(link.conn, link.to_node.pop(0), link.now)
    (task,) = [a for op, a, _r in link.node.take_actions(False) if op == N.START]
    link.disconnect()
    link.node.task_finished(task, 0, b"out", 5, link.now)
    link.node.flush_acks()
    assert link.node.take_actions() == [] and link.node.has_undelivered()
    link.connect()
    assert t.state is OriginState.COMPLETED and link.origin.live_tasks == 0
    assert len(link.events_of(O.EV_RESULT)) == 1 and link.started == []


# --- real node processes ------------------------------------------------------------


def _read_for(rc: RawClient, rtid: int) -> list[list]:
    """Every frame for ``rtid`` up to its RESULT, then any until the PONG to
    a PING sent after that RESULT came (a later ACK would have been written
    before that PONG)."""
    got: list[list] = []
    pinged = False
    while True:
        msg = rc.recv(timeout=10.0)
        if msg[0] == PONG and pinged:
            return got
        if msg[0] in (SPAWN_ACK, RESULT_DELIVERY) and msg[3] == rtid:
            got.append(msg)
            if msg[0] == RESULT_DELIVERY and not pinged:
                rc.ping(4242)
                pinged = True


@pytest.mark.parametrize("offered", [True, False])
def test_a_real_node_answers_an_ended_task_by_its_result_alone(module_cluster: Any,
                                                                offered: bool) -> None:
    c = module_cluster(1)
    with RawClient(c.socket_path("worker-1"), f"origin-{offered}") as rc:
        welcome = rc.handshake(features={FEATURE: 1} if offered else {})
        assert welcome[6][FEATURE] == 1  # the node offers it either way
        # an inline computation ends in its first step on every Python
        rc.spawn(1, "square_inline", msgpack.packb(7))
        got = _read_for(rc, 1)
        assert [x[0] for x in got] == ([RESULT_DELIVERY] if offered else [SPAWN_ACK, RESULT_DELIVERY])
        assert msgpack.unpackb(got[-1][5])[0] == 49
        if not offered:
            assert got[0][4] == ACCEPTED
        # an async one ends in its first step on 3.12+ (eager), later on 3.11
        rc.spawn(2, "echo", b"hi")
        got = _read_for(rc, 2)
        if offered and sys.version_info >= (3, 12):
            assert [x[0] for x in got] == [RESULT_DELIVERY]
        else:
            assert [x[0] for x in got] == [SPAWN_ACK, RESULT_DELIVERY] and got[0][4] == ACCEPTED
        assert got[-1][5] == b"hi"
        # one that suspends is acked at once and answered later
        rc.spawn(3, "sleep_ms", msgpack.packb(50))
        ack = rc.recv_ack(3)
        assert ack[4] == ACCEPTED
        assert msgpack.unpackb(rc.recv_result(3)[5]) == 50


def test_a_runtime_and_a_real_node_with_and_without_the_feature(module_cluster: Any) -> None:
    c = module_cluster(1)

    async def run(offer: bool) -> tuple[int, int, list[Any]]:
        traced: list[str] = []
        async with Runtime(c.nodes, trace=lambda e, f: traced.append(e)) as rt:
            if not offer:  # an origin from before the feature
                del rt.engine.features[FEATURE]
            cx = rt.cx()
            hs = [spawn_remote(cx, "worker-1", "square_inline", i) for i in range(200)]
            hs.append(spawn_remote(cx, "worker-1", "sleep_ms", 30))
            out = await asyncio.gather(*(h.join() for h in hs))
            assert all(h.state.name == "COMPLETED" for h in hs)
            # the ACKs the origin read: its trace of each first accept
            return traced.count("remote::spawn_ack_received"), traced.count("remote::dropped"), out

    acks, dropped, out = asyncio.run(run(True))
    assert [x[0] for x in out[:200]] == [i * i for i in range(200)] and out[200] == 30
    assert dropped == 0 and acks == 1  # only the task that suspended was acked
    acks, dropped, out = asyncio.run(run(False))
    assert [x[0] for x in out[:200]] == [i * i for i in range(200)] and out[200] == 30
    assert dropped == 0 and acks == 201


def test_the_registry_holds_an_ack_only_for_what_may_end_at_once() -> None:
    """A node's registry answers ``ends_at_once``: inline computations, and
    async ones where first steps are eager (3.12+); a computation that runs
    on a thread (or an async one on 3.11) has its ACK written at once."""
    from rsc.node.executor import EAGER_TASKS
    from rsc.node.server import RegistryAdmission
    from tests.registries import basic

    adm = RegistryAdmission(basic)
    for _ in range(2):  # the second time from what it remembers
        assert adm.ends_at_once(adm.find("square_inline")) is True
        assert adm.ends_at_once(adm.find("square")) is False
        assert adm.ends_at_once(adm.find("echo")) is EAGER_TASKS
    # with the executor that runs them, its word on eager first steps decides
    async def asked_on(factory: Any) -> tuple[bool, bool]:
        from rsc.node.executor import Executor
        asyncio.get_running_loop().set_task_factory(factory)
        executor = Executor(max_threads=1)
        try:
            adm = RegistryAdmission(basic, executor)
            return adm.ends_at_once(adm.find("echo")), executor.eager
        finally:
            await executor.aclose(1.0)

    def factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=loop, **kwargs)

    assert asyncio.run(asked_on(None)) == (EAGER_TASKS, EAGER_TASKS)
    # a loop with a task factory starts every task a loop turn later
    assert asyncio.run(asked_on(factory)) == (False, False)
    # on the engine: a computation its admission says never ends at once is acked at once
    class SlowNeverAtOnce(FakeAdmission):
        def ends_at_once(self, comp: Any) -> bool:
            return comp != "slow"

    link = Link(ack_by_result=True)
    link.node.admission = SlowNeverAtOnce({"echo", "slow"})
    link.connect()
    t = link.spawn("slow", flush=False)
    link.collect()
    while link.to_node:
        link.node.receive(link.conn, link.to_node.pop(0), link.now)
    sent = [a for op, _c, a in link.node.take_actions(False) if op == N.SEND]
    assert _kinds(sent) == [("SpawnAck", t.rtid)] and not link.node._acks_due
