"""Origin and node engines joined by an in-memory link: every path of the
per-task state diagrams in PROTOCOL.md section 4, through the real codec."""

from __future__ import annotations

from rsc._engine.trace_names import DROPPED
from rsc._core.messages import (
    Auth,
    CancelRequest,
    Error,
    Hello,
    LeaseRenewalBatch,
    Ping,
    Pong,
    ResultDelivery,
    SpawnAck,
    SpawnRequest,
    StatusReply,
    StatusRequest,
)
from rsc._engine import node as N
from rsc._engine import origin as O
from rsc._engine.states import NodeState, OriginState
from tests.engine_link import Link

CANCEL_USER = (0, "stop")


def test_handshake_unkeyed_then_round_trip() -> None:
    link = Link()
    link.connect()
    assert link.origin.is_ready("node-1")
    t = link.spawn("echo", b"abc")
    assert t.state is OriginState.RUNNING
    assert [e[0] for e in link.events] == [O.EV_ACCEPTED]
    (task,) = link.started
    assert (task.origin, task.rtid, task.input, task.state) == ("origin-a", t.rtid, b"abc", NodeState.RUNNING)
    link.finish(task, 0, b"ABC")
    assert link.events[-1][0] == O.EV_RESULT and link.events[-1][2] == (0, b"ABC", 5)
    assert t.state is OriginState.COMPLETED
    assert link.origin.live_tasks == 0 and link.origin.lease_count == 0
    assert link.node.running == 0 and task.state is NodeState.COMPLETED


def test_spawn_before_connect_is_sent_after_handshake() -> None:
    link = Link()
    t = link.spawn(flush=False)
    link.collect()
    assert link.to_node == []  # nothing goes out before the link exists
    link.connect()
    assert t.state is OriginState.RUNNING and len(link.started) == 1


def test_keyed_handshake_and_wrong_key() -> None:
    good = Link(key_node=b"k" * 32, key_origin=b"k" * 32)
    good.connect()
    assert good.origin.is_ready("node-1")

    bad = Link(key_node=b"k" * 32, key_origin=b"x" * 32)
    bad.connect()
    assert not bad.origin.is_ready("node-1")
    assert bad.origin_closed and bad.origin_closed[0][1] is None  # origin detected it: ERROR + close

    nil = Link(key_node=b"k" * 32, key_origin=None)
    nil.connect()
    # the origin accepts the node (it has no key), the node refuses the nil AUTH proof
    assert nil.node_closed == [1]
    assert nil.origin.live_tasks == 0


def test_unexpected_message_before_handshake_closes_with_error() -> None:
    link = Link()
    link.node.open_connection(1, link.now)
    link.node.receive(1, Ping("x", 1, 1), link.now)
    actions = link.node.take_actions()
    assert isinstance(actions[0][2], Error) and actions[0][2].code == 5
    assert actions[1][0] == 1  # CLOSE


def test_hello_with_other_version_gets_version_mismatch() -> None:
    link = Link()
    link.node.open_connection(1, link.now)
    link.node.receive(1, Hello("o", 1, 2, "origin", b"n" * 32, {}), link.now)
    actions = link.node.take_actions()
    assert actions[0][2].code == 1 and actions[1][0] == 1


def test_second_hello_after_handshake_is_unexpected() -> None:
    link = Link()
    link.connect()
    link.node.receive(1, Hello("origin-a", 99, 1, "origin", b"n" * 32, {}), link.now)
    actions = link.node.take_actions()
    assert actions[0][2].code == 5


