"""Cx, the capability context every rsc task runs with, and RemoteCap.

A Cx carries what a task may do and the state it is judged by: its region and
task ids, its budget, the RemoteCap (or none — then it cannot spawn remotely),
a seeded entropy source, and its cancellation state. Computations on a node get
a Cx too; ``cx.checkpoint()`` raises :class:`rsc.errors.Cancelled` once the
task has been cancelled.
"""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any, Protocol

from rsc._signature import SourceSignature
from rsc.clock import Clock, SystemClock
from rsc.errors import Cancelled, InvalidArgument, NoCapability
from rsc.types import Budget, CancelKind, CancelReason, NodeId, check_seconds


class CapRuntime(Protocol):
    """What a Cx reads from the runtime its RemoteCap names: an ``rsc.Runtime``.

    Named here by its shape because rsc.remote builds on this module, so this
    module does not import it (imports between rsc's modules form no circle);
    ``spawn_remote`` checks that the runtime really is an ``rsc.Runtime``.
    """

    @property
    def name(self) -> NodeId:
        """The runtime's NodeId (an origin's name)."""

    @property
    def clock(self) -> Clock:
        """The clock the runtime's deadlines are on."""

    @property
    def engine(self) -> Any:
        """The runtime's protocol engine (its Lamport clock stamps ``Cx.logical_time``)."""

DEFAULT_LEASE_S = 30.0
_SYSTEM_CLOCK = SystemClock()

_region_ids = itertools.count(1)
_task_ids = itertools.count(1)


def next_region_id() -> int:
    """A fresh region id, unique in this process."""
    return next(_region_ids)


def next_task_id() -> int:
    """A fresh local task id, unique in this process."""
    return next(_task_ids)


# a global read, not a class attribute lookup per Cx
_INFINITE: Budget = Budget.INFINITE  # type: ignore[attr-defined]  # (cx.pxd: a C global)


class RemoteCap:
    """The capability to spawn remote work: which runtime, default lease and budget.

    Holding one in a Cx is what lets ``spawn_remote`` run; a Cx without it
    raises ``NoCapability``.
    """

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    __slots__ = ("runtime", "default_lease_s", "budget", "token")

    def __init__(self, runtime: CapRuntime, *, default_lease_s: float = DEFAULT_LEASE_S,
                 budget: Budget | None = None, token: bytes | None = None) -> None:
        self.default_lease_s = check_seconds("default_lease_s", default_lease_s)
        self.runtime = runtime
        self.budget = budget
        self.token = token

    def with_token(self, token: Any) -> RemoteCap:
        """This capability carrying ``token`` (an ``rsc.capability.Capability``
        or its bytes), which ``spawn_remote`` sends for a node that requires
        capabilities to check. The token is checked for form here, not for
        what it allows (only a node's key can tell)."""
        from rsc.capability import Capability, TokenError

        try:
            raw = bytes(token if isinstance(token, Capability) else Capability(bytes(token)))
        except (TokenError, TypeError) as exc:
            raise InvalidArgument(f"not a capability token: {exc}") from None
        return RemoteCap(self.runtime, default_lease_s=self.default_lease_s, budget=self.budget,
                         token=raw)

    def attenuate(self, **caveats: Any) -> RemoteCap:
        """This capability with its token narrowed by ``caveats`` (the keywords
        of ``Capability.attenuate``: computations, nodes, expires_at,
        not_before, max_input_bytes, max_uses). Needs no key; can only narrow."""
        from rsc.capability import Capability, TokenError

        if self.token is None:
            raise InvalidArgument("this RemoteCap has no token to narrow; give it one with with_token()")
        try:
            return self.with_token(Capability(self.token).attenuate(**caveats))
        except TokenError as exc:
            raise InvalidArgument(f"cannot narrow the token: {exc}") from None

    @property
    def local_node(self) -> NodeId:
        """The NodeId of the runtime this capability spawns through."""
        return self.runtime.name

    def __repr__(self) -> str:
        return f"RemoteCap(local_node={self.runtime.name!r}, default_lease_s={self.default_lease_s})"


class CancelState:
    """Cancellation of one task: set once (the first reason wins, later ones only
    strengthen it), read from any thread.

    The threading.Event that ``wait`` blocks on is made on first use: most
    tasks never wait, and an Event costs more than the rest of a task's Cx.
    Every CancelState shares one lock: it is held only for a few assignments
    (never while calling out), so sharing costs nothing, while a lock per
    state would be an allocation per task.
    """

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    __slots__ = ("reason", "_event", "_callbacks")

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._init()

    def _init(self) -> None:
        """``__init__``'s work (a C call when compiled: see ``_new_cancel_state``)."""
        self.reason: CancelReason | None = None
        self._event: threading.Event | None = None
        self._callbacks: list[Any] | None = None

    @property
    def cancelled(self) -> bool:
        """Whether a cancel has been requested (``reason`` is then set)."""
        return self.reason is not None

    def cancel(self, reason: CancelReason) -> bool:
        """Request cancellation; True if this call was the first."""
        with self._lock:
            if self.reason is not None:
                self.reason = self.reason.strengthen(reason)
                return False
            self.reason = reason
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
        if event is not None:
            event.set()
        for cb in callbacks or ():
            cb(reason)
        return True

    def add_callback(self, cb: Any) -> None:
        """Call ``cb(reason)`` on cancellation (at once if already cancelled)."""
        with self._lock:
            if self.reason is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(cb)
                return
        cb(self.reason)

    def remove_callback(self, cb: Any) -> None:
        """Forget ``cb`` (added by ``add_callback``); no error if it is not there."""
        with self._lock:
            if self._callbacks is not None and cb in self._callbacks:
                self._callbacks.remove(cb)

    def wait(self, timeout: float | None = None) -> bool:
        """Block (a sync computation's thread) until cancelled or timeout; True if cancelled."""
        with self._lock:
            if self.reason is not None:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


