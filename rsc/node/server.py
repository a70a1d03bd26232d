"""The node process's server: the NodeEngine driven by asyncio over Unix sockets or TCP (with mutual TLS).

One NodeServer owns the listener, every accepted connection, the engine and
the executor. It turns engine actions into writes, closes, task starts and
cancels, and keeps one timer armed at the engine's next deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any, Callable

import psutil

from rsc.logs import get_logger
from rsc import __version__
from rsc._signature import SourceSignature
from rsc._core.messages import AUTH, DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES
from rsc._engine.node import (CANCEL, CLOSE, DEFAULT_MAX_KEPT_RESULT_BYTES, SEND, START, Admission,
                              NodeEngine, NodeTask)
from rsc.catalogue import publish_catalogue
from rsc.clock import SystemClock
from rsc.cx import RemoteCap, task_cx
from rsc.errors import AuthFailed, InvalidArgument, PeerTimeout, ProtocolError
from rsc.node.executor import EAGER_TASKS, Executor, TaskReporter
from rsc.node.journal import open_journal
from rsc.node.workers import WorkerPool, check_pool_options
from rsc.registry import Computation, Registry
from rsc.remote import Runtime
from rsc.transport.address import Address
from rsc.transport.base import Listener, Transport
from rsc.transport.connection import FramedConnection
from rsc.trace import Trace
from rsc.transport.timer import EngineTimer
from rsc.transport.tcp import bound_address, check_exposure, listen_tcp
from rsc.transport.tls import TlsConfig
from rsc.transport.uds import listen_unix, peer_uid, remove_socket
from rsc.types import Budget, CancelReason, NodeId, OutcomeKind

log = get_logger("rsc.node")

_CANCELLED = int(OutcomeKind.CANCELLED)  # a global: Enum class attributes are slow to read (3.11)
# The engine's action codes as private copies that server.pxd types as C ints
# (_carry_out compares every action with them: no module-dict lookup each).
_SEND, _CLOSE, _START, _CANCEL = SEND, CLOSE, START, CANCEL

#: Seconds a shutdown gives its connections, all together, to write their last
#: frames (results, ERROR shutting_down) and close.
FLUSH_S = 2.0
COMPACT_STEP = 512  # record slots a journal compaction writes per loop turn
#: What a shutdown may take beyond ``grace_s`` and the cancel wait: the flush
#: (FLUSH_S), closing the listener and a nested runtime (1 s), leaving (1 s).
SHUTDOWN_MARGIN_S = 4.0
CANCEL_GRACE_S = 2.0  # default seconds a cancelled sync computation gets before its thread is interrupted


def cancel_wait_s(cancel_grace_s: float = CANCEL_GRACE_S) -> float:
    """Seconds a shutdown waits for cancelled tasks to end before it abandons
    them: three cancel graces, at least 5 s."""
    return max(5.0, cancel_grace_s * 3)


def shutdown_bound_s(grace_s: float, cancel_grace_s: float = CANCEL_GRACE_S) -> float:
    """Seconds a node's shutdown takes at most, whatever its computations do:
    grace + cancel wait + SHUTDOWN_MARGIN_S (``--grace`` + 10 s by default)."""
    return grace_s + cancel_wait_s(cancel_grace_s) + SHUTDOWN_MARGIN_S


class RegistryAdmission(Admission):
    """Admission answers from a Registry."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    def __init__(self, registry: Registry, executor: Executor | None = None) -> None:
        """``executor`` is the one that will run the computations: it says
        whether async ones take their first step eagerly (``Executor.eager``).
        Without one, they are taken to where the Python version allows it."""
        self.registry = registry
        self._executor = executor
        self._items = registry._items  # the registry's own dict: later registrations show
        self._found_name: str | None = None  # the last name find() found, and its computation
        self._found: Computation | None = None
        self._plain: Computation | None = None  # the last computation found to need no check
        # the last computations found to end (or not) in the step that starts them
        self._at_once: Computation | None = None
        self._later: Computation | None = None

    def find(self, computation: str) -> Computation | None:
        # the codec decodes a computation name as str, so no type check is needed
        """The computation registered as ``computation``, or None."""
        # A name, once registered, keeps its computation (a Registry neither
        # replaces nor removes one), so the last name found answers a run of
        # spawns of one computation by a string compare: the name is a new
        # str in every SPAWN_REQUEST, and a dict lookup would hash it first.
        if computation == self._found_name:
            return self._found
        comp = self._items.get(computation)  # type: ignore[call-overload]  # a str finds its ComputationName key
        if comp is not None:
            self._found_name, self._found = computation, comp
        return comp

    def check(self, comp: Computation, data: Any) -> str | None:
        """Why ``data`` is not an acceptable input of ``comp`` (its codec or validator
        refuses it), or None."""
        if comp is self._plain:  # (a Computation is frozen: what was read of it holds)
            return None
        if comp.codec is None and comp.validate is None:
            self._plain = comp
            return None  # raw bytes, no validator: nothing to check (the common case)
        return comp.check_input(data)

    def ends_at_once(self, comp: Computation) -> bool:
        """Whether a task of ``comp`` may end in the pump that starts it: an
        inline computation, or an async one where first steps are eager
        (``Executor.eager``: Python 3.12+, on a loop with no task factory).
        Only then is its ACK held for its RESULT to stand for; a computation
        on a thread or in a worker process, or an async one started a loop
        turn later, has its ACK written at once."""
        if comp is self._at_once:
            return True
        if comp is self._later:
            return False
        if comp.inline or (comp.is_async and (EAGER_TASKS if self._executor is None
                                              else self._executor.eager)):
            self._at_once = comp
            return True
        self._later = comp
        return False


