"""Sagas: multi-step work undone by compensations in reverse (``rsc.Saga``, ``rsc.saga``).

A saga is a sequence of steps, each a forward action with a compensation that
undoes it. If a step fails, the compensations of the steps that succeeded run
last-to-first. Two forms:

- ``rsc.Saga()``, synchronous: ``step(description, action, compensate)`` runs
  ``action()`` at once. On success it records ``compensate`` and returns the
  action's value; on failure it runs every recorded compensation in reverse,
  records a ``CompensationResult`` for each, ends ``Aborted`` and raises
  ``SagaStepError``. ``complete()`` drops the compensations, ``abort()`` runs
  them.
- ``async with rsc.saga(cx) as s:``, for real use: ``await s.step(description,
  action, compensate)``, where both may be coroutine functions that spawn remote
  work on ``s.cx`` and await it. Leaving the block normally completes the saga;
  an exception in the body, a failed step (a lapsed lease in a step's remote
  work included) or a cancel of the enclosing task or region aborts it.

Rules both keep:

1. A step fails when its action raises, or returns ``rsc.sagas.Err(message)``
   (a failure stated as a value). The error's message is the ``Err``'s text,
   or ``"ExcType: text"`` for a raised exception.
2. Compensations run last-to-first, each exactly once, and only for steps whose
   action succeeded (a failure at step 0 runs none).
3. A compensation returns what it undid (any value; ``str()`` of it, or ``""``
   for None, is recorded). One that raises is recorded as failed and does not
   stop the others; once all have run, the failures are raised together with
   the step's error in an ``ExceptionGroup`` (only the step's error, alone,
   when every compensation succeeded).
4. ``step``, ``complete`` and ``abort`` are legal only while ``Running``;
   anything else raises ``SagaStateError`` saying the state.
5. A saga dropped while ``Running`` with compensations it never ran warns
   (``RuntimeWarning`` naming the saga): undo work is never dropped silently.

The async saga adds:

6. Compensations are shielded from the cancellation that triggered them: they
   run on a Cx of their own (``s.cx`` while compensating) with the same
   RemoteCap and no region, so a cancelled region still gets its undo, and a
   second cancel while they run does not cut them short (it is re-raised once
   they are done). Each compensation is bounded by ``compensation_budget_s``
   (default 30 s): a deadline that travels with the remote work it spawns and
   bounds the local wait; one that overruns counts as failed.
7. ``s.key(n=0)`` is an idempotency key derived from the saga's id, the step
   (or the step being compensated) and ``n``: spawn remote work with it
   (``spawn_remote(s.cx, ..., idempotency_key=s.key())``) and a resent or
   retried spawn of that step's work or compensation runs at most once on its
   node.
8. Trace events (on the Cx's trace): ``saga::step_started``,
   ``saga::step_completed``, ``saga::step_failed``,
   ``saga::compensation_started``, ``saga::compensation_completed``,
   ``saga::compensation_failed``, ``saga::completed``, ``saga::aborted``, each
   with the saga's name and id and the step index.
9. When the body was cancelled, the cancel propagates after the compensations
   have run; compensation failures are then not raised (the cancel wins) but
   are kept in ``s.compensation_failures`` and traced.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import inspect
import itertools
import secrets
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from rsc._engine.trace_names import SAGA_PREFIX
from rsc.cx import Cx
from rsc.errors import InvalidArgument, RemoteError
from rsc.types import Budget, IdempotencyKey

DEFAULT_COMPENSATION_BUDGET_S = 30.0

_names = itertools.count(1)


class SagaState(enum.Enum):
    """Where a saga is: Running, Completed, Compensating or Aborted."""

    RUNNING = "Running"
    COMPLETED = "Completed"
    COMPENSATING = "Compensating"
    ABORTED = "Aborted"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Err:
    """What an action returns to fail its step without raising."""

    message: str


@dataclass(frozen=True, slots=True)
class CompensationResult:
    """A compensation that ran: the step it undid and what it said it did."""

    step: int
    description: str
    result: str


class SagaStepError(RemoteError):
    """Step ``step`` (``description``) failed with ``message``; the steps before
    it were compensated before this was raised."""

    def __init__(self, step: int, description: str, message: str) -> None:
        super().__init__(f"saga step {step} ({description}) failed: {message}")
        self.step = step
        self.description = description
        self.message = message


class CompensationError(RemoteError):
    """The compensation of step ``step`` (``description``) failed; the cause is
    ``__cause__``. Raised together with the step's error, never alone."""

    def __init__(self, step: int, description: str, message: str) -> None:
        super().__init__(f"compensation of saga step {step} ({description}) failed: {message}")
        self.step = step
        self.description = description
        self.message = message


