"""The origin runtime and the remote-spawn API.

``Runtime`` is opened in the user's event loop with a cluster (NodeId ->
address, or the cluster file written by ``rsc launch``). It keeps one
connection per node, opened on first use and re-opened with backoff; after a
reconnect every unacknowledged or unfinished task is re-sent with its original
idempotency key, so a reset connection neither loses nor duplicates work.

``spawn_remote(cx, node, computation, input)`` needs a RemoteCap in ``cx`` and
returns a ``RemoteHandle`` (``rsc.handle``) at once. On an open connection
the first spawn of a loop turn is written at once; the others made in that
turn share one pump and leave together at its end (``rsc.transport.connection``
writes them). The connections themselves are ``rsc.links``; every protocol
rule is the origin engine's (``rsc._engine.origin``): the runtime turns its
actions into writes and its events into settled handles.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import secrets
import socket
from collections.abc import Mapping
from typing import Any, Callable

from rsc.logs import get_logger
from rsc._signature import SourceSignature
from rsc._core.messages import ERR_AUTH_FAILED, ERR_VERSION_MISMATCH, REJECT_INVALID_INPUT
from rsc._engine.origin import (
    CLOSE,
    EV_ACCEPTED,
    EV_LEASE_EXPIRED,
    EV_NODE_RESTARTED,
    EV_PROTOCOL_ERROR,
    EV_REATTEMPT,
    EV_REJECTED,
    EV_RESULT,
    EV_SETTLE,
    EV_WANT_LINK,
    EV_HANDSHAKE_FAILED,
    EV_STATUS,
    SEND,
    OriginEngine,
    OriginTask,
    input_too_large,
)
from rsc._engine.states import OriginState
from rsc.clock import SystemClock
from rsc.cluster_file import load_cluster
from rsc.catalogue import MSGPACK, RAW, ComputationInfo
from rsc.cx import Cx, RemoteCap
from rsc.handle import RemoteHandle
from rsc.heap import MAX_KEEP_BYTES, keep_freed_memory
from rsc.lease import DEFAULT_POLICY, LeasePolicy
from rsc.links import Links
from rsc.errors import (
    CatalogueUnavailable,
    InvalidArgument,
    InvalidInput,
    LeaseExpired,
    NoCapability,
    NodeUnreachable,
    ProtocolError,
    RuntimeClosed,
    error_from_code,
    spawn_rejected,
)
from rsc.transport.base import Transport
from rsc.transport.connection import FLUSH_FRAMES, FramedConnection
from rsc.trace import Trace
from rsc.transport.timer import EngineTimer
from rsc.transport.tls import TlsConfig
from rsc.types import (
    Budget,
    CancelKind,
    CancelReason,
    ComputationName,
    IdempotencyKey,
    NodeId,
    RemoteInput,
    RemoteTaskState,
    check_seconds,
)
from rsc.value_codec import pack_input_segmented

# RemoteHandle is rsc.handle's (and rsc's): the compiled build of this module
# cimports it, so it is no attribute here and `import *` would fail on it.
__all__ = ["Runtime", "load_cluster", "spawn_remote"]

log = get_logger("rsc.origin")

MS = 1_000_000
MAX_LEASE_MS = (1 << 32) - 1
# What a spawn reads, as private module globals: C globals when compiled
# (remote.pxd), where a module global is a dict lookup per read on 3.12+.
_INFINITE = Budget.INFINITE  # type: ignore[attr-defined]
_MSGPACK, _RAW = MSGPACK, RAW
_DEFAULT_POLICY: LeasePolicy = DEFAULT_POLICY
_FLUSH_AT = FLUSH_FRAMES
_SEND, _CLOSE, _EV_RESULT = SEND, CLOSE, EV_RESULT


_KEYS_AT_ONCE = 256  # idempotency keys drawn from the runtime's PRNG per call


def first_task_id(rng: random.Random) -> int:
    """The first remote task id of a runtime: 1 + a random 52-bit number, so
    two runs under one origin name do not meet (see ``Runtime._seed``) and the
    ids stay below 2**53 for 2**52 spawns."""
    return 1 + rng.getrandbits(52)
_STATE_NAMES = {int(s): s.name.lower() for s in OriginState}  # Runtime.stats
_STATE_OF_KIND = (  # indexed by the wire's outcome kind
    RemoteTaskState.COMPLETED,  # success
    RemoteTaskState.FAILED,  # failed
    RemoteTaskState.CANCELLED,  # cancelled
    RemoteTaskState.FAILED,  # panicked
)


class Runtime:
    """The origin side of rsc in one event loop: connections to the nodes of
    ``cluster`` (a mapping of NodeId to ``unix:PATH`` / ``tcp:HOST:PORT``,
    or the path of a cluster file), the tasks spawned through its ``cx()``,
    and their outcomes. Use it as ``async with Runtime(cluster) as rt:``;
    leaving the block cancels what still runs (``aclose``)."""

    __signature__ = SourceSignature()  # what inspect.signature reports, compiled too

    def __init__(self, cluster: Mapping[str, str] | str | os.PathLike, *, name: str | None = None,
                 key: bytes | None = None, default_lease_s: float = 30.0,
                 connect_timeout_s: float = 5.0, backoff_max_s: float = 2.0,
                 trace: Callable[[str, dict], None] | None = None,
                 transport: Transport | None = None, tls: TlsConfig | None = None,
                 heap_keep_bytes: int = 0) -> None:
        """``transport``: how connections to the nodes are opened (a
        ``rsc.transport.base.Transport``, e.g. ``MemoryTransport`` in a unit
        test); None dials ``unix:`` addresses as Unix sockets and ``tcp:`` as
        TCP: over mutual TLS with ``tls`` (an ``rsc.TlsConfig``; each node's
        certificate must name its NodeId), else plain.

        ``heap_keep_bytes``: keep up to that much freed memory in this process
        for its next allocations (``rsc.heap.keep_freed_memory``, what ``rsc
        node --heap-keep-bytes`` does, glibc only), so that the large inputs
        and outputs it sends and receives reuse pages already mapped instead
        of faulting in new ones for every task. It changes the whole process,
        so it is the caller's choice: 0, the default, leaves malloc's settings
        alone. ``InvalidArgument`` for a value that is not an int in
        0..2**31-1."""
        try:
            keep_freed_memory(heap_keep_bytes)
        except InvalidArgument:
            raise InvalidArgument(f"heap_keep_bytes must be an int in 0..{MAX_KEEP_BYTES} (bytes), "
                                  f"got {heap_keep_bytes!r}") from None
        self.heap_keep_bytes = heap_keep_bytes
        if transport is not None and not isinstance(transport, Transport):
            raise InvalidArgument(f"transport must have connect() and listen() coroutines "
                                  f"(rsc.transport.base.Transport), got {type(transport).__name__}")
        self.transport = transport
        if tls is not None and not isinstance(tls, TlsConfig):
            raise InvalidArgument(f"tls must be an rsc.TlsConfig (cert, key, ca), got "
                                  f"{type(tls).__name__}")
        self.tls = tls
        self.cluster = load_cluster(cluster)
        self.name = NodeId(name or f"origin-{socket.gethostname()[:64]}-{os.getpid()}-{secrets.token_hex(3)}")
        self.key = key
        self.default_lease_s = check_seconds("default_lease_s", default_lease_s)
        self.connect_timeout_s = check_seconds("connect_timeout_s", connect_timeout_s)
        self.backoff_max_s = check_seconds("backoff_max_s", backoff_max_s)
        self.clock = SystemClock()
        self.trace = trace
        self.engine = OriginEngine(self.name, key=key, entropy=secrets.token_bytes, trace=trace)
        self.engine.accept_events = False  # a handle reads acceptance from its task
        if isinstance(trace, Trace):
            trace.follow_clock(self.engine.clock)  # records carry the origin's Lamport time
        self._seed(random.Random(os.urandom(32)))
        self._key_buf = b""  # _KEYS_AT_ONCE fresh keys, handed out 16 bytes at a time
        self._key_pos = 0
        self._names: dict[str, ComputationName] = {}
        self._net = Links(self, self.cluster, connect_timeout_s, backoff_max_s)
        self._links = self._net.by_node  # NodeId -> NodeLink, read on every pump
        self._status_waiters: dict[str, list[asyncio.Future[dict]]] = {}
        # retries sent back to their node under same_node_within_s: attempt's
        # rtid -> the node to move to if that node does not accept it in time
        self._protocol_errors = 0  # EV_PROTOCOL_ERROR events seen (stats())
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._timer: EngineTimer = None  # type: ignore[assignment]  # made in attach()
        self._closed = False
        self._pump_due = False  # a pump is scheduled for the end of this loop turn (_spawn)
        # the last lease a spawn asked for (the object: a cap's default is the
        # same one every time), validated, in ms and as the handle reports it
        self._lease_seen: Any = None
        self._lease_ms_seen = 0
        self._lease_s_seen = 0.0

    # ----------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind to the running event loop (``async with Runtime(...)`` does it).
        Connections open on first use."""
        self.attach()


    def _seed(self, rng: random.Random) -> None:
        """Draw this runtime's remote task ids and idempotency keys from ``rng``.
        Task ids count up from a random start below 2**52, not from 1: the
        nodes hold an ``(origin, task id)`` for the records' TTL, so a runtime
        restarted under the same ``name`` that counted from 1 again would be
        refused (its ids already held under other keys) or answered from the
        earlier run's tombstones. Ids stay below 2**53, exact in JSON traces."""
        self._key_rng = rng
        self._ids = itertools.count(first_task_id(rng))  # never reused in this runtime
        self.engine.new_rtid = self._ids.__next__  # for the attempts escalation makes
    def attach(self) -> None:
        """Bind to the running event loop (what ``start`` does, callable from sync code on the loop)."""
        self._loop = asyncio.get_running_loop()
        self._timer = EngineTimer(self._loop, self.clock, self._on_timer)

    async def aclose(self, cancel_timeout_s: float = 5.0) -> None:
        """Cancel every live task (waiting up to the timeout for their outcomes) and close."""
        if self._closed:
            return
        live = [h for h in self._unsettled_handles() if not h.is_finished()]
        for h in live:
            h.abort(CancelReason(CancelKind.SHUTDOWN, "origin runtime closing"))
        waiters = [h._waiter() for h in live if not h._done]  # an abort may settle one at once
        if waiters:
            await asyncio.wait(waiters, timeout=cancel_timeout_s)
        self._closed = True
        for h in self._unsettled_handles():
            h._settle(None, RuntimeClosed(f"runtime closed before the outcome of {h!r} arrived"),
                      RemoteTaskState.FAILED)
        await self._net.aclose()
        if self._timer is not None:
            self._timer.cancel()

    def cx(self, *, budget: Budget | None = None, default_lease_s: float | None = None,
           seed: int | None = None) -> Cx:
        """A root Cx holding a RemoteCap for this runtime."""
        cap = RemoteCap(self, default_lease_s=self.default_lease_s if default_lease_s is None else default_lease_s)
        return Cx(remote_cap=cap, budget=budget, seed=seed, trace=self.trace)

    # ---------------------------------------------------------------- inspection
    def _unsettled_handles(self) -> list[RemoteHandle]:
        """The handles whose outcome has not arrived, gathered on each call
        (off the hot path): the engine's task records are the one list of
        them (an unsettled handle is its current attempt's ``handle``)."""
        return [t.handle for t in list(self.engine._tasks.values()) if t.handle is not None]

    @property
    def live_handles(self) -> int:
        """How many handles the runtime still tracks (their outcome has not arrived)."""
        return len(self._unsettled_handles())

    def stats(self) -> dict[str, Any]:
        """The runtime's figures, read at the moment of the call (safe from
        another thread, e.g. a metrics scrape; ``rsc.metrics`` exports them):

        - ``tasks``: remote tasks outstanding (sent or waiting to be, not yet
          settled), and ``tasks_by_state``: those by state, lower-case names
          of the origin's task states (``spawned``: sent, or waiting for
          its node's connection, not yet accepted; ``running``: accepted;
          ``cancel_sent``; ``lease_expired``: lapsed, its policy deciding;
          ``init`` only inside a spawn call);
        - ``handles``: unsettled ``RemoteHandle`` objects;
        - ``leases``: leases being watched (tasks whose node has the work);
        - ``connections``: connections open to nodes; ``reconnects``:
          connections opened to a node that had been connected before;
        - ``escalations``: leases that lapsed under a policy; ``retries``:
          new attempts those policies made (``rsc.lease.retry``);
        - ``protocol_errors``: messages from nodes that did not fit their
          task's state, dropped (see ``RemoteHandle.protocol_errors``);
          ``connection_errors``: connections this runtime closed because a
          node broke the protocol; ``dropped``: messages ignored as stale
          (a result for a task already settled, and such).

        Counters run from the runtime's start and only grow."""
        engine = self.engine
        by_state: dict[str, int] = {}
        handles = 0
        for task in list(engine._tasks.values()):
            name = _STATE_NAMES[task.state]
            by_state[name] = by_state.get(name, 0) + 1
            handles += task.handle is not None
        return dict(tasks=sum(by_state.values()), tasks_by_state=by_state,
                    handles=handles, leases=engine.lease_count,
                    connections=self._net.open_connections(), reconnects=self._net.reconnects(),
                    escalations=engine.escalations, retries=engine.retries,
                    protocol_errors=self._protocol_errors,
                    connection_errors=engine.connection_errors, dropped=engine.dropped)

    def debug_counts(self) -> dict[str, int]:
        """Live handles, engine tasks and leases: all zero when nothing is in flight."""
        return dict(handles=len(self._unsettled_handles()), tasks=self.engine.live_tasks,
                    leases=self.engine.lease_count)

    async def status(self, node: str, timeout_s: float = 5.0) -> dict:
        """STATUS_REQUEST to ``node``; its figures as a dict (``rsc status --json``
        shows the same): ``node``, ``pid``, ``version``, ``uptime_s``,
        ``rss_bytes`` and ``cpu_percent`` of its process (psutil; CPU since the
        previous request), ``isolation``, ``capacity``, ``running``; counters
        since it started: ``accepted``, ``completed``, ``failed``,
        ``cancelled``, ``panicked``, ``rejected``, ``duplicates``,
        ``dropped``; ``idempotency_records``, ``tombstones``,
        ``connections``, ``draining``; and with a worker pool ``workers``,
        ``workers_alive``, ``workers_busy``, ``worker_pids``,
        ``worker_restarts``, ``worker_crashes``, ``worker_kills``,
        ``worker_recycles``, ``worker_queue``, ``worker_start_ms``
        (docs/OPERATING.md says what each means). Keys may be added."""
        from rsc._core.messages import StatusRequest

        link = self._net.get(node)
        fut: asyncio.Future[dict] = self._loop.create_future()
        self._status_waiters.setdefault(link.node, []).append(fut)
        self._net.ensure(link)
        deadline = self._loop.time() + timeout_s
        while not self.engine.is_ready(link.node):
            if self._loop.time() > deadline:
                raise NodeUnreachable(link.node, "no handshake within the timeout")
            await asyncio.sleep(0.01)
        link.conn.send(StatusRequest(self.name, self.engine.clock.send()))  # type: ignore[union-attr]
        return await asyncio.wait_for(fut, max(0.0, deadline - self._loop.time()))

    async def computations(self, node: str, timeout_s: float = 5.0) -> tuple[ComputationInfo, ...]:
        """What ``node`` serves: one ``rsc.catalogue.ComputationInfo`` (name,
        codec, kind, isolation, docstring line) per computation, in the
        order the node registered them. Connects to the node if need be.

        The node's WELCOME carries as much as fits a handshake frame; when
        that is partial, the rest comes in a STATUS_REPLY, fetched here, and
        spawns are checked against all of it from then on. Raises
        ``CatalogueUnavailable`` for a node that publishes none (an older
        one), ``NodeUnreachable`` if the node cannot be reached in time."""
        cat = self.engine.catalogue(node) if self.engine.is_ready(node) else None
        if cat is None or not cat.complete:
            # connects, completes the handshake; the engine merges a reply's entries
            await self.status(node, timeout_s)
            cat = self.engine.catalogue(node)
            if cat is None:
                raise CatalogueUnavailable(node)
            if not cat.complete:
                log.warning("node %s serves %d computations; its catalogue lists %d (the rest "
                            "did not fit its STATUS_REPLY)", node, cat.total, len(cat.computations))
        return cat.computations

    # -------------------------------------------------------------------- spawn
    def spawn(self, cx: Cx, node: str, computation: str, input: Any = b"", *,
              lease: float | None = None, budget: Budget | None = None,
              idempotency_key: IdempotencyKey | None = None, codec: str | None = None,
              on_lease_expired: LeasePolicy | None = None) -> RemoteHandle:
        """``spawn_remote`` on this runtime (``cx`` needs a RemoteCap, any runtime's)."""
        if not isinstance(cx, Cx):
            raise InvalidArgument(f"spawn needs a Cx as its first argument, got {type(cx).__name__}")
        return self._spawn(cx, node, computation, input, lease, budget, idempotency_key, codec,
                           on_lease_expired)

    def _spawn(self, cx: Cx, node: str, computation: str, input: Any, lease: float | None,
               budget: Budget | None, idempotency_key: IdempotencyKey | None, codec: str | None,
               on_lease_expired: LeasePolicy | None) -> RemoteHandle:
        # Positional, and compiled with cx, its RemoteCap and the records typed
        # (remote.pxd): spawn_remote calls it as C, with no keyword parsing.
        if self._closed:
            raise InvalidArgument("this Runtime is closed")
        if self._loop is None:
            raise InvalidArgument("open the Runtime first: `async with Runtime(...) as rt`")
        link = self._net.get(node)
        # validated names, kept here too: calling ComputationName (cached as it
        # is) costs a Python call per spawn
        name = self._names.get(computation) if type(computation) is str else None
        if name is None:
            name = ComputationName(computation)
            if len(self._names) < 1024:
                self._names[computation] = name
        if codec is not None and codec != "msgpack":
            raise InvalidArgument(f"codec must be None or 'msgpack', got {codec!r}")
        # How the input is sent never depends on the node's catalogue (rsc.catalogue):
        # raw bytes, a RemoteInput's bytes (pre-encoded: any codec), or packed.
        # bytes, or for a large packed value a view of the packer's buffer
        # (rsc.value_codec.pack_value): the task and the codec's bin take either;
        # a value's large bytes leaves apart (value segments) whatever the link
        # knows yet: the engine joins them for a node that does not take them,
        # so the same value reaches a node the same way (and fingerprints the
        # same under an idempotency key) whether it was spawned before the
        # connection's handshake or after
        elink = self.engine.link_for(link.node)  # its limits and catalogue, in one call
        data: Any
        if isinstance(input, (bytes, bytearray, memoryview)) and codec is None:
            data = input if type(input) is bytes else bytes(input)
            sent = _RAW
        elif isinstance(input, RemoteInput):
            data = input.data
            sent = None
        else:
            codec = "msgpack"
            data = pack_input_segmented(input)
            sent = _MSGPACK
        cap = cx.remote_cap
        if cap is None:
            raise NoCapability()
        codecs = elink.codecs
        # keyed by the caller's str (an exact str finds its entry fastest)
        if codecs is not None and codecs.get(computation) is not sent:  # not served, or another codec
            err = elink.catalogue.refusal(name, sent, type(input).__name__)  # type: ignore[union-attr]
            if err is not None:
                raise err
        limit = elink.max_input
        token = cap.token
        if token is not None:
            limit -= len(token)  # the token travels in the same frame
        if len(data) > limit:  # it could never reach the node: refuse it now, not by a lapse
            raise InvalidInput(REJECT_INVALID_INPUT, input_too_large(len(data), link.node, limit),
                               link.node, name)
        lease_s = cap.default_lease_s if lease is None else lease
        if lease_s is self._lease_seen:  # the same object as the last spawn's (its cap's default)
            lease_ms = self._lease_ms_seen
        else:
            if isinstance(lease_s, bool) or not isinstance(lease_s, (int, float)) or not 0 < lease_s * 1000 <= MAX_LEASE_MS:
                raise InvalidArgument(f"lease must be a positive number of seconds, got {lease_s!r}")
            lease_ms = max(1, int(lease_s * 1000))
            self._lease_seen, self._lease_ms_seen = lease_s, lease_ms
            self._lease_s_seen = lease_ms / 1000
        eff = cx.budget
        if cap.budget is not None:
            eff = eff.meet(cap.budget)
        if budget is not None:
            eff = eff.meet(budget)
        now = self.clock.now_ns()
        wire_budget = None if eff is _INFINITE or eff == _INFINITE else eff.to_wire(now)
        if idempotency_key is None:
            # Keys need to be unique, not secret: a PRNG seeded from the OS is
            # enough and avoids a syscall per spawn.
            pos = self._key_pos
            if pos == len(self._key_buf):  # one PRNG call for the next _KEYS_AT_ONCE keys
                self._key_buf = self._key_rng.getrandbits(128 * _KEYS_AT_ONCE).to_bytes(
                    16 * _KEYS_AT_ONCE, "big")
                pos = 0
            kp = self._key_buf  # compiled: a pointer into it, so the slice is one copy (remote.pxd)
            key_bytes = kp[pos:pos + 16]
            self._key_pos = pos + 16
        elif isinstance(idempotency_key, IdempotencyKey):
            key_bytes = idempotency_key.to_bytes()
        else:
            raise InvalidArgument(f"idempotency_key must be an IdempotencyKey, got "
                                  f"{type(idempotency_key).__name__}")
        # OriginTask(...) and RemoteHandle(...) without Python-level calls:
        # both types are known to the compiled build, so these are C calls
        task = OriginTask.__new__(OriginTask)
        task._init(next(self._ids), link.node, name, data, lease_ms, key_bytes, wire_budget,
                   None if wire_budget is None else eff.deadline_ns, cx.region_id, cx.task_id,
                   token, None)
        task.input_codec = sent  # checked when the node's WELCOME arrives, if it is not yet known
        task.drawn = idempotency_key is None  # a key drawn above, never a caller's: no fingerprint
        if on_lease_expired is None:
            policy = _DEFAULT_POLICY  # fail(): names no nodes
        else:
            policy = on_lease_expired
            if not isinstance(policy, LeasePolicy):
                raise InvalidArgument("on_lease_expired must be rsc.lease.fail(), cancel(...) or retry(...)")
            for n in policy.nodes:
                self._net.get(n)
        region = cx.region
        handle = RemoteHandle.__new__(RemoteHandle)
        handle._init(self, task, codec, task.region, self._lease_s_seen, policy, region, task.task)
        task.handle = handle
        task.policy = policy  # the engine escalates a lapse (rsc._engine.escalation)
        self.engine.spawn(task, now)
        if link.conn is None:  # (an open connection has its connect loop waiting on it)
            self._net.ensure(link)
        if region is not None:
            region.adopt(handle)
        # One pump per batch: a spawn whose frame its connection would write
        # at once (the first since that node was last read from, or since the
        # last flush: FramedConnection.writes_at_once keeps the rule) is
        # pumped at once, scheduling nothing (a lone request waits for
        # nothing and costs no loop callback); the others leave together at
        # the end of the loop turn, or every FLUSH_FRAMES of them, so a node
        # starts on a burst's first spawns while the rest are still being made.
        conn = link.conn
        if not self._pump_due and conn is not None and conn.writes_at_once():
            self._pump()
        else:
            if not self._pump_due:
                self._pump_due = True
                self._loop.call_soon(self._pump_turn)
            if len(self.engine.actions) >= _FLUSH_AT:
                self._pump()
        return handle

    def _cancel(self, task: OriginTask, reason: CancelReason) -> None:
        if self.engine.cancel(task.rtid, reason.to_wire(), self.clock.now_ns()):
            self._net.ensure(self._links[task.node])
        self._pump()

    # ---------------------------------------------------------------- connections
    def _wanted(self, node: str) -> bool:
        """Whether the link to ``node`` should be open: it has tasks or status waiters."""
        return not self._closed and (bool(self.engine.tasks_on(node))
                                     or bool(self._status_waiters.get(node)))

    def _handshake_failed(self, node: str, code: int, message: str) -> None:
        """The node refused us or we refused it (wrong key, other version): tasks
        that never reached that node fail with the precise error instead of
        waiting out their lease."""
        log.warning("handshake with node %s failed: code %d: %s", node, code, message)
        if code != ERR_VERSION_MISMATCH and code != ERR_AUTH_FAILED:
            return
        self._unreachable(node, error_from_code(code, f"handshake with node {node!r} failed: {message}"))

    def _unreachable(self, node: str, err: BaseException) -> None:
        """``node`` cannot be reached (or refused us): its tasks never written to
        any connection cannot be running anywhere, so they fail with ``err``, as
        do its status waiters."""
        for task in self.engine.give_up_unsent(node):
            h = task.handle
            if h is not None:
                h._settle(None, err, RemoteTaskState.FAILED)
        for fut in self._status_waiters.pop(node, []):
            if not fut.done():
                fut.set_exception(err)

    # ------------------------------------------------------------------ callbacks
    def _on_messages(self, conn: FramedConnection, msgs: list[Any]) -> None:
        self.engine.receive_all(conn.tag, msgs, self.clock.now_ns())
        self._pump()

    def _on_protocol_error(self, conn: FramedConnection, exc: ProtocolError) -> None:
        log.warning("node %s broke the protocol (%s); closing the connection", conn.tag, exc)
        self.engine.protocol_error(conn.tag, exc, self.clock.now_ns())
        self._pump()

    def _pump_turn(self) -> None:
        """The pump the spawns of one loop turn share (``_spawn`` schedules it),
        at the turn's end: what it sends is written now (a connection that
        wrote a frame at once would otherwise hold these for a flush a loop
        turn later), and the connections schedule no flush for it: this is
        the turn's one end-of-turn callback (``hold_until_flush``)."""
        self._pump_due = False
        if not self._closed:
            links = self._links.values()
            for link in links:
                conn = link.conn
                if conn is not None:
                    conn.hold_until_flush()  # flushed below: the sends schedule no flush of their own
            try:
                self._pump()
            finally:  # whatever happened, nothing is left held with no flush to come
                for link in links:
                    conn = link.conn
                    if conn is not None:
                        conn.flush()

    def _pump(self) -> None:
        """Turn the engine's actions into sends and closes, its events into
        settled handles, and re-arm the timer."""
        engine = self.engine
        if engine.actions:
            links = self._links
            for op, node, arg in engine.take_actions():
                link = links.get(node)
                conn = link.conn if link is not None else None
                if conn is None:
                    continue
                if op == _SEND:
                    conn.send(arg)
                elif op == _CLOSE:
                    conn.close()
        if engine.events:
            for ev, task, detail in engine.take_events():
                self._on_event(ev, task, detail)  # a C call when compiled (a bound method is not)
        self._timer.follow(engine.timers)

    def _on_event(self, ev: int, task: OriginTask, detail: Any) -> None:
        if ev == _EV_RESULT:  # the common event first
            handle: RemoteHandle | None = task.handle
            if handle is not None:  # else a superseded attempt or a task given up on
                outcome: tuple = detail  # (kind, payload, execution_time_ns): a C tuple when compiled
                handle._settle(outcome, None, _STATE_OF_KIND[outcome[0]])
            return
        if ev == EV_ACCEPTED:  # (the runtime turns these off: handle.state reads the task)
            return
        if ev == EV_PROTOCOL_ERROR:
            self._protocol_errors += 1
            log.warning("%s", detail)
            handle = task.handle
            if handle is not None:
                if handle._protocol_errors is None:
                    handle._protocol_errors = []
                handle._protocol_errors.append(detail)
            return
        if ev == EV_HANDSHAKE_FAILED:
            self._handshake_failed(*detail)
            return
        if ev == EV_STATUS:
            node, stats = detail
            waiters = self._status_waiters.get(node)
            if waiters:
                fut = waiters.pop(0)
                if not fut.done():
                    fut.set_result(stats)
            return
        if ev == EV_WANT_LINK:
            self._net.ensure(self._links[detail])
            return
        handle = task.handle
        if ev == EV_LEASE_EXPIRED or ev == EV_NODE_RESTARTED:
            # an attempt with no policy: one superseded by a retry, or given up on
            self.engine.forget(task.rtid)
            if handle is not None:
                handle._settle(None, LeaseExpired(f"lease of remote task {task.rtid} on node "
                                                  f"{task.node!r} lapsed"), RemoteTaskState.LEASE_EXPIRED)
            return
        if handle is None:  # a superseded attempt or a task given up on
            if ev == EV_REATTEMPT:
                self.engine.forget(detail.rtid)
            return
        if ev == EV_REJECTED:  # by the node, or at the origin by its catalogue (a third element)
            err = detail[2] if len(detail) > 2 else spawn_rejected(detail[0], detail[1], task.node,
                                                                    task.computation)
            handle._settle(None, err, RemoteTaskState.FAILED)
        elif ev == EV_SETTLE:
            log.info("lease escalation of %r under %s: %s", handle, handle._policy, detail)
            handle._settle(None, LeaseExpired(detail), RemoteTaskState.LEASE_EXPIRED)
        elif ev == EV_REATTEMPT:
            self._supersede(handle, task, detail)

    def _supersede(self, handle: RemoteHandle, old: OriginTask, new: OriginTask) -> None:
        """The engine made ``new`` a new attempt of ``old`` (escalation): move
        the handle to it and open a connection to its node."""
        log.info("lease escalation of %r under %s: a new attempt on node %s", handle,
                 handle._policy, new.node)
        old.handle = None
        if handle._earlier is None:
            handle._earlier = []
        handle._earlier.append((old.node, old.rtid))
        handle._task = new
        new.handle = handle
        self._net.ensure(self._links[new.node])

    def _on_timer(self) -> None:
        self.engine.tick(self.clock.now_ns())
        self._pump()