def test_rejects_each_reason() -> None:
    link = Link(capacity=1, bad_inputs={b"bad"})
    link.connect()
    unknown = link.spawn("nope")
    assert unknown.state is OriginState.REJECTED
    assert link.events_of(O.EV_REJECTED)[-1][2][0] == 1
    invalid = link.spawn("echo", b"bad")
    assert link.events_of(O.EV_REJECTED)[-1][2] == (4, "validator refused the input")
    big = link.spawn("echo", b"x" * 2000)
    assert link.events_of(O.EV_REJECTED)[-1][2][0] == 4 and "at most 1024" in link.events_of(O.EV_REJECTED)[-1][2][1]
    short_key = link.spawn("echo", key=b"short")
    assert link.events_of(O.EV_REJECTED)[-1][2][0] == 4
    ok = link.spawn("echo")
    full = link.spawn("echo", b"other")
    assert link.events_of(O.EV_REJECTED)[-1][2][0] == 2
    link.node.begin_drain()
    late = link.spawn("echo", b"third")
    assert link.events_of(O.EV_REJECTED)[-1][2][0] == 3
    assert ok.state is OriginState.RUNNING
    assert all(t.state is OriginState.REJECTED for t in (unknown, invalid, big, short_key, full, late))
    assert link.node.counters["rejected"] == 6 and link.node.counters["accepted"] == 1


def test_zero_lease_is_invalid_input_and_short_lease_raised_to_100ms() -> None:
    link = Link()
    link.connect()
    link.spawn(lease_ms=0)
    assert link.events_of(O.EV_REJECTED)[-1][2][0] == 4
    link.spawn(lease_ms=5)
    assert link.started[-1].lease_ms == 100


def test_cancel_while_running() -> None:
    link = Link()
    link.connect()
    t = link.spawn()
    (task,) = link.started
    assert link.origin.cancel(t.rtid, CANCEL_USER, link.now)
    link.flush()
    assert link.cancels == [(task, CANCEL_USER)]
    assert task.state is NodeState.CANCEL_RECEIVED and t.state is OriginState.CANCEL_SENT
    # a second cancel is not forwarded to the executor again
    link.node.receive(link.conn, CancelRequest("origin-a", 99, t.rtid, (5, "again"), "origin-a"), link.now)
    link.collect()
    assert len(link.cancels) == 1
    link.finish(task, 2, CANCEL_USER)
    assert link.events[-1][2] == (2, CANCEL_USER, 5)
    assert t.state is OriginState.COMPLETED


def test_cancel_before_spawn_leaves_tombstone_and_nothing_runs() -> None:
    link = Link()
    link.connect()
    # reorder: the CANCEL overtakes its SPAWN
    link.node.receive(link.conn, CancelRequest("origin-a", 5, 42, CANCEL_USER, "origin-a"), link.now)
    assert link.node.tombstones == 1
    t = link.spawn(rtid=42)
    assert link.started == []
    assert t.state is OriginState.COMPLETED
    assert link.events_of(O.EV_RESULT)[-1][2] == (2, CANCEL_USER, 0)
    assert link.node.tombstones == 0


def test_cancel_for_another_origin_is_dropped() -> None:
    link = Link()
    link.connect()
    t = link.spawn()
    link.node.receive(link.conn, CancelRequest("origin-a", 5, t.rtid, CANCEL_USER, "origin-b"), link.now)
    link.collect()
    assert link.cancels == [] and any(e == DROPPED for e, _ in link.traces)


def test_spawn_claiming_another_origin_is_invalid_input() -> None:
    link = Link()
    link.connect()
    link.node.receive(link.conn, SpawnRequest("origin-a", 9, 77, "echo", b"", 1000, b"k" * 16, None,
                                              "origin-b", 0, 0, None), link.now)
    (op, _c, ack) = link.node.take_actions()[0]
    assert isinstance(ack, SpawnAck) and ack.status == 1 and ack.reject_code == 4