def _new_cancel_state() -> CancelState:
    """``CancelState()`` without a Python-level class call (one per Cx)."""
    state = CancelState.__new__(CancelState)
    state._init()
    return state


class Cx:
    """Capability context of one task."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    __slots__ = ("region_id", "task_id", "budget", "remote_cap", "_entropy", "_seed", "node",
                 "_cancel", "parent", "region", "trace")

    def __init__(self, *, remote_cap: RemoteCap | None = None, budget: Budget | None = None,
                 region_id: int | None = None, task_id: int | None = None,
                 entropy: random.Random | None = None, node: NodeId | None = None,
                 seed: int | None = None, parent: Cx | None = None,
                 cancel_state: CancelState | None = None, region: Any = None,
                 trace: Any = None) -> None:
        self._init(remote_cap, budget, region_id, task_id, entropy, node, seed, parent,
                   cancel_state, region, trace)

    def _init(self, remote_cap: RemoteCap | None, budget: Budget | None, region_id: int | None,
              task_id: int | None, entropy: random.Random | None, node: NodeId | None,
              seed: int | None, parent: Cx | None, cancel_state: CancelState | None,
              region: Any, trace: Any) -> None:
        """``__init__``'s work, positional (a C call when compiled: see ``task_cx``)."""
        self.region_id = next_region_id() if region_id is None else region_id
        self.task_id = next_task_id() if task_id is None else task_id
        self.budget = budget if budget is not None else _INFINITE
        self.remote_cap = remote_cap
        self._entropy = entropy  # made on first use (seeding from the OS is not free)
        self._seed = seed
        self.node = node
        self.parent = parent
        self.region = region  # the rsc.region.Region that owns this Cx's work, if any
        self.trace: Any = trace if trace is not None else (parent.trace if parent is not None else None)
        self._cancel = cancel_state if cancel_state is not None else _new_cancel_state()

    @property
    def clock(self) -> Clock:
        """The clock this task's deadlines are on: its runtime's, else the system's."""
        cap = self.remote_cap
        return cap.runtime.clock if cap is not None else _SYSTEM_CLOCK

    @property
    def logical_time(self) -> int:
        """The Lamport time of this task's runtime (0 without a RemoteCap): stamps
        to correlate local events with the wire's."""
        cap = self.remote_cap
        return cap.runtime.engine.clock.time if cap is not None else 0

    @property
    def entropy(self) -> random.Random:
        """This task's random source (seeded when the Cx was given a seed)."""
        if self._entropy is None:
            self._entropy = random.Random(self._seed)
        return self._entropy

    # -- cancellation -----------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        """Whether this task has been cancelled."""
        return self._cancel.reason is not None

    @property
    def cancel_reason(self) -> CancelReason | None:
        """The ``CancelReason`` this task was cancelled with, or None."""
        return self._cancel.reason

    @property
    def cancel_state(self) -> CancelState:
        """The ``CancelState`` this Cx shares with whatever cancels it (its region, its
        node)."""
        return self._cancel

    def checkpoint(self) -> None:
        """Raise :class:`rsc.errors.Cancelled` if this task has been cancelled."""
        reason = self._cancel.reason
        if reason is not None:
            raise Cancelled(reason)

    def cancel(self, reason: CancelReason | None = None) -> bool:
        """Cancel this task (reason: ``user`` unless given); True if this call was the
        first. The work sees it at its next ``checkpoint()``, or as the wake-up of
        ``wait_cancelled``."""
        return self._cancel.cancel(reason or CancelReason(CancelKind.USER))

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """For sync computations: sleep up to ``timeout`` s, waking early on cancel."""
        return self._cancel.wait(timeout)

    # -- derivation ---------------------------------------------------------------
    def child(self, *, budget: Budget | None = None, region_id: int | None = None,
              region: Any = None, cancel_state: CancelState | None = None) -> Cx:
        """A Cx for a child task: inherits the capability, the region (unless
        given) and the tighter budget. Its cancellation is its own; a Region
        links it to the parent's."""
        b = self.budget if budget is None else self.budget.meet(budget)
        return Cx(remote_cap=self.remote_cap, budget=b,
                  region_id=self.region_id if region_id is None else region_id,
                  entropy=random.Random(self.entropy.getrandbits(64)), node=self.node, parent=self,
                  region=self.region if region is None else region, cancel_state=cancel_state)

    def attenuate(self, **caveats: Any) -> Cx:
        """A child Cx (``child()``) whose RemoteCap's token is narrowed by
        ``caveats`` (``RemoteCap.attenuate``): hand it to work that should
        spawn less than this task may."""
        if self.remote_cap is None:
            raise NoCapability()
        narrowed = self.remote_cap.attenuate(**caveats)
        c = self.child()
        c.remote_cap = narrowed
        return c

    def __repr__(self) -> str:
        cap = "cap" if self.remote_cap is not None else "no-cap"
        state = f", cancelled={self.cancel_reason}" if self.cancelled else ""
        return f"Cx(region={self.region_id}, task={self.task_id}, {cap}{state})"


def task_cx(region_id: int, task_id: int, budget: Budget | None, node: NodeId | None,
            remote_cap: RemoteCap | None) -> Cx:
    """``Cx(region_id=, task_id=, budget=, node=, remote_cap=)``, the Cx a node
    gives each computation, made without parsing keywords (one per task)."""
    cx = Cx.__new__(Cx)
    cx._init(remote_cap, budget, region_id, task_id, None, node, None, None, None, None, None)
    return cx