class SagaStateError(InvalidArgument):
    """A saga was asked to step, complete or abort outside ``Running``."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Entry:
    """A recorded compensation: the step it undoes and what to call."""

    __slots__ = ("step", "description", "compensate", "value")

    def __init__(self, step: int, description: str, compensate: Callable[..., Any], value: Any) -> None:
        self.step = step
        self.description = description
        self.compensate = compensate
        self.value = value


class _SagaBase:
    """State, records and the rules both forms share."""

    def __init__(self, name: str | None) -> None:
        self.name = name or f"saga-{next(_names)}"
        self._state = SagaState.RUNNING
        self._entries: list[_Entry] = []
        self._completed_steps = 0
        self._results: list[CompensationResult] = []

    @property
    def state(self) -> SagaState:
        return self._state

    @property
    def completed_steps(self) -> int:
        """How many steps succeeded."""
        return self._completed_steps

    @property
    def compensation_results(self) -> list[CompensationResult]:
        """The compensations that ran, in the order they ran (last step first)."""
        return list(self._results)

    def _require_running(self, what: str) -> None:
        if self._state is not SagaState.RUNNING:
            raise SagaStateError(f"cannot {what} {self.name}: it is {self._state}, not Running")

    def _failure_of(self, step: int, description: str, outcome: Any) -> SagaStepError | None:
        """The step's error if its action's return value says it failed (an Err)."""
        if isinstance(outcome, Err):
            return SagaStepError(step, description, str(outcome.message))
        return None

    def _record(self, entry: _Entry, result: Any) -> None:
        text = "" if result is None else str(result)
        self._results.append(CompensationResult(entry.step, entry.description, text))

    def _record_failure(self, entry: _Entry, exc: BaseException) -> CompensationError:
        err = CompensationError(entry.step, entry.description, _describe(exc))
        err.__cause__ = exc
        self._results.append(CompensationResult(entry.step, entry.description, f"failed: {_describe(exc)}"))
        return err

    @staticmethod
    def _raise(step_error: BaseException | None, failures: list[CompensationError], what: str) -> None:
        if failures:
            errors: list[Exception] = [step_error] if isinstance(step_error, Exception) else []
            raise ExceptionGroup(what, [*errors, *failures])
        if step_error is not None:
            raise step_error

    def __del__(self) -> None:
        # (getattr: __init__ may have refused its arguments before setting them)
        if getattr(self, "_state", None) is SagaState.RUNNING and self._entries:
            warnings.warn(f"{self.name} was dropped while Running: the compensations of "
                          f"{len(self._entries)} step(s) never ran", RuntimeWarning, stacklevel=2)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name}, state={self._state}, completed_steps="
                f"{self._completed_steps}, compensations={len(self._entries)}, "
                f"compensation_results={self._results!r})")


class Saga(_SagaBase):
    """The synchronous saga (see the module docstring for its rules)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)

    def step(self, description: str, action: Callable[[], Any], compensate: Callable[[], Any]) -> Any:
        """Run ``action()`` now; on success record ``compensate`` and return the
        action's value; on failure compensate and raise ``SagaStepError``."""
        self._require_running("add a step to")
        index = self._completed_steps
        try:
            value = action()
        except Exception as exc:  # the step failed: undo what came before
            error = SagaStepError(index, description, _describe(exc))
            error.__cause__ = exc
            self._raise(error, self._compensate(), str(error))
        failed = self._failure_of(index, description, value)
        if failed is not None:
            self._raise(failed, self._compensate(), str(failed))
        self._entries.append(_Entry(index, description, compensate, value))
        self._completed_steps += 1
        return value

    def complete(self) -> None:
        """Mark the saga done: its compensations are dropped."""
        self._require_running("complete")
        self._state = SagaState.COMPLETED
        self._entries.clear()

    def abort(self) -> None:
        """Roll back: run every recorded compensation, last step first."""
        self._require_running("abort")
        self._raise(None, self._compensate(), f"compensations of {self.name} failed")

    def _compensate(self) -> list[CompensationError]:
        self._state = SagaState.COMPENSATING
        entries, self._entries = self._entries, []
        failures = []
        for entry in reversed(entries):
            try:
                self._record(entry, entry.compensate())
            except Exception as exc:  # recorded; the others still run
                failures.append(self._record_failure(entry, exc))
        self._state = SagaState.ABORTED
        return failures


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    value = fn(*args)
    if inspect.isawaitable(value):
        value = await value
    return value