def test_duplicate_while_running_becomes_alias_and_runs_once() -> None:
    link = Link()
    link.connect()
    key = b"K" * 16
    a = link.spawn("echo", b"same", key=key)
    b = link.spawn("echo", b"same", key=key)
    assert len(link.started) == 1 and b.state is OriginState.RUNNING
    # a cancel sent to the alias cancels the one real task
    link.origin.cancel(b.rtid, CANCEL_USER, link.now)
    link.flush()
    assert link.cancels == [(link.started[0], CANCEL_USER)]
    link.finish(link.started[0], 2, CANCEL_USER)
    results = {e[1].rtid: e[2] for e in link.events_of(O.EV_RESULT)}
    assert results == {a.rtid: (2, CANCEL_USER, 5), b.rtid: (2, CANCEL_USER, 5)}


def test_duplicate_after_finish_is_redelivered_at_once() -> None:
    link = Link()
    link.connect()
    key = b"Q" * 16
    link.spawn("echo", b"v", key=key)
    link.finish(link.started[0], 0, b"R")
    again = link.spawn("echo", b"v", key=key)
    assert len(link.started) == 1
    assert again.state is OriginState.COMPLETED and link.events[-1][2] == (0, b"R", 5)
    assert link.node.counters["duplicates"] == 1


def test_key_reused_for_different_input_conflicts() -> None:
    link = Link()
    link.connect()
    key = b"C" * 16
    link.spawn("echo", b"one", key=key)
    link.spawn("echo", b"two", key=key)
    assert link.events_of(O.EV_REJECTED)[-1][2][0] == 5
    assert len(link.started) == 1


def test_live_task_id_with_another_key_conflicts() -> None:
    link = Link()
    link.connect()
    t = link.spawn("echo", b"one")
    link.node.receive(link.conn, SpawnRequest("origin-a", 50, t.rtid, "echo", b"one", 1000,
                                              b"Z" * 16, None, "origin-a", 0, 0, None), link.now)
    ack = link.node.take_actions()[0][2]
    assert ack.reject_code == 5


def test_reconnect_resends_with_same_key_and_result_arrives_once() -> None:
    link = Link()
    link.connect()
    t = link.spawn(flush=False)
    link.collect()
    # the SPAWN reaches the node, but the connection dies before the ACK comes back
    link.node.receive(link.conn, link.to_node.pop(0), link.now)
    link.collect()
    link.disconnect()  # the ACK queued for the origin is lost with it
    (task,) = link.started
    link.finish(task, 0, b"done", flush=False)  # finishes while no connection is up: held
    link.collect()
    assert link.node.has_undelivered()
    link.connect()
    assert len(link.started) == 1
    assert [e[2] for e in link.events_of(O.EV_RESULT)] == [(0, b"done", 5)]
    assert t.state is OriginState.COMPLETED
    assert any(e == DROPPED for e, _ in link.traces)  # the re-delivered duplicate was dropped


def test_reconnect_resends_cancel_then_spawn() -> None:
    link = Link()
    link.connect()
    t = link.spawn(flush=False)
    link.collect()
    link.to_node.clear()  # the spawn is lost with the connection
    link.origin.cancel(t.rtid, CANCEL_USER, link.now)
    link.disconnect()
    link.connect()
    assert link.started == []
    assert link.events_of(O.EV_RESULT)[-1][2] == (2, CANCEL_USER, 0)


def test_node_renews_in_batches_and_origin_lease_holds() -> None:
    """Without compact renewals on both ends (here: an origin that does not
    offer them), the node lists every task id each period."""
    link = Link(compact_origin=False)
    link.connect()
    ts = [link.spawn("echo", bytes([i])) for i in range(5)]
    sent = []
    for _ in range(10):
        link.advance(1_000)
        sent += [m for m in link.to_origin if isinstance(m, LeaseRenewalBatch)]
        link.flush()
    assert sent and sorted(sent[0].remote_task_ids) == [t.rtid for t in ts]
    assert all(t.state is OriginState.RUNNING for t in ts)  # 10 s > 3 s lease, renewed
    assert not link.events_of(O.EV_LEASE_EXPIRED)


