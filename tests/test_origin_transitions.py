"""The origin engine's one transition path, over the in-memory link in virtual time.

Every change of an OriginTask's state goes through ``OriginEngine._process``:
these tests record the transitions and check them against the table, check
that a renewal after a lease's deadline is refused whatever the timer's phase,
and that a message that does not fit its task's state is a typed, counted
RemoteProtocolError.
"""

from __future__ import annotations

import random

import pytest

from rsc._engine.trace_names import DROPPED
from rsc._core.messages import (Error, LeaseRenewal, LeaseRenewalBatch, LeaseRenewalDigest,
                                ResultDelivery, SpawnAck, SpawnRequest)
from rsc._engine.renewal import task_hash
from rsc._engine import origin as O
from rsc._engine.node import NodeEngine
from rsc._engine.states import ORIGIN_TRANSITIONS, OriginEvent as OE, OriginState
from rsc.errors import RemoteProtocolError
from tests.engine_link import MS, FakeAdmission, Link, entropy_from


def recording_link(**kw) -> Link:
    link = Link(**kw)
    link.origin.record = []
    return link


def assert_all_in_table(link: Link) -> None:
    for rtid, state, event, nxt in link.origin.record:
        assert ORIGIN_TRANSITIONS.get((state, OE(event))) is nxt, (rtid, state, OE(event), nxt)


# -- a renewal after the deadline is refused ----------------------------------------------


def test_renewal_after_the_deadline_is_refused_before_any_tick() -> None:
    link = recording_link()
    link.connect()
    t = link.spawn(lease_ms=40_000)
    assert t.state is OriginState.RUNNING
    start = link.now
    assert link.origin.lease_deadline(t.rtid) == start + 40_000 * MS
    link.now += 50_000 * MS  # no tick: the timer has not fired yet
    link.origin.receive("node-1", LeaseRenewal("node-1", 900, t.rtid, 30_000, 1, "node-1"), link.now)
    link.collect()
    assert t.state is OriginState.LEASE_EXPIRED  # lapsed at 40 s, not extended to 80 s
    assert link.origin.lease_deadline(t.rtid) is None
    assert [e[1] for e in link.events_of(O.EV_LEASE_EXPIRED)] == [t]
    link.origin.tick(link.now)  # the timer's late tick finds nothing more to do
    link.collect()
    assert len(link.events_of(O.EV_LEASE_EXPIRED)) == 1
    assert_all_in_table(link)


def test_batched_renewal_after_the_deadline_is_refused_too() -> None:
    link = recording_link()
    link.connect()
    a, b = link.spawn(lease_ms=40_000), link.spawn(lease_ms=90_000)
    link.now += 50_000 * MS
    link.origin.receive("node-1", LeaseRenewalBatch("node-1", 900, 30_000, "node-1", [a.rtid, b.rtid]), link.now)
    link.collect()
    assert a.state is OriginState.LEASE_EXPIRED
    assert b.state is OriginState.RUNNING  # still in time: renewed
    assert link.origin.lease_deadline(b.rtid) == link.now + 30_000 * MS


def test_renewal_before_the_deadline_extends_the_lease() -> None:
    link = recording_link()
    link.connect()
    t = link.spawn(lease_ms=40_000)
    link.now += 39_000 * MS
    link.origin.receive("node-1", LeaseRenewal("node-1", 900, t.rtid, 40_000, 1, "node-1"), link.now)
    assert t.state is OriginState.RUNNING
    assert link.origin.lease_deadline(t.rtid) == link.now + 40_000 * MS
    link.advance(39_000)
    assert t.state is OriginState.RUNNING and not link.events_of(O.EV_LEASE_EXPIRED)


def test_a_later_deadline_moves_no_timer_and_the_task_lapses_at_it() -> None:
    """A renewal that pushes a lease later only writes the new deadline into
    the task: the timer fires at the old one, is re-armed at the new one,
    and the task lapses there, not before."""
    link = recording_link()
    link.connect()
    t = link.spawn(lease_ms=3_000)  # sent, accepted: the lease runs 3 s from now
    old = link.now + 3_000 * MS
    link.now += 2_000 * MS
    link.origin.receive("node-1", LeaseRenewal("node-1", 900, t.rtid, 10_000, 1, "node-1"), link.now)
    new = link.now + 10_000 * MS
    assert link.origin.lease_deadline(t.rtid) == new
    assert link.origin.timers.deadline_of(O.T_LEASE, t.rtid) == old  # not moved
    link.origin.tick(old)
    assert t.state is OriginState.RUNNING
    assert link.origin.timers.deadline_of(O.T_LEASE, t.rtid) == new  # re-armed where it runs out
    link.origin.tick(new - 1)
    assert t.state is OriginState.RUNNING
    link.origin.tick(new)
    link.collect()
    assert t.state is OriginState.LEASE_EXPIRED and t.lapsed_at == new
    assert [e[1] for e in link.events_of(O.EV_LEASE_EXPIRED)] == [t]
    assert_all_in_table(link)


