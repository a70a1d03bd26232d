"""The worker process of a node's pool: runs process-isolated computations.

Started by ``rsc.node.workers.WorkerPool`` as a fresh interpreter::

    python -m rsc.node.worker_main REGISTRY_SPEC TASK_FD CONTROL_FD RESULT_FD

It imports the registry by name (``load_registry``: no code or closure is ever
shipped to it), says READY, then runs the tasks it reads, one at a time, in
the order they come. Everything that crosses is bytes in msgpack frames
(``rsc.node.workers`` documents the messages): a task's input and output are
the very bytes of the wire, decoded and encoded here by the computation's own
codec, never pickled.

What keeps a worker from outliving its node:

* ``PR_SET_PDEATHSIG`` (Linux): the kernel sends it SIGKILL when the node dies;
* the control thread reads the control pipe; end of file there means the
  node closed it or died, and the worker leaves at once (``os._exit``).

The control pipe also carries cancels: the control thread sets the running
task's ``Cx`` cancelled (``cx.checkpoint()`` then raises), or remembers a
cancel for a task not started yet. And steals: the node takes back tasks it
wrote to this worker that have not started (to run them elsewhere, or
before it kills this worker); the control thread answers at once which ones
will never run here, and the main thread skips them when it reads them. SIGTERM (sent by the node when a cancel was
not honoured within its grace) raises :class:`WorkerTerminated` in the
computation, so its ``finally`` blocks run, and the worker then exits.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import threading
from typing import Any

import msgpack

from rsc.value_codec import from_pipe, to_pipe

# Message kinds (see rsc.node.workers)
RUN, CANCEL, STEAL = 0, 1, 2
READY, DONE, FATAL, STOLEN = 0, 1, 2, 3
# DONE kinds: the executor's outcome kinds, plus -1 for "ended by a cancellation signal"
SUCCESS, FAILED, PANICKED, CANCEL_SIGNAL = 0, 1, 3, -1

PR_SET_PDEATHSIG = 1
READ_CHUNK = 1 << 18


class WorkerTerminated(BaseException):
    """Raised in the computation by the worker's SIGTERM handler: the node is
    killing this worker (a cancel was ignored past its grace, or a time limit
    passed). A BaseException, so ``except Exception`` does not swallow it."""


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux
    only; elsewhere the control pipe's end of file does it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _address_space() -> int:
    """This process's current virtual size in bytes (what RLIMIT_AS counts)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - no /proc
        return 0