class NodeServer(TaskReporter):
    """A node: serves named computations from ``registry`` at ``address``."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    def __init__(self, name: str, address: str, registry: Registry, *, capacity: int = 16384,
                 max_input_bytes: int = 16 * 1024 * 1024, max_threads: int | None = None,
                 ttl_s: float = 300.0, key: bytes | None = None, grace_s: float = 5.0,
                 cancel_grace_s: float = CANCEL_GRACE_S, peers: str | None = None,
                 trace: Callable[[str, dict], None] | None = None,
                 state_dir: str | None = None, handshake_timeout_s: float = 10.0,
                 frame_timeout_s: float = 30.0, transport: Transport | None = None,
                 capabilities: Any = None, isolation: str = "thread", workers: int | None = None,
                 time_limit: float | None = None, memory_limit: int | None = None,
                 max_tasks_per_worker: int | None = None, tls: TlsConfig | None = None,
                 insecure: bool = False, allow_uids: tuple[int, ...] = (),
                 catalogue: bool = True,
                 max_kept_result_bytes: int = DEFAULT_MAX_KEPT_RESULT_BYTES,
                 ack_by_result: bool = True, value_segments: bool = True) -> None:
        """``handshake_timeout_s``: a connection that has not sent its AUTH by
        then gets ERROR 7 and is closed; ``frame_timeout_s``: likewise one
        whose partial frame saw no frame complete for that long (both checked
        by one sweep a second, or four times per the shorter timeout).
        ``state_dir``: the durable idempotency journal's directory (None: the
        node's records live only as long as its process). ``transport``: how
        it listens (a ``rsc.transport.base.Transport``; None: a Unix socket at
        ``address``, with the permissions of PROTOCOL.md section 1, or TCP for
        a ``tcp:`` address). ``tls``: mutual TLS for a ``tcp:`` listener (and
        for the computations' own connections to ``peers``). A ``tcp:``
        address that is not loopback is refused (``InsecureListen``) without
        both ``tls`` and ``key``, unless ``insecure``. ``allow_uids``: users
        besides this process's own whose connections a Unix socket accepts
        (checked with SO_PEERCRED; anyone else gets ERROR auth_failed).
        ``max_kept_result_bytes``: the bytes of finished results kept for
        duplicates (``rsc node --max-kept-result-bytes``); past it the oldest
        are dropped and a duplicate of one gets ``ResultNotKept``.
        ``catalogue``: publish the registry's computation catalogue to
        origins (``rsc.catalogue``; False: answer as a node that has none).
        ``ack_by_result``: to an origin that offers it too, a task that ends
        in the pump that admitted it (its first step, on Python 3.12+ for an
        async computation) is answered by its RESULT_DELIVERY alone, which
        stands for its SPAWN_ACK (False: answer as a node without the
        extension, an ACK for every spawn).
        ``value_segments``: offer value segments (a msgpack value's large
        leaves beside it, each a bin of its own) in WELCOME, and send a
        result's to an origin that offers them too (False: answer as a node
        without the extension; segments a peer sends are still understood).
        ``capabilities``: None (tokens are not checked), or a
        ``rsc.node.tokens.TokenGate``: the node then runs nothing without a
        token that allows it (``rsc node --require-capability``).

        ``isolation``: where sync computations registered without one run,
        ``"thread"`` (the node's thread pool) or ``"process"`` (a worker
        process). When any computation runs in a worker process, the node owns
        a ``rsc.node.workers.WorkerPool`` of ``workers`` processes (default:
        the CPU count, at least 2), started by :meth:`start`; ``time_limit``
        (s), ``memory_limit`` (bytes) and ``max_tasks_per_worker`` are its
        defaults for computations that set none (docs/ISOLATION.md)."""
        self.name = NodeId(name)
        self.address = Address.parse(address)
        if transport is not None and not isinstance(transport, Transport):
            raise InvalidArgument(f"transport must have connect() and listen() coroutines "
                                  f"(rsc.transport.base.Transport), got {type(transport).__name__}")
        self.transport = transport
        if tls is not None and not isinstance(tls, TlsConfig):
            raise InvalidArgument(f"tls must be an rsc.TlsConfig, got {type(tls).__name__}")
        if tls is not None and self.address.scheme != "tcp":
            raise InvalidArgument(f"TLS is for tcp: addresses; {self.address} is a Unix socket, "
                                  "whose peers the kernel names (SO_PEERCRED)")
        self.tls = tls
        if transport is None:
            check_exposure(self.address, tls, key, insecure)
        self.allow_uids = frozenset(int(u) for u in allow_uids) | {os.geteuid()}
        # Only a real Unix socket of ours can name its peer's user.
        self._check_peer_uid = transport is None and self.address.scheme == "unix"
        self.registry = registry
        self.catalogue = catalogue
        self._status_catalogue: dict | None = None  # STATUS_REPLY's, when WELCOME's is partial
        self._catalogued = 0  # how many computations the published catalogue counts
        self.grace_s = grace_s
        # With a peers cluster file, computations get a RemoteCap and may spawn
        # remote work themselves (nested regions); the runtime opens on first use.
        self.peers = peers
        self._runtime: Runtime | None = None
        self.clock = SystemClock()
        self._started = time.monotonic()
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        self.executor = Executor(max_threads=max_threads or max(4, (os.cpu_count() or 1) * 2),
                                 cancel_grace_s=cancel_grace_s, isolation=isolation)
        self.executor.driver_runs_ready = True  # _pump runs started computations' first steps
        self.engine = NodeEngine(
            self.name, RegistryAdmission(registry, self.executor), capacity=capacity,
            max_input_bytes=max_input_bytes, ttl_ns=int(ttl_s * 1e9), key=key,
            entropy=secrets.token_bytes, stats=self._process_stats, trace=trace,
            capabilities=capabilities, max_kept_result_bytes=max_kept_result_bytes,
            ack_by_result=ack_by_result, value_segments=value_segments)
        if isinstance(trace, Trace):
            trace.follow_clock(self.engine.clock)  # records carry the node's Lamport time
        # With a state directory, idempotency records outlive this process
        # (rsc.node.journal); _pump syncs the journal before anything leaves.
        self._journal = None if state_dir is None else open_journal(state_dir, self.engine,
                                                                    self.clock.now_ns())
        self._sync_pending = self._compacting = False
        self._pumping = False
        check_pool_options(workers, time_limit, memory_limit, max_tasks_per_worker)
        if registry.needs_workers(isolation):
            spec = registry.import_spec()
            if spec is None:
                raise InvalidArgument(
                    "process-isolated computations run in worker processes that import the registry "
                    "by name, but this registry is not a global of an importable module (is it "
                    "defined in __main__?); define it in a module and load it with "
                    "rsc.registry.load_registry('package.module:attr')")
            self.executor.workers = WorkerPool(
                spec, size=workers or max(2, os.cpu_count() or 1), finish=self.executor.finish_task,
                cancel_grace_s=cancel_grace_s, time_limit=time_limit, memory_limit=memory_limit,
                max_tasks_per_worker=max_tasks_per_worker, node=str(self.name))
        self._conns: dict[int, FramedConnection] = {}
        self._conn_ids = itertools.count(1)
        self._server: Listener | None = None
        self._timer: EngineTimer = None  # type: ignore[assignment]  # made in start()
        self._idle = asyncio.Event()
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socket_id: tuple[int, int] | None = None  # the socket file we created (dev, inode)
        for what, value in (("handshake_timeout_s", handshake_timeout_s),
                            ("frame_timeout_s", frame_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidArgument(f"{what} must be a number of seconds > 0, got {value!r}")
        self.handshake_timeout_s = handshake_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self._sweep_s = min(1.0, handshake_timeout_s / 4, frame_timeout_s / 4)
        self._handshake_sweeps = math.ceil(handshake_timeout_s / self._sweep_s)
        self._frame_sweeps = math.ceil(frame_timeout_s / self._sweep_s)
        self._sweep_handle: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start serving: the worker pool (if any), then the listener; the node answers
        once this returns."""
        self._loop = asyncio.get_running_loop()
        self._timer = EngineTimer(self._loop, self.clock, self._on_timer)
        if self.executor.workers is not None:  # ready before the first connection
            await self.executor.workers.start()
        if self.catalogue:  # before the first WELCOME
            self._publish_catalogue()
        if self.transport is not None:
            self._server = await self.transport.listen(self.address, self._make_connection)
        elif self.address.scheme == "tcp":
            server = await listen_tcp(self.address, self._make_connection, self.tls,
                                      self.handshake_timeout_s)
            self.address = bound_address(server, self.address)
            self._server = server
        else:
            self._server, self._socket_id = await listen_unix(self.address.path, self._make_connection)
        self._sweep_handle = self._loop.call_later(self._sweep_s, self._sweep)
        log.info("node %s listening on %s", self.name, self.address)

    async def serve_until_stopped(self) -> None:
        """Wait until the node has shut down (``request_shutdown`` or ``shutdown``)."""
        await self._stopped.wait()

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown (what SIGTERM/SIGINT do)."""
        if not self.engine.draining:
            asyncio.ensure_future(self.shutdown())

    @property
    def shutdown_bound_s(self) -> float:
        """Seconds this node's shutdown takes at most (module ``shutdown_bound_s``);
        ``rsc node`` leaves when it is over even if a thread is stuck in C."""
        return shutdown_bound_s(self.grace_s, self.executor.cancel_grace_s)

    def remove_socket(self) -> bool:
        """Unlink our socket file, unless another listener has replaced it
        since; True if removed. Safe from any thread, and to call twice."""
        if self.address.scheme != "unix":
            return False
        removed = remove_socket(self.address.path, self._socket_id)
        self._socket_id = None
        return removed

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop admitting, let running tasks finish for the grace period, cancel
        the rest (reason shutdown), report those that ignore the cancel for
        ``cancel_wait_s`` as Panicked ("abandoned"), deliver every result,
        close, remove the socket, stop. Every step is bounded (see
        ``shutdown_bound_s``); a thread stuck in C is left behind for the
        process to abandon (``rsc node`` exits with ``os._exit``)."""
        grace = self.grace_s if grace_s is None else grace_s
        self.engine.begin_drain()
        if self.engine.running:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._wait_idle(), grace)
            except asyncio.TimeoutError:
                pass
        if self.engine.running:
            self.engine.cancel_all()
            self._pump()
            wait = cancel_wait_s(self.executor.cancel_grace_s)
            try:
                await asyncio.wait_for(self._wait_idle(), wait)
            except asyncio.TimeoutError:
                log.warning("node %s: %d tasks ignored cancellation for %g s; reporting them "
                            "abandoned and exiting", self.name, self.engine.running, wait)
                # their Panicked outcomes go out with the other results below
                self.executor.abandon(f"still running {wait:g} s after the shutdown cancel")
        if self._server is not None:
            self._server.close()
        self.engine.close_all()
        self._pump()
        await asyncio.sleep(0)
        closing = [asyncio.shield(c.closed) for c in self._conns.values() if c.closed is not None]
        if closing:
            await asyncio.wait(closing, timeout=FLUSH_S)
        for conn in list(self._conns.values()):
            if conn.closed is not None and not conn.closed.done():
                conn.abort()
        if self._server is not None:
            await _bounded(self._server.wait_closed(), 1.0)
        self._timer.cancel()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        await self.executor.aclose(0.0, abandon_after_s=0.0)
        if self._runtime is not None:
            await _bounded(self._runtime.aclose(), 1.0)
        self.remove_socket()
        if self._journal is not None:
            journal, self._journal = self._journal, None
            journal.close()
        self._stopped.set()

    async def _wait_idle(self) -> None:
        while self.engine.running:
            self._idle.clear()
            await self._idle.wait()

    # ------------------------------------------------------------ connections
    def _make_connection(self) -> FramedConnection:
        # Before AUTH a peer may send only small frames, and a node that
        # cannot write its replies stops reading requests (PROTOCOL.md section 1).
        return FramedConnection(on_open=self._on_open, on_messages=self._on_messages,
                                on_protocol_error=self._on_protocol_error, on_close=self._on_close,
                                max_frame_bytes=DEFAULT_MAX_FRAME_BYTES,
                                handshake_max_frame_bytes=HANDSHAKE_MAX_FRAME_BYTES,
                                handshake_last_kind=AUTH, pause_reading_on_backlog=True)

    def _sweep(self) -> None:
        """Once per ``_sweep_s``: close connections that stalled their
        handshake or a frame. One timer for all connections, so a connection
        and a message cost nothing for it."""
        if self._stopped.is_set():
            return
        self._sweep_handle = self._loop.call_later(self._sweep_s, self._sweep)  # type: ignore[union-attr]
        for conn in list(self._conns.values()):
            why = conn.stalled(self._handshake_sweeps, self._frame_sweeps)
            if why is not None:
                self._time_out(conn, why)

    def _time_out(self, conn: FramedConnection, why: str) -> None:
        if why == "handshake":
            text = f"no handshake within {self.handshake_timeout_s:g} s"
        else:
            text = f"a frame stayed incomplete for {self.frame_timeout_s:g} s"
        log.info("node %s: closing connection %s: %s", self.name, conn.tag, text)
        self.engine.protocol_error(conn.tag, PeerTimeout(text), self.clock.now_ns())
        self._pump()  # writes the ERROR and closes
        conn.abort()  # and drops what a peer that does not read would leave buffered

    def _publish_catalogue(self) -> None:
        """Put the registry's catalogue in the WELCOME features (and, when that
        is partial, in STATUS_REPLY): at start, and again for the next
        connection whenever the registry has grown since (``_on_open``)."""
        self._status_catalogue = publish_catalogue(self.engine.features, self.registry,
                                                   self.executor.isolation)
        self._catalogued = len(self.registry)

    def _on_open(self, conn: FramedConnection) -> None:
        if self.catalogue and len(self.registry) != self._catalogued:
            self._publish_catalogue()  # computations registered since: list them from now on
        cid = next(self._conn_ids)
        conn.tag = cid
        self._conns[cid] = conn
        log.info("node %s: connection %d opened", self.name, cid)
        self.engine.open_connection(cid, self.clock.now_ns())
        if self._check_peer_uid:
            uid = peer_uid(conn.transport)
            if uid is not None and uid not in self.allow_uids:
                log.error("node %s: refused a connection from uid %d (only uids %s may connect)",
                          self.name, uid, ", ".join(map(str, sorted(self.allow_uids))))
                self.engine.protocol_error(cid, AuthFailed(
                    f"uid {uid} may not connect to node {self.name}; its operator can allow it "
                    f"with --allow-uid {uid}"), self.clock.now_ns())
                self._pump()

    def _on_messages(self, conn: FramedConnection, msgs: list[Any]) -> None:
        engine, now, cid = self.engine, self.clock.now_ns(), conn.tag
        executor = self.executor
        live = executor.live_tasks
        try:
            engine.receive_all(cid, msgs, now)  # a C call when compiled (a bound method is not)
        except Exception:  # a bug; it must cost this connection at most, never the node
            log.exception("node %s: internal error handling a read of %d messages (%s); closing "
                          "that connection", self.name, len(msgs),
                          ", ".join(sorted({type(msg).__name__ for msg in msgs})))
            self.engine.close_connection(cid, now)
            conn.abort()
        self._pump()
        if executor.live_tasks > live and not executor.eager:
            # Computations started here take their first step a loop turn
            # later (3.11): a no-op's RESULT then leaves with its ACK, in one
            # write that wakes the origin once, not twice.
            conn.hold_replies()

    def _on_protocol_error(self, conn: FramedConnection, exc: ProtocolError) -> None:
        log.info("node %s: connection %s broke the protocol (%s); closing it", self.name,
                 conn.tag, exc)
        self.engine.protocol_error(conn.tag, exc, self.clock.now_ns())
        self._pump()

    def _on_close(self, conn: FramedConnection, exc: Exception | None) -> None:
        if self._conns.pop(conn.tag, None) is not None:
            log.info("node %s: connection %s closed%s", self.name, conn.tag,
                     f" ({exc})" if exc is not None else "")
        self.engine.close_connection(conn.tag, self.clock.now_ns())

    # ---------------------------------------------------------------- actions
    def _pump(self) -> None:
        """Carry out everything the engine queued, then re-arm the timer.

        Starts and cancels go first, then the writes; then the first steps of
        the computations just started (``Executor.run_ready``: inline ones, and
        async ones on Python 3.12+). A computation that ends there reports
        through ``_on_done``, whose engine work this same pump carries out,
        and a batch of spawns read together costs one pump, not one per task.
        The SPAWN_ACKs the engine holds for connections that negotiated
        ``ack_by_result`` are written last (``NodeEngine.flush_acks``), once
        those first steps have run: a task that ended in its first step
        sends its RESULT alone, which stands for its ACK; elsewhere its
        RESULT leaves in the same write as its ACK. A call made while a pump
        runs (from ``_on_done``) leaves its work to that pump.

        With a journal that has unsynced entries, nothing is carried out now:
        one sync at the end of this loop turn covers every entry the turn
        wrote, and only then do its ACKs and RESULTs leave and its tasks start.
        """
        if self._pumping:
            return
        self._pumping = True
        try:
            synced = self._carry_out()
        finally:
            self._pumping = False
        if synced:
            self._timer.follow(self.engine.timers)

    def _carry_out(self) -> bool:
        """The loop of ``_pump``; False when it stopped for a journal sync."""
        engine, executor = self.engine, self.executor
        while True:
            if self._journal is not None and self._journal.dirty:
                if not self._sync_pending:
                    self._sync_pending = True
                    self._loop.call_soon(self._sync_journal)  # type: ignore[union-attr]  # started
                return False
            if not engine.actions:
                if executor._ready:  # (read, not called: most pumps have none)
                    executor.run_ready()  # may queue more engine work (results)
                    continue
                if not engine._acks_due:
                    return True
                engine.flush_acks()  # the ACKs no RESULT has stood for
                continue
            actions = engine.take_actions(False)
            for op, target, arg in actions:
                if op == _START:
                    self._start(target)
                elif op == _CANCEL:
                    executor.cancel(target, CancelReason.from_wire(arg))
            for op, target, arg in actions:
                if op == _SEND:
                    conn = self._conns.get(target)
                    if conn is not None:
                        conn.send(arg)
                elif op == _CLOSE:
                    conn = self._conns.get(target)
                    if conn is not None:
                        conn.close()

    def _sync_journal(self) -> None:
        self._sync_pending = False
        journal = self._journal
        if journal is None:  # closed by shutdown since this sync was asked for (closing synced it)
            self._pump()
            return
        try:
            journal.sync()
            if not self._compacting and journal.needs_compaction():
                self._compact(journal)
        except OSError as exc:
            # The node can no longer keep its promise to remember: stop taking
            # work (what was admitted still runs and answers) and shut down.
            log.error("node %s: journal %s failed (%s); shutting down", self.name, journal.path, exc)
            self._journal = None
            self.request_shutdown()
        self._pump()

    def _compact(self, journal: Any) -> None:
        """Rewrite the journal from the live state, a step per loop turn
        (``COMPACT_STEP`` record slots each: a few milliseconds, however many
        records the node keeps), then sync the new file in a thread."""
        self._compacting = True
        journal.begin_compaction()
        try:
            snap = journal.start_snapshot()
        except OSError as exc:
            self._compact_failed(journal, None, exc)
            return
        self._loop.call_soon(self._compact_step, journal, snap,  # type: ignore[union-attr]  # started
                             self.engine.durable_scan(COMPACT_STEP))

    def _compact_step(self, journal: Any, snap: Any, steps: Iterator[list]) -> None:
        if self._journal is not journal:  # closed by shutdown meanwhile
            self._compact_failed(journal, snap, None)
            return
        try:
            views = next(steps, None)
            now = self.clock.now_ns()
            if views is not None:
                snap.add(self.engine.durable_records(views, now))
                self._loop.call_soon(self._compact_step, journal, snap, steps)  # type: ignore[union-attr]
                return
            snap.add((), self.engine.durable_tombstones(now))
        except Exception as exc:  # OSError writing it, or a value the journal cannot encode
            self._compact_failed(journal, snap, exc)
            return
        done = self._loop.run_in_executor(None, snap.seal)  # type: ignore[union-attr]
        done.add_done_callback(lambda fut: self._compacted(journal, fut))

    def _compact_failed(self, journal: Any, snap: Any, exc: BaseException | None) -> None:
        """The old file stays in use: nothing is lost, it grows on."""
        self._compacting = False
        if snap is not None:
            snap.discard()
        journal.abort_compaction()
        if exc is not None:
            log.warning("node %s: compacting journal %s failed: %s", self.name, journal.path, exc)

    def _compacted(self, journal: Any, fut: asyncio.Future) -> None:
        try:
            journal.finish_compaction(*fut.result())
        except Exception as exc:  # the fsync or the rename failed; either closed the file
            self._compact_failed(journal, None, exc)
            return
        self._compacting = False

    def _start(self, task: NodeTask) -> None:
        budget = None
        if task.deadline_ns is not None or task.budget is not None:
            b = task.budget
            budget = Budget(task.deadline_ns, b[1], b[2], b[3]) if b is not None else None
        cx = task_cx(task.origin_region, task.origin_task, budget, self.name,
                     None if self.peers is None else self._remote_cap(task))
        # (the input is there until the executor takes it)
        self.executor.start(task, task.comp, task.input, cx, self)  # a TaskReporter: _on_done as C

    def _remote_cap(self, task: NodeTask) -> RemoteCap | None:
        """The RemoteCap a computation's Cx holds on a node with peers: this
        node's runtime, carrying the token the task's own spawn came with (the
        computation may narrow it with ``cx.attenuate``, never widen it)."""
        if self.peers is None:
            return None
        if self._runtime is None:
            self._runtime = Runtime(self.peers, name=self.name, key=self.engine.key, tls=self.tls)
            # one process, one Lamport clock: a nested spawn comes after the spawn that caused it
            self._runtime.engine.clock = self.engine.clock
            self._runtime.attach()
        return RemoteCap(self._runtime, token=task.capability)

    def _on_done(self, task: NodeTask, kind: int, payload: Any, exec_ns: int) -> None:
        if kind == _CANCELLED:
            payload = task.cancel_reason if task.cancel_reason is not None else (
                payload.to_wire() if isinstance(payload, CancelReason) else (0, None))
        # The executor's clock is this node's (both time.monotonic_ns; the lab
        # gives both its virtual clock): the task ended at its start plus its
        # execution time, and a second clock read per task is saved.
        self.engine.task_finished(task, kind, payload, exec_ns, task.start_ns + exec_ns)
        self._pump()
        if not self.engine._running:  # (the dict, not the `running` property: a C read)
            self._idle.set()

    def _on_timer(self) -> None:
        self.engine.tick(self.clock.now_ns())
        self._pump()

    # ------------------------------------------------------------------ stats
    def _process_stats(self) -> dict:
        try:
            rss = self._proc.memory_info().rss
            cpu = self._proc.cpu_percent(None)
        except psutil.Error:  # pragma: no cover - process vanished mid-read
            rss, cpu = 0, 0.0
        stats = dict(pid=os.getpid(), uptime_s=time.monotonic() - self._started, rss_bytes=rss,
                     cpu_percent=cpu, version=__version__, node=str(self.name),
                     isolation=self.executor.isolation)
        if self.executor.workers is not None:
            stats.update(self.executor.workers.stats())
        if self._status_catalogue is not None:
            stats.update(self._status_catalogue)
        return stats


async def _bounded(aw: Any, timeout_s: float) -> None:
    """Await ``aw`` for at most ``timeout_s`` (a shutdown step must not hang)."""
    try:
        await asyncio.wait_for(aw, timeout_s)
    except asyncio.TimeoutError:
        log.warning("shutdown step %r took over %.1f s; going on", aw, timeout_s)
