"""Region, the nursery that owns local tasks and remote handles (``rsc.region(cx)``).

``async with rsc.region(cx) as r:`` opens a region under ``cx``. Inside,
``r.cx`` is the region's Cx: every remote handle spawned with it (or with a Cx
derived from it) and every local task started with ``r.spawn`` belongs to the
region.

Rules a region keeps:

1. Quiescence. Exit waits until every local task has finished and every remote
   handle has a terminal outcome, whatever happened in the body — a second
   cancel while draining does not cut the wait short.
2. Fail fast. An exception in the body or in a local task cancels the region:
   every local task is cancelled and every remote handle gets a CANCEL_REQUEST
   (reason fail_fast, caused by the error); then the region drains and raises
   a ``BaseExceptionGroup`` of what failed.
3. Cancellation spreads down. ``r.cancel(reason)`` — from the body, a task or
   outside — cancels the body, the tasks and the remote work; the reasons
   chain (parent_cancelled, caused by the region's). A cancelled parent Cx
   cancels the region. A region cancelled this way exits quietly (like a trio
   cancel scope) unless something failed; a cancel from *outside* the region
   (the enclosing task cancelled) propagates as CancelledError after draining.
4. Budgets. A region's deadline (its Cx budget's, the tighter of parent,
   RemoteCap and region budgets) travels with every remote spawn; when it
   passes locally the region cancels itself with reason deadline.
5. Obligations. A remote handle's lease is an obligation of its region: after
   quiescence none may still be held. One that is (a bug) is logged as an
   error, traced as ``lease_leak`` and counted in ``LEAKED_LEASES``.
6. A remote failure nobody observed (no join/outcome/try_join/close) is raised
   in the group at exit; one the body observed is not raised twice.
7. Memory stays flat. A region holds a remote handle only while it is live or
   holds a failure nobody observed: a settled success, or a failure once
   observed, is let go (the caller's own references aside), so a region that
   spawns and joins for days does not grow.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any, Callable, Coroutine

from rsc.logs import get_logger
from rsc._engine.trace_names import REGION_CLOSED, REGION_LEAK
from rsc.cx import CancelState, Cx, next_region_id, next_task_id
from rsc.errors import InvalidArgument, RemoteCancelled, RemoteError
from rsc.types import Budget, CancelKind, CancelReason

if TYPE_CHECKING:  # pragma: no cover
    from rsc.handle import RemoteHandle

log = get_logger("rsc.regions")

LEAKED_LEASES = 0
_live_regions = 0


def live_regions() -> int:
    """Regions entered and not yet exited in this process (a debug counter)."""
    return _live_regions


class Region:
    """A nursery for local tasks and remote handles. Use ``rsc.region(cx)``."""

    def __init__(self, parent: Cx, *, budget: Budget | None = None, name: str | None = None) -> None:
        if not isinstance(parent, Cx):
            raise InvalidArgument(f"region() needs a Cx, got {type(parent).__name__}")
        self.id = next_region_id()
        self.name = name or f"region-{self.id}"
        self.parent = parent
        eff = parent.budget if budget is None else parent.budget.meet(budget)
        cap = parent.remote_cap
        if cap is not None and cap.budget is not None:
            eff = eff.meet(cap.budget)
        self.cx = Cx(remote_cap=cap, budget=eff, region_id=self.id, task_id=parent.task_id,
                     entropy=random.Random(parent.entropy.getrandbits(64)), node=parent.node,
                     parent=parent, region=self, cancel_state=CancelState())
        self._tasks: dict[asyncio.Task[Any], Cx] = {}
        # insertion-ordered (a dict, not a set): a cancel aborts them in spawn
        # order, the same in every run, never in the order of their ids' hashes
        self._handles: dict[RemoteHandle, None] = {}
        self._errors: list[BaseException] = []
        self._host: asyncio.Task[Any] | None = None
        self._host_cancels = 0
        self._entered = False
        self._closed = False
        self._exiting = False
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parent_cb: Callable[[CancelReason], None] | None = None
        self._changed: asyncio.Event | None = None

    # ---------------------------------------------------------------- inspection
    @property
    def cancelled(self) -> bool:
        """Whether the region has been cancelled."""
        return self.cx.cancelled

    @property
    def cancel_reason(self) -> CancelReason | None:
        """The reason the region was cancelled with, or None."""
        return self.cx.cancel_reason

    @property
    def closed(self) -> bool:
        """Whether the region has exited (every task and remote handle of it has ended)."""
        return self._closed

    def live_children(self) -> dict[str, int]:
        """What still runs in the region: ``{"tasks": local tasks, "handles": remote
        tasks without an outcome}``."""
        return dict(tasks=len(self._tasks),
                    handles=sum(1 for h in self._handles if not h.is_finished()))

    # ------------------------------------------------------------------- enter
    async def __aenter__(self) -> Region:
        global _live_regions
        if self._entered:
            raise InvalidArgument("a Region can be entered once")
        self._entered = True
        _live_regions += 1
        self._loop = asyncio.get_running_loop()
        self._host = asyncio.current_task()
        self._changed = asyncio.Event()
        loop = self._loop

        def on_parent_cancel(reason: CancelReason) -> None:
            r = reason.caused(CancelKind.PARENT_CANCELLED, f"parent of {self.name} cancelled")
            loop.call_soon_threadsafe(self.cancel, r)

        self._parent_cb = on_parent_cancel
        self.parent.cancel_state.add_callback(on_parent_cancel)
        deadline = self.cx.budget.deadline_ns
        if deadline is not None:
            clock = self._clock_ns()
            delay = max(0.0, (deadline - clock) / 1e9)
            self._deadline_timer = loop.call_later(
                delay, self.cancel, CancelReason(CancelKind.DEADLINE, f"deadline of {self.name} passed"))
        return self

    def _clock_ns(self) -> int:
        return self.cx.clock.now_ns()

    # ---------------------------------------------------------------- children
    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any,
              name: str | None = None) -> asyncio.Task[Any]:
        """Run ``fn(cx, *args)`` as a local task of this region; ``cx`` is the task's own Cx."""
        if self._closed or self._loop is None:
            raise InvalidArgument(f"{self.name} is not open; spawn inside `async with region(cx)`")
        cx = self.cx.child(region=self, cancel_state=CancelState())
        cx.task_id = next_task_id()
        task = self._loop.create_task(fn(cx, *args), name=name)
        self._tasks[task] = cx
        task.add_done_callback(self._task_done)
        if self.cx.cancelled:
            task.cancel()
            cx.cancel(self._child_reason())
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        self._changed.set()  # type: ignore[union-attr]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._errors.append(exc)
            self.cancel(CancelReason(CancelKind.FAIL_FAST, f"{type(exc).__name__}: {exc}"))

    def adopt(self, handle: RemoteHandle) -> None:
        """Called by the runtime for every handle spawned with a Cx of this region."""
        if self._closed:
            raise InvalidArgument(f"{self.name} has exited; spawn remote work in an open region")
        self._handles[handle] = None
        if self.cx.cancelled:
            handle.abort(self._child_reason())

    def handle_done(self, handle: RemoteHandle) -> None:
        """A handle of this region settled. One with nothing left to report at
        exit (a success) is let go at once, so a region that runs for days
        holds only its live handles and its unobserved failures."""
        if handle._unobserved_error() is None:
            self._handles.pop(handle, None)
        if self._changed is not None:
            self._changed.set()

    def handle_observed(self, handle: RemoteHandle) -> None:
        """The caller looked at a settled handle's outcome (join, outcome,
        try_join, close): its failure is the caller's now, not the region's."""
        self._handles.pop(handle, None)

    def _child_reason(self) -> CancelReason:
        reason = self.cx.cancel_reason or CancelReason(CancelKind.USER)
        if reason.kind in (CancelKind.DEADLINE, CancelKind.SHUTDOWN):
            return reason
        return reason.caused(CancelKind.PARENT_CANCELLED, f"{self.name} cancelled: {reason}")

    # ------------------------------------------------------------------ cancel
    def cancel(self, reason: CancelReason | None = None) -> bool:
        """Cancel everything in the region; True if this call was the first."""
        reason = reason or CancelReason(CancelKind.USER, f"{self.name} cancelled")
        if not self.cx.cancel_state.cancel(reason):
            return False
        child = self._child_reason()
        for task, cx in list(self._tasks.items()):
            cx.cancel(child)
            task.cancel()
        for h in list(self._handles):
            h.abort(child)
        host = self._host
        if host is not None and not self._exiting and not host.done():
            self._host_cancels += 1
            host.cancel()
        if self._changed is not None:
            self._changed.set()
        return True

    # -------------------------------------------------------------------- exit
    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        global _live_regions, LEAKED_LEASES
        self._exiting = True
        outer_cancel = False
        if exc is not None:
            if isinstance(exc, asyncio.CancelledError):
                if not self._host_cancel_was_ours():
                    outer_cancel = True
                    self.cancel(CancelReason(CancelKind.PARENT_CANCELLED, f"task hosting {self.name} cancelled"))
            else:
                self._errors.insert(0, exc)
                self.cancel(CancelReason(CancelKind.FAIL_FAST, f"{type(exc).__name__}: {exc}"))
        # 1. quiescence: nothing leaves before every child is terminal
        while True:
            pending_h = [h for h in self._handles if not h.is_finished()]
            if not self._tasks and not pending_h:
                break
            self._changed.clear()  # type: ignore[union-attr]
            try:
                await self._changed.wait()  # type: ignore[union-attr]
            except asyncio.CancelledError:
                if not self._host_cancel_was_ours():
                    outer_cancel = True
                self.cancel(CancelReason(CancelKind.PARENT_CANCELLED, f"task hosting {self.name} cancelled"))
        self._closed = True
        _live_regions -= 1
        if self.cx.trace is not None:  # the lab's oracle: no live remote descendant from here on
            self.cx.trace(REGION_CLOSED, dict(region_id=self.id, cancelled=self.cx.cancelled))
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        if self._parent_cb is not None:
            self.parent.cancel_state.remove_callback(self._parent_cb)
        # 2. obligations: every lease released
        for h in self._handles:
            if h.lease.state == "active":  # pragma: no cover - would be a bug
                LEAKED_LEASES += 1
                log.error("lease leak: %r still holds its lease after %s closed", h, self.name)
                if self.cx.trace is not None:
                    self.cx.trace(REGION_LEAK, dict(handle=repr(h), region=self.name))
        # 3. remote failures nobody looked at
        for h in self._handles:
            err = h._unobserved_error()
            if err is None:
                continue
            if isinstance(err, RemoteCancelled) and self.cx.cancelled:
                continue
            self._errors.append(err)
        self._handles.clear()
        # 4. give back the cancels we sent to our own host task
        host = self._host
        if host is not None:
            for _ in range(self._host_cancels):
                host.uncancel()
            self._host_cancels = 0
        if self._errors:
            errors = self._errors
            self._errors = []
            if all(isinstance(e, Exception) for e in errors):
                raise ExceptionGroup(f"{len(errors)} failure(s) in {self.name}", errors)  # type: ignore[type-var]
            raise BaseExceptionGroup(f"{len(errors)} failure(s) in {self.name}", errors)
        if outer_cancel:
            raise asyncio.CancelledError()
        # swallow the CancelledError we caused ourselves (region cancelled, body interrupted)
        return isinstance(exc, asyncio.CancelledError)

    def _host_cancel_was_ours(self) -> bool:
        host = self._host
        if host is None:
            return False
        # cancelling() counts pending cancel requests; ours are _host_cancels of them
        return host.cancelling() <= self._host_cancels and self._host_cancels > 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("cancelled" if self.cancelled else "open")
        return f"<Region {self.name} {state} tasks={len(self._tasks)} handles={len(self._handles)}>"


def region(cx: Cx, *, budget: Budget | None = None, name: str | None = None) -> Region:
    """``async with rsc.region(cx) as r:`` — a Region under ``cx``."""
    return Region(cx, budget=budget, name=name)


__all__ = ["LEAKED_LEASES", "Region", "live_regions", "region", "RemoteError"]