def test_an_earlier_deadline_moves_the_timer() -> None:
    """A renewal with a shorter lease than is left moves the timer earlier:
    the task lapses at the new deadline, not at the old one."""
    link = recording_link()
    link.connect()
    t = link.spawn(lease_ms=40_000)
    link.now += 1_000 * MS
    link.origin.receive("node-1", LeaseRenewal("node-1", 900, t.rtid, 5_000, 1, "node-1"), link.now)
    new = link.now + 5_000 * MS
    assert link.origin.timers.deadline_of(O.T_LEASE, t.rtid) == new
    link.origin.tick(new)
    link.collect()
    assert t.state is OriginState.LEASE_EXPIRED and t.lapsed_at == new
    assert_all_in_table(link)


def test_first_accept_after_the_deadline_does_not_renew() -> None:
    link = recording_link()
    link.connect()
    t = link.spawn(lease_ms=3_000, flush=False)
    link.collect()  # the SPAWN_REQUEST is written at link.now: the lease runs from here
    link.now += 5_000 * MS  # the ACK comes after the deadline, before any tick
    link.flush()
    assert t.accepted and t.state is OriginState.LEASE_EXPIRED
    evs = [e[0] for e in link.events if e[1] is t]
    assert evs == [O.EV_ACCEPTED, O.EV_LEASE_EXPIRED]
    assert_all_in_table(link)


def test_a_read_stops_at_the_message_that_closes_its_connection() -> None:
    """``receive_all`` hands the messages of one read to the engine in order;
    one that breaks the protocol closes the link (ERROR, CLOSE), and those
    after it in the same read are not applied."""
    link = recording_link()
    link.connect()
    t = link.spawn()
    assert t.state is OriginState.RUNNING
    bad = SpawnRequest("node-1", 900, 1, "echo", b"", 1_000, bytes(16), None, "node-1", 0, 0, None)
    result = ResultDelivery("node-1", 901, t.rtid, 0, b"out", 5)
    link.origin.receive_all("node-1", [bad, result], link.now)
    assert t.state is OriginState.RUNNING  # the result came after the close
    (send, _, err), (close, _, _) = link.origin.actions[-2:]
    assert (send, close) == (O.SEND, O.CLOSE) and type(err) is Error
    link.origin.receive_all("node-1", [result], link.now)  # nor is a later read, until a reconnect
    assert t.state is OriginState.RUNNING


def test_a_spawn_under_a_live_id_or_twice_is_refused_and_changes_nothing() -> None:
    link = recording_link()
    link.connect()
    t = link.spawn()
    other = O.OriginTask(t.rtid, "node-1", "echo", b"in", 3_000, bytes(16), None, None, 7, 8, None,
                         None)
    with pytest.raises(ValueError, match="already live"):
        link.origin.spawn(other, link.now)
    assert other.state is OriginState.INIT and link.origin.get(t.rtid) is t
    with pytest.raises(ValueError, match="already live"):
        link.origin.spawn(t, link.now)
    assert link.origin.get(t.rtid) is t and t.state is OriginState.RUNNING
    fresh = O.OriginTask(t.rtid + 1, "node-1", "echo", b"in", 3_000, bytes(16), None, None, 7, 8,
                         None, None)
    fresh.state = OriginState.COMPLETED  # a spawn does not fit it: refused, not left in the table
    with pytest.raises(ValueError, match="already started"):
        link.origin.spawn(fresh, link.now)
    assert link.origin.get(fresh.rtid) is None


# -- protocol errors are visible ------------------------------------------------------------


