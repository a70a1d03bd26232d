"""The origin runtime and the remote-spawn API.

``Runtime`` is opened in the user's event loop with a cluster (NodeId ->
address, or the cluster file written by ``rsc launch``). It keeps one
connection per node, opened on first use and re-opened with backoff; after a
reconnect every unacknowledged or unfinished task is re-sent with its original
idempotency key, so a reset connection neither loses nor duplicates work.

``spawn_remote(cx, node, computation, input)`` needs a RemoteCap in ``cx`` and
returns a ``RemoteHandle`` at once; the spawn leaves on the next loop turn.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import secrets
import socket
from collections.abc import Mapping
from typing import Any, Callable

from rsc._core.messages import (ERR_AUTH_FAILED, ERR_VERSION_MISMATCH, HANDSHAKE_MAX_FRAME_BYTES,
                                REJECT_INVALID_INPUT, WELCOME)
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
from rsc.clock import SystemClock
from rsc.cx import Cx, RemoteCap
from rsc._engine.escalation import EscState
from rsc._engine.states import OriginState
from rsc.lease import ACTIVE, DEFAULT_POLICY, EXPIRED, RELEASED, Lease, LeasePolicy
from rsc.errors import (
    InvalidArgument,
    InvalidInput,
    LeaseExpired,
    NoCapability,
    NodeUnreachable,
    ProtocolError,
    RemoteProtocolError,
    RuntimeClosed,
    error_from_code,
    spawn_rejected,
)
from rsc.transport.address import Address
from rsc.transport.base import Transport
from rsc.transport.connection import FramedConnection
from rsc.transport.timer import EngineTimer
from rsc.types import (
    Budget,
    CancelKind,
    CancelReason,
    ComputationName,
    IdempotencyKey,
    NodeId,
    OutcomeKind,
    RemoteInput,
    RemoteOutcome,
    RemoteTaskId,
    RemoteTaskState,
    unpack_value,
)

log = logging.getLogger("rsc.origin")

MS = 1_000_000
_INFINITE: Budget = Budget.INFINITE  # type: ignore[attr-defined]
MAX_LEASE_MS = (1 << 32) - 1


def load_cluster(cluster: Mapping[str, str] | str | os.PathLike) -> dict[NodeId, Address]:
    """NodeId -> Address from a mapping or a cluster file (read by
    ``rsc.cluster_file.read_cluster_file``, whose ``InvalidClusterFile`` it raises)."""
    if isinstance(cluster, (str, os.PathLike)) and not isinstance(cluster, Mapping):
        from rsc.cluster_file import read_cluster_file

        cluster = {name: entry["address"] for name, entry in read_cluster_file(cluster).items()}
    if not isinstance(cluster, Mapping) or not cluster:
        raise InvalidArgument("a cluster is a non-empty mapping NodeId -> 'unix:PATH' or a cluster file path")
    return {NodeId(k): Address.parse(v) for k, v in cluster.items()}


class RemoteHandle:
    """A remote task owned by the region of the Cx that spawned it.

    At most one outcome is ever delivered to a handle.
    """

    __slots__ = ("_rt", "_task", "_done", "_outcome", "_error", "_codec", "_state", "_owner_region",
                 "_lease_s", "_policy", "_observed", "_region",
                 "_holder", "_earlier", "_waiters", "_protocol_errors", "__weakref__")

    def __init__(self, rt: Runtime, task: OriginTask, codec: str | None, owner_region: int,
                 lease_s: float, policy: LeasePolicy, region: Any, holder: int) -> None:
        self._rt = rt
        self._task = task
        # The one outcome: settled once (_done), with the node's outcome as it
        # came off the wire, a (kind, payload, execution_time_ns) triple, or the
        # error that stands for it. No asyncio Future per handle: only a join
        # that has to wait makes one (_wait). No RemoteOutcome either: join
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
        return RemoteTaskId(self._task.rtid)

    @property
    def node(self) -> NodeId:
        return NodeId(self._task.node)

    @property
    def computation(self) -> ComputationName:
        return ComputationName(self._task.computation)

    @property
    def owner_region(self) -> int:
        return self._owner_region

    @property
    def lease(self) -> Lease:
        """This task's lease now: active (with its expiry), released or expired."""
        if self.state is RemoteTaskState.LEASE_EXPIRED:
            state, at = EXPIRED, None
        elif self._done:
            state, at = RELEASED, None
        else:
            state, at = ACTIVE, self._rt.engine.lease_deadline(self._task.rtid)
        return Lease(self._lease_s, state, at, self._owner_region, self._holder)

    @property
    def attempts(self) -> list[tuple[str, int]]:
        """Every (node, remote task id) this handle was spawned as, oldest first."""
        return [*(self._earlier or ()), (self._task.node, self._task.rtid)]

    @property
    def policy(self) -> LeasePolicy:
        return self._policy

    @property
    def idempotency_key(self) -> IdempotencyKey:
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
        return self._done

    # -- outcome -------------------------------------------------------------------
    def _settle(self, outcome: tuple[int, Any, int] | None, error: BaseException | None,
                state: RemoteTaskState) -> bool:
        if self._done:
            return False
        self._done = True
        self._state = state
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
        self._rt._handles.pop(self._task.rtid, None)  # the runtime no longer tracks it
        # Break the handle <-> task cycle: a late message for the task finds no
        # handle (and is dropped, as for a superseded attempt), and a handle the
        # caller lets go of is freed at once by its reference count instead of
        # waiting, with its task record, for the cycle collector.
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
        return RemoteOutcome.from_wire(kind, payload, exec_ns)

    def _value(self) -> Any:
        """The output of the settled, observed handle, or the matching error raised."""
        outcome = self._outcome
        if outcome[0] != _SUCCESS:  # type: ignore[index]
            raise self._outcome_obj().error()
        data = outcome[1]  # type: ignore[index]
        return data if self._codec is None else unpack_value(data)

    def _waiter(self) -> asyncio.Future[None]:
        """A future that _settle completes (the handle must not be settled yet)."""
        waiter = self._rt._loop.create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        return waiter

    async def _wait(self) -> None:
        """Wait until the handle is settled. A cancelled wait must not cancel
        the handle: it waits on a fresh future that _settle completes directly
        (asyncio.shield's idea without its done-callback, which would cost a
        loop turn before the wake-up)."""
        waiter = self._waiter()
        try:
            await waiter
        finally:
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
            await self._wait()
        self._take()
        return self._outcome_obj()

    async def join(self, cx: Cx | None = None) -> Any:
        """Wait for the task; its output (bytes, or the value with codec msgpack),
        or raise RemoteFailed / RemoteCancelled / RemotePanicked / SpawnRejected /
        LeaseExpired / NodeUnreachable."""
        if not self._done:
            await self._wait()
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


