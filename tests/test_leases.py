"""Leases a caller can hold: the standalone ``rsc.Lease`` (every unit test of
the original design's Lease, ported: times there are ``Time::from_secs`` and
``Duration::from_secs``, here seconds as floats on the caller's clock), and
``handle.lease``, a live view of a remote task's lease over real node
processes: renewals counted, released on the outcome, expired on a lapse.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from typing import Any

import pytest

import rsc
import rsc.lease
from rsc import InvalidArgument, Lease, LeaseError, LeaseState, RemoteTaskState, Runtime, spawn_remote
from rsc._engine.states import OriginEvent
from rsc._engine.trace_names import LEASE_RENEWAL_RECEIVED
from rsc.handle import RemoteLease
from rsc.lab import Lab
from rsc.launch import LocalCluster


def _lease(duration: float = 30.0, now: float = 10.0) -> Lease:
    return Lease(duration, now, region=1, holder=2, obligation_id=3)


# ------------------------------------------------- the original's unit tests


def test_lease_creation() -> None:
    now = 10.0
    lease = _lease(30.0, now)
    assert lease.is_active(now)
    assert not lease.is_expired(now)
    assert not lease.is_released
    assert lease.renewal_count == 0
    assert lease.initial_duration == 30.0
    assert lease.expires_at == 40.0
    assert (lease.obligation_id, lease.region, lease.holder) == (3, 1, 2)


def test_lease_remaining_time() -> None:
    lease = _lease(30.0, 10.0)
    assert lease.remaining(20.0) == 20.0
    # at expiry: zero remaining
    assert lease.remaining(40.0) == 0.0
    # past expiry: zero remaining
    assert lease.remaining(50.0) == 0.0


def test_lease_expiry_detection() -> None:
    lease = _lease(30.0, 10.0)
    # before expiry
    assert not lease.is_expired(39.0)
    assert lease.is_active(39.0)
    # at the expiry boundary
    assert lease.is_expired(40.0)
    assert not lease.is_active(40.0)
    # after expiry
    assert lease.is_expired(50.0)


def test_lease_renew_extends_expiry() -> None:
    lease = _lease(30.0, 10.0)
    # renew at t=25 for another 30 s
    assert lease.renew(30.0, 25.0) is None
    assert lease.expires_at == 55.0
    assert lease.renewal_count == 1
    # renew again at t=50
    lease.renew(30.0, 50.0)
    assert lease.expires_at == 80.0
    assert lease.renewal_count == 2


def test_lease_renew_after_expiry_fails() -> None:
    lease = _lease(30.0, 10.0)
    with pytest.raises(LeaseError.Expired):
        lease.renew(30.0, 50.0)
    assert lease.state is LeaseState.EXPIRED
    assert lease.renewal_count == 0


def test_lease_release() -> None:
    lease = _lease(30.0, 10.0)
    assert lease.release(20.0) is None
    assert lease.is_released
    assert lease.state is LeaseState.RELEASED


def test_lease_double_release_fails() -> None:
    lease = _lease(30.0, 10.0)
    lease.release(20.0)
    with pytest.raises(LeaseError.Released) as err:
        lease.release(25.0)
    assert type(err.value) is LeaseError.AlreadyReleased  # the kind that says "twice"
    assert str(err.value).startswith("lease already released: ")


def test_lease_renew_after_release_fails() -> None:
    lease = _lease(30.0, 10.0)
    lease.release(20.0)
    with pytest.raises(LeaseError.Released) as err:
        lease.renew(30.0, 25.0)
    assert type(err.value) is LeaseError.Released


def test_lease_mark_expired() -> None:
    lease = _lease(30.0, 10.0)
    assert lease.mark_expired() is None
    assert lease.state is LeaseState.EXPIRED
    # idempotent
    assert lease.mark_expired() is None
    assert lease.state is LeaseState.EXPIRED


def test_lease_mark_expired_after_release_fails() -> None:
    lease = _lease(30.0, 10.0)
    lease.release(20.0)
    with pytest.raises(LeaseError.Released):
        lease.mark_expired()
    assert lease.state is LeaseState.RELEASED


def test_lease_state_display() -> None:
    assert f"{LeaseState.ACTIVE}" == "Active"
    assert str(LeaseState.RELEASED) == "Released"
    assert format(LeaseState.EXPIRED, "") == "Expired"


def test_lease_error_display() -> None:
    assert str(LeaseError.Expired()) == "lease expired"
    assert str(LeaseError.Released()) == "lease already released"
    assert "full" in str(LeaseError.CreationFailed("full"))


# ------------------------------------------------------- rsc's own additions


def test_lease_release_after_expiry_fails() -> None:
    lease = _lease(30.0, 10.0)
    lease.mark_expired()
    with pytest.raises(LeaseError.Expired, match="cannot be released"):
        lease.release(50.0)
    assert lease.state is LeaseState.EXPIRED


def test_lease_renew_just_before_expiry_succeeds_at_expiry_fails() -> None:
    lease = _lease(30.0, 10.0)
    lease.renew(5.0, 39.999)
    assert lease.expires_at == pytest.approx(44.999)
    with pytest.raises(LeaseError.Expired, match="ran out at"):
        lease.renew(5.0, lease.expires_at)
    assert lease.is_expired(0.0)  # marked: expired whatever the time
    with pytest.raises(LeaseError.Expired, match="cannot be renewed"):
        lease.renew(5.0, 0.0)


def test_lease_defaults_to_the_monotonic_clock() -> None:
    before = time.monotonic()
    lease = Lease(60.0)
    after = time.monotonic()
    assert before + 60.0 <= lease.expires_at <= after + 60.0
    assert lease.is_active() and not lease.is_expired()
    assert 59.0 < lease.remaining() <= 60.0
    assert before <= lease.now() <= time.monotonic()
    lease.renew(0.0)  # zero seconds: runs out at once
    assert lease.is_expired() and lease.renewal_count == 1
    assert lease.region is None and lease.holder is None
    assert Lease(1.0).obligation_id != Lease(1.0).obligation_id  # fresh ids


@pytest.mark.parametrize("call, what", [
    (lambda: Lease(-1.0, 0.0), "duration must be >= 0"),
    (lambda: Lease(float("nan"), 0.0), "finite number of seconds"),
    (lambda: Lease("30", 0.0), "finite number of seconds"),
    (lambda: Lease(True, 0.0), "finite number of seconds"),
    (lambda: Lease(30.0, "now"), "now must be"),
    (lambda: Lease(30.0, 0.0, region="r"), "region must be an int"),
    (lambda: Lease(30.0, 0.0, obligation_id=1.5), "obligation_id must be an int"),
    (lambda: Lease(30.0, 0.0).renew(None, 1.0), "finite number of seconds"),
    (lambda: Lease(30.0, 0.0).remaining(float("inf")), "now must be"),
    (lambda: Lease(30.0, 0.0).release("later"), "now must be"),
])
def test_lease_bad_arguments_say_what_to_fix(call: Any, what: str) -> None:
    with pytest.raises(InvalidArgument, match=what):
        call()


def test_lease_state_equals_the_strings_it_replaced() -> None:
    assert LeaseState.ACTIVE == "active" and LeaseState.RELEASED == "released"
    assert LeaseState.EXPIRED == rsc.lease.EXPIRED == "expired"
    assert rsc.lease.ACTIVE is LeaseState.ACTIVE
    assert [str(s) for s in LeaseState] == ["Active", "Released", "Expired"]


def test_lease_errors_are_one_family_and_pickle() -> None:
    kinds = (LeaseError.Expired, LeaseError.Released, LeaseError.AlreadyReleased,
             LeaseError.CreationFailed)
    assert all(issubclass(k, LeaseError) and issubclass(k, rsc.RemoteError) for k in kinds)
    assert issubclass(LeaseError.AlreadyReleased, LeaseError.Released)
    assert not issubclass(LeaseError.Expired, LeaseError.Released)
    err = LeaseError.AlreadyReleased("twice")
    assert repr(err) == "LeaseError.AlreadyReleased('twice')"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is LeaseError.AlreadyReleased and str(back) == str(err)
    assert back.detail == "twice"
    assert rsc.Lease is rsc.lease.Lease and rsc.LeaseState is rsc.lease.LeaseState
    assert rsc.LeaseError is rsc.errors.LeaseError


def test_lease_snapshot_and_legacy_fields() -> None:
    lease = _lease(30.0, 10.0)
    snap = lease.snapshot()
    lease.renew(30.0, 20.0)
    assert (snap.expires_at, snap.renewal_count) == (40.0, 0)
    assert (lease.expires_at, lease.renewal_count) == (50.0, 1)
    assert snap.obligation_id == lease.obligation_id
    assert lease.duration_s == 30.0 and lease.expires_at_ns == 50_000_000_000
    lease.release()
    assert lease.expires_at_ns is None and lease.expires_at == 50.0
    assert repr(lease) == ("Lease(Released, expires_at=50.0, initial_duration=30.0, renewals=1, "
                           "region=1, holder=2, obligation=3)")


# ---------------------------------------- handle.lease in the lab (virtual time)


lab_registry = rsc.Registry()


@lab_registry.computation("nap", codec="msgpack")
async def nap(cx: Any, seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def test_handle_lease_in_the_lab_counts_each_renewal_on_virtual_time() -> None:
    """On the lab's clock the node renews exactly every third of the lease: a
    3 s lease over a 10 s task is renewed at 1, 2, ... 9 s (the one due at
    10 s comes after the result), each moving the expiry to 3 s later."""
    seen: dict[str, Any] = {}

    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", lab_registry)
        rt = await lab.start_origin("o1")
        h = spawn_remote(rt.cx(), "n1", "nap", 10.0, lease=3.0)
        lease = h.lease
        assert lease.expires_at is None  # not yet written: the connection is not up
        assert lease.remaining() == 3.0 and lease.is_active()
        await asyncio.sleep(0.5)
        assert lease.now() == rt.clock.now_ns() / 1e9  # the lab's virtual clock
        seen["start"] = (lease.now(), lease.renewal_count, lease.expires_at, lease.remaining())
        await asyncio.sleep(4.0)
        seen["mid"] = (lease.now(), lease.renewal_count, lease.expires_at, lease.remaining())
        assert await h.join() == 10.0
        seen["end"] = (lease.renewal_count, lease.state, lease.expires_at)

    report = Lab(1).run(scenario)
    assert report.ok, report.format()

    def near(x: float) -> Any:  # frames take microseconds of virtual time
        return pytest.approx(x, abs=0.01)

    assert seen["start"] == (near(0.5), 0, near(3.0), near(2.5))
    assert seen["mid"] == (near(4.5), 4, near(7.0), near(2.5))  # renewed at 1, 2, 3 and 4 s
    assert seen["end"] == (9, LeaseState.RELEASED, near(12.0))


# ------------------------------------------------ handle.lease over real nodes


LEASE = 0.3  # seconds: the node renews every third of it


@pytest.fixture(scope="module")
def nodes(module_cluster: Any) -> LocalCluster:
    return module_cluster(2)


async def _until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.01)


def test_handle_lease_is_live_counts_renewals_and_is_released_by_the_outcome(
        nodes: LocalCluster) -> None:
    async def main() -> None:
        traced: list[tuple[str, dict]] = []
        async with Runtime(nodes.nodes, trace=lambda e, f: traced.append((e, f))) as rt:
            rt.engine.record = transitions = []  # the engine's own account, to check the count against
            cx = rt.cx()
            h = spawn_remote(cx, "worker-1", "sleep_ms", 1200, lease=LEASE)
            lease = h.lease  # one view, read throughout
            assert isinstance(lease, RemoteLease) and isinstance(lease, Lease)
            assert h.local_task_id == cx.task_id == lease.holder
            assert lease.region == cx.region_id == h.owner_region
            assert lease.obligation_id == h.remote_task_id
            assert lease.initial_duration == LEASE and lease.duration_s == LEASE
            await _until(lambda: h.state is RemoteTaskState.RUNNING, 30.0, "accepted")
            assert lease.state is LeaseState.ACTIVE and lease.is_active() and not lease.is_expired()
            first = lease.expires_at
            assert first is not None and 0 < first - lease.now() <= LEASE
            assert lease.now() == pytest.approx(time.monotonic(), abs=0.05)  # the runtime's clock
            assert 0 < lease.remaining() <= LEASE
            await _until(lambda: lease.renewal_count >= 3, 5.0, "three renewals")
            assert lease.expires_at > first  # renewed: the deadline moved
            assert lease.expires_at_ns == rt.engine.lease_deadline(h.remote_task_id)
            with pytest.raises(InvalidArgument, match="handle.abort"):
                lease.renew(10.0)
            with pytest.raises(InvalidArgument, match="cannot be released"):
                lease.release()
            with pytest.raises(InvalidArgument, match="cannot be marked expired"):
                lease.mark_expired()
            assert await h.join() == 1200
            # released by the outcome; the count is the renewals the engine applied
            assert lease.state is LeaseState.RELEASED and lease.is_released
            assert h.lease.state == "released"
            assert not lease.is_active() and not lease.is_expired()
            assert lease.expires_at_ns is None and lease.expires_at >= first
            # renewals by id go through the task's state machine; compact
            # renewals renew its whole group at once (a matched digest)
            applied = sum(1 for rtid, _b, ev, _a in transitions
                          if rtid == h.remote_task_id and ev == OriginEvent.RENEWAL)
            applied += sum(1 for event, f in traced
                           if event == LEASE_RENEWAL_RECEIVED and f.get("matched"))
            # about one renewal per LEASE/3 over 1.2 s, each one counted
            assert 5 <= lease.renewal_count == applied <= 1.2 / (LEASE / 3) + 2
            snap = lease.snapshot()
            assert type(snap) is Lease and snap.state is LeaseState.RELEASED
            assert snap.renewal_count == lease.renewal_count
            assert "RemoteLease(Released" in repr(lease)
            # a task done before its first renewal has none
            quick = spawn_remote(cx, "worker-2", "square", 5)
            assert await quick.join() == 25
            assert quick.lease.renewal_count == 0 and quick.lease.is_released

    asyncio.run(main())


def test_handle_lease_expires_when_the_node_stops_renewing(nodes: LocalCluster) -> None:
    pid = nodes.pids["worker-2"]

    async def main() -> None:
        async with Runtime(nodes.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-2", "sleep_ms", 3000, lease=LEASE,
                             on_lease_expired=rsc.lease.fail())
            lease = h.lease
            await _until(lambda: lease.renewal_count >= 1, 10.0, "a renewal")
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(rsc.LeaseExpired):
                    await asyncio.wait_for(h.join(), LEASE + 3.0)
                assert lease.state is LeaseState.EXPIRED and lease.is_expired()
                assert not lease.is_active() and not lease.is_released
                assert lease.expires_at is not None and lease.expires_at <= lease.now()
                assert lease.remaining() == 0.0
                assert h.lease.state == rsc.lease.EXPIRED
            finally:
                os.kill(pid, signal.SIGCONT)

    asyncio.run(main())


def test_handle_lease_follows_a_retry_to_the_new_attempt(nodes: LocalCluster) -> None:
    pid = nodes.pids["worker-1"]

    async def main() -> None:
        async with Runtime(nodes.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", 1000, lease=LEASE,
                             on_lease_expired=rsc.lease.retry(1, nodes=["worker-2"]))
            lease = h.lease
            await _until(lambda: lease.renewal_count >= 2, 10.0, "two renewals")
            first = lease.obligation_id
            os.kill(pid, signal.SIGSTOP)
            try:
                await _until(lambda: lease.obligation_id != first, LEASE + 3.0, "a new attempt")
                assert lease.renewal_count <= 1  # the new attempt's lease, counted afresh
                assert lease.state is LeaseState.ACTIVE
                assert await asyncio.wait_for(h.join(), 10.0) == 1000
                assert lease.is_released and lease.renewal_count >= 1
                assert h.attempts[-1] == ("worker-2", lease.obligation_id)
            finally:
                os.kill(pid, signal.SIGCONT)

    asyncio.run(main())