def test_a_message_that_does_not_fit_is_a_counted_protocol_error() -> None:
    link = recording_link()
    link.connect()
    t = link.spawn()
    assert t.state is OriginState.RUNNING
    before = link.origin.dropped
    # a reject for a task the node already accepted: it cannot decide the outcome
    link.origin.receive("node-1", SpawnAck("node-1", 999, t.rtid, 1, 4, "late reject", "node-1"), link.now)
    link.collect()
    assert t.state is OriginState.RUNNING  # state never changes on a dropped event
    assert link.origin.dropped == before + 1 and link.origin.protocol_errors == 1
    [(_ev, task, err)] = link.events_of(O.EV_PROTOCOL_ERROR)
    assert task is t and isinstance(err, RemoteProtocolError)
    assert (err.remote_task_id, err.node, err.state, err.event) == (t.rtid, "node-1", "RUNNING",
                                                                     "ACK_REJECTED")
    assert "RUNNING" in err.rule and "ACK_REJECTED" in err.rule
    assert any(e == DROPPED for e, _ in link.traces)


def test_messages_for_finished_tasks_are_not_protocol_errors() -> None:
    link = Link()
    link.connect()
    t = link.spawn()
    link.finish(link.started[0])
    link.origin.receive("node-1", ResultDelivery("node-1", 999, t.rtid, 0, b"again", 1), link.now)
    link.collect()
    assert link.origin.protocol_errors == 0 and not link.events_of(O.EV_PROTOCOL_ERROR)


# -- every transition goes through the table -------------------------------------------------


def test_node_restart_lapses_through_the_table() -> None:
    link = recording_link()
    link.connect()
    t = link.spawn(lease_ms=10_000)
    link.disconnect()
    # a new node process under the same name: a new instance in its WELCOME
    link.node = NodeEngine("node-1", FakeAdmission({"echo", "slow"}), capacity=8, max_input_bytes=1024,
                           ttl_ns=60_000 * MS, entropy=entropy_from(7), trace=None)
    link.connect()
    assert t.state is OriginState.LEASE_EXPIRED
    assert [(e[1], e[2]) for e in link.events_of(O.EV_NODE_RESTARTED)] == [(t, False)]
    assert (t.rtid, OriginState.RUNNING, OE.NODE_RESTARTED, OriginState.LEASE_EXPIRED) in link.origin.record
    assert_all_in_table(link)


def test_oversized_unsent_spawn_is_refused_through_the_table() -> None:
    link = recording_link(max_input_bytes=64)
    t = link.spawn(data=b"x" * 200, flush=False)  # before the WELCOME says the limit
    link.connect()
    assert t.state is OriginState.REJECTED
    assert [e[1] for e in link.events_of(O.EV_REJECTED)] == [t]
    assert (t.rtid, OriginState.SPAWNED, OE.REFUSE, OriginState.REJECTED) in link.origin.record


def test_randomized_runs_take_only_table_transitions() -> None:
    """Spawns, accepts, results, cancels, silences, renewals and reconnects in a
    random order: every recorded transition is in the table, and every task
    ends with exactly one outcome or still live."""
    for seed in range(40):
        rng = random.Random(seed)
        link = recording_link()
        link.connect()
        tasks = []
        for _step in range(30):
            op = rng.randrange(7)
            if op == 0:
                tasks.append(link.spawn(rng.choice(["echo", "slow", "nope"]),
                                        lease_ms=rng.choice([1_000, 3_000]), flush=rng.random() < 0.7))
            elif op == 1 and link.started:
                nt = link.started.pop(rng.randrange(len(link.started)))
                kind = rng.choice([0, 1, 2])
                payload = {0: b"r", 1: "boom", 2: (0, "stopped")}[kind]
                link.node.task_finished(nt, kind, payload, 1, link.now)
            elif op == 2 and tasks:
                link.origin.cancel(rng.choice(tasks).rtid, (0, "test"), link.now)
            elif op == 3:
                link.advance(rng.choice([100, 500, 1_200, 3_500]))
            elif op == 4:
                link.disconnect()
                link.connect(complete=rng.random() < 0.8)
            elif op == 5 and tasks:  # a stray message from the node
                t = rng.choice(tasks)
                link.origin.receive("node-1", SpawnAck("node-1", 1, t.rtid, rng.randrange(2), 1, "",
                                                       "node-1"), link.now)
            else:
                link.flush()
        link.flush()
        assert_all_in_table(link)
        outcomes: dict[int, int] = {}
        for ev, task, _d in link.events:
            if ev in (O.EV_RESULT, O.EV_REJECTED):
                outcomes[task.rtid] = outcomes.get(task.rtid, 0) + 1
        assert all(n == 1 for n in outcomes.values()), outcomes


