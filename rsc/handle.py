"""RemoteHandle: what ``spawn_remote`` returns, one per remote task.

A handle belongs to the region of the Cx that spawned it and receives at most
one outcome. Its state before that is read from the origin engine's record of
the task's current attempt (``rsc._engine.origin``); the runtime
(``rsc.remote.Runtime``) settles it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

try:  # the class decorators below: Cython's when compiled, no-ops in Python
    import cython  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # the pure twin without Cython installed
    from rsc._pure_cython import cython

from rsc._settled import settled as _settled
from rsc._signature import SourceSignature
from rsc._engine.escalation import EscState
from rsc._engine.origin import OriginTask
from rsc._engine.states import OriginState
from rsc.errors import InvalidArgument, LeaseExpired, RemoteProtocolError
from rsc.lease import ACTIVE, EXPIRED, RELEASED, Lease, LeasePolicy, LeaseState
from rsc.types import (
    CancelKind,
    CancelReason,
    ComputationName,
    IdempotencyKey,
    NodeId,
    OutcomeKind,
    RemoteOutcome,
    RemoteTaskId,
    RemoteTaskState,
)
from rsc.value_codec import Segmented, unpack_value

if TYPE_CHECKING:
    from rsc._engine.origin import OriginEngine
    from rsc.cx import Cx

_SUCCESS = int(OutcomeKind.SUCCESS)
_Segmented = Segmented  # a C global in the compiled build (handle.pxd): one pointer compare


class HandleRuntime(Protocol):
    """What a handle reads from the runtime that made it (an ``rsc.Runtime``)."""

    engine: OriginEngine
    clock: Any  # an rsc.clock.Clock: now_ns()
    _loop: asyncio.AbstractEventLoop

    def _cancel(self, task: OriginTask, reason: CancelReason) -> None: ...


# Recycled through a free list when compiled, as its task record is (see
# OriginTask in rsc._engine.origin: fewer young collections in a burst).
@cython.freelist(1024)
@cython.cclass
class RemoteHandle:
    """A remote task owned by the region of the Cx that spawned it.

    At most one outcome is ever delivered to a handle.
    """

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    __slots__ = ("_rt", "_task", "_done", "_outcome", "_error", "_codec", "_state", "_owner_region",
                 "_lease_s", "_policy", "_observed", "_region",
                 "_holder", "_earlier", "_waiters", "_protocol_errors", "__weakref__")

    def __init__(self, rt: HandleRuntime, task: OriginTask, codec: str | None, owner_region: int,
                 lease_s: float, policy: LeasePolicy, region: Any, holder: int) -> None:
        self._init(rt, task, codec, owner_region, lease_s, policy, region, holder)

    def _init(self, rt: HandleRuntime, task: OriginTask, codec: str | None, owner_region: int,
              lease_s: float, policy: LeasePolicy, region: Any, holder: int) -> None:
        """``__init__``'s work (a C call when compiled: see ``new_handle``)."""
        self._rt = rt
        self._task = task
        # The one outcome: settled once (_done), with the node's outcome as it
        # came off the wire, a (kind, payload, execution_time_ns) triple, or the
        # error that stands for it. No asyncio Future per handle: only a join
        # that has to wait makes one (_waiter). No RemoteOutcome either: join
        # returns a success's bytes straight from the triple, and only
        # outcome() and the error paths build one (_outcome_obj).
        self._done = False
        self._outcome: tuple[int, Any, int] | None = None
        self._error: BaseException | None = None
        self._codec = codec
        # how the handle settled (its RemoteTaskState); read only once _done
        self._state = _PENDING
        self._owner_region = owner_region
        self._lease_s = lease_s
        self._policy = policy
        self._observed = False
        self._region = region
        self._holder = holder
        # attempts superseded by a retry, oldest first (None until the first retry:
        # most handles never retry, and a list per handle costs ~100 bytes)
        self._earlier: list[tuple[str, int]] | None = None
        # futures of outcome() calls waiting now (None when nobody waits)
        self._waiters: list[asyncio.Future[None]] | None = None
        # messages about this handle's attempts that did not fit their state
        self._protocol_errors: list[RemoteProtocolError] | None = None

    # -- identity ------------------------------------------------------------------
    @property
    def remote_task_id(self) -> RemoteTaskId:
        """The id of this task on the wire (of the current attempt, after a retry)."""
        return RemoteTaskId(self._task.rtid)

    @property
    def node(self) -> NodeId:
        """The node the task runs on (the current attempt's, after a retry moved it)."""
        return NodeId(self._task.node)

    @property
    def computation(self) -> ComputationName:
        """The name of the computation spawned."""
        return ComputationName(self._task.computation)

    @property
    def owner_region(self) -> int:
        """The id of the region that owns the task."""
        return self._owner_region

    @property
    def local_task_id(self) -> int | None:
        """The id of the local task that owns the handle: the task of the Cx
        that spawned it (``cx.task_id``)."""
        return self._holder

    @property
    def lease(self) -> RemoteLease:
        """This task's lease, live (a ``RemoteLease``, an ``rsc.Lease``): each
        read says what the origin knows now. Made on each access (a spawn
        makes none); ``lease.snapshot()`` keeps one as it is."""
        return RemoteLease(self)

    @property
    def attempts(self) -> list[tuple[str, int]]:
        """Every (node, remote task id) this handle was spawned as, oldest first."""
        return [*(self._earlier or ()), (self._task.node, self._task.rtid)]

    @property
    def policy(self) -> LeasePolicy:
        """The escalation policy that decides when the lease lapses (``rsc.lease``)."""
        return self._policy

    @property
    def idempotency_key(self) -> IdempotencyKey:
        """The task's idempotency key: the same for every attempt of it."""
        return IdempotencyKey.from_bytes(self._task.key)

    @property
    def state(self) -> RemoteTaskState:
        """Once settled, how it settled; before, what the origin engine's state
        of the current attempt says: RUNNING once the node accepted it,
        LEASE_EXPIRED while a lapse is being escalated (waiting on the answer
        to ``cancel(t)``), PENDING otherwise."""
        if self._done:
            return self._state
        task = self._task
        if (task.state is _LEASE_EXPIRED
                or self._rt.engine.escalation_state(task.rtid) is EscState.CANCELLING):
            return RemoteTaskState.LEASE_EXPIRED
        return _RUNNING if task.accepted else _PENDING

    @property
    def protocol_errors(self) -> list[RemoteProtocolError]:
        """Messages from a node about this handle's attempts that did not fit
        the task's state and were dropped (PROTOCOL.md section 9), oldest first.
        The last one is also the cause (``__cause__``) of a LeaseExpired that
        settles the handle."""
        return list(self._protocol_errors or ())

    def is_finished(self) -> bool:
        """Whether the task has its outcome (``join`` would not wait)."""
        return self._done

    # -- outcome -------------------------------------------------------------------
    def _settle(self, outcome: tuple[int, Any, int] | None, error: BaseException | None,
                state: RemoteTaskState) -> bool:
        if self._done:
            return False
        self._done = True
        self._state = state
        if outcome is not None and type(outcome[1]) is _Segmented and self._codec is None:
            # An output with value segments, for a caller that takes bytes (a
            # RemoteInput of a msgpack computation): its plain msgpack bytes,
            # as a node without value segments would have sent them.
            outcome = (outcome[0], outcome[1].joined(), outcome[2])
        self._outcome = outcome
        if error is not None and self._protocol_errors is not None and isinstance(error, LeaseExpired):
            error.__cause__ = self._protocol_errors[-1]  # what the node said instead of an outcome
        self._error = error
        waiters = self._waiters
        if waiters is not None:
            self._waiters = None
            for w in waiters:
                if not w.done():  # else that wait was cancelled
                    w.set_result(None)
        # The runtime no longer tracks it (its unsettled handles are those its
        # engine's tasks hold), and the handle <-> task cycle is broken: a late
        # message for the task finds no handle (and is dropped, as for a
        # superseded attempt), and a handle the caller lets go of is freed at
        # once by its reference count instead of waiting, with its task
        # record, for the cycle collector.
        self._task.handle = None
        if self._region is not None:
            self._region.handle_done(self)
        return True

    def _unobserved_error(self) -> BaseException | None:
        if self._observed or not self._done:
            return None
        if self._error is not None:
            return self._error
        outcome = self._outcome
        assert outcome is not None
        return None if outcome[0] == _SUCCESS else self._outcome_obj().error()

    def _outcome_obj(self) -> RemoteOutcome:
        kind, payload, exec_ns = self._outcome  # type: ignore[misc]
        if type(payload) is _Segmented:  # an outcome's output is bytes (join unpacks the segments)
            payload = payload.joined()
        return RemoteOutcome.from_wire(kind, payload, exec_ns)

    def _value(self) -> Any:
        """The output of the settled, observed handle, or the matching error raised."""
        outcome = self._outcome
        if outcome[0] != _SUCCESS:  # type: ignore[index]
            raise self._outcome_obj().error()
        data = outcome[1]  # type: ignore[index]
        return data if self._codec is None else unpack_value(data)

    def _waiter(self) -> asyncio.Future[None]:
        """A future that _settle completes (the handle must not be settled
        yet). A wait awaits it in its own coroutine and then calls _unwait:
        a cancelled wait must not cancel the handle, so it waits on a fresh
        future that _settle completes directly (asyncio.shield's idea without
        its done-callback, which would cost a loop turn before the wake-up),
        and without a coroutine of its own to make and run per wait."""
        waiter = self._rt._loop.create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        return waiter

    def _unwait(self, waiter: asyncio.Future[None]) -> None:
        """After awaiting ``waiter`` (from _waiter), settled or cancelled."""
        if self._waiters is not None:  # not settled: this wait was cancelled
            self._waiters.remove(waiter)

    def _take(self) -> None:
        """Mark the settled handle observed; raise the error that settled it, if one did."""
        self._observed = True
        if self._region is not None:
            self._region.handle_observed(self)
        if self._error is not None:
            # raised afresh each time, as a Future would: no traceback piles up
            raise self._error.with_traceback(None)

    async def outcome(self) -> RemoteOutcome:
        """Wait for the terminal outcome without raising for failed ones.

        Raises only for outcomes that never came from the node (rejected,
        lease expired, unreachable)."""
        if not self._done:
            waiter = self._waiter()
            try:
                await waiter
            finally:
                self._unwait(waiter)
        self._take()
        return self._outcome_obj()

    def join(self, cx: Cx | None = None) -> Coroutine[Any, Any, Any]:
        """Wait for the task; its output (bytes, or the value with codec msgpack),
        or raise RemoteFailed / RemoteCancelled / RemotePanicked / SpawnRejected /
        LeaseExpired / NodeUnreachable. A coroutine, as from an ``async def``."""
        outcome = self._outcome
        if outcome is not None and outcome[0] == _SUCCESS and self._codec is None:
            # Settled with raw output: nothing to wait for, decode or raise.
            # The handle counts as observed from this call (a success has
            # no failure for its region to report either way).
            self._take()
            return _settled(outcome[1])
        return self._join()

    async def _join(self) -> Any:
        if not self._done:
            waiter = self._waiter()
            try:
                await waiter
            finally:
                self._unwait(waiter)
        self._take()
        return self._value()

    def try_join(self) -> Any | None:
        """The output if finished (raising like ``join``), else None."""
        if not self._done:
            return None
        self._take()
        return self._value()

    def abort(self, reason: CancelReason | None = None) -> None:
        """Request cancellation on the node; returns at once."""
        if self._done:
            return
        self._rt._cancel(self._task, reason or CancelReason(CancelKind.USER, "aborted by the origin"))

    async def close(self, cx: Cx | None = None) -> RemoteOutcome:
        """Cancel and wait for the acknowledged outcome (Cancelled, or the real
        one if it finished first). Raises like ``outcome()`` when no outcome can
        come from the node (rejected, lease expired, unreachable)."""
        self.abort()
        return await self.outcome()

    def __repr__(self) -> str:
        return (f"RemoteHandle({self._task.computation!r} on {self._task.node!r}, "
                f"{RemoteTaskId(self._task.rtid)}, {self.state})")