class Worker:
    """The state of one worker process (module docstring)."""

    def __init__(self, registry: Any, task_fd: int, control_fd: int, result_fd: int) -> None:
        from rsc.cx import Cx
        from rsc.types import Budget, CancelReason

        self.registry = registry
        self.task_fd = task_fd
        self.control_fd = control_fd
        self.result_fd = result_fd
        self._Cx, self._Budget, self._CancelReason = Cx, Budget, CancelReason
        self._lock = threading.Lock()
        self._current: tuple[int, Any] | None = None  # (task id, Cx) of the running task
        self._started = 0  # the highest task id the main thread has started
        self._skip = (1, 0)  # task ids (first, last) the node took back: never run them
        self._early_cancels: dict[int, tuple[int, Any]] = {}  # task id -> reason, for tasks not started
        self._write_lock = threading.Lock()  # the result pipe is written by both threads
        self._packer = msgpack.Packer(use_bin_type=True)
        self._hard_as = resource.getrlimit(resource.RLIMIT_AS)[1]

    # -- control thread ---------------------------------------------------------
    def watch_control(self) -> None:
        """Read cancels until the node goes away; then leave at once."""
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
        while True:
            try:
                chunk = os.read(self.control_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                os._exit(0)  # the node closed our pipe, or died: nobody waits for us
            unpacker.feed(chunk)
            for msg in unpacker:
                if msg[0] == CANCEL:
                    self._cancel(msg[1], (msg[2], msg[3]))
                elif msg[0] == STEAL:
                    self._steal(msg[1], msg[2])

    def _steal(self, first: int, last: int) -> None:
        """Give back tasks ``first..last`` that have not started: answer
        ``[STOLEN, first not started, last]`` (an empty range if every one
        has started), and never run those."""
        with self._lock:
            first = max(first, self._started + 1)
            if first <= last:
                self._skip = (first, last)
        self.send([STOLEN, first, last])

    def send(self, msg: list) -> None:
        data = msgpack.packb(msg, use_bin_type=True)
        with self._write_lock:
            _write_all(self.result_fd, data)

    def _cancel(self, tid: int, wire_reason: tuple[int, Any]) -> None:
        with self._lock:
            cur = self._current
            if cur is not None and cur[0] == tid:
                cur[1].cancel(self._CancelReason.from_wire(wire_reason))
            elif tid > self._started:
                self._early_cancels[tid] = wire_reason

    # -- main thread -------------------------------------------------------------
    def serve(self) -> None:
        self.send([READY, os.getpid()])
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 30)
        packer, lock, fd = self._packer, self._write_lock, self.result_fd
        while True:
            chunk = os.read(self.task_fd, READ_CHUNK)
            if not chunk:
                return
            unpacker.feed(chunk)
            for msg in unpacker:
                if msg[0] == RUN:
                    outcome = self.run(msg)
                    if outcome is None:
                        continue  # taken back by the node
                    kind, payload, retire = outcome
                    data = packer.pack([DONE, msg[1], kind,
                                        to_pipe(payload) if kind == SUCCESS else payload, retire])
                    with lock:
                        _write_all(fd, data)
                    if retire:
                        return

    def run(self, msg: list) -> tuple[int, Any, bool] | None:
        """Run one task: ``[RUN, tid, name, input, region, task, budget, node,
        memory_limit]``; returns (kind, payload, retire this worker), or None
        for a task the node took back."""
        _, tid, name, data, region_id, task_id, budget, node, memory_limit = msg[:9]
        data = from_pipe(data)
        cx = self._Cx(region_id=region_id, task_id=task_id, node=node,
                      budget=None if budget is None else self._Budget(*budget))
        with self._lock:
            first, last = self._skip
            if first <= tid <= last:
                return None
            self._started = tid
            self._current = (tid, cx)
            early = self._early_cancels.pop(tid, None) if self._early_cancels else None
            if self._early_cancels:
                self._early_cancels = {t: r for t, r in self._early_cancels.items() if t > tid}
        comp = self.registry.get(name)
        if comp is None:
            with self._lock:
                self._current = None
            return PANICKED, (f"worker: computation {name!r} is not in the registry the worker "
                              "imported (was it registered after the node started?)"), False
        if early is not None:
            cx.cancel(self._CancelReason.from_wire(early))
        limited = memory_limit is not None
        try:
            if cx.cancelled:
                return CANCEL_SIGNAL, None, False
            if limited:
                self._limit_memory(memory_limit)
            try:
                value = data if comp.codec is None else comp.decode_input(data)
                out = comp.fn(cx, value)
                if type(out) is bytes and comp.codec is None:
                    return SUCCESS, out, False
                return SUCCESS, comp.encode_output(out), False
            except MemoryError as exc:
                if not limited:
                    return FAILED, f"MemoryError: {exc}", True
                from rsc.errors import MemoryLimitExceeded

                return FAILED, MemoryLimitExceeded.text(
                    str(name), memory_limit, f"MemoryError: {exc}" if str(exc) else "MemoryError"), True
            except WorkerTerminated:
                raise
            except BaseException as exc:
                from rsc.errors import Cancelled

                if isinstance(exc, Cancelled):
                    return CANCEL_SIGNAL, None, False
                text = f"{type(exc).__name__}: {exc}"
                return (FAILED if isinstance(exc, Exception) else PANICKED), text, False
        finally:
            if limited:
                resource.setrlimit(resource.RLIMIT_AS, (self._hard_as, self._hard_as))
            with self._lock:
                self._current = None

    def _limit_memory(self, limit: int) -> None:
        """Let this task add at most ``limit`` bytes of address space."""
        soft = _address_space() + limit
        if self._hard_as != resource.RLIM_INFINITY:
            soft = min(soft, self._hard_as)
        resource.setrlimit(resource.RLIMIT_AS, (soft, self._hard_as))


def _on_sigterm(_sig: int, _frame: Any) -> None:
    raise WorkerTerminated("the node is killing this worker")


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m rsc.node.worker_main REGISTRY_SPEC TASK_FD CONTROL_FD RESULT_FD",
              file=sys.stderr)
        return 2
    spec = argv[0]
    task_fd, control_fd, result_fd = (int(a) for a in argv[1:])
    die_with_parent()
    if os.getppid() == 1:  # the node died before PR_SET_PDEATHSIG took hold
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the node's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from rsc.registry import load_registry

        registry = load_registry(spec)
    except BaseException as exc:
        _write_all(result_fd, msgpack.packb([FATAL, f"{type(exc).__name__}: {exc}"], use_bin_type=True))
        return 3
    worker = Worker(registry, task_fd, control_fd, result_fd)
    threading.Thread(target=worker.watch_control, name="rsc-worker-control", daemon=True).start()
    try:
        worker.serve()
    except WorkerTerminated:
        return 0
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
