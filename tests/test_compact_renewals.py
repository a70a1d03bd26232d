"""Compact lease renewals (PROTOCOL.md section 4, "Compact renewals"), engine
against engine through the real codec: negotiation with older peers, the
digest, the resync, and the races the protocol page lists (an outcome in
flight, a spawn not yet accepted, a cancel, a lapse, a reconnect, a late,
duplicated or reordered renewal)."""

from __future__ import annotations

from typing import Any

import pytest

from rsc._core import envelope
from rsc._core.messages import (
    Error,
    LeaseRenewalBatch,
    LeaseRenewalDigest,
    LeaseResyncRequest,
    SpawnAck,
)
from rsc._engine import origin as O
from rsc._engine.renewal import FEATURE, LeaseGroup, RenewalGroup, digest_of, offers_digests, task_hash
from rsc._engine.states import OriginState
from tests.engine_link import MS, Link

LEASE = 3_000  # ms: a renewal period of 1 s
RENEWAL_KINDS = (LeaseRenewalBatch, LeaseRenewalDigest)


def renewals(link: Link) -> list[Any]:
    """The renewal messages queued for the origin (not yet delivered)."""
    return [m for m in link.to_origin if isinstance(m, RENEWAL_KINDS)]


def period(link: Link) -> list[Any]:
    """One renewal period: advance a third of the lease, deliver everything;
    returns the renewal messages the node sent in it."""
    link.advance(LEASE // 3)
    sent = renewals(link)
    link.flush()
    return sent


def resyncs(link: Link) -> list[LeaseResyncRequest]:
    return [m for m in link.to_node if isinstance(m, LeaseResyncRequest)]


# -- the digest --------------------------------------------------------------------------


def test_task_hash_is_splitmix64_and_digest_is_order_free() -> None:
    # SplitMix64's first output from state 0 is the finaliser of its golden gamma
    assert task_hash(0) == 0xE220A8397B1DCDAF
    assert task_hash(2**64 - 1) == task_hash(2**64 - 1) & (2**64 - 1)
    assert digest_of([1, 2, 3]) == digest_of([3, 1, 2]) == 0x1B590CD64E9485E2
    # consecutive ids do not cancel as raw ids would (1 ^ 2 == 0 ^ 3)
    assert digest_of([1, 2]) != digest_of([0, 3])
    assert len({task_hash(i) for i in range(10_000)}) == 10_000


def test_groups_keep_count_and_digest_incrementally() -> None:
    node_group, view = RenewalGroup("o", LEASE, 1), LeaseGroup(LEASE)
    for rtid in range(1, 101):
        node_group.add(rtid)
        view.add(rtid)
    node_group.add(5)  # a second add changes nothing on the node
    assert len(node_group.ids) == view.count == 100
    assert node_group.digest == view.digest == digest_of(range(1, 101))
    assert not node_group.discard(50) and not node_group.discard(50)  # a second discard too
    view.remove(50)
    assert view.matches(99, node_group.digest) and not view.matches(100, node_group.digest)
    for rtid in range(1, 101):
        node_group.discard(rtid)
    assert node_group.digest == 0 and not node_group.ids


def test_offers_digests_reads_only_an_int_version() -> None:
    assert offers_digests({FEATURE: 1}) and offers_digests({FEATURE: 2, "x": None})
    for features in ({}, {FEATURE: True}, {FEATURE: "1"}, {FEATURE: 0}, None, [FEATURE]):
        assert not offers_digests(features)


# -- negotiation --------------------------------------------------------------------------


@pytest.mark.parametrize("node,origin", [(True, True), (True, False), (False, True), (False, False)])
def test_digests_only_when_both_ends_offer_them(node: bool, origin: bool) -> None:
    link = Link(compact_node=node, compact_origin=origin)
    link.connect()
    ts = [link.spawn(lease_ms=LEASE) for _ in range(5)]
    sent = [m for _ in range(6) for m in period(link)]
    kinds = {type(m) for m in sent}
    assert kinds == ({LeaseRenewalDigest} if node and origin else {LeaseRenewalBatch})
    assert all(t.state is OriginState.RUNNING for t in ts)  # 6 s > 3 s lease: renewed either way
    assert not link.events_of(O.EV_LEASE_EXPIRED) and not link.events_of(O.EV_PROTOCOL_ERROR)
    assert not resyncs(link)
    assert (FEATURE in link.node.features) is node and (FEATURE in link.origin.features) is origin
    # an origin with digests off keeps no views, even of a node that offers them
    assert bool(link.origin._links["node-1"].groups) is (node and origin)


def test_a_digest_is_the_same_size_for_10_and_10_000_tasks() -> None:
    sizes = {}
    for n in (10, 10_000):
        link = Link(capacity=n)
        link.connect()
        ts = [link.spawn(lease_ms=LEASE, flush=False) for _ in range(n)]
        link.flush()
        (sent,) = period(link)
        assert isinstance(sent, LeaseRenewalDigest)
        assert (sent.new_lease_ms, sent.task_count, sent.digest) == (
            LEASE, n, digest_of(t.rtid for t in ts))
        sizes[n] = len(envelope.encode_frame(sent))
    # at most: length prefix 4, array header 1, kind 1, "node-1" 7, and four
    # uints of at most 9 bytes (time, lease, count, digest); only the uints'
    # encodings grow with the numbers
    assert max(sizes.values()) <= 4 + 1 + 1 + 7 + 4 * 9
    assert sizes[10_000] / sizes[10] <= 1.25


def test_a_digest_renews_every_task_of_its_group_without_touching_them() -> None:
    link = Link()
    link.connect()
    ts = [link.spawn(lease_ms=LEASE) for _ in range(3)]
    own = [t.lease_until for t in ts]
    for _ in range(20):  # 20 s of 3 s leases
        period(link)
        assert all(link.origin.lease_deadline(t.rtid) == link.now + LEASE * MS for t in ts)
    assert [t.state for t in ts] == [OriginState.RUNNING] * 3
    assert all(link.origin.renewals_of(t) == 20 for t in ts)
    # the tasks' own deadlines moved only when their timers came due (once a
    # lease or so), not at each renewal
    assert all(t.lease_until > o for t, o in zip(ts, own))
    assert not resyncs(link)


def test_a_digest_from_a_node_that_did_not_offer_them_is_unexpected() -> None:
    link = Link(compact_node=False)
    link.connect()
    t = link.spawn(lease_ms=LEASE)
    link.origin.receive("node-1", LeaseRenewalDigest("node-1", 50, LEASE, 1, task_hash(t.rtid)),
                        link.now)
    (err,) = [m for op, _n, m in link.origin.take_actions() if op == O.SEND]
    assert isinstance(err, Error) and err.code == 5 and "did not offer" in err.message


# -- resync ------------------------------------------------------------------------------------


def test_a_raised_lease_is_found_by_one_resync_then_digests_match() -> None:
    """The origin guesses a task's group by the lease it asked for; a node that
    raised the lease to 100 ms groups it there. One mismatch, one resync, and
    the view follows the node's list."""
    link = Link()
    link.connect()
    t = link.spawn(lease_ms=60)  # the node raises it to 100 ms
    link.advance(34)  # a third of 100 ms
    (digest,) = renewals(link)
    assert (digest.new_lease_ms, digest.task_count) == (100, 1)
    link.flush()
    (req,) = [m for m in link.traces if m[0] == "remote::lease_resync_sent"]
    assert req[1]["lease_ms"] == 100
    assert t.group is not None and t.group.lease_ms == 100  # moved by the batch that answered
    for _ in range(30):
        link.advance(33)
        assert all(isinstance(m, LeaseRenewalDigest) for m in renewals(link))
        link.flush()
    assert t.state is OriginState.RUNNING and not resyncs(link)
    assert len([m for m in link.traces if m[0] == "remote::lease_resync_sent"]) == 1


def test_an_alias_under_another_lease_is_found_by_resync() -> None:
    """A duplicate spawn (same key and input) with another lease is an alias
    renewed in the group of the running task's lease."""
    link = Link()
    link.connect()
    first = link.spawn(lease_ms=LEASE, key=b"k" * 16)
    alias = link.spawn(lease_ms=6_000, key=b"k" * 16)
    assert len(link.started) == 1 and alias.state is OriginState.RUNNING
    assert alias.group.lease_ms == 6_000  # the origin's guess
    for _ in range(4):
        period(link)
    assert alias.group is first.group and first.group.count == 2
    assert len([m for m in link.traces if m[0] == "remote::lease_resync_sent"]) == 1
    for _ in range(10):
        period(link)
    assert alias.state is first.state is OriginState.RUNNING
    assert not link.events_of(O.EV_LEASE_EXPIRED)


def test_the_node_answers_resyncs_at_most_twice_a_period() -> None:
    link = Link()
    link.connect()
    ts = [link.spawn(lease_ms=LEASE) for _ in range(3)]
    ask = LeaseResyncRequest("origin-a", 900, LEASE)
    for _ in range(5):
        link.node.receive(link.conn, ask, link.now)
    link.collect()
    (now,) = renewals(link)  # the first at once
    assert isinstance(now, LeaseRenewalBatch) and now.remote_task_ids == sorted(t.rtid for t in ts)
    link.to_origin.clear()
    (owed,) = period(link)  # the rest: once, at the next renewal, instead of its digest
    assert isinstance(owed, LeaseRenewalBatch) and owed.remote_task_ids == now.remote_task_ids
    (after,) = period(link)
    assert isinstance(after, LeaseRenewalDigest)
    # a group the node does not have: an empty list
    link.node.receive(link.conn, LeaseResyncRequest("origin-a", 901, 12_345), link.now)
    link.collect()
    (empty,) = renewals(link)
    assert isinstance(empty, LeaseRenewalBatch) and (empty.new_lease_ms, empty.remote_task_ids) == (12_345, [])
    link.flush()
    assert all(t.state is OriginState.RUNNING for t in ts)


def test_the_origin_asks_once_until_the_list_comes() -> None:
    link = Link()
    link.connect()
    t = link.spawn(lease_ms=LEASE)
    wrong = LeaseRenewalDigest("node-1", 900, LEASE, 2, 12345)
    for _ in range(3):
        link.origin.receive("node-1", wrong, link.now)
    link.collect()
    assert len(resyncs(link)) == 1  # asked once
    link.to_node.clear()
    link.origin.receive("node-1", LeaseRenewalBatch("node-1", 901, LEASE, "node-1", [t.rtid]), link.now)
    link.origin.receive("node-1", wrong, link.now)
    link.collect()
    assert len(resyncs(link)) == 1  # the list came: it may ask again
    assert t.state is OriginState.RUNNING


def test_a_list_without_a_task_takes_it_out_of_the_view() -> None:
    """A task the node no longer renews in a group leaves the origin's view
    of it at the next list; its own deadline decides it (here: it lapses),
    while the rest of the group is renewed by digests again."""
    link = Link()
    link.connect()
    a, b = link.spawn(lease_ms=LEASE), link.spawn(lease_ms=LEASE)
    link.node._renew_remove("origin-a", LEASE, b.rtid)  # the node stops renewing b
    sent = period(link)  # digest of {a}: no match; the resync's list is [a]
    assert [type(m) for m in sent] == [LeaseRenewalDigest]
    assert b.group is None and a.group is not None and a.group.count == 1
    for _ in range(5):
        assert [type(m) for m in period(link)] == [LeaseRenewalDigest]
    assert b.state is OriginState.LEASE_EXPIRED and a.state is OriginState.RUNNING
    assert len([m for m in link.traces if m[0] == "remote::lease_resync_sent"]) == 1


# -- races ------------------------------------------------------------------------------------


def test_an_outcome_in_flight_with_the_digest_either_way() -> None:
    """The node removes a finished task from its group before its result
    leaves, and a connection keeps order: whichever of the result and the
    digest comes first, the origin's view agrees when the digest arrives."""
    link = Link()
    link.connect()
    ts = [link.spawn(lease_ms=LEASE) for _ in range(3)]
    node_tasks = list(link.started)
    # result first, then the digest of the period
    link.node.task_finished(node_tasks[0], 0, b"r", 5, link.now)
    sent = period(link)
    assert [m.task_count for m in sent] == [2] and ts[0].state is OriginState.COMPLETED
    # digest first (still counting it), then its result
    link.advance(LEASE // 3)
    (digest,) = renewals(link)
    assert digest.task_count == 2
    link.node.task_finished(node_tasks[1], 0, b"r", 5, link.now)
    link.flush()
    assert ts[1].state is OriginState.COMPLETED and ts[2].state is OriginState.RUNNING
    assert not [m for m in link.traces if m[0] == "remote::lease_resync_sent"]
    assert ts[2].group.count == 1


def test_a_spawn_not_yet_accepted_is_in_neither_count() -> None:
    link = Link()
    link.connect()
    running = link.spawn(lease_ms=LEASE)
    link.advance(LEASE // 3)  # the node's digest is queued, counting one task
    late = link.spawn(lease_ms=LEASE, flush=False)  # its SPAWN crosses the digest
    link.flush()
    assert late.state is OriginState.RUNNING and late.group is running.group
    assert running.group.count == 2
    assert not [m for m in link.traces if m[0] == "remote::lease_resync_sent"]
    sent = period(link)
    assert [m.task_count for m in sent] == [2]


def test_a_cancelled_task_is_renewed_until_its_outcome() -> None:
    link = Link()
    link.connect()
    t = link.spawn("slow", lease_ms=LEASE)
    assert link.origin.cancel(t.rtid, (0, "stop"), link.now)
    link.flush()  # the node asks its task to stop; it has not yet
    for _ in range(6):
        period(link)
    assert t.state is OriginState.CANCEL_SENT and t.group is not None
    assert not link.events_of(O.EV_LEASE_EXPIRED)
    link.finish(link.started[0], 2, (0, "stop"))
    assert t.state is OriginState.COMPLETED and t.group is None


def test_a_cancel_before_the_accept_joins_at_the_accept() -> None:
    link = Link()
    link.connect()
    t = link.spawn("slow", lease_ms=LEASE, flush=False)
    link.collect()  # SPAWN queued for the node
    assert link.origin.cancel(t.rtid, (0, "stop"), link.now)
    link.flush()
    assert t.state is OriginState.CANCEL_SENT and t.group is not None and t.group.count == 1
    sent = period(link)
    assert [m.task_count for m in sent] == [1]
    assert not [m for m in link.traces if m[0] == "remote::lease_resync_sent"]


def test_a_late_digest_does_not_revive_a_lapsed_group() -> None:
    """The node went quiet past the lease; its next digest matches the view
    but arrives after the deadline: every task of the group lapses at the
    deadline that passed, except one accepted since, whose own lease still runs."""
    link = Link()
    link.connect()
    old = [link.spawn(lease_ms=LEASE) for _ in range(3)]
    period(link)
    deadline = link.origin.lease_deadline(old[0].rtid)
    link.now = deadline + 500 * MS  # nothing was delivered or ticked meanwhile
    fresh = link.spawn(lease_ms=LEASE, flush=False)
    link.collect()
    link.node.receive(link.conn, link.to_node.pop(), link.now)  # accepted now
    link.collect()
    ack = [m for m in link.to_origin if isinstance(m, SpawnAck)]
    link.to_origin.clear()
    link.origin.receive("node-1", ack[0], link.now)
    group = old[0].group
    link.origin.receive("node-1", LeaseRenewalDigest("node-1", 999, LEASE, 4, group.digest), link.now)
    link.origin.tick(link.now)
    assert [t.state for t in old] == [OriginState.LEASE_EXPIRED] * 3
    assert all(t.lapsed_at == deadline for t in old)
    assert all(link.origin.renewals_of(t) == 1 for t in old)
    assert fresh.state is OriginState.RUNNING and fresh.group is group
    assert link.origin.lease_deadline(fresh.rtid) == link.now + LEASE * MS  # the new span covers it


def test_duplicated_and_reordered_renewals_are_harmless() -> None:
    link = Link()
    link.connect()
    ts = [link.spawn(lease_ms=LEASE) for _ in range(4)]
    link.advance(LEASE // 3)
    (digest,) = renewals(link)
    link.to_origin.clear()
    batch = LeaseRenewalBatch("node-1", 10, LEASE, "node-1", sorted(t.rtid for t in ts))
    for m in (digest, batch, digest, batch, digest):  # twice, and out of order
        link.origin.receive("node-1", m, link.now)
    link.collect()
    assert not resyncs(link) and not link.events_of(O.EV_PROTOCOL_ERROR)
    assert ts[0].group.count == 4
    assert all(link.origin.lease_deadline(t.rtid) == link.now + LEASE * MS for t in ts)


def test_a_lapsed_task_leaves_its_group_and_a_digest_does_not_revive_it() -> None:
    link = Link()
    link.connect()
    t = link.spawn(lease_ms=LEASE)
    group_digest = t.group.digest
    link.disconnect()
    link.advance(LEASE + 1)
    assert t.state is OriginState.LEASE_EXPIRED and t.group is None
    link.connect()  # the node still runs it: its digest counts it
    link.advance(LEASE // 3)
    (digest,) = renewals(link)
    assert (digest.task_count, digest.digest) == (1, group_digest)
    link.flush()  # mismatch: the origin asks, the list renews it by id (a renewal that does not fit)
    assert t.state is OriginState.LEASE_EXPIRED
    assert link.events_of(O.EV_PROTOCOL_ERROR)  # as for a renewal batch: reported, dropped


def test_a_reconnect_keeps_the_views_and_results_held_come_first() -> None:
    link = Link()
    link.connect()
    ts = [link.spawn(lease_ms=LEASE) for _ in range(3)]
    node_tasks = list(link.started)
    period(link)
    link.disconnect()
    link.node.task_finished(node_tasks[0], 0, b"while away", 5, link.now)  # held for the origin
    link.advance(500)
    link.connect()  # resends; the held result is sent right after the handshake
    assert ts[0].state is OriginState.COMPLETED
    for _ in range(5):
        sent = period(link)
        assert [type(m) for m in sent] == [LeaseRenewalDigest]
    assert [t.state for t in ts[1:]] == [OriginState.RUNNING] * 2
    assert not [m for m in link.traces if m[0] == "remote::lease_resync_sent"]


def test_a_restarted_node_takes_its_tasks_out_of_the_views() -> None:
    link = Link()
    link.connect()
    t = link.spawn(lease_ms=LEASE)
    link.disconnect()
    link.node.features["instance"] = "f" * 16  # a new process answers the reconnect
    link.connect()
    assert t.state is OriginState.LEASE_EXPIRED and t.group is None
    assert all(g.count == 0 for g in link.origin._links["node-1"].groups.values())


def test_empty_views_are_kept_for_reuse_and_dropped_in_bulk() -> None:
    """Tasks that come and go one at a time reuse their group's view instead
    of making and dropping one each; views left empty are dropped when a
    link holds MAX_IDLE_GROUPS and needs another."""
    link = Link()
    link.connect()
    first = link.spawn(lease_ms=LEASE)
    group = first.group
    link.finish(link.started[-1])
    again = link.spawn(lease_ms=LEASE)
    assert again.group is group and group.count == 1
    for i in range(O.MAX_IDLE_GROUPS + 3):
        link.spawn(lease_ms=LEASE + 1 + i)
        link.finish(link.started[-1])
    groups = link.origin._links["node-1"].groups
    assert len(groups) <= O.MAX_IDLE_GROUPS + 1 and groups[LEASE] is group


def test_a_node_that_stops_offering_digests_renews_by_id_again() -> None:
    link = Link()
    link.connect()
    t = link.spawn(lease_ms=LEASE)
    period(link)
    link.disconnect()
    del link.node.features[FEATURE]  # an older node in its place, same instance
    link.node.compact_renewals = False
    link.connect()
    assert t.group is None and not link.origin._links["node-1"].groups
    for _ in range(6):
        assert [type(m) for m in period(link)] == [LeaseRenewalBatch]
    assert t.state is OriginState.RUNNING and link.origin.renewals_of(t) == 7


# -- a real node process ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_node(module_cluster: Any) -> Any:
    return module_cluster(1)


def test_a_runtime_and_a_real_node_renew_by_digest(real_node: Any) -> None:
    """200 tasks on a real node process, renewed for 2 s with 0.6 s leases: the
    node sends digests only (one a period), the runtime's views match them
    without a resync, every lease holds and is counted."""
    import asyncio

    from rsc import Runtime, spawn_remote

    n = 200
    seen: list[Any] = []
    traced: list[tuple[str, dict]] = []

    async def main() -> None:
        async with Runtime(real_node.nodes, trace=lambda e, f: traced.append((e, f))) as rt:
            cx = rt.cx()
            hs = [spawn_remote(cx, "worker-1", "sleep_ms", 2000, lease=0.6) for _ in range(n)]
            conn = rt._links["worker-1"].conn
            while conn is None:
                await asyncio.sleep(0.01)
                conn = rt._links["worker-1"].conn
            on_messages = conn._on_messages

            def counting(c: Any, msgs: list[Any]) -> None:
                seen.extend(m for m in msgs if isinstance(m, RENEWAL_KINDS))
                on_messages(c, msgs)

            conn._on_messages = counting
            assert [await h.join() for h in hs] == [2000] * n
            assert all(h.lease.renewal_count >= 3 for h in hs), [h.lease.renewal_count for h in hs]

    asyncio.run(main())
    assert len(seen) >= 5 and all(isinstance(m, LeaseRenewalDigest) for m in seen), seen[:3]
    assert max(m.task_count for m in seen) == n
    assert not [f for e, f in traced if e == "remote::lease_resync_sent"]
