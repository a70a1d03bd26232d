"""Runs a node's computations on its event loop and reports how each ended.

Async computations run as asyncio tasks on the loop; sync ones in a bounded
thread pool, so the loop keeps answering while they compute; sync ones
registered ``inline=True`` (microseconds of work) are called on the loop
thread, with neither a thread nor a task.

Inline computations, and async ones on Python 3.12+, are *ready* once started:
they run when :meth:`Executor.run_ready` is called (by the node after each
batch of engine work, once that batch's replies are queued) or, failing that,
at the next loop turn. On 3.12+ an async computation's first step runs there
eagerly (``asyncio.Task(..., eager_start=True)``): inside its own asyncio
task, so ``asyncio.current_task()``, ``asyncio.timeout()`` and ``TaskGroup``
work as ever, but the task is scheduled on the loop only if the computation
suspends, and one that never does costs no loop turn. On 3.11 the task's first
step is scheduled on the loop when the computation starts.

For every task that :meth:`Executor.start` accepts, ``on_done(key,
outcome_kind, payload, execution_time_ns)`` is called exactly once, on the
loop thread, never from inside ``start``, with the RESULT_DELIVERY outcome of
PROTOCOL.md (an ``on_done`` that is a :class:`TaskReporter` has its
``_on_done(record, outcome_kind, payload, execution_time_ns)`` called
instead, as a C call when compiled):

==========  ===============================================================
0 success   ``bytes`` from ``Computation.encode_output``
1 failed    ``str``: ``"ExcType: message"`` — an ``Exception`` raised by the
            computation, its input failing to decode, or its output failing
            to encode
2 cancelled the ``CancelReason`` in ``cx.cancel_reason`` — the computation
            ended by ``asyncio.CancelledError`` / ``rsc.errors.Cancelled``
            after a cancel was requested (or never started because of one)
3 panicked  ``str`` — a ``BaseException`` other than cancellation
            (``KeyboardInterrupt``, ``SystemExit``, a dying worker), or a
            cancellation signal nobody asked for (below)
==========  ===============================================================

Rules this module keeps:

* A cancel is a request. A computation that swallows it and returns, or
  raises something else, has that real outcome delivered.
* A ``CancelledError`` or ``Cancelled`` that ends a computation whose Cx was
  never cancelled is **Panicked**, not Cancelled: there is no cancel reason to
  report, so calling it Cancelled would invent one, and protocol-wise it is a
  BaseException other than (this task's) cancellation. It usually means the
  computation awaited a task or future that something else cancelled.
* A sync computation cannot be killed. After ``cancel_grace_s`` without
  returning, an asynchronous :class:`CancelInterrupt` (a ``Cancelled``) is
  raised in its thread once (this interrupts pure-Python code, not a blocking
  C call). Its outcome is delivered only when its thread has really returned.
* Nothing a computation or ``on_done`` does can raise out of the executor into
  the loop; every asyncio task's result is retrieved.
* A process-isolated computation (``rsc.registry.runs_in_process``) goes to
  the node's ``rsc.node.workers.WorkerPool`` (``Executor.workers``), whose
  outcome comes back through the same ``_finish``. There a cancel always wins:
  the worker is killed when the computation ignores it for ``cancel_grace_s``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import inspect
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from rsc.logs import get_logger
from rsc._signature import SourceSignature
from rsc._engine.node import NodeTask
from rsc.cx import Cx
from rsc.node._task_body import task_body as _task_body
from rsc.errors import Cancelled, InvalidArgument
from rsc.registry import Computation
from rsc.types import CancelKind, CancelReason, OutcomeKind
from rsc.value_codec import Segmented

__all__ = ["CancelInterrupt", "Executor", "OnDone", "TaskReporter"]

logger = get_logger("rsc.node.executor")

# on_done(key, outcome kind, payload, execution ns): the key is whatever start() was given
OnDone = Callable[[Any, int, Any, int], None]

_AsyncioTask = asyncio.Task  # a global read, not an attribute lookup on the module per task
# Python 3.12+ can run a new task's first step at once, inside its own task
# (asyncio.Task's eager_start); 3.11 schedules it on the loop.
EAGER_TASKS = sys.version_info >= (3, 12)
_SUCCESS = int(OutcomeKind.SUCCESS)
_FAILED = int(OutcomeKind.FAILED)
_CANCELLED = int(OutcomeKind.CANCELLED)
_PANICKED = int(OutcomeKind.PANICKED)
_CANCEL_SIGNAL = -1  # internal: ended by a cancellation exception; judged against cx at finish

_UNSOLICITED_CANCEL = (
    "computation raised {exc} without a cancel having been requested "
    "(did it await a task or future that something else cancelled?)"
)


class CancelInterrupt(Cancelled):
    """The ``Cancelled`` the executor raises asynchronously inside a sync
    computation's thread when it ignored its cancel for ``cancel_grace_s``.

    CPython instantiates an asynchronous exception from its class with no
    arguments, so each interrupt uses a subclass bound to the task's reason.
    """

    reason_default: CancelReason = CancelReason(CancelKind.USER, "interrupted by the node")

    def __init__(self, reason: CancelReason | None = None) -> None:
        super().__init__(reason if reason is not None else type(self).reason_default)


def _interrupt_class(reason: CancelReason) -> type[CancelInterrupt]:
    return type("CancelInterrupt", (CancelInterrupt,), {"reason_default": reason,
                                                         "__module__": __name__})


try:
    # PYFUNCTYPE: called with the GIL held, as the C API requires. Two
    # prototypes so the "clear" form can pass NULL; neither touches the shared
    # ctypes.pythonapi.PyThreadState_SetAsyncExc object other code may use.
    _api = ctypes.pythonapi
    _set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
        ("PyThreadState_SetAsyncExc", _api))
    _clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
        ("PyThreadState_SetAsyncExc", _api))
    CAN_INTERRUPT_THREADS = True
except (AttributeError, OSError):  # pragma: no cover - not CPython
    CAN_INTERRUPT_THREADS = False


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Plan:
    """What the executor reads of a computation for every task it starts,
    read from the (frozen) ``Computation`` once, when the executor first
    starts it: compiled, these are C fields, where each read of a
    ``Computation`` attribute is a Python attribute lookup."""

    __slots__ = ("comp", "fn", "raw", "is_async", "inline", "name", "task_kwargs")

    def __init__(self, comp: Computation, loop: asyncio.AbstractEventLoop) -> None:
        self.comp = comp
        self.fn = comp.fn
        self.raw = comp.codec is None  # raw bytes in and out: no codec calls
        self.is_async = comp.is_async
        self.inline = comp.inline
        # An async computation's asyncio task is named "rsc:<computation>"
        # (a named task is also cheaper: an unnamed one formats "Task-<n>");
        # the eager path's keywords are one dict per computation: a call with
        # keywords written out builds that dict for every task.
        self.name = "rsc:" + str(comp.name)
        self.task_kwargs = dict(loop=loop, name=self.name)
        if EAGER_TASKS:
            self.task_kwargs["eager_start"] = True


def _input_of(plan: _Plan, data: Any) -> Any:
    """``comp.decode_input(data)``, without the call when the codec is None
    (raw bytes, the common case: the computation gets them as they are)."""
    return data if plan.raw else plan.comp.decode_input(data)


def _output_of(plan: _Plan, out: Any) -> bytes | memoryview | Segmented:
    """``comp.encode_output(out)``, without the call when ``out`` is already
    the bytes a codec-None computation returns (the common case)."""
    return out if type(out) is bytes and plan.raw else plan.comp.encode_output(out)


def _ended_by(exc: BaseException) -> tuple[int, Any]:
    """The outcome of a computation on the loop that raised ``exc`` (a
    cancellation signal is judged against its Cx in ``_finish``)."""
    if isinstance(exc, (asyncio.CancelledError, Cancelled)):
        return _CANCEL_SIGNAL, exc
    if isinstance(exc, Exception):
        return _FAILED, _message(exc)
    return _PANICKED, _message(exc)


def _returned_awaitable(comp: Computation, out: Any, registered_as: str, fix: str) -> str:
    """The Failed message of a computation that returned an awaitable where it
    should have returned its output (closing a coroutine: no "never awaited")."""
    if inspect.iscoroutine(out):
        out.close()
    return (f"TypeError: computation {str(comp.name)!r} was registered as {registered_as} but "
            f"returned an awaitable ({type(out).__name__}); {fix}")


class TaskReporter:
    """An ``on_done`` the executor calls as a method: ``_on_done(task, kind,
    payload, execution_time_ns)`` with the task's record (a ``NodeTask``; a
    node starts each task under its own record, so the record is the key)
    instead of ``on_done(key, ...)``. Compiled, that is a C call with the
    kind and the time as C integers, where a plain callable costs a Python
    call and its arguments' conversions on every task; the node server is
    one (its ``_on_done`` is what a subclass overrides)."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too
    __slots__ = ()

    def _on_done(self, task: NodeTask, kind: int, payload: Any, exec_ns: int) -> None:
        raise NotImplementedError  # pragma: no cover - interface


