"""The node's pool of worker processes, for process-isolated computations.

A computation registered ``isolation="process"`` (or any plain one on a node
started ``--isolation process``) runs in a worker process of this pool, so
that it cannot hang, crash or bloat the node:

* **Cancel always wins.** A cancel reaches the worker at once (its ``Cx`` is
  cancelled there, so ``cx.checkpoint()`` raises). If the computation has not
  returned ``cancel_grace_s`` later, the node sends the worker SIGTERM (which
  raises ``WorkerTerminated`` in the computation, so its ``finally`` blocks
  run) and SIGKILL ``kill_after_s`` later; the task is reported Cancelled with
  its original reason once the worker is gone, and the pool starts another.
* **A crash is an outcome.** A worker that dies under a task (segfault,
  abort, ``os._exit``, the OOM killer) gives that task a Panicked outcome
  that names the signal or exit status (``WorkerCrashed``); the pool starts
  another worker and no other task notices.
* **Limits.** ``time_limit`` kills the worker when the task runs longer (the
  failure ``TimeLimitExceeded``); ``memory_limit`` is an RLIMIT_AS the worker
  sets around the task (the failure ``MemoryLimitExceeded``, then the worker is
  replaced); ``max_tasks_per_worker`` replaces a worker after that many tasks.

Workers are **spawned** (a fresh ``python -m rsc.node.worker_main``), not
forked from the node: the node is multi-threaded and holds its listening
socket and connections, and a fork would copy locks held by other threads and
every descriptor. A fresh interpreter imports the registry by name, which is
also what guarantees that no code is shipped to it. All workers are started
when the node starts (the node is READY only once they are), and a
replacement starts in the background, so the start-up cost (about 0.1-0.3 s
of CPU per worker, docs/ISOLATION.md) is paid off the task path.

**Pipelining.** Each worker runs one task at a time, in the order they were
written to it, and up to ``PIPELINE_DEPTH`` tasks are written to it at once
(to the least loaded worker first). So under load a worker goes from one
task to the next without waiting for the node, and the node wakes once for
several results; that is most of what makes a task in a worker cheap. The
first task a worker holds is the one it runs (its time limit starts when it
becomes first); the others have not started, and a worker can be asked to
give them back (STEAL): its control thread answers at once with the ones it
will never run (STOLEN), and the node runs those elsewhere. That happens
when such a task is cancelled (answered Cancelled at once, without running),
when its worker is about to be killed (so a kill never takes a task with it
that had not started), and when another worker is idle while the first task
has run for ``HEAD_OF_LINE_S`` (so a short task does not wait behind a long
one). Tasks beyond what the workers hold wait in the pool's queue, oldest
first.

**The pipes.** Three per worker, each carrying msgpack arrays back to back
(``msgpack.Unpacker`` reads them as a stream; nothing is pickled):

=============  =========  ==================================================
pipe           direction  messages
=============  =========  ==================================================
task           to worker  ``[0 RUN, tid, name, input, region_id,
                          task_id, budget [deadline_ns, poll, cost, prio] |
                          nil, node, memory_limit | nil]``
control        to worker  ``[1 CANCEL, tid, reason kind, reason message]``,
                          ``[2 STEAL, first tid, last tid]``; end of file
                          = leave now
result         to node    ``[0 READY, pid]``, ``[1 DONE, tid, kind, payload,
                          retire]``, ``[2 FATAL, text]`` (the registry did
                          not load), ``[3 STOLEN, first, last]`` (tasks
                          first..last will not run here; none if first >
                          last)
=============  =========  ==================================================

An input and a success's output are bytes, or a segmented msgpack value as
``[packed, [segment, ...]]`` (``rsc.value_codec.to_pipe``). DONE kinds are
the executor's: 0 success (output), 1 failed (str), 3
panicked (str), -1 ended by a cancellation (judged against the node's ``Cx``).
``deadline_ns`` is on CLOCK_MONOTONIC, which every process of a host shares.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack

from rsc.logs import get_logger
from rsc.errors import InvalidArgument, TimeLimitExceeded, WorkerCrashed, WorkerStartError
from rsc.node.worker_main import (
    CANCEL,
    CANCEL_SIGNAL,
    DONE,
    FAILED,
    FATAL,
    PANICKED,
    READY,
    RUN,
    STEAL,
    STOLEN,
    SUCCESS,
)
from rsc.value_codec import from_pipe, to_pipe

__all__ = ["KILL_AFTER_TERM_S", "WorkerPool", "WorkerStartError"]

log = get_logger("rsc.node.workers")

#: Seconds between the SIGTERM and the SIGKILL of a worker the node kills.
KILL_AFTER_TERM_S = 0.5
#: Seconds a worker may take to import rsc and the registry and say READY.
WORKER_START_TIMEOUT_S = 30.0
#: Back-off between replacements of workers that die before they are ready.
RESPAWN_BACKOFF_S = (0.05, 5.0)
#: Jobs written to one worker at once: it runs them one after another and
#: the node wakes once for several results (see "Pipelining" above).
PIPELINE_DEPTH = 8
#: A job waiting behind a head that has run this long is taken back when
#: another worker is idle.
HEAD_OF_LINE_S = 0.005
#: Seconds a worker's control thread gets to answer a STEAL.
STEAL_TIMEOUT_S = 1.0

# Why the node is killing a worker (Job.kill_why).
_KILL_CANCEL, _KILL_TIME_LIMIT, _KILL_SHUTDOWN = "cancel", "time_limit", "shutdown"

Finish = Callable[[Any, int, Any], None]


def check_pool_options(workers: int | None, time_limit: float | None, memory_limit: int | None,
                       max_tasks_per_worker: int | None) -> None:
    """Raise InvalidArgument naming the flag to fix for a bad pool option."""
    for flag, v, kind, low in (("--workers", workers, int, 1),
                               ("--max-tasks-per-worker", max_tasks_per_worker, int, 1),
                               ("--memory-limit", memory_limit, int, 1 << 20),
                               ("--time-limit", time_limit, (int, float), 0)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, kind) or not (v > low if low == 0 else v >= low):
            need = {"--workers": "an int >= 1", "--max-tasks-per-worker": "an int >= 1",
                    "--memory-limit": "bytes, at least 1 MiB (1048576)",
                    "--time-limit": "seconds > 0"}[flag]
            raise InvalidArgument(f"{flag} must be {need}, got {v!r}")


class Job:
    """One task handed to the pool (loop-thread owned)."""

    __slots__ = ("task", "comp", "wire", "worker", "tid", "cancel_reason", "kill_why",
                 "grace_timer", "limit_timer", "finished")

    def __init__(self, task: Any, comp: Any, wire: list) -> None:
        self.task = task  # the executor's task; handed back to finish()
        self.comp = comp
        self.wire = wire  # the RUN message's fields after [RUN, tid] (kept to run it elsewhere)
        self.worker: _Worker | None = None  # set while a worker holds it (written to its pipe)
        self.tid = 0  # its task id on that worker
        self.cancel_reason: tuple[int, Any] | None = None
        self.kill_why: str | None = None
        self.grace_timer: asyncio.TimerHandle | None = None
        self.limit_timer: asyncio.TimerHandle | None = None
        self.finished = False


class _Pipe(asyncio.Protocol):
    """The asyncio protocol of one pipe end (only losses matter for writes)."""

    def __init__(self, worker: _Worker | None = None, pool: WorkerPool | None = None) -> None:
        self.worker = worker
        self.pool = pool
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 30) if pool else None

    def connection_made(self, transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        assert self.unpacker is not None and self.pool is not None and self.worker is not None
        self.unpacker.feed(data)
        for msg in self.unpacker:
            self.pool._on_message(self.worker, msg)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pool is not None:  # the result pipe: it has a worker
            assert self.worker is not None
            self.pool._on_result_pipe_closed(self.worker)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class _Worker:
    """The node's handle on one worker process."""

    __slots__ = ("proc", "pid", "task_w", "control_w", "result_r", "ready", "fifo", "next_tid",
                 "runs", "retiring", "dead", "term_sent", "kill_handle", "started_at", "counts",
                 "head_since", "steal_pending", "steal_from", "steal_timer", "steal_timed_out",
                 "kill_wanted")

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.task_w: Any = None
        self.control_w: Any = None
        self.result_r: Any = None
        self.ready = False
        # Jobs written to it, in order; the first is running (or about to):
        # the worker runs them strictly one after another.
        self.fifo: collections.deque[Job] = collections.deque()
        self.next_tid = 1
        self.runs = 0  # tasks written to it so far
        self.counts: dict[str, int] = {}  # computation name -> tasks of it written here
        self.retiring = False  # is written no more tasks; leaves when its fifo is empty
        self.dead = False  # its result pipe closed: it is gone or going
        self.term_sent = False
        self.kill_handle: asyncio.TimerHandle | None = None
        self.started_at = time.monotonic()
        self.head_since = 0.0  # when the head of fifo became the head
        self.steal_pending = False  # a STEAL is unanswered: write it nothing meanwhile
        self.steal_from: int | None = None  # another steal wanted once that one is answered
        self.steal_timer: asyncio.TimerHandle | None = None
        self.steal_timed_out = False  # its control thread did not answer a steal in time
        self.kill_wanted = False  # kill once the jobs behind the head are taken back


