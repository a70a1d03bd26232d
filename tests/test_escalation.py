"""Lease escalation in the origin engine, in virtual time over the in-memory link.

Every policy (fail, cancel(t), retry(n, nodes, same_node_within_s)) and the
node-restart handling, decided by rsc._engine.escalation and applied by the
origin engine: no event loop, no real clock.
"""

from __future__ import annotations

import itertools

import pytest

from rsc._engine import origin as O
from rsc._engine.escalation import (
    ESCALATION_TRANSITIONS,
    Cancel,
    EscEvent,
    EscState,
    Escalation,
    Reattempt,
    Settle,
    _LEASE_EXPIRED_KIND,
)
from rsc._engine.node import NodeEngine
from rsc._engine.states import OriginState
from rsc.lease import CancelThen, Fail, LeasePolicy, Retry, cancel, fail, retry
from rsc.types import CancelKind
from tests.engine_link import MS, FakeAdmission, Link, entropy_from


def make_link() -> Link:
    link = Link()
    link.origin.new_rtid = itertools.count(1_000).__next__
    link.connect()
    return link


def spawn(link: Link, policy: LeasePolicy, lease_ms: int = 3_000) -> O.OriginTask:
    t = link.spawn(lease_ms=lease_ms)
    t.policy = policy
    assert t.state is OriginState.RUNNING
    return t


def origin_only(link: Link, ms: int) -> None:
    """Let ``ms`` pass on the origin only: the node neither ticks nor renews."""
    link.now += ms * MS
    link.origin.tick(link.now)
    link.collect()


def restart_node(link: Link, journal: str | None = None) -> None:
    """Replace the node by a new process (a new instance) under the same name."""
    link.disconnect()
    link.node = NodeEngine("node-1", FakeAdmission({"echo", "slow"}), capacity=8, max_input_bytes=1024,
                           ttl_ns=60_000 * MS, entropy=entropy_from(77), trace=None)
    if journal is not None:
        link.node.features["journal"] = journal
    link.connect()


def settles(link: Link, task: O.OriginTask | None = None) -> list[str]:
    return [d for ev, t, d in link.events if ev == O.EV_SETTLE and (task is None or t is task)]


def reattempts(link: Link) -> list[tuple[O.OriginTask, O.OriginTask]]:
    return [(t, d) for ev, t, d in link.events if ev == O.EV_REATTEMPT]


def test_policy_types_keep_their_public_behaviour() -> None:
    assert isinstance(fail(), Fail) and str(fail()) == "fail()" and fail().kind == "fail"
    assert cancel(2) == CancelThen(2.0) and str(cancel(2)) == "cancel(2.0)" and cancel(2).kind == "cancel"
    r = retry(2, ["b"], 1.5)
    assert r == Retry(2, ("b",), 1.5) and r.kind == "retry" and r.timeout_s == 5.0
    assert str(r) == "retry(2, nodes=['b'], same_node_within_s=1.5)"
    assert all(isinstance(p, LeasePolicy) for p in (fail(), cancel(), retry()))
    assert _LEASE_EXPIRED_KIND == int(CancelKind.LEASE_EXPIRED)


# -- fail() ------------------------------------------------------------------------------


def test_fail_settles_at_the_lapse_and_cancels_best_effort() -> None:
    link = make_link()
    t = spawn(link, fail())
    origin_only(link, 3_001)
    assert settles(link, t) == ["lease of 3000 ms on node 'node-1' lapsed with neither renewal nor result"]
    assert t.state is OriginState.CANCEL_SENT  # the best-effort cancel went out
    assert link.to_node and type(link.to_node[-1]).__name__ == "CancelRequest"
    assert link.origin.escalation_state(t.rtid) is EscState.DONE
    # the cancel is never answered: the next lapse only forgets the task
    link.disconnect()
    origin_only(link, 3_001)
    assert link.origin.live_tasks == 0 and len(settles(link)) == 1


# -- cancel(t) ---------------------------------------------------------------------------