# Enum members read on every task, as module globals (see rsc/_engine/node.py)
_PENDING, _RUNNING = RemoteTaskState.PENDING, RemoteTaskState.RUNNING
_LEASE_EXPIRED = OriginState.LEASE_EXPIRED

_KEYS_AT_ONCE = 256  # idempotency keys drawn from the runtime's PRNG per call
_SUCCESS = int(OutcomeKind.SUCCESS)
_STATE_OF_KIND = (  # indexed by the wire's outcome kind
    RemoteTaskState.COMPLETED,  # success
    RemoteTaskState.FAILED,  # failed
    RemoteTaskState.CANCELLED,  # cancelled
    RemoteTaskState.FAILED,  # panicked
)


class _NodeLink:
    """Connection management for one node: connect, reconnect with backoff."""

    __slots__ = ("node", "address", "conn", "connector", "failed_since")

    def __init__(self, node: NodeId, address: Address) -> None:
        self.node = node
        self.address = address
        self.conn: FramedConnection | None = None
        self.connector: asyncio.Task[None] | None = None
        self.failed_since: float | None = None


class Runtime:
    """The origin side of rsc in one event loop (the seed's RemoteRuntime)."""

    def __init__(self, cluster: Mapping[str, str] | str | os.PathLike, *, name: str | None = None,
                 key: bytes | None = None, default_lease_s: float = 30.0,
                 connect_timeout_s: float = 5.0, backoff_max_s: float = 2.0,
                 trace: Callable[[str, dict], None] | None = None,
                 transport: Transport | None = None) -> None:
        """``transport``: how connections to the nodes are opened (a
        ``rsc.transport.base.Transport``, e.g. ``MemoryTransport`` in a unit
        test); None dials ``unix:`` addresses as Unix sockets and ``tcp:`` as
        plain TCP."""
        if transport is not None and not isinstance(transport, Transport):
            raise InvalidArgument(f"transport must have connect() and listen() coroutines "
                                  f"(rsc.transport.base.Transport), got {type(transport).__name__}")
        self.transport = transport
        self.cluster = load_cluster(cluster)
        self.name = NodeId(name or f"origin-{socket.gethostname()[:64]}-{os.getpid()}-{secrets.token_hex(3)}")
        self.key = key
        self.default_lease_s = default_lease_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_max_s = backoff_max_s
        self.clock = SystemClock()
        self.trace = trace
        self.engine = OriginEngine(self.name, key=key, entropy=secrets.token_bytes, trace=trace)
        self._ids = itertools.count(1)  # remote task ids: never reused in this runtime
        self.engine.new_rtid = self._ids.__next__  # for the attempts escalation makes
        self._key_rng = random.Random(os.urandom(32))
        self._key_buf = b""  # _KEYS_AT_ONCE fresh keys, handed out 16 bytes at a time
        self._key_pos = 0
        self._names: dict[str, ComputationName] = {}
        self._links = {n: _NodeLink(n, a) for n, a in self.cluster.items()}
        self._handles: dict[int, RemoteHandle] = {}
        self._status_waiters: dict[str, list[asyncio.Future[dict]]] = {}
        # retries sent back to their node under same_node_within_s: attempt's
        # rtid -> the node to move to if that node does not accept it in time
        self._protocol_errors = 0  # EV_PROTOCOL_ERROR events seen (stats())
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._timer: EngineTimer = None  # type: ignore[assignment]  # made in attach()
        self._closed = False

    # ----------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def start(self) -> None:
        self.attach()

    def attach(self) -> None:
        """Bind to the running event loop (what ``start`` does, callable from sync code on the loop)."""
        self._loop = asyncio.get_running_loop()
        self._timer = EngineTimer(self._loop, self.clock, self._on_timer)

    async def aclose(self, cancel_timeout_s: float = 5.0) -> None:
        """Cancel every live task (waiting up to the timeout for their outcomes) and close."""
        if self._closed:
            return
        live = [h for h in self._handles.values() if not h.is_finished()]
        for h in live:
            h.abort(CancelReason(CancelKind.SHUTDOWN, "origin runtime closing"))
        waiters = [h._waiter() for h in live if not h._done]  # an abort may settle one at once
        if waiters:
            await asyncio.wait(waiters, timeout=cancel_timeout_s)
        self._closed = True
        for h in list(self._handles.values()):
            h._settle(None, RuntimeClosed(f"runtime closed before the outcome of {h!r} arrived"),
                      RemoteTaskState.FAILED)
        for link in self._links.values():
            if link.connector is not None:
                link.connector.cancel()
            if link.conn is not None:
                link.conn.close()
        for link in self._links.values():
            if link.connector is not None:
                try:
                    await link.connector
                except asyncio.CancelledError:
                    pass
                link.connector = None
        if self._timer is not None:
            self._timer.cancel()

    def cx(self, *, budget: Budget | None = None, default_lease_s: float | None = None,
           seed: int | None = None) -> Cx:
        """A root Cx holding a RemoteCap for this runtime."""
        cap = RemoteCap(self, default_lease_s=default_lease_s or self.default_lease_s)
        return Cx(remote_cap=cap, budget=budget, seed=seed, trace=self.trace)

    # ---------------------------------------------------------------- inspection
    @property
    def live_handles(self) -> int:
        return len(self._handles)

    def stats(self) -> dict[str, int]:
        """The runtime's figures: ``debug_counts()`` plus ``protocol_errors``, the
        messages from nodes that did not fit their task's state and were
        dropped since the runtime started (see ``RemoteHandle.protocol_errors``)."""
        return dict(self.debug_counts(), protocol_errors=self._protocol_errors)

    def debug_counts(self) -> dict[str, int]:
        """Live handles, engine tasks and leases: all zero when nothing is in flight."""
        return dict(handles=len(self._handles), tasks=self.engine.live_tasks,
                    leases=self.engine.lease_count)

    async def status(self, node: str, timeout_s: float = 5.0) -> dict:
        """STATUS_REQUEST to ``node``; its stats map."""
        from rsc._core.messages import StatusRequest

        link = self._link(node)
        fut: asyncio.Future[dict] = self._loop.create_future()
        self._status_waiters.setdefault(link.node, []).append(fut)
        self._ensure_connector(link)
        deadline = self._loop.time() + timeout_s
        while not self.engine.is_ready(link.node):
            if self._loop.time() > deadline:
                raise NodeUnreachable(link.node, "no handshake within the timeout")
            await asyncio.sleep(0.01)
        link.conn.send(StatusRequest(self.name, self.engine.clock.send()))  # type: ignore[union-attr]
        return await asyncio.wait_for(fut, max(0.0, deadline - self._loop.time()))

    # -------------------------------------------------------------------- spawn
    def _link(self, node: str) -> _NodeLink:
        link = self._links.get(node)  # type: ignore[call-overload]
        if link is None:
            raise InvalidArgument(f"node {node!r} is not in this runtime's cluster; known: "
                                  f"{', '.join(sorted(self._links))}")
        return link

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
        link = self._link(node)
        # validated names, kept here too: calling ComputationName (cached as it
        # is) costs a Python call per spawn
        name = self._names.get(computation) if type(computation) is str else None
        if name is None:
            name = ComputationName(computation)
            if len(self._names) < 1024:
                self._names[computation] = name
        if codec not in (None, "msgpack"):
            raise InvalidArgument(f"codec must be None or 'msgpack', got {codec!r}")
        if isinstance(input, (bytes, bytearray, memoryview)) and codec is None:
            data = bytes(input)  # the same object for bytes
        elif isinstance(input, RemoteInput):
            data = input.data
        else:
            codec = "msgpack"
            data = RemoteInput.pack(input).data
        limit = self.engine.input_limit(link.node)
        if len(data) > limit:  # it could never reach the node: refuse it now, not by a lapse
            raise InvalidInput(REJECT_INVALID_INPUT, input_too_large(len(data), link.node, limit),
                               link.node, name)
        cap = cx.remote_cap
        if cap is None:
            raise NoCapability()
        lease_s = cap.default_lease_s if lease is None else lease
        if isinstance(lease_s, bool) or not isinstance(lease_s, (int, float)) or not 0 < lease_s * 1000 <= MAX_LEASE_MS:
            raise InvalidArgument(f"lease must be a positive number of seconds, got {lease_s!r}")
        lease_ms = max(1, int(lease_s * 1000))
        eff = cx.budget
        if cap.budget is not None:  # type: ignore[union-attr]
            eff = eff.meet(cap.budget)  # type: ignore[union-attr]
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
            key_bytes = self._key_buf[pos:pos + 16]
            self._key_pos = pos + 16
        elif isinstance(idempotency_key, IdempotencyKey):
            key_bytes = idempotency_key.to_bytes()
        else:
            raise InvalidArgument(f"idempotency_key must be an IdempotencyKey, got "
                                  f"{type(idempotency_key).__name__}")
        task = OriginTask(next(self._ids), link.node, name, data, lease_ms, key_bytes,
                          wire_budget, eff.deadline_ns, cx.region_id, cx.task_id,
                          cap.token, None)  # type: ignore[union-attr]
        policy = on_lease_expired or DEFAULT_POLICY
        if not isinstance(policy, LeasePolicy):
            raise InvalidArgument("on_lease_expired must be rsc.lease.fail(), cancel(...) or retry(...)")
        for n in policy.nodes:
            self._link(n)
        region = cx.region
        handle = RemoteHandle(self, task, codec, task.region, lease_ms / 1000, policy, region,
                              task.task)
        task.handle = handle
        task.policy = policy  # the engine escalates a lapse (rsc._engine.escalation)
        self._handles[task.rtid] = handle
        self.engine.spawn(task, now)
        self._ensure_connector(link)
        if region is not None:
            region.adopt(handle)
        self._pump()
        return handle

    def _cancel(self, task: OriginTask, reason: CancelReason) -> None:
        if self.engine.cancel(task.rtid, reason.to_wire(), self.clock.now_ns()):
            self._ensure_connector(self._links[task.node])
        self._pump()

    # ---------------------------------------------------------------- connections
    def _ensure_connector(self, link: _NodeLink) -> None:
        if link.connector is None or link.connector.done():
            link.connector = self._loop.create_task(self._connect_loop(link))

    def _wanted(self, link: _NodeLink) -> bool:
        return not self._closed and (bool(self.engine.tasks_on(link.node))
                                     or bool(self._status_waiters.get(link.node)))

    async def _connect_loop(self, link: _NodeLink) -> None:
        backoff = 0.02
        while self._wanted(link):
            try:
                conn = await self._connect(link)
            except OSError as exc:
                self._connect_failed(link, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            link.failed_since = None
            backoff = 0.02
            assert conn.closed is not None
            await conn.closed
            link.conn = None
            self.engine.link_down(link.node, self.clock.now_ns())
            self._pump()

    async def _connect(self, link: _NodeLink) -> FramedConnection:
        factory = lambda: FramedConnection(  # noqa: E731
            on_messages=self._on_messages, on_protocol_error=self._on_protocol_error,
            on_close=self._on_close, handshake_max_frame_bytes=HANDSHAKE_MAX_FRAME_BYTES,
            handshake_last_kind=WELCOME)  # a node's frames before WELCOME are small too
        addr = link.address
        if self.transport is not None:
            conn = await asyncio.wait_for(self.transport.connect(addr, factory), self.connect_timeout_s)
        elif addr.scheme == "unix":
            _t, conn = await asyncio.wait_for(self._loop.create_unix_connection(factory, addr.path),
                                              self.connect_timeout_s)
        else:
            _t, conn = await asyncio.wait_for(self._loop.create_connection(factory, addr.host, addr.port),
                                              self.connect_timeout_s)
        conn.tag = link.node
        link.conn = conn
        self.engine.link_up(link.node, self.clock.now_ns())
        self._pump()
        return conn

    def _handshake_failed(self, node: str, code: int, message: str) -> None:
        """The node refused us or we refused it (wrong key, other version): tasks
        that never reached that node fail with the precise error instead of
        waiting out their lease."""
        link = self._links[node]  # type: ignore[index]
        log.warning("handshake with node %s failed: code %d: %s", node, code, message)
        if code != ERR_VERSION_MISMATCH and code != ERR_AUTH_FAILED:
            return
        err = error_from_code(code, f"handshake with node {node!r} failed: {message}")
        self._fail_unsent(link, err)
        for fut in self._status_waiters.pop(link.node, []):
            if not fut.done():
                fut.set_exception(err)

    def _fail_unsent(self, link: _NodeLink, err: BaseException) -> None:
        for task in self.engine.tasks_on(link.node):
            if not task.sent:  # cannot be running anywhere
                self.engine.forget(task.rtid)
                h = self._handles.get(task.rtid)
                if h is not None:
                    h._settle(None, err, RemoteTaskState.FAILED)

    def _connect_failed(self, link: _NodeLink, exc: BaseException) -> None:
        now = self._loop.time()
        if link.failed_since is None:
            link.failed_since = now
            log.debug("cannot reach node %s at %s: %s", link.node, link.address, exc)
        if now - link.failed_since < self.connect_timeout_s:
            return
        # Tasks never written to any connection cannot be running anywhere: fail them.
        self._fail_unsent(link, NodeUnreachable(link.node, f"{link.address}: {exc}"))
        for fut in self._status_waiters.pop(link.node, []):
            if not fut.done():
                fut.set_exception(NodeUnreachable(link.node, f"{link.address}: {exc}"))

    # ------------------------------------------------------------------ callbacks
    def _on_messages(self, conn: FramedConnection, msgs: list[Any]) -> None:
        engine, now, node = self.engine, self.clock.now_ns(), conn.tag
        for msg in msgs:
            engine.receive(node, msg, now)  # a C call when compiled (a bound method is not)
        self._pump()

    def _on_protocol_error(self, conn: FramedConnection, exc: ProtocolError) -> None:
        self.engine.protocol_error(conn.tag, exc, self.clock.now_ns())
        self._pump()

    def _on_close(self, conn: FramedConnection, exc: Exception | None) -> None:
        pass  # the connect loop notices conn.closed

    def _pump(self) -> None:
        engine = self.engine
        if engine.actions:
            links = self._links
            for op, node, arg in engine.take_actions():
                link = links.get(node)
                conn = link.conn if link is not None else None
                if conn is None:
                    continue
                if op == SEND:
                    conn.send(arg)
                elif op == CLOSE:
                    conn.close()
        if engine.events:
            for ev, task, detail in engine.take_events():
                self._on_event(ev, task, detail)  # a C call when compiled (a bound method is not)
        self._timer.follow(engine)

    def _on_event(self, ev: int, task: OriginTask, detail: Any) -> None:
        if ev == EV_RESULT or ev == EV_ACCEPTED:  # the common events first
            handle: RemoteHandle | None = task.handle
            if handle is None:  # a superseded attempt or a task given up on
                return
            if ev == EV_RESULT:
                handle._settle(detail, None, _STATE_OF_KIND[detail[0]])
            return  # an accept shows in handle.state (the engine's task state)
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
            self._ensure_connector(self._links[detail])
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
        if ev == EV_REJECTED:
            code, detail_s = detail
            handle._settle(None, spawn_rejected(code, detail_s, task.node, task.computation),
                           RemoteTaskState.FAILED)
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
        self._handles.pop(old.rtid, None)
        if handle._earlier is None:
            handle._earlier = []
        handle._earlier.append((old.node, old.rtid))
        handle._task = new
        new.handle = handle
        self._handles[new.rtid] = handle
        self._ensure_connector(self._links[new.node])

    def _on_timer(self) -> None:
        self.engine.tick(self.clock.now_ns())
        self._pump()


def spawn_remote(cx: Cx, node: str, computation: str, input: Any = b"", *,
                 lease: float | None = None, budget: Budget | None = None,
                 idempotency_key: IdempotencyKey | None = None,
                 codec: str | None = None, on_lease_expired: LeasePolicy | None = None) -> RemoteHandle:
    """Spawn the named ``computation`` on ``node`` with ``input``; needs a RemoteCap in ``cx``.

    ``input`` as bytes (or RemoteInput) is sent as is and ``join`` returns bytes;
    any other value is packed with msgpack and ``join`` returns the unpacked output.
    ``lease`` is in seconds (default: the RemoteCap's, 30 s); ``on_lease_expired``
    is the escalation policy (``rsc.lease.fail()`` by default, ``cancel(t)``, ``retry(n, nodes)``).
    The handle belongs to ``cx``'s region, if it has one.
    """
    if not isinstance(cx, Cx):
        raise InvalidArgument(f"spawn_remote needs a Cx as its first argument, got {type(cx).__name__}")
    cap = cx.remote_cap
    if cap is None:
        raise NoCapability()
    runtime = cap.runtime
    if not isinstance(runtime, Runtime):
        raise InvalidArgument(f"the Cx's RemoteCap holds {type(runtime).__name__}, not an rsc.Runtime")
    rt = runtime  # typed Runtime when compiled (remote.pxd): _spawn is then a C call
    return rt._spawn(cx, node, computation, input, lease, budget, idempotency_key, codec,
                     on_lease_expired)