class WorkerPool:
    """``size`` worker processes importing the registry ``spec`` by name.

    ``finish(task, kind, payload)`` is called exactly once per submitted task,
    on the loop thread, never from inside :meth:`submit`; ``kind`` is the
    executor's (with -1 for "ended by a cancellation": the executor judges it
    against the task's ``Cx``). Every method is called on the loop thread.
    """

    def __init__(self, spec: str, *, size: int, finish: Finish, cancel_grace_s: float = 2.0,
                 time_limit: float | None = None, memory_limit: int | None = None,
                 max_tasks_per_worker: int | None = None, kill_after_s: float = KILL_AFTER_TERM_S,
                 node: str = "", python: str | None = None) -> None:
        check_pool_options(size, time_limit, memory_limit, max_tasks_per_worker)
        if not isinstance(spec, str) or spec.count(":") != 1:
            raise InvalidArgument(f"a worker pool needs the registry as 'package.module:attr', got {spec!r}")
        self.spec = spec
        self.size = size
        self._finish = finish
        self.cancel_grace_s = float(cancel_grace_s)
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.max_tasks_per_worker = max_tasks_per_worker
        self.kill_after_s = kill_after_s
        self.node = node
        self.python = python or sys.executable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[_Worker] = []  # alive or being reaped: never more than size
        self._queue: collections.deque[Job] = collections.deque()
        self._requeue: list[Job] = []  # taken back from a worker: queued first at the next dispatch
        self._balance_armed = False
        self._dispatch_armed = False
        self._packer = msgpack.Packer(use_bin_type=True)
        self._closing = False
        self._spawning = 0  # replacements being started (counted in _workers once spawned)
        self._failed_starts = 0  # consecutive workers that died before READY
        self._start_waiters: list[asyncio.Future[None]] = []
        self._fatal: str | None = None
        # STATUS figures
        self.started = 0
        self.restarts = 0
        self.crashes = 0
        self.kills = 0
        self.recycles = 0
        self.last_start_s = 0.0  # seconds the last worker took from spawn to READY

    # -- queries --------------------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        """The pids of the live worker processes."""
        return [w.pid for w in self._workers if not w.dead]

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._queue)

    def stats(self) -> dict[str, Any]:
        """The pool's figures for a node's STATUS_REPLY: ``workers``,
        ``workers_alive``, ``workers_busy``, ``worker_pids``, ``worker_restarts``,
        ``worker_crashes``, ``worker_kills``, ``worker_recycles``, ``worker_queue``,
        ``worker_start_ms``."""
        return dict(workers=self.size, workers_alive=sum(1 for w in self._workers if not w.dead),
                    workers_busy=sum(1 for w in self._workers if w.fifo),
                    worker_pids=self.pids, worker_restarts=self.restarts,
                    worker_crashes=self.crashes, worker_kills=self.kills,
                    worker_recycles=self.recycles, worker_queue=len(self._queue),
                    worker_start_ms=round(self.last_start_s * 1000, 1))

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
        """Start every worker and wait until each is ready. Raises
        WorkerStartError (after stopping them) when one cannot start."""
        self._loop = asyncio.get_running_loop()
        for _ in range(self.size):
            await self._spawn()
        fut = self._loop.create_future()
        self._start_waiters.append(fut)
        self._check_started()
        try:
            await asyncio.wait_for(fut, timeout_s)
        except (WorkerStartError, asyncio.TimeoutError) as exc:
            await self.aclose()
            if isinstance(exc, WorkerStartError):
                raise
            raise WorkerStartError(f"worker processes for registry {self.spec!r} did not say READY "
                                   f"within {timeout_s:g} s") from None

    def _check_started(self) -> None:
        if not self._start_waiters:
            return
        err = None
        if self._fatal is not None:
            err = WorkerStartError(f"a worker process could not load registry {self.spec!r}: "
                                   f"{self._fatal} (it must import by name in a fresh interpreter: "
                                   "is its module on PYTHONPATH?)")
        elif self._failed_starts:
            err = WorkerStartError(f"a worker process for registry {self.spec!r} died before it was "
                                   "ready (see the node's stderr)")
        elif sum(1 for w in self._workers if w.ready) < self.size:
            return
        waiters, self._start_waiters = self._start_waiters, []
        for f in waiters:
            if not f.done():
                f.set_exception(err) if err is not None else f.set_result(None)

    async def _spawn(self, replacement: bool = False) -> _Worker:
        """Start one worker process and connect its pipes."""
        loop = self._loop
        assert loop is not None
        task_r, task_w = os.pipe()
        control_r, control_w = os.pipe()
        result_r, result_w = os.pipe()
        child_fds = (task_r, control_r, result_w)
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "rsc.node.worker_main", self.spec, *map(str, child_fds)],
                pass_fds=child_fds, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                close_fds=True, env=self._child_env())
        except BaseException:
            for fd in (task_r, task_w, control_r, control_w, result_r, result_w):
                os.close(fd)
            raise
        for fd in child_fds:
            os.close(fd)
        w = _Worker(proc)
        self._workers.append(w)
        self.started += 1
        self.restarts += replacement
        w.task_w, _ = await loop.connect_write_pipe(_Pipe, os.fdopen(task_w, "wb", buffering=0))
        w.control_w, _ = await loop.connect_write_pipe(_Pipe, os.fdopen(control_w, "wb", buffering=0))
        w.result_r, _ = await loop.connect_read_pipe(lambda: _Pipe(w, self),
                                                     os.fdopen(result_r, "rb", buffering=0))
        return w

    def _child_env(self) -> dict[str, str]:
        # The worker must import the registry's module exactly as the node did.
        env = dict(os.environ)
        paths = [os.path.abspath(p or os.curdir) for p in sys.path if p is not None]
        old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(old + paths))
        return env

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Stop every worker: close its pipes (it leaves at end of file), then
        SIGKILL what is still alive after ``timeout_s``; reap them all. Jobs
        still queued or running are reported Panicked ("worker pool closed")."""
        self._closing = True
        self._queue.extend(self._requeue)
        self._requeue.clear()
        for job in list(self._queue):
            self._report(job, PANICKED, "worker pool closed before the task started")
        self._queue.clear()
        for w in self._workers:
            self._close_pipes(w)
        deadline = time.monotonic() + timeout_s
        while any(w.proc.poll() is None for w in self._workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for w in self._workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            for job in w.fifo:
                self._report(job, PANICKED, "worker pool closed while the task ran")
            w.fifo.clear()
            w.dead = True
            if w.result_r is not None:
                w.result_r.close()
        self._workers.clear()

    # -- tasks ------------------------------------------------------------------------
    def submit(self, task: Any, comp: Any, data: Any, cx: Any) -> Job:
        """Queue ``comp`` on ``data`` for a worker; returns its Job."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        b = cx.budget
        budget = None if b is None or (b.deadline_ns is None and b.poll_quota is None and
                                       b.cost_quota is None and b.priority == 128) else \
            [b.deadline_ns, b.poll_quota, b.cost_quota, b.priority]
        mem = comp.memory_limit if comp.memory_limit is not None else self.memory_limit
        job = Job(task, comp, [str(comp.name), to_pipe(data), cx.region_id, cx.task_id, budget,
                               None if cx.node is None else str(cx.node), mem])
        if self._closing:
            self._loop.call_soon(self._report, job, PANICKED, "the node's worker pool is closed")
            return job
        self._queue.append(job)
        self._dispatch_soon()
        if not self._workers and not self._spawning:  # a pool never started (or all gone)
            self._respawn_soon()
        return job

    def cancel(self, job: Job, wire_reason: tuple[int, Any]) -> None:
        """Ask ``job`` to stop (the first reason is kept). Queued, or written
        to a worker but not started: it is taken back and reported at once
        without running. Running: the worker's ``Cx`` is cancelled, and the
        worker is killed if the task has not ended ``cancel_grace_s`` from now."""
        if job.finished:
            return
        if job.cancel_reason is None:
            job.cancel_reason = wire_reason
        w = job.worker
        if w is None:
            try:
                self._queue.remove(job)
            except ValueError:
                return
            assert self._loop is not None
            self._loop.call_soon(self._report, job, CANCEL_SIGNAL, None)
            return
        if w.dead:
            return  # its end is being reaped; that reports the job
        try:
            w.control_w.write(self._packer.pack([CANCEL, job.tid, wire_reason[0], wire_reason[1]]))
        except Exception:  # the pipe is gone: the worker is dying; its end reports the job
            return
        if w.fifo and w.fifo[0] is not job:
            self._want_steal(w, job.tid)  # waiting behind another task: take it back now
        if job.grace_timer is None and job.kill_why is None:
            assert self._loop is not None
            job.grace_timer = self._loop.call_later(self.cancel_grace_s, self._grace_over, job)

    def abandon(self, job: Job) -> None:
        """The executor gave up on ``job`` (a shutdown): drop it if queued,
        kill its worker if it runs it. It is not reported again."""
        job.finished = True
        w = job.worker
        if w is None:
            try:
                self._queue.remove(job)
            except ValueError:
                pass
        elif w.fifo and w.fifo[0] is job:
            self._kill(w, _KILL_SHUTDOWN)
        else:
            self._want_steal(w, job.tid)

    def _grace_over(self, job: Job) -> None:
        job.grace_timer = None
        w = job.worker
        if job.finished or w is None:
            return
        if not w.fifo or w.fifo[0] is not job:
            self._want_steal(w, job.tid)
            return
        log.warning("computation %r ignored its cancel for %.1f s; killing its worker (pid %d)",
                    str(job.comp.name), self.cancel_grace_s, w.pid)
        self._kill(w, _KILL_CANCEL)

    def _time_limit_over(self, job: Job, limit: float) -> None:
        job.limit_timer = None
        w = job.worker
        if job.finished or w is None or not w.fifo or w.fifo[0] is not job:
            return
        log.warning("computation %r ran past its time_limit of %g s; killing its worker (pid %d)",
                    str(job.comp.name), limit, w.pid)
        self._kill(w, _KILL_TIME_LIMIT)

    def _kill(self, w: _Worker, why: str) -> None:
        """Kill ``w`` for the job at its head: first take back the jobs
        behind it (they have not started), then SIGTERM, and SIGKILL
        ``kill_after_s`` later. The head is reported when the worker is gone
        (``_reap``)."""
        if w.fifo and w.fifo[0].kill_why is None:
            w.fifo[0].kill_why = why
        w.retiring = True
        if w.term_sent:
            return
        if len(w.fifo) > 1 or w.steal_pending:
            w.kill_wanted = True
            if len(w.fifo) > 1:
                self._want_steal(w, w.fifo[1].tid)
            return
        self._terminate(w)

    def _terminate(self, w: _Worker) -> None:
        if w.term_sent:
            return
        w.term_sent = True
        w.kill_wanted = False
        self.kills += 1
        _signal(w, signal.SIGTERM)
        assert self._loop is not None
        w.kill_handle = self._loop.call_later(self.kill_after_s, _signal, w, signal.SIGKILL)

    # -- taking back jobs a worker has not started ----------------------------------------
    def _want_steal(self, w: _Worker, first: int) -> None:
        """Take back from ``w`` the jobs from task id ``first`` on that it
        has not started (answered by STOLEN, ``_on_stolen``)."""
        if w.dead or w.term_sent:
            return
        if w.steal_pending:
            w.steal_from = first if w.steal_from is None else min(w.steal_from, first)
            return
        if not w.fifo or first > w.fifo[-1].tid:
            return
        w.steal_pending = True
        try:
            w.control_w.write(self._packer.pack([STEAL, first, w.fifo[-1].tid]))
        except Exception:  # dying: its end reports everything
            return
        assert self._loop is not None
        w.steal_timer = self._loop.call_later(STEAL_TIMEOUT_S, self._steal_timed_out, w)

    def _steal_timed_out(self, w: _Worker) -> None:
        """The control thread did not answer (a computation holding the GIL
        in C?): a kill goes ahead; the jobs behind the head are then reported
        as possibly started, never run again."""
        w.steal_timer = None
        if not w.steal_pending or w.dead:
            return
        w.steal_timed_out = True
        if w.kill_wanted:
            self._terminate(w)

    def _on_stolen(self, w: _Worker, first: int, last: int) -> None:
        w.steal_pending = False
        if w.steal_timer is not None:
            w.steal_timer.cancel()
            w.steal_timer = None
        back: list[Job] = []
        while w.fifo and first <= w.fifo[-1].tid <= last:
            back.append(w.fifo.pop())
        back.reverse()
        for job in back:
            self._take_back(job)
        again, w.steal_from = w.steal_from, None
        if again is not None:
            self._want_steal(w, again)
        if w.kill_wanted and not w.steal_pending:
            head = w.fifo[0] if w.fifo else None
            if head is not None and head.kill_why is not None and not head.finished:
                self._terminate(w)
            else:
                w.kill_wanted = False  # its head ended meanwhile: it retires when idle
                self._retire_if_idle(w)
        self._dispatch_soon()

    def _take_back(self, job: Job) -> None:
        """A job that never started on its worker: reported if cancelled (or
        abandoned), else queued again in front of the rest."""
        job.worker = None
        for t in (job.grace_timer, job.limit_timer):
            if t is not None:
                t.cancel()
        job.grace_timer = job.limit_timer = None
        if job.finished:
            return
        if job.cancel_reason is not None:
            self._report(job, CANCEL_SIGNAL, None)
        else:
            self._requeue.append(job)

    # -- handing out jobs -----------------------------------------------------------------
    def _dispatch_soon(self) -> None:
        """Dispatch at the end of this loop turn: every job submitted or
        finished in the turn is then written in one write per worker."""
        if not self._dispatch_armed:
            self._dispatch_armed = True
            assert self._loop is not None
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Write queued jobs (taken-back ones first, then oldest first) to the
        least loaded workers, up to PIPELINE_DEPTH each."""
        self._dispatch_armed = False
        if self._closing:
            return
        if self._requeue:
            self._queue.extendleft(reversed(self._requeue))
            self._requeue.clear()
        queue = self._queue
        batches: dict[_Worker, list[bytes]] = {}
        while queue:
            best = None
            for w in self._workers:
                if w.ready and not w.retiring and not w.steal_pending and not w.dead and \
                        len(w.fifo) < PIPELINE_DEPTH and (best is None or len(w.fifo) < len(best.fifo)):
                    best = w
                    if not w.fifo:
                        break
            if best is None:
                break
            batch = batches.get(best)
            if batch is None:
                batch = batches[best] = []
            batch.append(self._run_on(best, queue.popleft()))
        for w, batch in batches.items():
            w.task_w.write(batch[0] if len(batch) == 1 else b"".join(batch))
        if not queue:
            self._balance()

    def _balance(self) -> None:
        """A worker is idle while another holds jobs behind a head that has
        run for HEAD_OF_LINE_S: take those back, so they run on the idle one."""
        idle = any(w.ready and not w.fifo and not w.retiring and not w.dead for w in self._workers)
        if not idle:
            return
        now = time.monotonic()
        for w in self._workers:
            if len(w.fifo) > 1 and not w.steal_pending:
                if now - w.head_since >= HEAD_OF_LINE_S:
                    self._want_steal(w, w.fifo[1].tid)
                elif not self._balance_armed:
                    self._balance_armed = True
                    assert self._loop is not None
                    self._loop.call_later(HEAD_OF_LINE_S, self._balance_timer)

    def _balance_timer(self) -> None:
        self._balance_armed = False
        self._balance()

    def _run_on(self, w: _Worker, job: Job) -> bytes:
        """Give ``job`` to ``w``; returns the RUN message to write to it."""
        tid = w.next_tid
        w.next_tid += 1
        w.runs += 1
        name = job.wire[0]
        w.counts[name] = w.counts.get(name, 0) + 1
        job.worker = w
        job.tid = tid
        w.fifo.append(job)
        if len(w.fifo) == 1:
            self._became_head(w, job)
        # recycle after this task when a task limit is reached
        per_comp = job.comp.max_tasks_per_worker
        if (self.max_tasks_per_worker is not None and w.runs >= self.max_tasks_per_worker) or \
                (per_comp is not None and w.counts[name] >= per_comp):
            w.retiring = True
        return self._packer.pack([RUN, tid, *job.wire])

    def _became_head(self, w: _Worker, job: Job) -> None:
        """``job`` is now running on ``w`` (or about to): its time limit starts."""
        w.head_since = time.monotonic()
        limit = job.comp.time_limit if job.comp.time_limit is not None else self.time_limit
        if limit is not None and job.limit_timer is None:
            assert self._loop is not None
            job.limit_timer = self._loop.call_later(limit, self._time_limit_over, job, limit)

    def _retire_if_idle(self, w: _Worker) -> None:
        if w.retiring and not w.fifo and not w.dead and not w.term_sent and not w.steal_pending:
            self.recycles += 1
            self._close_pipes(w)  # it leaves at the end of file; _reap starts another

    # -- messages from workers ------------------------------------------------------------
    def _on_message(self, w: _Worker, msg: list) -> None:
        op = msg[0]
        if op == DONE:
            if not w.fifo or msg[1] != w.fifo[0].tid:
                log.error("worker %d reported task %r it was not running; ignored", w.pid, msg[1])
                return
            job = w.fifo.popleft()
            job.worker = None
            self._report(job, msg[2], from_pipe(msg[3]) if msg[2] == SUCCESS else msg[3])
            if msg[4]:  # the worker leaves after this task (its memory may be spoiled)
                w.retiring = True
                while w.fifo:  # never started: it stopped reading
                    self._take_back(w.fifo.popleft())
            if w.fifo:
                self._became_head(w, w.fifo[0])
            self._retire_if_idle(w)
            self._dispatch_soon()
        elif op == STOLEN:
            self._on_stolen(w, msg[1], msg[2])
        elif op == READY:
            w.ready = True
            self.last_start_s = time.monotonic() - w.started_at
            self._failed_starts = 0
            self._check_started()
            self._dispatch_soon()
        elif op == FATAL:
            self._fatal = str(msg[1])
            log.error("worker %d could not load registry %r: %s", w.pid, self.spec, msg[1])

    def _on_result_pipe_closed(self, w: _Worker) -> None:
        """The worker's result pipe reached end of file: it exited, was
        killed, or closed it. Make sure it is gone, then reap it."""
        if w.dead:
            return
        w.dead = True
        if w.steal_timer is not None:
            w.steal_timer.cancel()
            w.steal_timer = None
        if w.proc.poll() is None and not self._closing:
            if not w.term_sent:  # it closed the pipe but lives on: end it
                _signal(w, signal.SIGKILL)
        self._close_pipes(w)
        if not self._closing:
            self._reap(w, time.monotonic() + 5.0)

    def _reap(self, w: _Worker, give_up_at: float) -> None:
        rc = w.proc.poll()
        if rc is None:
            if time.monotonic() > give_up_at:
                _signal(w, signal.SIGKILL)
            assert self._loop is not None
            self._loop.call_later(0.005, self._reap, w, give_up_at)
            return
        if w.kill_handle is not None:
            w.kill_handle.cancel()
            w.kill_handle = None
        self._workers.remove(w)
        jobs = list(w.fifo)
        w.fifo.clear()
        if jobs:
            job = jobs[0]
            job.worker = None
            why = job.kill_why
            if why == _KILL_CANCEL:
                self._report(job, CANCEL_SIGNAL, None)
            elif why == _KILL_SHUTDOWN or job.finished:
                pass  # abandoned: the executor has reported it
            elif why == _KILL_TIME_LIMIT:
                limit = job.comp.time_limit if job.comp.time_limit is not None else self.time_limit
                assert limit is not None  # a time-limit kill had a limit
                self._report(job, FAILED, TimeLimitExceeded.text(str(job.comp.name), limit))
            else:
                self.crashes += 1
                text = WorkerCrashed.text(str(job.comp.name), w.pid, rc)
                log.error("%s", text)
                self._report(job, PANICKED, text)
            for job in jobs[1:]:  # written behind the head: never started
                if w.steal_timed_out and not job.finished:
                    job.worker = None
                    self._report(job, PANICKED, WorkerCrashed.text(str(job.comp.name), w.pid, rc)
                                 + " (the task was handed to it and may have started)")
                else:
                    self._take_back(job)
        elif not w.ready:
            self._failed_starts += 1
            self._check_started()
        elif not w.retiring:
            self.crashes += 1
            log.error("idle worker process %d exited (%s); replacing it", w.pid, rc)
        if not self._closing:
            self._respawn_soon()
            self._dispatch_soon()

    def _respawn_soon(self) -> None:
        """Start a replacement (with back-off after failed starts)."""
        if self._closing or self._start_waiters and self._failed_starts:
            return
        if len(self._workers) + self._spawning >= self.size:
            return
        self._spawning += 1
        delay = 0.0
        if self._failed_starts:
            lo, hi = RESPAWN_BACKOFF_S
            delay = min(hi, lo * 2 ** (self._failed_starts - 1))
        assert self._loop is not None
        self._loop.call_later(delay, lambda: asyncio.ensure_future(self._replace()))

    async def _replace(self) -> None:
        try:
            if not self._closing and len(self._workers) < self.size:
                w = await self._spawn(replacement=True)
                if self._closing:  # the pool closed while this one started: it goes too
                    self._close_pipes(w)
                    if w.result_r is not None:
                        w.result_r.close()
                    if w.proc.poll() is None:
                        w.proc.kill()
                    w.proc.wait()
                    if w in self._workers:
                        self._workers.remove(w)
        except Exception:
            log.exception("could not start a replacement worker")
            self._failed_starts += 1
        finally:
            self._spawning -= 1
        if len(self._workers) + self._spawning < self.size and not self._closing:
            self._respawn_soon()

    # -- helpers ----------------------------------------------------------------------
    def _report(self, job: Job, kind: int, payload: Any) -> None:
        if job.finished:
            return
        job.finished = True
        for t in (job.grace_timer, job.limit_timer):
            if t is not None:
                t.cancel()
        job.grace_timer = job.limit_timer = None
        try:
            self._finish(job.task, kind, payload)
        except Exception:  # pragma: no cover - finish never raises
            log.exception("finishing computation %r raised", str(job.comp.name))

    def _close_pipes(self, w: _Worker) -> None:
        for t in (w.task_w, w.control_w):
            if t is not None:
                t.close()
        w.task_w = w.control_w = None

    def __repr__(self) -> str:
        return (f"WorkerPool({self.spec!r}, size={self.size}, alive={len(self.pids)}, "
                f"queued={len(self._queue)})")


def _signal(w: _Worker, sig: int) -> None:
    """Signal a worker by pid, only while Popen has not reaped it."""
    if w.proc.poll() is None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:  # pragma: no cover - exited between poll and kill
            pass