def test_cancel_answered_in_time_settles_with_the_node_answer() -> None:
    link = make_link()
    t = spawn(link, cancel(2.0))
    origin_only(link, 3_001)
    assert link.origin.escalation_state(t.rtid) is EscState.CANCELLING
    assert not settles(link)
    link.flush()  # the CANCEL reaches the node, which cancels the task
    assert link.cancels and link.cancels[0][1][0] == _LEASE_EXPIRED_KIND
    link.finish(link.started[0], 2, (_LEASE_EXPIRED_KIND, "cancelled"))
    [(_ev, task, outcome)] = link.events_of(O.EV_RESULT)
    assert task is t and outcome[0] == 2
    origin_only(link, 5_000)  # the cancel timeout has nothing left to do
    assert not settles(link) and link.origin.live_tasks == 0
    assert link.origin.next_deadline() is None


def test_cancel_unanswered_gives_up_at_its_timeout() -> None:
    link = make_link()
    t = spawn(link, cancel(2.0))
    link.disconnect()  # nothing more from the node
    origin_only(link, 3_001)
    assert link.origin.escalation_state(t.rtid) is EscState.CANCELLING and not settles(link)
    assert link.origin.next_deadline() == link.now + 2_000 * MS  # the cancel timeout, through the engine
    origin_only(link, 1_999)
    assert not settles(link)
    origin_only(link, 1)
    assert settles(link, t) == ["lease of 3000 ms on node 'node-1' lapsed with neither renewal nor "
                                "result; no answer to the cancel within 2.0 s"]
    assert link.origin.live_tasks == 0 and link.origin.escalation_state(t.rtid) is None


def test_cancel_with_a_long_timeout_keeps_asking_at_each_lapse() -> None:
    link = make_link()
    t = spawn(link, cancel(10.0))
    link.disconnect()
    origin_only(link, 3_001)
    origin_only(link, 3_001)  # the re-armed lease lapses again: cancel again, still waiting
    assert link.origin.escalation_state(t.rtid) is EscState.CANCELLING and not settles(link)
    origin_only(link, 6_998)  # 9.999 s after the first lapse
    assert not settles(link)
    origin_only(link, 1)
    assert len(settles(link, t)) == 1 and link.origin.live_tasks == 0


# -- retry(n, nodes, same_node_within_s) ------------------------------------------------------


def test_retry_moves_to_the_next_node_then_fails_when_spent() -> None:
    link = make_link()
    t = spawn(link, retry(1, ["node-2"]))
    origin_only(link, 3_001)
    [(old, new)] = reattempts(link)
    assert old is t and new.node == "node-2" and new.key == t.key and new.rtid == 1_000
    assert t.policy is None and new.policy == retry(1, ["node-2"])
    assert new.state is OriginState.SPAWNED and t.state is OriginState.CANCEL_SENT
    assert link.origin.escalation_state(new.rtid) is EscState.WATCHING
    # node-2 never comes up: the new attempt is sent nowhere, so its lease never
    # starts; bring it up and let it lapse there
    link.origin.link_up("node-2", link.now)
    link.origin.receive("node-2", _welcome(link, "node-2"), link.now)
    link.collect()
    origin_only(link, 3_001)
    assert settles(link, new) == ["lease of 3000 ms on node 'node-2' lapsed with neither renewal nor result"]


def test_retry_without_nodes_stays_on_its_node() -> None:
    link = make_link()
    t = spawn(link, retry(2))
    link.disconnect()
    origin_only(link, 3_001)
    [(old, new)] = reattempts(link)
    assert new.node == "node-1" and new.key == t.key
    link.connect()  # the node is back: the new attempt runs there, answered from the key
    assert new.state is OriginState.RUNNING