class AsyncSaga(_SagaBase):
    """A saga whose steps and compensations may await remote work; made by
    ``rsc.saga(cx)`` and used as ``async with`` (see the module docstring)."""

    def __init__(self, cx: Cx, *, compensation_budget_s: float = DEFAULT_COMPENSATION_BUDGET_S,
                 name: str | None = None, saga_id: bytes | None = None) -> None:
        if not isinstance(cx, Cx):
            raise InvalidArgument(f"saga() needs a Cx, got {type(cx).__name__}")
        if (isinstance(compensation_budget_s, bool) or not isinstance(compensation_budget_s, (int, float))
                or not compensation_budget_s > 0):
            raise InvalidArgument(f"compensation_budget_s must be a positive number of seconds, "
                                  f"got {compensation_budget_s!r}")
        if saga_id is not None and (not isinstance(saga_id, bytes) or not 1 <= len(saga_id) <= 64):
            raise InvalidArgument("saga_id must be 1..64 bytes")
        super().__init__(name)
        self.id = saga_id if saga_id is not None else secrets.token_bytes(16)
        self.compensation_budget_s = float(compensation_budget_s)
        self.compensation_failures: list[CompensationError] = []
        self._cx = cx
        self._comp_cx: Cx | None = None
        self._phase: tuple[bytes, int] | None = None  # (b"do" | b"undo", step) while one runs
        self._entered = False

    # ---------------------------------------------------------------- surface
    @property
    def cx(self) -> Cx:
        """The Cx to spawn this saga's work with: the saga's own while a step
        runs, a shielded one of the compensation's while a compensation runs."""
        return self._comp_cx if self._comp_cx is not None else self._cx

    def key(self, n: int = 0) -> IdempotencyKey:
        """The idempotency key for the ``n``-th spawn of the step (or the
        compensation) running now: the same for the same saga id, step and n."""
        if self._phase is None:
            raise SagaStateError(f"{self.name}.key() is for use inside a step or a compensation")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidArgument(f"key(n) needs an int n >= 0, got {n!r}")
        phase, step = self._phase
        h = hashlib.blake2b(digest_size=16, person=b"rsc/saga-key/v1")
        for part in (self.id, phase, step.to_bytes(8, "big"), n.to_bytes(8, "big")):
            h.update(len(part).to_bytes(2, "big") + part)
        return IdempotencyKey.from_bytes(h.digest())

    def _trace(self, event: str, **fields: Any) -> None:
        trace = self._cx.trace
        if trace is not None:
            trace(f"{SAGA_PREFIX}{event}", dict(saga=self.name, saga_id=self.id.hex(), **fields))

    # ---------------------------------------------------------------- steps
    async def step(self, description: str, action: Callable[[], Any],
                   compensate: Callable[[Any], Any] | None = None) -> Any:
        """Run ``action()`` (awaiting it if it returns an awaitable); on success
        record ``compensate``, to be called with the action's value if the saga
        aborts, and return the value. On failure, compensate the earlier steps
        and raise ``SagaStepError`` (or the group of rule 3). A cancel while the
        action runs compensates, then propagates."""
        self._require_running("add a step to")
        index = self._completed_steps
        self._trace("step_started", step=index, description=description)
        self._phase = (b"do", index)
        try:
            value = await _call(action)
        except Exception as exc:
            error = SagaStepError(index, description, _describe(exc))
            error.__cause__ = exc
            await self._fail(error)
        except asyncio.CancelledError:
            self._trace("step_failed", step=index, description=description, error="cancelled")
            await self._compensate_shielded(cancelled=True)
            raise
        finally:
            self._phase = None
        failed = self._failure_of(index, description, value)
        if failed is not None:
            await self._fail(failed)
        self._entries.append(_Entry(index, description, compensate or (lambda _v: None), value))
        self._completed_steps += 1
        self._trace("step_completed", step=index, description=description)
        return value

    async def _fail(self, error: SagaStepError) -> None:
        self._trace("step_failed", step=error.step, description=error.description, error=error.message)
        failures = await self._compensate_shielded(cancelled=False)
        self._raise(error, failures, str(error))

    def complete(self) -> None:
        """Done: the compensations are dropped (leaving the block does this)."""
        self._require_running("complete")
        self._state = SagaState.COMPLETED
        self._entries.clear()
        self._trace("completed", steps=self._completed_steps)

    async def abort(self) -> None:
        """Roll back now: run every recorded compensation, last step first."""
        self._require_running("abort")
        failures = await self._compensate_shielded(cancelled=False)
        self._raise(None, failures, f"compensations of {self.name} failed")

    # ---------------------------------------------------------- compensation
    async def _compensate_shielded(self, cancelled: bool) -> list[CompensationError]:
        """Run the compensations in a task of their own and wait for it even
        through further cancels (re-raised once it is done)."""
        task = asyncio.get_running_loop().create_task(self._compensate(), name=f"{self.name} compensations")
        interrupted = False
        while True:
            try:
                failures = await asyncio.shield(task)
                break
            except asyncio.CancelledError:
                if task.done():
                    failures = task.result()
                    break
                interrupted = True  # keep waiting: undo work is never cut short
        if interrupted or cancelled:
            self.compensation_failures.extend(failures)
            if interrupted:
                raise asyncio.CancelledError()
            return []
        return failures

    async def _compensate(self) -> list[CompensationError]:
        self._state = SagaState.COMPENSATING
        entries, self._entries = self._entries, []
        failures: list[CompensationError] = []
        for entry in reversed(entries):
            self._trace("compensation_started", step=entry.step, description=entry.description)
            self._comp_cx = self._shielded_cx()
            self._phase = (b"undo", entry.step)
            try:
                result = await asyncio.wait_for(_call(entry.compensate, entry.value),
                                                self.compensation_budget_s)
            except Exception as exc:  # recorded; the others still run
                if isinstance(exc, asyncio.TimeoutError):
                    exc = TimeoutError(f"did not finish within its budget of "
                                       f"{self.compensation_budget_s:g} s")
                failures.append(self._record_failure(entry, exc))
                self._trace("compensation_failed", step=entry.step, description=entry.description,
                            error=_describe(exc))
            else:
                self._record(entry, result)
                self._trace("compensation_completed", step=entry.step, description=entry.description)
            finally:
                self._comp_cx = None
                self._phase = None
        self._state = SagaState.ABORTED
        self._trace("aborted", steps=self._completed_steps, failed_compensations=len(failures))
        return failures

    def _shielded_cx(self) -> Cx:
        """A Cx with the saga's capability but none of its cancellation or
        region, and a deadline of one compensation budget."""
        cx = self._cx
        deadline = cx.clock.now_ns() + int(self.compensation_budget_s * 1e9)
        return Cx(remote_cap=cx.remote_cap, budget=Budget(deadline_ns=deadline),
                  region_id=cx.region_id, task_id=cx.task_id, node=cx.node, parent=cx,
                  trace=cx.trace)

    # ---------------------------------------------------------------- block
    async def __aenter__(self) -> AsyncSaga:
        if self._entered:
            raise SagaStateError(f"{self.name} can be entered once")
        self._entered = True
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if self._state is not SagaState.RUNNING:
            return False  # a failed step or an abort already compensated
        if exc is None:
            self.complete()
            return False
        cancelled = isinstance(exc, asyncio.CancelledError)
        failures = await self._compensate_shielded(cancelled=cancelled)
        if failures:
            group = [exc] if isinstance(exc, Exception) else []
            raise ExceptionGroup(f"{self.name} aborted: {_describe(exc)}", [*group, *failures]) from None
        return False


def saga(cx: Cx, *, compensation_budget_s: float = DEFAULT_COMPENSATION_BUDGET_S,
         name: str | None = None, saga_id: bytes | None = None) -> AsyncSaga:
    """``async with rsc.saga(cx) as s:`` — an AsyncSaga spawning on ``cx``."""
    return AsyncSaga(cx, compensation_budget_s=compensation_budget_s, name=name, saga_id=saga_id)


__all__ = ["AsyncSaga", "CompensationError", "CompensationResult", "Err", "Saga", "SagaState",
           "SagaStateError", "SagaStepError", "saga"]