def test_origin_pings_at_a_third_of_the_lease() -> None:
    link = Link()
    link.connect()
    link.spawn(lease_ms=3_000)
    link.advance(1_001)
    assert any(isinstance(m, Ping) for m in link.to_node)
    link.flush()


def test_lease_lapses_without_renewal() -> None:
    link = Link()
    link.connect()
    t = link.spawn(lease_ms=3_000)
    link.disconnect()  # nothing more from the node
    link.advance(3_001)
    assert t.state is OriginState.LEASE_EXPIRED
    assert link.events_of(O.EV_LEASE_EXPIRED)[0][1] is t
    # late result after reconnect: LeaseExpired --RESULT--> Completed
    link.connect()
    link.finish(link.started[0], 0, b"late")
    assert t.state is OriginState.COMPLETED


def test_orphaned_task_is_cancelled_and_result_held_for_reconnect() -> None:
    link = Link()
    link.connect()
    t = link.spawn(lease_ms=1_000)
    (task,) = link.started
    link.disconnect()
    link.advance(600)
    assert link.cancels == []
    link.advance(600)  # origin silent for 1.2 s > 1 s lease
    assert link.cancels == [(task, (11, "origin silent for longer than the task's lease"))]
    link.finish(task, 2, link.cancels[0][1], flush=False)
    link.collect()
    assert link.node.has_undelivered()
    link.connect()
    results = link.events_of(O.EV_RESULT)
    assert results and results[-1][1] is t and results[-1][2][0] == 2


def test_one_silence_check_per_origin_and_lease_is_exact_for_every_task() -> None:
    """Tasks of one origin with one lease, admitted at different times, share
    one silence check (their renewal group's), and each is orphaned exactly
    when the origin has been silent for the lease: not at the first task's
    admission + lease, since the second spawn was heard from the origin."""
    link = Link()
    link.connect()
    link.spawn(lease_ms=1_000)
    link.advance(400)
    link.spawn(lease_ms=1_000)  # heard at +400: both now lapse at +1,400
    first, second = link.started
    assert link.node.timers.count(N.T_SILENCE) == 1
    link.disconnect()
    link.advance(999)  # +1,399: the check set at +1,000 found the origin heard since
    assert link.cancels == []
    link.advance(1)  # +1,400: silent for exactly the lease
    assert [t for t, _ in link.cancels] == [first, second]
    assert {r[0] for _, r in link.cancels} == {11}


def test_node_deadline_cancels_with_reason_deadline() -> None:
    link = Link()
    link.connect()
    link.spawn(budget=(500, None, None, 128), lease_ms=10_000)
    (task,) = link.started
    link.advance(400)
    assert link.cancels == []
    link.advance(200)
    assert link.cancels[0][1][0] == 2


def test_ping_pong_and_status() -> None:
    link = Link()
    link.connect()
    link.node.receive(link.conn, Ping("origin-a", 50, 7), link.now)
    link.node.receive(link.conn, StatusRequest("origin-a", 51), link.now)
    msgs = [a[2] for a in link.node.take_actions()]
    assert isinstance(msgs[0], Pong) and msgs[0].nonce == 7
    assert isinstance(msgs[1], StatusReply) and msgs[1].stats["running"] == 0


def test_messages_that_do_not_fit_are_dropped() -> None:
    link = Link()
    link.connect()
    t = link.spawn()
    link.finish(link.started[0])
    before = link.origin.dropped
    link.origin.receive("node-1", ResultDelivery("node-1", 999, t.rtid, 0, b"again", 1), link.now)
    link.origin.receive("node-1", SpawnAck("node-1", 999, 12345, 0, 0, "", "node-1"), link.now)
    assert link.origin.dropped == before + 2
    assert len(link.events_of(O.EV_RESULT)) == 1
    # a result for a task that is not running on the node is dropped too
    link.node.task_finished(link.started[0], 0, b"x", 1, link.now)
    assert link.node.counters["dropped"] == 1