class _Task(NodeTask):
    """The record of a computation started under a key of the caller's.

    The executor's fields are ``NodeTask``'s (``cx`` to ``ekey``): a node
    starts its own ``NodeTask`` as the key, and the executor keeps its
    book-keeping on that same object (one record per task); any other key
    gets one of these, with the key in ``ekey``. Loop-thread owned, except
    ``thread_ident`` and ``interrupted``, which are guarded by the
    executor's ``_thread_lock``."""

    __slots__ = ()


def _exec_init(task: NodeTask, key: Hashable, comp: Computation, plan: _Plan, data: Any, cx: Cx,
               on_done: OnDone | TaskReporter, start_ns: int) -> None:
    """Fill the executor's fields of ``task`` for a start."""
    task.ekey = key
    task.comp = comp
    task.plan = plan
    task.input = data  # dropped once the computation has it
    task.cx = cx
    task.on_done = on_done
    task.start_ns = start_ns
    task.atask = None
    task.cfuture = None
    task.thread_ident = None  # set while a pool thread runs it
    task.interrupted = False  # an async exception was sent to its thread
    task.grace_timer = None
    task.finished = False  # on_done has been (or is being) called
    task.stepped = False  # an async computation's coroutine has taken its first step
    task.job = None  # its rsc.node.workers.Job while a worker pool has it