def new_handle(rt: HandleRuntime, task: OriginTask, codec: str | None, owner_region: int,
               lease_s: float, policy: LeasePolicy, region: Any, holder: int) -> RemoteHandle:
    """``RemoteHandle(...)`` without a Python-level call (one per spawn)."""
    h = RemoteHandle.__new__(RemoteHandle)
    h._init(rt, task, codec, owner_region, lease_s, policy, region, holder)
    return h


class RemoteLease(Lease):
    """A remote task's lease as its origin holds it, read live from the
    handle (``handle.lease``). The same surface as ``rsc.Lease``:

    - ``state``: Active until the outcome arrives (Released) or the lease
      lapses with neither renewal nor outcome (Expired: the handle is in
      LEASE_EXPIRED, settled or escalating). A lapse that the policy answers
      with a retry moves the handle, and this view, to the new attempt's
      lease: Active again, with its own expiry and renewal count.
    - ``expires_at``: the deadline the origin holds for it (seconds on the
      runtime's clock: ``time.monotonic()`` for an ``rsc.Runtime``, virtual
      time in the lab); once released, the last one it held; once expired,
      the deadline that passed (``OriginTask.lapsed_at``: for a node found
      restarted, when the origin found that out); None while the spawn is not yet
      written to its node (the lease clock has not started).
    - ``renewal_count``: the node's renewals (by id, or compact renewals of
      its group) the origin engine applied to it; the node's first accept restarts the lease clock
      but is not counted.
    - ``initial_duration``: the spawn's ``lease`` (seconds); ``region``: the
      owning region's id; ``holder``: the local task id (``local_task_id``);
      ``obligation_id``: the remote task id of the attempt holding it.
    - ``remaining``, ``is_active``, ``is_expired`` take ``now`` on the
      runtime's clock (default: read it).

    The node renews it and the outcome releases it, so ``renew``,
    ``release`` and ``mark_expired`` raise InvalidArgument (``handle.abort()``
    ends the task early).
    """

    __slots__ = ("_handle",)

    def __init__(self, handle: RemoteHandle) -> None:
        # Lease.__init__ is not called: every field is read from the handle
        self._handle = handle

    @property
    def obligation_id(self) -> int:
        """The remote task id of the attempt holding the lease."""
        return RemoteTaskId(self._handle._task.rtid)

    @property
    def region(self) -> int | None:
        """The owning region's id."""
        return self._handle._owner_region

    @property
    def holder(self) -> int | None:
        """The local task id of the task that spawned it."""
        return self._handle._holder

    @property
    def initial_duration(self) -> float:
        """The spawn's ``lease`` (seconds)."""
        return self._handle._lease_s

    @property
    def renewal_count(self) -> int:
        """The node's renewals the origin applied to this attempt's lease."""
        h = self._handle
        return h._rt.engine.renewals_of(h._task)  # counted by the origin engine

    @property
    def state(self) -> LeaseState:
        """Active until the outcome arrives (Released), or until it lapses with neither
        renewal nor outcome (Expired)."""
        h = self._handle
        if h.state is RemoteTaskState.LEASE_EXPIRED:
            return EXPIRED
        return RELEASED if h._done else ACTIVE

    @property
    def expires_at(self) -> float | None:
        """The deadline the origin holds (seconds on the runtime's clock); None while the
        spawn is not yet written to its node."""
        h = self._handle
        task = h._task
        state = self.state
        if state is ACTIVE and not h._done:
            at = h._rt.engine.lease_deadline(task.rtid)
            return None if at is None else at / 1e9
        until = task.lapsed_at if state is EXPIRED and task.lapsed_at else task.lease_until
        if not until:
            return None  # never written to its node: the lease clock never started
        return until / 1e9

    @property
    def expires_at_ns(self) -> int | None:
        """``expires_at`` in nanoseconds while Active, else None."""
        h = self._handle
        if h._done or self.state is not ACTIVE:
            return None
        return h._rt.engine.lease_deadline(h._task.rtid)

    def now(self) -> float:
        """The time on the runtime's clock (seconds)."""
        return self._handle._rt.clock.now_ns() / 1e9

    def _refuse(self, what: str) -> None:
        raise InvalidArgument(
            f"handle.lease is a live view of remote task {RemoteTaskId(self._handle._task.rtid)}'s "
            f"lease: its node renews it and its outcome releases it, so it cannot be {what} here; "
            f"call handle.abort() to end the task, or make a standalone rsc.Lease to manage one yourself")

    def renew(self, duration: float, now: float | None = None) -> None:
        """Refused (InvalidArgument): the node renews a remote task's lease."""
        self._refuse("renewed")

    def release(self, now: float | None = None) -> None:
        """Refused (InvalidArgument): the outcome releases a remote task's lease;
        ``handle.abort()`` ends the task."""
        self._refuse("released")

    def mark_expired(self) -> None:
        """Refused (InvalidArgument): the origin marks a remote task's lease expired when
        it lapses."""
        self._refuse("marked expired")


# Enum members read on every task, as module globals (see rsc/_engine/node.py)
_PENDING, _RUNNING = RemoteTaskState.PENDING, RemoteTaskState.RUNNING
_LEASE_EXPIRED = OriginState.LEASE_EXPIRED