def test_node_refuses_origin_only_messages() -> None:
    link = Link()
    link.connect()
    link.node.receive(link.conn, Auth("origin-a", 60, None), link.now)
    actions = link.node.take_actions()
    assert actions[0][2].code == 5 and actions[1][0] == 1


def test_results_go_to_every_live_connection_of_the_origin() -> None:
    link = Link()
    link.connect()
    t = link.spawn()
    # a second connection from the same origin
    link.node.open_connection(2, link.now)
    link.node.receive(2, Hello("origin-a", 70, 1, "origin", b"m" * 32, {}), link.now)
    link.node.receive(2, Auth("origin-a", 71, None), link.now)
    link.node.take_actions()
    link.node.task_finished(link.started[0], 0, b"r", 1, link.now)
    sends = [(c, m) for op, c, m in link.node.take_actions() if isinstance(m, ResultDelivery)]
    assert sorted(c for c, _ in sends) == [1, 2] and all(m.remote_task_id == t.rtid for _, m in sends)


def test_cancel_after_redelivered_duplicate_resends_the_result() -> None:
    link = Link()
    link.connect()
    key = b"D" * 16
    link.spawn("echo", b"v", key=key)
    link.finish(link.started[0], 0, b"R")
    dup = link.spawn("echo", b"v", key=key)  # answered from the finished record
    link.node.receive(link.conn, CancelRequest("origin-a", 80, dup.rtid, CANCEL_USER, "origin-a"), link.now)
    sent = [m for _op, _c, m in link.node.take_actions()]
    assert isinstance(sent[0], ResultDelivery) and sent[0].outcome_kind == 0 and sent[0].payload == b"R"
    assert link.node.tombstones == 0


def test_resend_under_same_task_id_with_other_input_conflicts() -> None:
    link = Link()
    link.connect()
    t = link.spawn("echo", b"one")
    link.node.receive(link.conn, SpawnRequest("origin-a", 50, t.rtid, "echo", b"two", 1000,
                                              t.key, None, "origin-a", 0, 0, None), link.now)
    ack = link.node.take_actions()[0][2]
    assert ack.status == 1 and ack.reject_code == 5


def test_origin_answers_ping_and_checks_who_answered() -> None:
    link = Link()
    link.connect()
    link.origin.receive("node-1", Ping("node-1", 90, 3), link.now)
    (op, node, msg) = link.origin.take_actions()[0]
    assert isinstance(msg, Pong) and msg.nonce == 3
    other = Link()
    other.node.name = "impostor"
    other.connect()
    assert not other.origin.is_ready("node-1")
    assert other.origin_closed


def test_close_all_says_shutting_down() -> None:
    link = Link()
    link.connect()
    link.node.close_all()
    actions = link.node.take_actions()
    assert isinstance(actions[0][2], Error) and actions[0][2].code == 6 and actions[1][0] == 1
    assert link.node.connections == 0


def test_huge_peer_time_is_accepted_but_not_merged() -> None:
    link = Link()
    link.connect()
    link.node.receive(link.conn, Ping("origin-a", (1 << 64) - 1, 1), link.now)
    (_op, _c, pong) = link.node.take_actions()[0]
    assert pong.sender_time < 1 << 62


def test_unusable_durations_are_invalid_input_and_record_nothing() -> None:
    link = Link()
    link.connect()
    link.node.receive(link.conn, SpawnRequest("origin-a", 50, 77, "echo", b"", (1 << 64) - 1,
                                              b"k" * 16, None, "origin-a", 0, 0, None), link.now)
    ack = link.node.take_actions()[0][2]
    assert ack.status == 1 and ack.reject_code == 4 and link.node.running == 0
    link.spawn(budget=((1 << 64) - 1, None, None, 0), lease_ms=1000)
    (task,) = link.started
    assert task.deadline_ns is None and link.node.running == 1