def _key(task: NodeTask) -> Any:
    """The key ``task`` was started under: a node's own task is its own key."""
    return task if type(task) is NodeTask else task.ekey


def _cancelled(cx: Cx) -> bool:
    """``cx.cancelled``, read as two fields (a C read when compiled, where a
    property is a Python attribute lookup)."""
    return cx._cancel.reason is not None


class Executor:
    """Runs computations for a node; see the module docstring for the rules.

    Every method except the thread-pool internals is called on the loop
    thread. ``max_threads`` bounds how many sync computations run at once;
    more wait in the pool's queue (the node's own capacity check decides how
    many tasks it admits at all).
    """

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    def __init__(self, *, max_threads: int, clock_ns: Callable[[], int] = time.monotonic_ns,
                 cancel_grace_s: float = 2.0, isolation: str = "thread") -> None:
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise InvalidArgument(f"max_threads must be an int >= 1, got {max_threads!r}")
        if isinstance(cancel_grace_s, bool) or not isinstance(cancel_grace_s, (int, float)) \
                or cancel_grace_s < 0:
            raise InvalidArgument(f"cancel_grace_s must be a number >= 0, got {cancel_grace_s!r}")
        if isolation not in ("thread", "process"):
            raise InvalidArgument(f"isolation must be 'thread' or 'process', got {isolation!r}")
        self._max_threads = max_threads
        # The node's default for sync computations registered without an
        # isolation, and the pool that runs process-isolated ones (set by the
        # NodeServer; None: a process-isolated computation fails, saying so).
        self.isolation = isolation
        self.workers: Any = None
        self._clock_ns = clock_ns
        self._cancel_grace_s = float(cancel_grace_s)
        self._tasks: dict[Hashable, NodeTask] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._idle_waiters: list[asyncio.Future[None]] = []
        # each computation's _Plan, by name, and the last one used (_plan_of)
        self._plans: dict[str, _Plan] = {}
        self._last_plan: _Plan | None = None
        self._plain_tasks = False  # the loop has no task factory: make asyncio.Task directly
        # Started tasks whose first step is still to run (inline ones, and
        # async ones started eagerly): run_ready runs them, in start order.
        self._ready: list[NodeTask] = []
        # Whether the node calls run_ready after every batch of starts (then
        # no loop callback is scheduled for them); else the loop's next turn does.
        self.driver_runs_ready = False
        self._eager = False  # async computations start eagerly (3.12+, no task factory)
        self._ended_cb = self._ended  # what an eager task's body reports to, bound once
        # Debug counter: asyncio tasks and pool futures created and not yet
        # finished. Tests assert it returns to 0 (uvloop's live-handle habit).
        self.live_tasks = 0

    # -- queries ------------------------------------------------------------------
    @property
    def running(self) -> int:
        """Tasks started whose outcome has not been delivered yet."""
        return len(self._tasks)

    def is_running(self, key: Hashable) -> bool:
        """Whether the task ``key`` was started and has not finished."""
        return key in self._tasks

    @property
    def max_threads(self) -> int:
        """The most sync computations that run at once (the thread pool's size)."""
        return self._max_threads

    @property
    def cancel_grace_s(self) -> float:
        """Seconds a cancelled sync computation gets before its thread is interrupted."""
        return self._cancel_grace_s

    @property
    def closing(self) -> bool:
        """Whether ``close()`` has begun (no new task starts)."""
        return self._closing

    @property
    def eager(self) -> bool:
        """Whether an async computation takes its first step in the call that
        starts it (Python 3.12+, on a loop with no task factory), so that it
        may end before ``start`` returns to its driver. Decided once, by the
        loop the executor runs on: the first ``start``, or the first ask from
        a coroutine or callback on that loop."""
        if self._loop is None:
            self._bind_loop()
        return self._eager

    def _bind_loop(self) -> None:
        """Bind to the running loop, and decide what depends on it."""
        loop = asyncio.get_running_loop()
        self._plain_tasks = loop.get_task_factory() is None
        self._eager = EAGER_TASKS and self._plain_tasks
        self._loop = loop

    # -- start ----------------------------------------------------------------------
    def start(self, key: Hashable, comp: Computation, data: Any, cx: Cx,
              on_done: OnDone | TaskReporter) -> None:
        """Start ``comp`` on ``data`` under ``cx``; ``on_done`` will be called
        exactly once, on the loop thread, never from inside this call.

        Raises ``InvalidArgument`` if ``key`` is already running and
        ``RuntimeError`` once :meth:`aclose` has begun (then nothing started).
        """
        if self._closing:
            raise RuntimeError("executor is closing; it starts no new computations")
        if self._loop is None:
            self._bind_loop()
        # The node's own task record is the key: the executor's fields live on
        # it (one record per task); any other key gets a record of its own.
        task = key if type(key) is NodeTask else _Task.__new__(_Task)
        plan = self._plan_of(comp)
        start_ns = self._clock_ns()
        tasks = self._tasks
        n = len(tasks)
        tasks.setdefault(key, task)  # one lookup: the key is entered unless it is running
        if len(tasks) == n:
            raise InvalidArgument(f"a computation with key {key!r} is already running")
        _exec_init(task, None if task is key else key, comp, plan, data, cx, on_done, start_ns)
        if plan.is_async:
            if self._eager:
                self._make_ready(task)
            else:
                self._start_async(task)
        elif plan.inline:
            self._make_ready(task)
        elif comp.isolation == "thread" or (comp.isolation is None and self.isolation == "thread"):
            self._start_sync(task)
        else:
            self._start_process(task)
        if _cancelled(cx):  # cancelled before it started: ask it to stop right away
            self._request_stop(task)

    def _plan_of(self, comp: Computation) -> _Plan:
        """``comp``'s plan: the last one used (a run of one computation, the
        common case, finds it without a lookup), else the one kept under its
        name if made for this very object, else a new one."""
        plan = self._last_plan
        if plan is None or plan.comp is not comp:
            plan = self._plans.get(comp.name)
            if plan is None or plan.comp is not comp:
                plan = self._plans[comp.name] = _Plan(comp, self._loop)  # type: ignore[arg-type]  # started
            self._last_plan = plan
        return plan

    def _start_async(self, task: NodeTask) -> None:
        # No done-callback: _run_async reports from inside its last step and
        # never raises, and the asyncio task is never cancelled before that
        # first step (see _request_stop), so its coroutine always runs.
        plan = task.plan
        if self._plain_tasks:  # what create_task does then, minus naming the task twice
            task.atask = _AsyncioTask(self._run_async(task), loop=self._loop,
                                      name=plan.name)
        else:
            task.atask = self._loop.create_task(self._run_async(task),  # type: ignore[union-attr]
                                                name=plan.name)
        self.live_tasks += 1

    def _make_ready(self, task: NodeTask) -> None:
        # Its first step runs in run_ready: not from inside start (on_done
        # never is), and after the node has carried out the batch's starts
        # (its ACK queued, or held for its RESULT to stand for). Without a
        # driver that calls run_ready, the tasks started in one turn share one
        # loop callback.
        ready = self._ready
        ready.append(task)
        if len(ready) == 1 and not self.driver_runs_ready:
            self._loop.call_soon(self.run_ready)  # type: ignore[union-attr]
        self.live_tasks += 1

    def run_ready(self) -> None:
        """Run the first step of every ready task (inline computations, and
        async ones on 3.12+), in the order they were started. A computation
        that ends in it has ``on_done`` called from here; one that suspends
        goes on as an asyncio task on the loop. Never raises."""
        while self._ready:
            ready, self._ready = self._ready, []
            for task in ready:
                if task.finished:  # abandoned before it ran
                    continue
                plan = task.plan
                if plan.is_async:
                    self._step_eagerly(task)
                else:
                    self._run_inline(task)

    def _step_eagerly(self, task: NodeTask) -> None:
        """Make the async task's asyncio task with its first step run now."""
        task.stepped = True
        if _cancelled(task.cx):  # cancelled before it started: it never does
            self._finish(task, _CANCEL_SIGNAL, None)
            return
        plan = task.plan
        data, task.input = task.input, None
        assert data is not None  # taken once
        try:
            arg = _input_of(plan, data)  # the node's work, not the computation's: before its task
        except BaseException as exc:
            kind, payload = _ended_by(exc)
            self._finish(task, kind, payload)
            return
        # The task runs a native coroutine that calls the computation in its
        # first step (rsc.node._task_body), not the compiled _run_async.
        atask = _AsyncioTask(_task_body(plan.fn, task.cx, arg, task, self._ended_cb),
                             **plan.task_kwargs)
        if not task.finished:  # it suspended: a cancel now goes to its asyncio task
            task.atask = atask

    def _run_inline(self, task: NodeTask) -> None:
        """Run an inline (plain, short) computation on the loop thread; never raises."""
        plan, cx = task.plan, task.cx
        payload: Any
        task.stepped = True
        if _cancelled(cx):  # cancelled before it ran: it never starts
            self._finish(task, _CANCEL_SIGNAL, None)
            return
        try:
            data, task.input = task.input, None
            assert data is not None  # taken once
            out = plan.fn(cx, _input_of(plan, data))
            if type(out) is not bytes and inspect.isawaitable(out):
                kind, payload = _FAILED, _returned_awaitable(
                    plan.comp, out, "inline", "define it with def, or drop inline=True")
            else:
                kind, payload = _SUCCESS, _output_of(plan, out)
        except BaseException as exc:
            kind, payload = _ended_by(exc)
        self._finish(task, kind, payload)

    def _start_sync(self, task: NodeTask) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_threads, thread_name_prefix="rsc-computation")
        try:
            cf = self._pool.submit(self._run_sync, task)
        except BaseException as exc:  # a broken or shut-down pool: report, never raise
            self.live_tasks += 1
            assert self._loop is not None
            self._loop.call_soon(self._finish, task, _PANICKED, f"thread pool refused the task: {_message(exc)}")
            return
        task.cfuture = cf
        self.live_tasks += 1
        cf.add_done_callback(lambda f, task=task: self._on_thread_done(task, f))  # type: ignore[misc]  # mypy cannot infer a lambda with a default

    def _start_process(self, task: NodeTask) -> None:
        self.live_tasks += 1
        if self.workers is None:
            assert self._loop is not None
            self._loop.call_soon(self._finish, task, _FAILED, (
                f"IsolationUnavailable: computation {str(task.comp.name)!r} runs in a worker process, "
                "but this node has no worker pool (was it registered after the node started? "
                "register it before, or start the node with --isolation process)"))
            return
        data, task.input = task.input, None
        task.job = self.workers.submit(task, task.comp, data, task.cx)

    def finish_task(self, task: NodeTask, kind: int, payload: Any) -> None:
        """How the worker pool reports a task's outcome: ``kind`` is an
        outcome kind, or -1 for "ended by a cancellation" (judged against the
        task's Cx: Cancelled with its reason, else Panicked)."""
        self._finish(task, kind, payload)

    # -- cancel ---------------------------------------------------------------------
    def cancel(self, key: Hashable, reason: CancelReason) -> bool:
        """Ask the running task ``key`` to stop with ``reason`` (the first
        reason given to its Cx wins; later ones only strengthen it). True if
        it was running; its outcome still arrives through ``on_done``."""
        task = self._tasks.get(key)
        if task is None or task.finished:
            return False
        task.cx.cancel(reason)
        self._request_stop(task)
        return True

    def _request_stop(self, task: NodeTask) -> None:
        if task.comp.inline:
            return  # it checks cx.cancelled before it runs, and cannot be stopped once it does
        if task.comp.is_async and self._eager and task.atask is None:
            return  # ready, not stepped yet: run_ready checks cx.cancelled before its first step
        if task.atask is not None:
            # Before its first step the coroutine has not entered its try block,
            # so a cancel would end it unreported; it checks cx.cancelled there.
            if task.stepped:
                task.atask.cancel()
            return
        if task.job is not None:  # in the worker pool: it kills the worker if need be
            reason = task.cx.cancel_reason or CancelReason(CancelKind.USER)
            self.workers.cancel(task.job, reason.to_wire())
            return
        cf = task.cfuture
        if cf is not None and cf.cancel():
            return  # was still queued: never ran; _on_thread_done reports it
        if task.grace_timer is None and self._loop is not None:
            task.grace_timer = self._loop.call_later(self._cancel_grace_s, self._interrupt, task)

    def _interrupt(self, task: NodeTask) -> None:
        """Grace is over and the sync computation is still running: raise
        CancelInterrupt in its thread (once)."""
        task.grace_timer = None
        if task.finished or not CAN_INTERRUPT_THREADS:
            return
        reason = task.cx.cancel_reason or CancelReason(CancelKind.USER)
        with self._thread_lock:
            ident = task.thread_ident
            if ident is None or task.interrupted:
                return
            task.interrupted = True
            n = _set_async_exc(ident, _interrupt_class(reason))
        logger.warning("computation %r (key %r) ignored its cancel for %.1fs; interrupting its thread",
                       str(task.comp.name), _key(task), self._cancel_grace_s)
        if n != 1:  # pragma: no cover - the thread vanished under us
            logger.error("could not interrupt the thread of computation %r (key %r): %d thread states",
                         str(task.comp.name), _key(task), n)

    # -- running ----------------------------------------------------------------------
    async def _run_async(self, task: NodeTask) -> None:
        """Run an async computation whose first step is scheduled on the loop
        (3.11, or a loop with a task factory; an eager first step runs
        ``rsc.node._task_body`` instead); never raises (a BaseException
        escaping an asyncio task would stop the node's loop). It reports from
        inside its own last step (not a done-callback one loop turn later), so
        a computation that ends at once has its result written together with
        its ACK."""
        try:
            out = await self._first_call(task)
        except BaseException as exc:
            self._ended(task, None, exc)
        else:
            self._ended(task, out, None)

    def _ended(self, task: NodeTask, out: Any, exc: BaseException | None) -> None:
        """An async computation returned ``out``, or raised ``exc``: finish
        ``task`` with that outcome (its output encoded; the exception judged
        by ``_ended_by``). Never raises."""
        payload: Any
        if exc is not None:
            kind, payload = _ended_by(exc)
        else:
            try:
                kind, payload = _SUCCESS, _output_of(task.plan, out)
            except Exception as enc_exc:
                kind, payload = _FAILED, _message(enc_exc)
        self._finish(task, kind, payload)

    def _first_call(self, task: NodeTask) -> Any:
        """The async computation called (what ``_run_async`` awaits), at its
        first step; raises CancelledError instead if it was cancelled before.
        (A method of its own: compiled, it reads the record's fields as C.)"""
        task.stepped = True
        if _cancelled(task.cx):  # cancelled before its first step: do not start it
            raise asyncio.CancelledError
        plan = task.plan
        data, task.input = task.input, None
        assert data is not None  # taken once
        return plan.fn(task.cx, _input_of(plan, data))

    def _run_sync(self, task: NodeTask) -> tuple[int, Any]:
        """Run a sync computation in a pool thread; never raises unless the
        interrupt lands after the computation's own frame is gone (then the
        pool records it and _on_thread_done classifies it)."""
        with self._thread_lock:
            task.thread_ident = threading.get_ident()
        try:
            plan, cx = task.plan, task.cx
            if cx.cancelled:
                return _CANCEL_SIGNAL, None  # cancelled while queued; do not start it
            data, task.input = task.input, None
            assert data is not None  # taken once
            out = plan.fn(cx, _input_of(plan, data))
            if type(out) is not bytes and inspect.isawaitable(out):
                return _FAILED, _returned_awaitable(plan.comp, out, "sync", "define it with async def")
            return _SUCCESS, _output_of(plan, out)  # encode here: keep big outputs off the loop
        except Cancelled as exc:
            return _CANCEL_SIGNAL, exc
        except Exception as exc:
            return _FAILED, _message(exc)
        except BaseException as exc:
            return _PANICKED, _message(exc)
        finally:
            with self._thread_lock:
                task.thread_ident = None
                if task.interrupted:
                    # An interrupt sent but not yet raised must not fire later
                    # inside the pool's own code (it would kill the worker).
                    _clear_async_exc(threading.get_ident(), None)

    # -- finishing (loop thread) ------------------------------------------------------------
    def _on_thread_done(self, task: NodeTask, cf: concurrent.futures.Future[tuple[int, Any]]) -> None:
        """Runs in the pool thread (or on the loop when cancelled while queued)."""
        loop = self._loop
        if loop is None:  # pragma: no cover - start() always sets it first
            return
        try:
            loop.call_soon_threadsafe(self._finish_thread, task, cf)
        except RuntimeError:  # loop closed: only after an abandoning aclose
            logger.debug("computation %r (key %r) finished after its loop closed",
                         str(task.comp.name), _key(task))

    def _finish_thread(self, task: NodeTask, cf: concurrent.futures.Future[tuple[int, Any]]) -> None:
        if cf.cancelled():
            kind, payload = _CANCEL_SIGNAL, None
        else:
            exc = cf.exception()
            if exc is None:
                kind, payload = cf.result()
            elif isinstance(exc, Cancelled):  # the interrupt landed just outside the computation
                kind, payload = _CANCEL_SIGNAL, exc
            else:
                kind, payload = _PANICKED, f"worker thread died: {_message(exc)}"
        self._finish(task, kind, payload)

    def _finish(self, task: NodeTask, kind: int, payload: Any) -> None:
        if task.finished:
            return
        task.finished = True
        self.live_tasks -= 1
        if task.grace_timer is not None:
            task.grace_timer.cancel()
            task.grace_timer = None
        key = _key(task)
        tasks = self._tasks
        entered = tasks.pop(key, None)  # one lookup (it is this task's, but for a bug)
        if entered is not task and entered is not None:
            tasks[key] = entered
        if kind == _CANCEL_SIGNAL:
            reason = task.cx.cancel_reason
            if reason is not None:
                kind, payload = _CANCELLED, reason
            else:
                what = type(payload).__name__ if payload is not None else "a cancellation"
                kind, payload = _PANICKED, _UNSOLICITED_CANCEL.format(exc=what)
        try:
            end_ns = self._clock_ns()
            elapsed = end_ns - task.start_ns if end_ns > task.start_ns else 0
        except Exception:
            logger.exception("clock_ns failed while finishing computation %r", str(task.comp.name))
            elapsed = 0
        try:
            on_done = task.on_done
            if isinstance(on_done, TaskReporter):
                reporter = on_done  # (typed: the call below is a C call)
                reporter._on_done(task, kind, payload, elapsed)
            else:
                on_done(key, kind, payload, elapsed)
        except Exception:
            logger.exception("on_done for computation %r (key %r) raised; outcome %d dropped by it",
                             str(task.comp.name), key, kind)
        finally:
            task.atask = None
            task.cfuture = None
            task.job = None
            if not self._tasks:
                self._wake_idle_waiters()

    # -- closing ------------------------------------------------------------------------
    def _wake_idle_waiters(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def _wait_idle(self, timeout: float | None) -> bool:
        """Wait until no task is running; False on timeout."""
        if not self._tasks:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if not fut.done():
                fut.cancel()
            if fut in self._idle_waiters:
                self._idle_waiters.remove(fut)

    async def aclose(self, grace_s: float, *, abandon_after_s: float | None = None) -> None:
        """Stop: start nothing new, let running tasks finish for ``grace_s``,
        cancel the rest with ``CancelKind.SHUTDOWN`` and wait until every one
        has reported through ``on_done``; then shut the thread pool down.

        A sync computation stuck in a blocking C call can make that wait
        endless. With ``abandon_after_s`` set, tasks still running that long
        after the shutdown cancel are reported Panicked ("abandoned") and the
        pool is left to die with the process. Idempotent.
        """
        self._closing = True
        if self._closed:
            return
        if not await self._wait_idle(max(0.0, grace_s)):
            reason = CancelReason(CancelKind.SHUTDOWN, "node shutting down")
            for key in list(self._tasks):
                self.cancel(key, reason)
            if not await self._wait_idle(abandon_after_s):
                self.abandon(f"still running {abandon_after_s:g} s after being cancelled")
        if self._pool is not None:
            # Every task has reported, so every worker is idle: joining is quick.
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.workers is not None:
            await self.workers.aclose()
        self._closed = True

    def abandon(self, why: str) -> int:
        """Report every task still running Panicked (``"abandoned at shutdown:
        <why> ..."``) through ``on_done`` now, and leave the thread pool's
        threads to die with the process (a thread blocked in C cannot be
        stopped). Its late outcome is dropped. Returns how many were abandoned."""
        tasks = list(self._tasks.values())
        for task in tasks:
            if task.job is not None:  # a worker process can be stopped: kill it, do not leave it
                self.workers.abandon(task.job)
            logger.error("computation %r (key %r) %s; abandoning it", str(task.comp.name), _key(task), why)
            self._finish(task, _PANICKED, f"abandoned at shutdown: {why} (blocked outside Python?)")
        if tasks and self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        return len(tasks)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"Executor({state}, running={self.running}, max_threads={self._max_threads})"