def test_runtime_counts_protocol_errors_and_the_handle_shows_them(tmp_path) -> None:
    """The driver's side: an EV_PROTOCOL_ERROR is counted in Runtime.stats(),
    listed on the handle, and is the cause of a LeaseExpired that settles it."""
    import asyncio

    import pytest

    from rsc.errors import LeaseExpired
    from rsc.remote import Runtime

    async def main() -> None:
        async with Runtime({"n": f"unix:{tmp_path}/nobody.sock"}, connect_timeout_s=30.0) as rt:
            h = rt.spawn(rt.cx(), "n", "echo", b"x")
            task = h._task
            err = RemoteProtocolError("origin table has no transition (RUNNING, ACK_REJECTED)", "n",
                                      task.rtid, "RUNNING", "ACK_REJECTED")
            stats = rt.stats()
            assert (stats["handles"], stats["tasks"], stats["leases"], stats["protocol_errors"]) == (1, 1, 0, 0)
            assert stats["tasks_by_state"] == {"spawned": 1}  # queued for a node not reached yet
            rt.engine.events.append((O.EV_PROTOCOL_ERROR, task, err))
            rt._pump()
            assert rt.stats()["protocol_errors"] == 1 and h.protocol_errors == [err]
            assert not h.is_finished()
            rt.engine.events.append((O.EV_SETTLE, task, "lease lapsed"))
            rt._pump()
            with pytest.raises(LeaseExpired) as info:
                await h.join()
            assert info.value.__cause__ is err
            rt.engine.forget(task.rtid)
            assert rt.debug_counts() == dict(handles=0, tasks=0, leases=0)

    asyncio.run(main())


def test_unsent_spawns_given_up_go_through_the_table() -> None:
    """A node that cannot be reached (or refuses the handshake): the tasks never
    written to it are given up by the engine, REFUSE -> REJECTED, including
    one cancelled before it was ever written; a task already written is not."""
    link = recording_link()
    link.connect()
    sent = link.spawn()
    link.disconnect()
    waiting = link.spawn(flush=False)
    cancelled = link.spawn(flush=False)
    assert link.origin.cancel(cancelled.rtid, (1, "user"), link.now)
    given_up = link.origin.give_up_unsent("node-1")
    assert given_up == [waiting, cancelled]
    assert waiting.state is OriginState.REJECTED and cancelled.state is OriginState.REJECTED
    assert (cancelled.rtid, OriginState.CANCEL_SENT, OE.REFUSE, OriginState.REJECTED) in link.origin.record
    assert link.origin.get(waiting.rtid) is None and link.origin.get(cancelled.rtid) is None
    assert link.origin.get(sent.rtid) is sent and sent.state is OriginState.RUNNING
    assert_all_in_table(link)


@pytest.mark.parametrize("compact", [False, True], ids=["batches", "digests"])
def test_the_engine_counts_the_renewals_it_applies_and_not_a_late_one(compact: bool) -> None:
    """``renewals_of`` (what handle.lease.renewal_count reads): each renewal
    that moves the deadline counts, by id (a batch) or with its group (a
    compact renewal); the first accept does not; one that comes after the
    deadline lapses the task instead, at the deadline that passed."""
    link = recording_link(compact_origin=compact)
    link.connect()
    t = link.spawn(lease_ms=3_000)
    assert link.origin.renewals_of(t) == 0  # accepted, not renewed
    for _ in range(3):
        link.advance(1_000)  # the node's renewal every third of the lease
        link.flush()
    assert link.origin.renewals_of(t) == 3
    deadline = link.origin.lease_deadline(t.rtid)
    assert deadline == link.now + 3_000 * MS  # the last renewal's
    late = deadline + 1
    if compact:
        assert t.group is not None  # renewed with its group, its timer still at an older deadline
        link.origin.receive("node-1", LeaseRenewalDigest("node-1", 900, 3_000, 1, task_hash(t.rtid)),
                            late)
        link.origin.tick(late)
    else:
        link.origin._on_renewal(link.origin._links["node-1"], t.rtid, 3_000 * MS, late)
    assert link.origin.renewals_of(t) == 3 and t.state is OriginState.LEASE_EXPIRED
    assert t.lapsed_at == deadline  # what handle.lease.expires_at says once expired