def test_the_ping_follows_the_shortest_lease_of_the_live_tasks() -> None:
    """The lease lengths a link's tasks ask for are counted (the first one
    seen apart from the rest): the PING keeps to a third of the shortest
    one still live, whichever came first."""
    link = Link()
    link.connect()
    elink = link.origin._links["node-1"]
    link.spawn(lease_ms=30_000)  # the first length the link sees
    link.spawn(lease_ms=3_000)
    link.spawn(lease_ms=3_000)
    assert elink.shortest_lease() == 3_000
    link.advance(1_001)
    assert any(isinstance(m, Ping) for m in link.to_node)
    long, short1, short2 = link.started
    link.finish(short1)
    assert elink.shortest_lease() == 3_000  # one 3 s task is still live
    link.finish(short2)
    assert elink.shortest_lease() == 30_000
    link.advance(1_001)  # the due PING deadline is re-read: 10 s after the last frame now
    pings = sum(1 for m in link.to_node if isinstance(m, Ping))
    link.advance(5_000)
    assert sum(1 for m in link.to_node if isinstance(m, Ping)) == pings
    link.spawn(lease_ms=3_000)  # another length than the first again
    assert elink.shortest_lease() == 3_000
    link.finish(long)
    link.finish(link.started[-1])
    assert elink.shortest_lease() == 0 and not link.origin.live_tasks


def test_a_drawn_spawn_met_by_its_tombstone_is_recorded_as_drawn() -> None:
    # the record a tombstoned spawn leaves follows the spawn's own rule (no hash
    # for a drawn key, owner-only), as an admitted spawn's does
    from rsc._core import idemtable

    link = Link()
    link.connect()
    link.node.receive(link.conn, CancelRequest("origin-a", 5, 42, CANCEL_USER, "origin-a"), link.now)
    key = b"d" * 16
    spawn = SpawnRequest("origin-a", 6, 42, "echo", b"in", 3_000, key, None, "origin-a", 7, 8,
                         None, True)
    link.node.receive(link.conn, spawn, link.now)
    assert link.started == [] and link.node.tombstones == 0
    assert link.node._idem.get(key).fingerprint == idemtable.DRAWN_FINGERPRINT


def test_receive_all_is_receive_of_each_message_of_the_read() -> None:
    """A read handed over whole (``NodeEngine.receive_all``, what the node's
    server calls) does what ``receive`` of each message does, in order, with
    each message's time merged before it is handled; a message that closes
    the connection leaves the rest of the read unread."""
    from rsc._core.messages import Welcome

    def spawn(rtid: int, t: int) -> SpawnRequest:
        return SpawnRequest("origin-a", t, rtid, "echo", b"in", 3_000, rtid.to_bytes(16, "big"),
                            None, "origin-a", 7, 8, None)

    read = [spawn(1, 500), Ping("origin-a", 900, 3), spawn(2, 10)]
    one, whole = Link(), Link()
    for link in (one, whole):
        link.connect()
        link.node.take_actions()
    for msg in read:
        one.node.receive(one.conn, msg, one.now)
    whole.node.receive_all(whole.conn, read, whole.now)
    a, b = one.node.take_actions(), whole.node.take_actions()
    assert [(op, type(m).__name__, getattr(m, "sender_time", None)) for op, _c, m in a] == \
        [(op, type(m).__name__, getattr(m, "sender_time", None)) for op, _c, m in b]
    assert one.node.clock.time == whole.node.clock.time > 900
    assert one.node.running == whole.node.running == 2
    # a message that does not fit after the handshake closes the connection: the rest is unread
    bad = Welcome("origin-a", 901, 1, bytes(32), None, {})
    whole.node.receive_all(whole.conn, [bad, Ping("origin-a", 902, 4), spawn(3, 903)], whole.now)
    acts = whole.node.take_actions()
    assert [(op, type(m).__name__) for op, _c, m in acts] == [(N.SEND, "Error"), (N.CLOSE, "NoneType")]
    assert whole.node.running == 2 and whole.node.connections == 0