def test_retry_same_node_first_moves_on_when_not_accepted_in_time() -> None:
    link = make_link()
    t = spawn(link, retry(1, ["node-2"], same_node_within_s=1.0))
    link.disconnect()
    origin_only(link, 3_001)
    [(old, same)] = reattempts(link)
    assert same.node == "node-1"
    assert link.origin.escalation_state(same.rtid) is EscState.ON_SAME_NODE
    origin_only(link, 999)
    assert len(reattempts(link)) == 1
    origin_only(link, 1)  # the window closes unaccepted: on to node-2
    [_, (prev, other)] = reattempts(link)
    assert prev is same and other.node == "node-2" and other.key == t.key
    assert link.origin.escalation_state(other.rtid) is EscState.WATCHING


def test_retry_same_node_first_stays_when_accepted_in_time() -> None:
    link = make_link()
    spawn(link, retry(1, ["node-2"], same_node_within_s=1.0))
    link.disconnect()
    origin_only(link, 3_001)
    [(_old, same)] = reattempts(link)
    link.connect()  # back within the window: the node accepts the same key
    assert same.state is OriginState.RUNNING
    origin_only(link, 1_000)
    assert len(reattempts(link)) == 1 and link.origin.escalation_state(same.rtid) is EscState.WATCHING


def test_retry_same_node_lapsing_again_moves_on_at_once() -> None:
    link = make_link()
    spawn(link, retry(1, ["node-2"], same_node_within_s=10.0))
    origin_only(link, 3_001)
    [(_old, same)] = reattempts(link)
    link.flush()  # the node accepts the same key, then goes silent
    assert same.state is OriginState.RUNNING
    origin_only(link, 3_001)
    [_, (prev, other)] = reattempts(link)
    assert prev is same and other.node == "node-2"


# -- a node restart ----------------------------------------------------------------------------


def test_node_restart_without_journal_fails_at_once() -> None:
    link = make_link()
    t = spawn(link, fail(), lease_ms=60_000)
    restart_node(link)
    [msg] = settles(link, t)
    assert "restarted while the task was in flight and has no record of it" in msg


def test_node_restart_with_journal_asks_the_same_node_again() -> None:
    link = make_link()
    link.disconnect()
    link.node.features["journal"] = "j1"
    link.connect()
    t = spawn(link, cancel(1.0), lease_ms=60_000)
    restart_node(link, journal="j1")
    [(old, new)] = reattempts(link)
    assert old is t and new.node == "node-1" and not settles(link)


def test_node_restart_under_retry_moves_to_the_next_node_at_once() -> None:
    link = make_link()
    t = spawn(link, retry(1, ["node-2"], same_node_within_s=5.0), lease_ms=60_000)
    restart_node(link)  # no journal: the same node has no record, go elsewhere now
    [(old, new)] = reattempts(link)
    assert old is t and new.node == "node-2"
    assert link.origin.escalation_state(new.rtid) is EscState.WATCHING


# -- the machine's table -------------------------------------------------------------------------


def test_every_move_is_in_the_table() -> None:
    for policy in (fail(), cancel(1.0), retry(2, ["b"], 0.5), retry(1)):
        esc = Escalation(policy)
        now = 0
        for event in [EscEvent.LAPSED, EscEvent.DEADLINE, EscEvent.LAPSED, EscEvent.NODE_RESTARTED,
                      EscEvent.LAPSED]:
            before = esc.state
            if (before, event) not in ESCALATION_TRANSITIONS:
                continue
            if event is EscEvent.LAPSED:
                out = esc.on_lapsed("a", 1000, now)
            elif event is EscEvent.NODE_RESTARTED:
                out = esc.on_node_restarted("a", False, now)
            else:
                out = esc.on_deadline("a", 1000, False)
            assert esc.state in ESCALATION_TRANSITIONS[(before, event)]
            assert all(isinstance(d, (Settle, Cancel, Reattempt)) or type(d).__name__ == "Forget"
                       for d in out)
            now += 1


def test_a_move_outside_the_table_is_refused() -> None:
    esc = Escalation(fail())
    with pytest.raises(AssertionError):
        esc.on_deadline("a", 1000, False)  # WATCHING has no deadline


def _welcome(link: Link, node: str):
    from rsc._core.messages import Welcome

    return Welcome(node, 1, 1, b"\0" * 32, None, {"max_input_bytes": 1024})