def spawn_remote(cx: Cx, node: str, computation: str, input: Any = b"", *,
                 lease: float | None = None, budget: Budget | None = None,
                 idempotency_key: IdempotencyKey | None = None,
                 codec: str | None = None, on_lease_expired: LeasePolicy | None = None) -> RemoteHandle:
    """Spawn the named ``computation`` on ``node`` with ``input``; needs a RemoteCap in ``cx``.

    ``input`` as bytes (or RemoteInput) is sent as is and ``join`` returns bytes;
    any other value (or bytes with ``codec="msgpack"``) is packed with msgpack and
    ``join`` returns the unpacked output. Once the node's catalogue is known
    (``rsc.catalogue``), a spawn it refuses raises here, and one made before
    is refused from ``join``, never sent: ``ComputationNotServed`` (an
    ``UnknownComputation``, saying what the node serves) and ``CodecMismatch``
    (an ``InvalidInput``: packed input for a raw-bytes computation, or raw
    bytes for a msgpack one).
    ``lease`` is in seconds (default: the RemoteCap's, 30 s); ``on_lease_expired``
    is the escalation policy (``rsc.lease.fail()`` by default, ``cancel(t)``, ``retry(n, nodes)``).
    The handle belongs to ``cx``'s region, if it has one.
    """
    if not isinstance(cx, Cx):
        raise InvalidArgument(f"spawn_remote needs a Cx as its first argument, got {type(cx).__name__}")
    c = cx  # typed Cx when compiled (remote.pxd): its fields are C reads
    rc = c.remote_cap
    if rc is None:
        raise NoCapability()
    if not isinstance(rc, RemoteCap):
        raise InvalidArgument(f"the Cx's remote_cap must be an rsc.cx.RemoteCap, got {type(rc).__name__}")
    cap = rc  # typed RemoteCap when compiled
    runtime = cap.runtime
    if not isinstance(runtime, Runtime):
        raise InvalidArgument(f"the Cx's RemoteCap holds {type(runtime).__name__}, not an rsc.Runtime")
    rt = runtime  # typed Runtime when compiled (remote.pxd): _spawn is then a C call
    return rt._spawn(c, node, computation, input, lease, budget, idempotency_key, codec,
                     on_lease_expired)
