"""The node side of the protocol as a sans-I/O engine.

Feed it connection events, decoded messages and clock readings (ns); it queues
actions for its driver in ``self.actions``:

- ``(SEND, conn, message)``   write the message on that connection
- ``(CLOSE, conn, None)``     flush what was queued for it, then close it
- ``(START, task, None)``     run ``task.computation`` on ``task.input``
- ``(CANCEL, task, reason)``  ask the running task to stop (a CancelReason wire tuple)

and keeps every deadline it has in ``self.timers`` (a ``Deadlines``: origin
silence checks, budget deadlines, renewal groups, and the idempotency table's
expiries), which the driver's timer follows; at or after
``timers.next_deadline()`` the driver calls ``tick(now)``. When a started task ends the driver calls
``task_finished``. Every change of a task's state goes through ``process``,
which follows ``states.NODE_TRANSITIONS``; spawn admission is the ordered list
``ADMISSION_RULES``.

Rules this engine keeps (PROTOCOL.md section 4, "Rules a node keeps"):
every SPAWN_REQUEST gets exactly one SPAWN_ACK, or, on a connection that
negotiated ``ack_by_result``, a task that ends before its ACK is written gets
its RESULT_DELIVERY alone, standing for the ACK (``flush_acks``); a result is
computed once and sent once on each live connection of its origin, or held until that origin's
next handshake; duplicates (same key and fingerprint) are never run again and
become aliases while the first runs; a cancel for an unseen task leaves a
tombstone; running tasks' leases are renewed in batches every third of the
lease; a task whose origin is silent past its lease is cancelled
(lease_expired) and its result kept for the TTL. A tick evicts a bounded
number of expired records. With a journal
(``restore``), admissions, outcomes and tombstones are also handed to it, and
the driver makes them durable before anything they stand for leaves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

from rsc._core import USING_EXTENSIONS
from rsc._core import idemtable as _idem
from rsc._core.schema import SPAWN_REQUEST, SpawnRequestF, expect_fields
from rsc._core.messages import (
    ACK_BY_RESULT_FEATURE,
    VALUE_SEGMENTS_FEATURE,
    DRAWN_KEYS_FEATURE,
    CANCEL_KIND_DEADLINE,
    CANCEL_KIND_LEASE_EXPIRED,
    CANCEL_KIND_SHUTDOWN,
    CANCEL_KIND_USER,
    ACK_ACCEPTED,
    ACK_REJECTED,
    DEFAULT_MAX_FRAME_BYTES,
    ERR_SHUTTING_DOWN,
    FRAME_OVERHEAD_BYTES,
    MAX_FAILURE_MESSAGE_CHARS,
    OUTCOME_CANCELLED,
    OUTCOME_FAILED,
    OUTCOME_SUCCESS,
    REJECT_CAPABILITY_DENIED,
    REJECT_CAPACITY_EXCEEDED,
    REJECT_IDEMPOTENCY_CONFLICT,
    REJECT_INVALID_INPUT,
    REJECT_NODE_SHUTTING_DOWN,
    REJECT_UNKNOWN_COMPUTATION,
    Auth,
    CancelRequest,
    Error,
    Hello,
    LeaseRenewalBatch,
    LeaseRenewalDigest,
    LeaseResyncRequest,
    Message,
    Ping,
    Pong,
    SpawnRequest,
    StatusReply,
    StatusRequest,
    offers_ack_by_result,
    offers_value_segments,
)
from rsc._engine.deadlines import Deadlines
from rsc._engine.handshake import NodeHandshake
from rsc._engine.logical import LamportClock
from rsc._engine.renewal import FEATURE as RENEWAL_FEATURE
from rsc._engine.renewal import VERSION as RENEWAL_VERSION
from rsc._engine.renewal import RenewalGroup, offers_digests
from rsc._engine import trace_names as TN
from rsc._engine.states import NODE_TRANSITIONS, NodeEvent, NodeState, node_after
from rsc.errors import ProtocolError, ResultNotKept, ResultTooLarge, UnexpectedMessage
from rsc.value_codec import Segmented

SEND, CLOSE, START, CANCEL = 0, 1, 2, 3
# SPAWN_REQUEST's fields by name, as indices into ``envelope.fields(msg)``
# (rsc._core.schema): node.pxd types them as C integers, so ``f[_LEASE_MS]``
# compiles to the same C as ``f[3]``.
_RTID = SpawnRequestF.remote_task_id
_COMPUTATION = SpawnRequestF.computation
_INPUT = SpawnRequestF.input
_LEASE_MS = SpawnRequestF.lease_ms
_KEY = SpawnRequestF.idempotency_key
_ORIGIN_NODE = SpawnRequestF.origin_node
_CAPABILITY = SpawnRequestF.capability
_DRAWN = SpawnRequestF.drawn
_SEGMENTS = SpawnRequestF.segments
# The one site that unpacks every field by position checks the order at import.
_SPAWN_FIELDS = expect_fields(SPAWN_REQUEST, "remote_task_id", "computation", "input", "lease_ms",
                              "idempotency_key", "budget", "origin_node", "origin_region",
                              "origin_task", "capability", "drawn", "segments")

# The node table as one tuple per event, each indexed by state (what
# NodeEngine.process reads), and the events and states as plain ints: no Enum
# class attribute read (EnumType.__getattr__ costs about 850 instructions on
# 3.11) on a per-task path.
_AFTER: tuple[tuple[NodeState | None, ...], ...] = tuple(node_after(e) for e in NodeEvent)
_INIT = NodeState.INIT
# The state a received spawn is in while the admission rules decide it:
# INIT --RECV_SPAWN--> SPAWN_RECEIVED, read from the table once.
_RECEIVED = NODE_TRANSITIONS[NodeState.INIT, NodeEvent.RECV_SPAWN]
_COMPLETED = NodeState.COMPLETED
_TOMBSTONED = NodeState.TOMBSTONED
E_RECV_SPAWN = int(NodeEvent.RECV_SPAWN)
E_SEND_ACK_ACCEPTED = int(NodeEvent.SEND_ACK_ACCEPTED)
E_SEND_ACK_REJECTED = int(NodeEvent.SEND_ACK_REJECTED)
E_RECV_CANCEL = int(NodeEvent.RECV_CANCEL)
E_SEND_RESULT = int(NodeEvent.SEND_RESULT)
E_ORIGIN_SILENT = int(NodeEvent.ORIGIN_SILENT)
E_RECV_DUPLICATE_SPAWN = int(NodeEvent.RECV_DUPLICATE_SPAWN)

# The codec's builders of the two messages every task sends (the same objects as
# SpawnAck(...) and ResultDelivery(...), without a Python __init__ call each),
# its fields() (a message's fields as a tuple, in one call) and sender_time(),
# from the codec rsc._core.envelope is: the compiled build of this module
# cimports them from the compiled codec and calls them as C (node.pxd).
if USING_EXTENSIONS:
    from rsc._core._envelope import fields as _fields, sender_time as _sender_time
    from rsc._core._envelope import result_delivery as _result_delivery
    from rsc._core._envelope import spawn_ack as _spawn_ack
else:
    from rsc._core._envelope_py import fields as _fields, sender_time as _sender_time
    from rsc._core._envelope_py import result_delivery as _result_delivery
    from rsc._core._envelope_py import spawn_ack as _spawn_ack
# Module attributes bound once: `_idem.fingerprint` in a hot path would be an
# attribute lookup on the module every call, a global is a cached read.
_spawn_fingerprint = _idem.spawn_fingerprint
_spawn_matches = _idem.spawn_matches


def with_segments(f: tuple) -> tuple:
    """SPAWN_REQUEST fields ``f`` whose ``segments`` are set, with the input
    and its segments as one ``Segmented`` in the input's place: what the
    admission rules, the executor and the registry take as the input."""
    return f[:_INPUT] + (_Segmented(f[_INPUT], f[_SEGMENTS]),) + f[_INPUT + 1:]


def fingerprinted(data: Any, drawn: Any = False) -> Any:
    """What an input is fingerprinted as: the bytes themselves, or for a
    ``Segmented`` one its ``fingerprint_parts()``, the plain MessagePack it
    stands for (so the same value fingerprints alike with segments or
    without; the parts are hashed without a joined copy). For a spawn
    recorded under a key its origin ``drawn``, whose fingerprint hashes
    nothing (``spawn_fingerprint``), a segmented input is not walked for its
    parts: ``b""`` stands in. The one place this rule is kept: every
    fingerprint the node makes or checks goes through it (checks through
    :func:`input_matches`)."""
    if type(data) is not _Segmented:
        return data
    return b"" if drawn is True else data.fingerprint_parts()


def input_matches(rec: Any, origin: str, f: tuple) -> bool:
    """Whether a spawn from ``origin`` (its ``envelope.fields`` ``f``, the
    input ``with_segments``) is the request the idempotency record ``rec``
    stands for (``spawn_matches`` of its ``fingerprinted`` input).

    A segmented input that does not match is checked once more in the
    framed form (``Segmented.framed_fingerprint_parts``), which rsc
    fingerprinted segmented inputs as before they fingerprinted as their
    plain form: a record written then (in a journal, or a table of a node
    that kept running) still recognises its request. Only a mismatch pays
    for it; no MessagePack value's bytes are in the framed form, so it
    adds no match between different values."""
    data = f[_INPUT]
    if _spawn_matches(rec.fingerprint, rec.origin, origin, f[_DRAWN], f[_COMPUTATION],
                      fingerprinted(data)):
        return True
    return type(data) is _Segmented and _spawn_matches(
        rec.fingerprint, rec.origin, origin, f[_DRAWN], f[_COMPUTATION], data.framed_fingerprint_parts())


MIN_LEASE_MS = 100
MAX_LEASE_MS = (1 << 32) - 1  # ~49.7 days; longer leases cannot be tracked as deadlines
MAX_DEADLINE_MS = 1 << 40  # ~35 years: a deadline further out than this is no deadline
KEY_BYTES = 16
MS = 1_000_000
# The kinds of deadline in the engine's timers: keyed by task serial (T_BUDGET:
# its budget deadline) or by renewal group id (T_SILENCE: when to check the
# silence of that group's origin; T_RENEW: when the group's next
# LEASE_RENEWAL_BATCH is due)
T_SILENCE, T_BUDGET, T_RENEW = 0, 1, 2

CANCEL_LEASE_EXPIRED = (CANCEL_KIND_LEASE_EXPIRED, "origin silent for longer than the task's lease")
CANCEL_DEADLINE = (CANCEL_KIND_DEADLINE, "budget deadline passed")
CANCEL_SHUTDOWN = (CANCEL_KIND_SHUTDOWN, "node shutting down")
# What a task that was running when its node died is answered with after the
# node restarts on its journal: it may have had effects, so it is not run again
# (at most once); "cancelled" because the node stopped it, not the computation.
# The bytes of finished results a node keeps for duplicates, by default (four
# results of the largest size one frame carries); past it the oldest are dropped.
DEFAULT_MAX_KEPT_RESULT_BYTES = 256 * 1024 * 1024
RESTARTED_OUTCOME = (OUTCOME_CANCELLED, (CANCEL_KIND_SHUTDOWN, "node restarted while it ran"), 0)
TOMBSTONE_REASON = (CANCEL_KIND_USER, "cancelled before it was spawned")  # a tombstone laid without one
# Idempotency records evicted per tick at most: a pile-up that came due at once
# (a burst finished together, a long stall) is spread over several loop turns,
# each a short one, instead of freezing the loop while it is walked.
EVICT_PER_TICK = 4096
# The constants a task's path reads, as private copies that node.pxd types as C
# values: a module global is a dict lookup (about 150 instructions) per read,
# a C global none; the public names above stay for other modules.
_MS, _MIN_LEASE_MS, _MAX_DEADLINE_MS = MS, MIN_LEASE_MS, MAX_DEADLINE_MS
_KEY_BYTES, _T_SILENCE, _T_BUDGET, _T_RENEW = KEY_BYTES, T_SILENCE, T_BUDGET, T_RENEW
_E_SEND_ACK_ACCEPTED, _E_SEND_RESULT = E_SEND_ACK_ACCEPTED, E_SEND_RESULT
_OUTCOME_SUCCESS, _OUTCOME_CANCELLED = OUTCOME_SUCCESS, OUTCOME_CANCELLED
_MAX_FAILURE_MESSAGE_CHARS = MAX_FAILURE_MESSAGE_CHARS
_SEND, _START = SEND, START
# held as Python ints (C object globals): compared with a field decoded from
# the wire, which may be any size, a C integer would be boxed for every compare
_MAX_LEASE = MAX_LEASE_MS
# the message class every spawn is tested against (a C global, not a module-dict read)
_SpawnRequest = SpawnRequest
_Segmented = Segmented  # a C global in the compiled build (node.pxd): one pointer compare

# What an admission rule decides (the first element of its verdict).
VERDICT_REJECT, VERDICT_DUPLICATE, VERDICT_TOMBSTONED = 0, 1, 2
_TOMBSTONED_VERDICT = (VERDICT_TOMBSTONED,)


def kept_result_bytes(outcome: tuple) -> int:
    """What keeping the finished ``outcome`` counts against a node's kept-result
    budget (``max_kept_result_bytes``): the length of its output or message; a
    cancel's reason counts nothing. The journal's replay applies the same rule
    (compiled, the engine calls it as C, once per finished task)."""
    return 0 if outcome[0] == _OUTCOME_CANCELLED else len(outcome[1])


class Admission:
    """What the engine asks of the node's registry (kept abstract so the engine
    stays free of user code and I/O). Subclass it: compiled, its two methods
    are C calls from the engine (a Python subclass's overrides are called too)."""

    def find(self, computation: str) -> Any:  # pragma: no cover - interface
        """The computation registered under that name (opaque to the engine,
        handed to the driver as ``NodeTask.comp``), or None."""
        raise NotImplementedError

    def check(self, comp: Any, data: bytes) -> str | None:  # pragma: no cover
        """A reason ``data`` is unusable as ``comp``'s input, or None."""
        raise NotImplementedError

    def ends_at_once(self, comp: Any) -> bool:
        """Whether a task of ``comp`` may end in the driver's step that
        starts it (then, on a connection with ``ack_by_result``, its ACK is
        held to the end of that step, and its RESULT may stand for it). True
        here; a registry that knows better says False for computations that
        never do (a thread or a worker process runs them), whose ACK is then
        written at once."""
        return True


class TaskRecord:
    """The state of one ``(origin, task id)`` on this node, as ``NodeEngine.process``
    moves it (``states.NODE_TRANSITIONS``).

    An admitted task is a ``NodeTask`` (a subclass). The states no task object
    lives through are held here for the length of the step that passes them:
    a rejected spawn (SPAWN_RECEIVED -> REJECTED: nothing is kept, so a later
    SPAWN with that task id starts again from INIT), a cancel that lays or
    renews a tombstone (the idempotency table's tombstone holds TOMBSTONED
    between steps), a spawn answered from a tombstone, and a finished record
    answering a duplicate or a cancel (the table's finished record holds
    COMPLETED). ``NodeEngine.state_of`` reads the state back from what holds it.
    """

    __slots__ = ("origin", "rtid", "state")

    def __init__(self, origin: str, rtid: int, state: NodeState) -> None:
        self.origin = origin
        self.rtid = rtid
        self.state = state

    def __repr__(self) -> str:
        return f"TaskRecord({self.origin}/{self.rtid} {NodeState(self.state).name})"


class NodeTask(TaskRecord):
    """One admitted task on this node (the owner of an idempotency record).

    It is also the executor's record of the running computation
    (``rsc.node.executor``): one object per task for both, so the fields
    from ``cx`` on belong to the executor, which fills them when the driver
    starts the task (``input`` is dropped once the computation has it)."""

    __slots__ = ("key", "computation", "input", "lease_ms", "budget",
                 "cancel_reason", "serial", "deadline_ns", "origin_region",
                 "origin_task", "capability", "comp",
                 "cx", "on_done", "start_ns", "atask", "cfuture", "thread_ident",
                 "interrupted", "grace_timer", "finished", "stepped", "job", "ekey", "plan",
                 "ack_conn")

    def __init__(self, origin: str, rtid: int, key: bytes, computation: str, input: bytes,  # noqa: A002
                 lease_ms: int, budget: tuple | None, origin_region: int, origin_task: int,
                 capability: bytes | None, serial: int, comp: Any) -> None:
        self._init(origin, rtid, key, computation, input, lease_ms, budget, origin_region,
                   origin_task, capability, serial, comp)

    def _init(self, origin: str, rtid: int, key: bytes, computation: str, input: bytes,  # noqa: A002
              lease_ms: int, budget: tuple | None, origin_region: int, origin_task: int,
              capability: bytes | None, serial: int, comp: Any) -> None:
        """``__init__``'s work, positional (a C call when compiled: see ``new_node_task``)."""
        self.origin = origin
        self.rtid = rtid
        self.key = key
        self.computation = computation
        self.input: bytes | None = input  # the executor drops it once the computation has it
        self.lease_ms = lease_ms
        self.budget = budget
        self.origin_region = origin_region
        self.origin_task = origin_task
        self.capability = capability
        self.comp = comp  # what Admission.find returned
        # Made for a received spawn the admission rules let in, so it starts in
        # SPAWN_RECEIVED (the table's INIT --RECV_SPAWN--> edge, taken once at
        # import rather than once per task); NodeEngine.process moves it on.
        self.state = _RECEIVED
        self.cancel_reason: tuple | None = None
        self.serial = serial
        self.deadline_ns: int | None = None
        self.cx: Any = None  # the executor's fields (rsc.node.executor._exec_init)
        self.on_done: Any = None
        self.start_ns = 0
        self.atask: Any = None
        self.cfuture: Any = None
        self.thread_ident: int | None = None
        self.interrupted = self.finished = self.stepped = False
        self.grace_timer: Any = None
        self.job: Any = None
        self.ekey: Any = None
        self.plan: Any = None
        # the connection its SPAWN_ACK is still due on (NodeEngine.flush_acks),
        # or None: written, not owed, or stood for by its RESULT
        self.ack_conn: Any = None

    def __repr__(self) -> str:
        return f"NodeTask({self.origin}/{self.rtid} {self.computation} {NodeState(self.state).name})"


def new_node_task(origin: str, rtid: int, key: bytes, computation: str, input: bytes,  # noqa: A002
                  lease_ms: int, budget: tuple | None, origin_region: int, origin_task: int,
                  capability: bytes | None, serial: int, comp: Any) -> NodeTask:
    """``NodeTask(...)`` without a Python-level class call (one per admitted spawn)."""
    task = NodeTask.__new__(NodeTask)
    task._init(origin, rtid, key, computation, input, lease_ms, budget, origin_region,
               origin_task, capability, serial, comp)
    return task


class _Conn:
    __slots__ = ("id", "handshake", "origin", "digests", "resync", "ack_by_result", "segments",
                 "open")

    def __init__(self, conn_id: Any, handshake: NodeHandshake) -> None:
        self.id = conn_id
        self.handshake = handshake
        self.origin: str | None = None  # set once the handshake completes
        # its HELLO offered compact renewals (and this node sends them)
        self.digests = False
        # renewal group id -> a LEASE_RESYNC_REQUEST for it was answered this
        # period (False) or is owed at the group's next renewal (True); None: none
        self.resync: dict[int, bool] | None = None
        # its HELLO offered ack_by_result (and this node does it): the ACK of a
        # task admitted on it waits for flush_acks, and is not sent if the
        # task's RESULT leaves first
        self.ack_by_result = False
        # its HELLO offered value_segments: results go to it with their segments
        # (without, a segmented result is sent joined, as plain msgpack)
        self.segments = False
        self.open = True  # until close_connection


class NodeEngine:
    """Admission, dedup, tombstones, lease renewal and orphan cancellation."""

    def __init__(self, name: str, admission: Admission, *, capacity: int = 1024,
                 max_input_bytes: int = 16 * 1024 * 1024, ttl_ns: int = 300 * 1_000_000_000,
                 key: bytes | None = None, entropy: Callable[[int], bytes],
                 stats: Callable[[], dict] | None = None,
                 trace: Callable[[str, dict], None] | None = None,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 capabilities: Any = None, compact_renewals: bool = True,
                 max_kept_result_bytes: int = DEFAULT_MAX_KEPT_RESULT_BYTES,
                 ack_by_result: bool = False, value_segments: bool = True) -> None:
        """``max_kept_result_bytes``: the bytes of finished results kept for
        duplicates; past it the oldest are dropped (their records stay, and a
        duplicate of one is answered ``ResultNotKept``). ``capabilities``: None (tokens are carried, not checked), or the
        gate of a node that requires them (``rsc.node.tokens.TokenGate``:
        ``check``, ``uses_left``, ``admitted``). ``compact_renewals``: offer
        LEASE_RENEWAL_DIGEST in WELCOME and send it to origins that offered it
        too (False: behave as a node without the extension). ``ack_by_result``:
        offer it in WELCOME and, on a connection whose HELLO offered it too,
        hold each accepted spawn's ACK until ``flush_acks`` (or
        ``take_actions``), and let the RESULT of a task that ends before then
        stand for that ACK. Off by default: it pays only under a driver that
        runs started computations' first steps before it writes the ACKs, as
        ``NodeServer`` does (False: every accepted spawn gets its own
        SPAWN_ACK at once). ``value_segments``: offer value segments in
        WELCOME and send a segmented result with its segments to an origin
        that offered them too (False: behave as a node without the extension,
        every result plain; segments in a SPAWN_REQUEST are understood either
        way)."""
        self.name = str(name)
        self.capabilities = capabilities
        # The durable journal (rsc.node.journal), set by restore(); None: records
        # live only as long as this process.
        self._journal: Any = None
        self.admission = admission
        self.capacity = capacity
        # An input or output larger than this cannot travel in one frame of the
        # peer's (an origin accepts frames up to the same default cap).
        payload_cap = max_frame_bytes - FRAME_OVERHEAD_BYTES
        self.max_input_bytes = min(max_input_bytes, payload_cap)
        self.max_result_bytes = payload_cap
        # WELCOME's features (PROTOCOL.md section 5): a fresh id per engine, so
        # an origin that reconnects can tell a restarted node (which lost what
        # was running) from a dropped connection (restore() adds the journal's
        # id); and the limits an origin checks a spawn against before sending it.
        self.features: dict = dict(instance=entropy(8).hex(), max_frame_bytes=max_frame_bytes,
                                   max_input_bytes=self.max_input_bytes,
                                   max_result_bytes=self.max_result_bytes)
        # SPAWN_REQUEST's "drawn" flag is understood (_on_spawn, PROTOCOL.md section 4)
        self.features[DRAWN_KEYS_FEATURE] = 1
        self.ack_by_result = ack_by_result
        if ack_by_result:
            self.features[ACK_BY_RESULT_FEATURE] = 1
        # value segments are understood in SPAWN_REQUEST and sent in
        # RESULT_DELIVERY to an origin that offers them (PROTOCOL.md section 4)
        self.value_segments = value_segments
        if value_segments:
            self.features[VALUE_SEGMENTS_FEATURE] = 1
        # admitted tasks whose SPAWN_ACK is due (on a connection with
        # ack_by_result), in admission order: flush_acks writes them
        self._acks_due: list[NodeTask] = []
        self.compact_renewals = compact_renewals
        if compact_renewals:
            self.features[RENEWAL_FEATURE] = RENEWAL_VERSION
        self.ttl_ns = ttl_ns
        self.key = key
        self._entropy = entropy
        self._stats = stats
        self._trace = trace
        self.clock = LamportClock()
        self.actions: list[tuple[int, Any, Any]] = []
        self.draining = False

        self._conns: dict[Any, _Conn] = {}
        self._origin_conns: dict[str, list[Any]] = {}
        self._last_heard: dict[str, int] = {}
        self.max_kept_result_bytes = max_kept_result_bytes
        # what a record whose result the budget dropped holds instead (a duplicate reads ResultNotKept)
        self.dropped_outcome = (OUTCOME_FAILED, ResultNotKept.text(self.name, max_kept_result_bytes), 0)
        self._idem = _idem.IdemTable(ttl_ns, max_kept_result_bytes, self.dropped_outcome)
        self._running: dict[bytes, NodeTask] = {}  # key -> owner task not yet finished
        self._by_serial: dict[int, NodeTask] = {}
        # every deadline the engine has; the idempotency table's expiries count
        # in it and the table tells it of new ones (IdemTable.watch)
        self.timers = Deadlines()
        self.timers.attach(self._idem)
        self._idem.watch = self.timers
        # renewal groups: (origin, lease_ms) -> the group of task ids renewed
        # together (aliases included, rsc._engine.renewal), and by group id
        # (its T_RENEW key)
        self._renew: dict[tuple[str, int], RenewalGroup] = {}
        self._renew_group: dict[int, RenewalGroup] = {}
        self._last_renew: RenewalGroup | None = None  # (_renew_find)
        self._next_gid = 0
        self._serial = 0
        # What ``counters`` reports, as plain integer fields (C integers when
        # compiled: a dict's `+= 1` is two lookups per task); by outcome kind
        # for completed, failed, cancelled and panicked.
        self._n_accepted = self._n_rejected = self._n_duplicates = self._n_dropped = 0
        self._n_outcomes = [0, 0, 0, 0]

    @property
    def counters(self) -> dict:
        """How many spawns this engine accepted, rejected and took as
        duplicates, how many tasks completed, failed, were cancelled or
        panicked, and how many messages it dropped (a new dict each read)."""
        completed, failed, cancelled, panicked = self._n_outcomes
        return dict(accepted=self._n_accepted, completed=completed, failed=failed,
                    cancelled=cancelled, panicked=panicked, rejected=self._n_rejected,
                    duplicates=self._n_duplicates, dropped=self._n_dropped)

    # ------------------------------------------------------------------ utilities
    def _send(self, conn: Any, msg: Message) -> None:
        self.actions.append((_SEND, conn, msg))

    def _stamp(self) -> int:
        return self.clock.send()

    def _trace_event(self, event: str, **fields: Any) -> None:
        if self._trace is not None:
            self._trace(event, fields)

    def _drop(self, why: str, **fields: Any) -> None:
        self._n_dropped += 1
        self._trace_event(TN.DROPPED, why=why, **fields)

    def take_actions(self, due_acks: bool = True) -> list[tuple[int, Any, Any]]:
        """The queued actions, oldest first (the queue is emptied). With
        ``due_acks`` (the default) the SPAWN_ACKs still due are queued
        (``flush_acks``) before the queue is taken; a driver that runs started computations' first
        steps before it writes (``NodeServer._pump``) passes False, and calls
        ``flush_acks`` once those steps have run."""
        if due_acks and self._acks_due:
            self.flush_acks()
        out, self.actions = self.actions, []
        return out

    def flush_acks(self) -> None:
        """Queue the SPAWN_ACK of every admitted task whose ACK is still due,
        in admission order. A task admitted on a connection that negotiated
        ``ack_by_result`` gets its ACK here, unless its RESULT was queued
        first (``task_finished``): that RESULT stands for the ACK. Called by
        the driver at the end of its pump, and by the engine before anything
        else it queues that names such a task or ends its connection
        (renewals, a resync's list, an ERROR, a close), so an ACK is never
        overtaken by them. An ACK due on a connection closed since is not
        sent (as a queued one would not be written).

        A task joins its renewal group here, with its ACK: the group's
        silence check then watches it, and the renewals that count it come
        after its ACK. Nothing between its admission and this call can
        renew or orphan it (``tick`` calls this first), and a task whose
        RESULT stood for its ACK is never in a group."""
        due = self._acks_due
        if not due:
            return
        self._acks_due = []
        conns = self._conns
        for task in due:
            conn = task.ack_conn
            if conn is not None:
                task.ack_conn = None
                if conn in conns:
                    self._ack(conn, task.rtid)
                origin = task.origin
                # (a new group's first deadlines count from when its origin
                # was last heard: this spawn's read, or a later one)
                self._renew_add(origin, task.lease_ms, task.rtid, self._last_heard.get(origin, 0))

    def _send_result(self, conn: Any, rtid: int, outcome: tuple[int, Any, int]) -> None:
        """RESULT_DELIVERY of ``outcome`` (kind, payload, execution_time_ns) under task id ``rtid``."""
        kind, payload, exec_ns = outcome
        if type(payload) is _Segmented:
            return self._send_segmented(conn, rtid, kind, payload, exec_ns)
        self._send(conn, _result_delivery(self.name, self._stamp(), rtid, kind, payload, exec_ns))

    def _send_segmented(self, conn: Any, rtid: int, kind: int, payload: Segmented,
                        exec_ns: int) -> None:
        """RESULT_DELIVERY of a segmented output: with its segments to an origin
        that takes them, else joined into plain msgpack."""
        c = self._conns.get(conn)
        if c is not None and c.segments:
            msg = _result_delivery(self.name, self._stamp(), rtid, kind, payload.packed, exec_ns,
                                   payload.segments)
        else:
            msg = _result_delivery(self.name, self._stamp(), rtid, kind, payload.joined(), exec_ns)
        self._send(conn, msg)

    # ---------------------------------------------------------------- inspection
    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def idempotency_records(self) -> int:
        return len(self._idem)

    @property
    def tombstones(self) -> int:
        return self._idem.tombstone_count

    def running_tasks(self) -> list[NodeTask]:
        return list(self._running.values())

    def stats(self) -> dict:
        s = dict(self._stats() if self._stats is not None else {})
        s.update(self.counters)
        s.update(capacity=self.capacity, running=self.running,
                 idempotency_records=len(self._idem), tombstones=self._idem.tombstone_count,
                 kept_result_bytes=self._idem.kept_bytes, results_dropped=self._idem.results_dropped,
                 connections=len(self._conns), draining=self.draining)
        return s

    # --------------------------------------------------------------- connections
    def open_connection(self, conn: Any, now: int) -> None:
        self._conns[conn] = _Conn(conn, NodeHandshake(self.name, self.key, self._entropy(32),
                                                      self.features))

    def close_connection(self, conn: Any, now: int) -> None:
        c = self._conns.pop(conn, None)
        if c is None:
            return
        c.open = False  # (receive_all reads no more of its read)
        if c.origin is None:
            return
        lst = self._origin_conns.get(c.origin)
        if lst is not None and conn in lst:
            lst.remove(conn)
            if not lst:
                del self._origin_conns[c.origin]

    def protocol_error(self, conn: Any, exc: ProtocolError, now: int) -> None:
        """The decoder (or this engine) found a connection-level error: ERROR, close."""
        if conn not in self._conns:
            return
        self.flush_acks()  # before the ERROR and the close
        self._trace_event(TN.PROTOCOL_ERROR, conn=conn, code=exc.code, message=exc.message)
        self._send(conn, Error(self.name, self._stamp(), exc.code, exc.message))
        self.actions.append((CLOSE, conn, None))
        self.close_connection(conn, now)

    def receive(self, conn: Any, msg: Message, now: int) -> None:
        c = self._conns.get(conn)
        if c is None:
            return
        self.clock.merge(_sender_time(msg))
        try:
            if c.origin is None:
                self._receive_handshake(c, msg, now)
                return
            self._last_heard[c.origin] = now
            self._dispatch(c, msg, now)
        except ProtocolError as exc:
            self.protocol_error(conn, exc, now)

    def receive_all(self, conn: Any, msgs: list[Message], now: int) -> None:
        """The messages of one read on ``conn``, in order: what ``receive`` of
        each does, with the connection found once and, past the handshake,
        the origin's last-heard time written once (the read's ``now``). Each
        message is merged into the Lamport clock just before it is handled,
        as ``receive`` does; a message that closes the connection leaves the
        rest of the read unread."""
        c = self._conns.get(conn)
        if c is None:
            return
        if c.origin is None:  # the handshake: message by message
            for msg in msgs:
                self.receive(conn, msg, now)
            return
        self._last_heard[c.origin] = now
        clock = self.clock
        for msg in msgs:
            if not c.open:
                return
            clock.merge(_sender_time(msg))
            try:
                self._dispatch(c, msg, now)
            except ProtocolError as exc:
                self.protocol_error(conn, exc, now)

    def _dispatch(self, c: _Conn, msg: Message, now: int) -> None:
        """One message after the handshake (its time merged, its origin heard)."""
        conn = c.id
        # type(msg) in each test (Py_TYPE when compiled) narrows msg for type checkers
        if type(msg) is _SpawnRequest:
            self._on_spawn(c, msg, now)
        elif type(msg) is CancelRequest:
            self._on_cancel(c, msg, now)
        elif type(msg) is Ping:
            self._send(conn, Pong(self.name, self._stamp(), msg.nonce))
        elif type(msg) is StatusRequest:
            self._send(conn, StatusReply(self.name, self._stamp(), self.stats()))
        elif type(msg) is LeaseResyncRequest:
            self._on_resync_request(c, msg.lease_ms)
        elif type(msg) is Error:
            self._trace_event(TN.PEER_ERROR, conn=conn, code=msg.code, message=msg.message)
            self.flush_acks()  # before the close
            self.actions.append((CLOSE, conn, None))
            self.close_connection(conn, now)
        else:
            raise UnexpectedMessage(f"a node does not accept {type(msg).__name__} after the handshake")

    def _receive_handshake(self, c: _Conn, msg: Message, now: int) -> None:
        if type(msg) is Hello:
            self._send(c.id, c.handshake.on_hello(msg, self._stamp()))
            c.digests = self.compact_renewals and offers_digests(msg.features)
            c.ack_by_result = self.ack_by_result and offers_ack_by_result(msg.features)
            c.segments = self.value_segments and offers_value_segments(msg.features)
        elif type(msg) is Auth:
            c.handshake.on_auth(msg)
            origin = c.handshake.peer
            assert origin is not None
            c.origin = origin
            self._origin_conns.setdefault(origin, []).append(c.id)
            self._last_heard[origin] = now
            self._trace_event(TN.HANDSHAKE, conn=c.id, origin=origin)
            for rtid, outcome in self._idem.take_held(origin):
                self._send_result(c.id, rtid, outcome)
        elif type(msg) is Error:
            self.actions.append((CLOSE, c.id, None))
            self.close_connection(c.id, now)
        else:
            raise UnexpectedMessage(f"{type(msg).__name__} before the handshake completed")

    # ------------------------------------------------------------ task state
    def process(self, task: TaskRecord, event: int) -> NodeState | None:
        """Move ``task`` by ``event`` (a ``NodeEvent``) through ``states.NODE_TRANSITIONS``.

        The one place a node task's state changes: returns the new state, or
        None when the event does not fit (the state is left as it was, and the
        caller drops the event).
        """
        nxt = _AFTER[event][task.state]
        if nxt is not None:
            task.state = nxt
        return nxt

    def state_of(self, origin: str, rtid: int) -> NodeState:
        """The state of ``(origin, rtid)`` read from what holds it: its running
        task (or the task it is an alias of), a tombstone (TOMBSTONED), a
        finished record (COMPLETED), or nothing (INIT; a rejected spawn leaves
        nothing, so REJECTED is never held between steps)."""
        key = self._idem.key_of(origin, rtid)
        if key is not None:
            task = self._running.get(key)
            return NodeState(task.state) if task is not None else _COMPLETED
        return _TOMBSTONED if self._idem.has_tombstone(origin, rtid) else _INIT

    # -------------------------------------------------------------------- spawn
    def _ack(self, conn: Any, rtid: int, code: int = 0, detail: str = "") -> None:
        status = ACK_ACCEPTED if code == 0 else ACK_REJECTED  # code 0: no reject code
        if code:
            self._n_rejected += 1
        self._send(conn, _spawn_ack(self.name, self._stamp(), rtid, status, code, detail, self.name))

    # Admission (PROTOCOL.md section 7, "Spawn admission"): the rules below, in
    # ADMISSION_RULES' order; the first that returns a verdict decides, and a
    # spawn no rule decides is admitted. Each rule reads the connection's
    # origin, the request's fields (``envelope.fields``: rtid, computation,
    # input, lease_ms, key, budget, origin_node, origin_region, origin_task,
    # capability) and what the registry found for its computation, and changes
    # nothing. A verdict is (VERDICT_REJECT, code, detail, trace event or None),
    # (VERDICT_DUPLICATE, record, is a resend) or (VERDICT_TOMBSTONED,).

    def _rule_origin_matches(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.1: a spawn whose origin_node is not the connection's origin is
        rejected invalid_input (traced node::spawn_origin_mismatch)."""
        if f[_ORIGIN_NODE] != origin:
            return (VERDICT_REJECT, REJECT_INVALID_INPUT,
                    f"origin_node {f[_ORIGIN_NODE]!r} is not this connection's origin {origin!r}",
                    TN.SPAWN_ORIGIN_MISMATCH)
        return None

    def _rule_key_length(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.2: an idempotency key that is not 16 bytes is rejected invalid_input."""
        if len(f[_KEY]) != _KEY_BYTES:
            return (VERDICT_REJECT, REJECT_INVALID_INPUT,
                    f"idempotency_key must be {KEY_BYTES} bytes, got {len(f[_KEY])}", None)
        return None

    def _rule_lease_positive(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.3: a zero lease is rejected invalid_input."""
        if f[_LEASE_MS] == 0:
            return (VERDICT_REJECT, REJECT_INVALID_INPUT, "lease_ms must be positive", None)
        return None

    def _rule_lease_trackable(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.4: a lease over MAX_LEASE_MS (it could not be tracked as a
        deadline) is rejected invalid_input."""
        if f[_LEASE_MS] > _MAX_LEASE:
            return (VERDICT_REJECT, REJECT_INVALID_INPUT,
                    f"lease_ms {f[_LEASE_MS]} is over the {MAX_LEASE_MS} ms this node tracks", None)
        return None

    def _rule_input_size(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.5: an input over max_input_bytes is rejected invalid_input."""
        if len(f[_INPUT]) > self.max_input_bytes:
            return (VERDICT_REJECT, REJECT_INVALID_INPUT,
                    f"input is {len(f[_INPUT])} bytes; this node accepts at most {self.max_input_bytes}",
                    None)
        return None

    def _rule_capability(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.6: a node that requires capabilities rejects capability_denied a
        spawn whose token is missing or does not allow this computation, on
        this node, now, for this input size (checked before deduplication, so
        an idempotency key alone never fetches a result)."""
        gate = self.capabilities
        if gate is None:
            return None
        why = gate.check(f[_CAPABILITY], f[_COMPUTATION], len(f[_INPUT]))
        if why is not None:
            return (VERDICT_REJECT, REJECT_CAPABILITY_DENIED, why, TN.CAPABILITY_DENIED)
        return None

    def _rule_task_id_held(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.7: an ``(origin, task id)`` already held (owner, alias or
        redelivery): under the same key and fingerprint it is a resend
        (duplicate), otherwise idempotency_conflict."""
        held_key = self._idem.key_of(origin, f[_RTID])
        if held_key is None:
            return None
        if held_key != f[_KEY]:
            return (VERDICT_REJECT, REJECT_IDEMPOTENCY_CONFLICT,
                    f"task {origin}/{f[_RTID]} is already held under another idempotency key", None)
        rec = self._idem.get(held_key)
        assert rec is not None  # key_of named it
        if not input_matches(rec, origin, f):
            return (VERDICT_REJECT, REJECT_IDEMPOTENCY_CONFLICT,
                    "resend of a task with a different computation or input", None)
        return (VERDICT_DUPLICATE, rec, True)

    def _rule_tombstoned(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.8: a spawn for a tombstoned ``(origin, task id)`` is acked and
        answered Cancelled; nothing runs."""
        if self._idem.has_tombstone(origin, f[_RTID]):
            return _TOMBSTONED_VERDICT
        return None

    def _rule_key_known(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.9: a known key with another fingerprint is idempotency_conflict;
        with the same one the spawn is a duplicate (an alias while it runs)."""
        rec = self._idem.get(f[_KEY])
        if rec is None:
            return None
        if not input_matches(rec, origin, f):
            return (VERDICT_REJECT, REJECT_IDEMPOTENCY_CONFLICT,
                    "idempotency key reused for a different computation or input", None)
        return (VERDICT_DUPLICATE, rec, False)

    def _rule_not_draining(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.10: a draining node rejects new work node_shutting_down."""
        if self.draining:
            return (VERDICT_REJECT, REJECT_NODE_SHUTTING_DOWN, "node is draining", None)
        return None

    def _rule_computation_known(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.11: a computation the registry does not know is rejected unknown_computation."""
        if comp is None:
            return (VERDICT_REJECT, REJECT_UNKNOWN_COMPUTATION,
                    f"no computation named {f[_COMPUTATION]!r} on node {self.name!r}", None)
        return None

    def _rule_capacity(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.12: a node running ``capacity`` tasks rejects capacity_exceeded."""
        if len(self._running) >= self.capacity:
            return (VERDICT_REJECT, REJECT_CAPACITY_EXCEEDED,
                    f"node {self.name!r} is running {len(self._running)} of {self.capacity} tasks",
                    None)
        return None

    def _rule_input_valid(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.13: an input the registry's check refuses (codec, validator) is
        rejected invalid_input with its reason."""
        why = self.admission.check(comp, f[_INPUT])
        if why is not None:
            return (VERDICT_REJECT, REJECT_INVALID_INPUT, why, None)
        return None

    def _rule_capability_uses(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """§7.14: new work under a token whose ``max_uses`` are all taken is
        rejected capability_denied (a resend or duplicate of admitted work
        is no new use: the rules before this one decide it)."""
        gate = self.capabilities
        if gate is None:
            return None
        why = gate.uses_left(f[_CAPABILITY])
        if why is not None:
            return (VERDICT_REJECT, REJECT_CAPABILITY_DENIED, why, TN.CAPABILITY_DENIED)
        return None

    def admission_verdict(self, origin: str, f: tuple, comp: Any) -> tuple | None:
        """The verdict of the first rule of ``ADMISSION_RULES`` that applies to
        a spawn (``f``: its ``envelope.fields``; ``comp``: what the registry
        found for its computation), or None: admitted.

        ADMISSION_RULES, written out: each rule a C call in a compiled build, so
        the order costs no per-task loop (tests/test_admission_rules.py holds
        this chain to the list).
        """
        v = self._rule_origin_matches(origin, f, comp)
        if v is None:
            v = self._rule_key_length(origin, f, comp)
        if v is None:
            v = self._rule_lease_positive(origin, f, comp)
        if v is None:
            v = self._rule_lease_trackable(origin, f, comp)
        if v is None:
            v = self._rule_input_size(origin, f, comp)
        if v is None:
            v = self._rule_capability(origin, f, comp)
        if v is None:
            v = self._rule_task_id_held(origin, f, comp)
        if v is None:
            v = self._rule_tombstoned(origin, f, comp)
        if v is None:
            v = self._rule_key_known(origin, f, comp)
        if v is None:
            v = self._rule_not_draining(origin, f, comp)
        if v is None:
            v = self._rule_computation_known(origin, f, comp)
        if v is None:
            v = self._rule_capacity(origin, f, comp)
        if v is None:
            v = self._rule_input_valid(origin, f, comp)
        if v is None:
            v = self._rule_capability_uses(origin, f, comp)
        return v

    def _on_spawn(self, c: _Conn, msg: SpawnRequest, now: int) -> None:
        # Every field read once, in one call: as attributes, each read would be
        # a Python attribute lookup (and a task reads most of them twice).
        f = _fields(msg)
        if f[_SEGMENTS]:
            f = with_segments(f)
        origin = c.origin
        assert origin is not None  # receive passes only connections past the handshake
        comp = self.admission.find(f[_COMPUTATION])
        v = self.admission_verdict(origin, f, comp)
        if v is not None:
            return self._apply_verdict(c, msg, f, v, now)
        (rtid, computation, data, lease_ms, key, budget, _origin_node, origin_region, origin_task,
         capability, drawn, _segments) = f
        if self.capabilities is not None:
            self.capabilities.admitted(capability)
        # a key the origin drew itself is recorded owner-only, not hashed (DESIGN.md)
        fp = _spawn_fingerprint(computation, fingerprinted(data, drawn), drawn)
        self._idem.check_and_record(key, fp, origin, rtid, now)
        if self._journal is not None:
            self._journal.admitted(key, fp, origin, rtid)
        self._serial = serial = self._serial + 1
        lease = lease_ms if lease_ms >= _MIN_LEASE_MS else _MIN_LEASE_MS
        task = new_node_task(origin, rtid, key, computation, data, lease, budget, origin_region,
                             origin_task, capability, serial, comp)
        self._running[key] = task
        self._n_accepted += 1
        if c.ack_by_result and self.admission.ends_at_once(comp):
            # its ACK is written by flush_acks at the end of the driver's
            # pump, and it joins its renewal group then, unless its RESULT
            # leaves first and stands for the ACK: then it never joins one
            task.ack_conn = c.id
            self._acks_due.append(task)
        else:
            self._ack(c.id, rtid)
            # its silence check is its renewal group's (_renew_add, _check_silence)
            self._renew_add(origin, lease, rtid, now)
        # (accepted now: the ACK, or the RESULT standing for it, says so)
        self.process(task, _E_SEND_ACK_ACCEPTED)
        if budget is not None and budget[0] is not None and budget[0] <= _MAX_DEADLINE_MS:
            task.deadline_ns = now + budget[0] * _MS
            self._by_serial[serial] = task
            self.timers.add(_T_BUDGET, serial, task.deadline_ns)
        self.actions.append((_START, task, None))

    def _apply_verdict(self, c: _Conn, msg: SpawnRequest, f: tuple, v: tuple, now: int) -> None:
        """Carry out an admission rule's verdict on a spawn that is not admitted."""
        origin = c.origin
        assert origin is not None  # past the handshake
        kind = v[0]
        if kind == VERDICT_REJECT:
            if v[3] is not None:
                self._trace_event(v[3], conn=c.id, claimed=f[_ORIGIN_NODE], origin=origin)
            req = TaskRecord(origin, f[_RTID], _INIT)
            self.process(req, E_RECV_SPAWN)
            self._ack(c.id, f[_RTID], v[1], v[2])
            self.process(req, E_SEND_ACK_REJECTED)
        elif kind == VERDICT_DUPLICATE:
            rec, resend = v[1], v[2]
            if not resend:
                self._idem.check_and_record(f[_KEY], rec.fingerprint, origin, f[_RTID], now)  # attaches the alias
                rec = self._idem.get(f[_KEY])
            self._on_duplicate(c, msg, rec, now, resend)
        else:
            self._on_tombstoned_spawn(c, msg, f, now)

    def _on_duplicate(self, c: _Conn, msg: SpawnRequest, rec: Any, now: int, resend: bool) -> None:
        self._n_duplicates += 1
        rtid = msg.remote_task_id
        self._ack(c.id, rtid)
        if rec.finished:
            # the finished record holds COMPLETED; it answers by sending the result again
            self.process(TaskRecord(msg.origin_node, rtid, _COMPLETED), E_RECV_DUPLICATE_SPAWN)
            if not resend:
                self._idem.add_redelivery(msg.origin_node, rtid, rec.key, now)
            self._send_result(c.id, rtid, rec.outcome)
            return
        task = self._running[rec.key]
        if self.process(task, E_RECV_DUPLICATE_SPAWN) is None:
            return self._drop("duplicate spawn does not fit", task=repr(task))
        if not resend:
            self._renew_add(msg.origin_node, task.lease_ms, rtid, now)

    def _on_tombstoned_spawn(self, c: _Conn, msg: SpawnRequest, f: tuple, now: int) -> None:
        origin, rtid = c.origin, msg.remote_task_id
        assert origin is not None  # past the handshake
        idem = self._idem
        tomb = TaskRecord(origin, rtid, _TOMBSTONED)
        self.process(tomb, E_RECV_SPAWN)
        reason = idem.tombstone_reason(origin, rtid)
        if reason is None:
            reason = TOMBSTONE_REASON
        idem.take_tombstone(origin, rtid)
        self._ack(c.id, rtid)
        self.process(tomb, E_SEND_ACK_ACCEPTED)  # TOMBSTONED -> COMPLETED: nothing runs
        outcome = (OUTCOME_CANCELLED, reason, 0)
        journal = self._journal
        if journal is not None:
            journal.untombstone(origin, rtid)
        if idem.get(msg.idempotency_key) is None:
            drawn = msg.drawn  # recorded as _on_spawn records it
            fp = _spawn_fingerprint(msg.computation, fingerprinted(f[_INPUT], drawn), drawn)
            idem.check_and_record(msg.idempotency_key, fp, origin, rtid, now)
            idem.complete(msg.idempotency_key, rtid, outcome, now)
            if journal is not None:
                journal.admitted(msg.idempotency_key, fp, origin, rtid)
                journal.finished(msg.idempotency_key, rtid, outcome)
        self._n_outcomes[_OUTCOME_CANCELLED] += 1
        self._send_result(c.id, rtid, outcome)

    # ------------------------------------------------------------------- cancel
    def _on_cancel(self, c: _Conn, msg: CancelRequest, now: int) -> None:
        origin, rtid = c.origin, msg.remote_task_id
        if msg.origin_node != origin:
            return self._drop("cancel for another origin", claimed=msg.origin_node, origin=origin)
        key = self._idem.key_of(origin, rtid)
        if key is None:
            idem = self._idem
            held = idem.has_tombstone(origin, rtid)
            self.process(TaskRecord(origin, rtid, _TOMBSTONED if held else _INIT), E_RECV_CANCEL)
            if not held:
                idem.add_tombstone(origin, rtid, now, msg.reason)
                if self._journal is not None:
                    self._journal.tombstone(origin, rtid, msg.reason)
            self._trace_event(TN.TOMBSTONE, origin=origin, rtid=rtid)
            return
        task = self._running.get(key)
        if task is None:
            # the finished record holds COMPLETED; it answers by sending the result again
            self.process(TaskRecord(origin, rtid, _COMPLETED), E_RECV_CANCEL)
            rec = self._idem.get(key)
            assert rec is not None  # key_of named it
            self._send_result(c.id, rtid, rec.outcome)
            return
        self._cancel_task(task, msg.reason, E_RECV_CANCEL)

    def _cancel_task(self, task: NodeTask, reason: tuple, event: int) -> None:
        if self.process(task, event) is None:
            return self._drop("cancel does not fit", task=repr(task))
        if task.cancel_reason is None:
            task.cancel_reason = reason
            self._trace_event(TN.CANCEL_RECEIVED, origin=task.origin, rtid=task.rtid, reason=reason)
            self.actions.append((CANCEL, task, reason))

    # ------------------------------------------------------------------- result
    def task_finished(self, task: NodeTask, kind: int, payload: Any, exec_ns: int, now: int) -> None:
        """The executor reports ``task`` ended; deliver its result (to aliases too)."""
        key, serial = task.key, task.serial
        if self._running.get(key) is not task or self.process(task, _E_SEND_RESULT) is None:
            return self._drop("result for a task not running", task=repr(task))
        if kind != _OUTCOME_CANCELLED and len(payload) > (
                self.max_result_bytes if kind == _OUTCOME_SUCCESS else _MAX_FAILURE_MESSAGE_CHARS):
            kind, payload = self._deliverable(task, kind, payload)
        del self._running[key]
        # an ACK still due is stood for by this RESULT (its connection is one
        # of the origin's that _deliver sends it on, if it is still open),
        # and the task never joined a renewal group (flush_acks)
        grouped = task.ack_conn is None
        task.ack_conn = None
        if task.deadline_ns is not None:
            del self._by_serial[serial]
            self.timers.discard(_T_BUDGET, serial)
        self._n_outcomes[kind] += 1
        outcome = (kind, payload, exec_ns)
        aliases = self._idem.complete(key, task.rtid, outcome, now,  # its expiry reaches timers
                                      kept_result_bytes(outcome))
        if self._journal is not None:
            self._journal.finished(key, task.rtid, outcome)
        if grouped:
            self._renew_remove(task.origin, task.lease_ms, task.rtid)
        self._deliver(task.origin, task.rtid, outcome, now)
        for a_origin, a_rtid in aliases:
            self._renew_remove(a_origin, task.lease_ms, a_rtid)
            self._deliver(a_origin, a_rtid, outcome, now)

    def _deliverable(self, task: NodeTask, kind: int, payload: Any) -> tuple[int, Any]:
        """An outcome too large for one frame, made deliverable (the one place
        this is decided): an oversized output becomes a FAILED outcome that
        the origin reads as ResultTooLarge; a failure's message is cut short.
        A result that cannot be delivered would otherwise be re-sent on every
        reconnect and never arrive."""
        if kind == OUTCOME_SUCCESS:
            self._trace_event(TN.RESULT_TOO_LARGE, origin=task.origin, rtid=task.rtid,
                              size=len(payload), limit=self.max_result_bytes)
            return OUTCOME_FAILED, ResultTooLarge.text(task.computation, len(payload),
                                                       self.max_result_bytes)
        cut = MAX_FAILURE_MESSAGE_CHARS
        return kind, f"{payload[:cut]}... [{len(payload) - cut} more characters cut by the node]"

    def _deliver(self, origin: str, rtid: int, outcome: tuple[int, Any, int], now: int) -> None:
        conns = self._origin_conns.get(origin)
        if conns:
            for conn in conns:
                self._send_result(conn, rtid, outcome)
            return
        self._idem.hold(origin, rtid, outcome, now)

    # ------------------------------------------------------------------- leases
    def _renew_find(self, origin: str, lease_ms: int) -> RenewalGroup | None:
        """The renewal group of ``(origin, lease_ms)``, or None. The last one
        found is kept aside: a run of tasks from one origin with one lease
        (the common case) finds it without making and hashing a key."""
        group = self._last_renew
        if group is not None and group.origin is origin and group.lease_ms == lease_ms:
            return group
        group = self._renew.get((origin, lease_ms))
        if group is not None:
            self._last_renew = group
        return group

    def _renew_add(self, origin: str, lease_ms: int, rtid: int, now: int) -> None:
        """Put ``rtid`` in the renewal group of ``(origin, lease_ms)``, made
        with its two deadlines if there is none: its first renewal, and its
        silence check (``_check_silence``) at ``now`` + the lease, which is
        when a task of that origin with that lease can first be orphaned."""
        group = self._renew_find(origin, lease_ms)
        if group is None:
            self._next_gid = gid = self._next_gid + 1
            group = self._renew[(origin, lease_ms)] = RenewalGroup(origin, lease_ms, gid)
            self._renew_group[gid] = group
            self.timers.add(_T_RENEW, gid, now + lease_ms * _MS // 3)
            self.timers.add(_T_SILENCE, gid, now + lease_ms * _MS)
        group.add(rtid)

    def _renew_remove(self, origin: str, lease_ms: int, rtid: int) -> None:
        """Take ``rtid`` out of its renewal group. A group left empty stays
        (with its timer) until its next renewal time, when ``tick`` drops it
        if it is still empty: tasks that each end before the next one starts
        (a no-op at a time) share one group instead of making and dropping
        one each."""
        group = self._renew_find(origin, lease_ms)
        if group is not None:
            group.discard(rtid)

    def _drop_renew_group(self, group: RenewalGroup) -> None:
        """Forget an empty renewal group whose renewal time has come (its
        timer has fired: no deadline is left for it)."""
        del self._renew[(group.origin, group.lease_ms)]
        if self._last_renew is group:
            self._last_renew = None
        gid = group.gid
        del self._renew_group[gid]
        self.timers.discard(T_SILENCE, gid)
        for conn in self._origin_conns.get(group.origin, ()):
            resync = self._conns[conn].resync
            if resync:
                resync.pop(gid, None)

    def _send_renewals(self, group: RenewalGroup) -> None:
        """One renewal period of ``group``: to each live connection of its
        origin a LEASE_RENEWAL_DIGEST if that connection negotiated compact
        renewals and owes no resync, else the LEASE_RENEWAL_BATCH listing
        every id (built once, only if some connection needs it)."""
        ids: list[int] | None = None
        for conn in self._origin_conns.get(group.origin, ()):
            c = self._conns[conn]
            owed = False
            if c.resync:
                owed = c.resync.pop(group.gid, False)  # a new period: answered marks clear
            if c.digests and not owed:
                self._send(conn, LeaseRenewalDigest(self.name, self._stamp(), group.lease_ms,
                                                    len(group.ids), group.digest))
            else:
                if ids is None:
                    ids = sorted(group.ids)
                self._send(conn, LeaseRenewalBatch(self.name, self._stamp(), group.lease_ms,
                                                   self.name, ids))
        if self._trace is not None:
            self._trace_event(TN.LEASE_RENEWAL_SENT, origin=group.origin, lease_ms=group.lease_ms,
                              count=len(group.ids), digest=group.digest,
                              rtids=sorted(group.ids) if ids is None else ids)

    def _on_resync_request(self, c: _Conn, lease_ms: int) -> None:
        """LEASE_RESYNC_REQUEST: the origin's view of the ``(origin, lease_ms)``
        group disagrees with its digest. Answered on that connection with the
        group's LEASE_RENEWAL_BATCH (empty if the group has no tasks now), at
        once the first time in a renewal period and at the group's next
        renewal after that, so one connection gets at most two full lists
        per group and period however often it asks."""
        self.flush_acks()  # the list may name tasks whose ACK is due
        group = self._renew.get((c.origin, lease_ms))  # type: ignore[arg-type]  # after the handshake: origin is set
        if group is None or not group.ids:  # (an empty group is dropped at its next renewal)
            self._send(c.id, LeaseRenewalBatch(self.name, self._stamp(), lease_ms, self.name, []))
            return
        if c.resync is None:
            c.resync = {}
        if group.gid in c.resync:
            c.resync[group.gid] = True  # owed: the next renewal sends the list
            return
        c.resync[group.gid] = False
        self._send(c.id, LeaseRenewalBatch(self.name, self._stamp(), lease_ms, self.name,
                                           sorted(group.ids)))

    def _check_silence(self, group: RenewalGroup, now: int) -> None:
        """The silence check of ``group``'s origin, due at ``now``. Every task
        of one origin with one lease is orphaned at the same moment: when
        that origin has been silent for the lease (a SPAWN is itself heard
        from it, so a task's own admission counts). So one deadline per
        group is exact: heard from since it was set, the check moves to
        last heard + lease; else each task the group's origin owns is
        cancelled lease_expired (aliases are its other origins' tasks), and
        the check comes back a lease later while any of them still runs."""
        lease_ns = group.lease_ms * MS
        lapse = self._last_heard.get(group.origin, now) + lease_ns
        if lapse > now:
            self.timers.add(T_SILENCE, group.gid, lapse)
            return
        origin, idem, running = group.origin, self._idem, self._running
        for rtid in sorted(group.ids):
            key = idem.key_of(origin, rtid)
            task = running.get(key) if key is not None else None
            if task is None or task.rtid != rtid or task.origin != origin:
                continue  # an alias of a task another origin owns (or of none)
            self._trace_event(TN.ORPHAN_CANCELLED, origin=origin, rtid=rtid)
            self._cancel_task(task, CANCEL_LEASE_EXPIRED, E_ORIGIN_SILENT)
        self.timers.add(T_SILENCE, group.gid, now + lease_ns)  # keep watching until they end

    def next_deadline(self) -> int | None:
        """The earliest deadline in ``timers`` (what the driver's timer follows)."""
        return self.timers.next_deadline()

    def tick(self, now: int) -> None:
        """Run every deadline due at ``now``, earliest first (renewal batches,
        origin-silence checks, budget deadlines), then evict expired records."""
        self.flush_acks()  # a renewal may name tasks whose ACK is due
        timers = self.timers
        for kind, key in timers.pop_due(now):
            if kind == T_RENEW:
                group = self._renew_group.get(key)
                if group is None:
                    continue
                if not group.ids:  # emptied since its last renewal: nothing to renew
                    self._drop_renew_group(group)
                    continue
                timers.add(T_RENEW, key, now + group.lease_ms * MS // 3)
                self._send_renewals(group)
                continue
            if kind == T_SILENCE:
                group = self._renew_group.get(key)
                if group is not None:  # (else a step earlier in this tick dropped it)
                    self._check_silence(group, now)
                continue
            task = self._by_serial.get(key)
            if task is None:
                continue  # (a step earlier in this tick ended it)
            # T_BUDGET
            self._cancel_task(task, CANCEL_DEADLINE, E_RECV_CANCEL)
        # bounded: if more are due, next_deadline() stays <= now and the
        # driver's timer comes straight back after the loop has polled once
        self._idem.evict_expired(now, EVICT_PER_TICK)

    # ----------------------------------------------------------- durable state
    def restore(self, records: list[tuple], tombstones: list[tuple], now: int, journal: Any) -> None:
        """Start from a journal's state (``rsc.node.journal``), then write to it.

        ``records`` are ``(key, fingerprint, origin, task_id, outcome | None,
        remaining_ns | None)``; one with no outcome was running when the node
        died and is finished now as RESTARTED_OUTCOME (and journalled so); an
        outcome that is ``dropped_outcome`` itself is a result the replay
        dropped under the budget (the table counts it as no bytes).
        ``tombstones`` are ``(origin, task_id, reason, remaining_ns)``. Each
        keeps the time it had left (its life counted from ``now``).
        """
        self._journal = journal
        self.features["journal"] = journal.journal_id.hex()
        ttl, idem = self.ttl_ns, self._idem
        # shortest-lived first: the table's expiry queue is kept in order
        for key, fp, origin, rtid, outcome, remaining in sorted(
                records, key=lambda r: ttl if r[5] is None else r[5]):
            if idem.check_and_record(key, fp, origin, rtid, now) is not _idem.NEW:
                continue  # the same key or task twice: keep the first
            if outcome is None:
                outcome, remaining = RESTARTED_OUTCOME, ttl
                journal.finished(key, rtid, outcome)
            idem.complete(key, rtid, outcome, max(0, now + min(remaining, ttl) - ttl),
                          kept_result_bytes(outcome))
        for origin, rtid, reason, remaining in sorted(tombstones, key=lambda t: t[3]):
            remaining = min(remaining, ttl)
            idem.add_tombstone(origin, rtid, max(0, now + remaining - ttl), reason)

    def durable_state(self, now: int) -> tuple[list[tuple], list[tuple]]:
        """What a journal compaction writes: the live records and tombstones, in
        ``restore``'s form (running records with no outcome and no expiry)."""
        return self.durable_records(self._idem.records(), now), self.durable_tombstones(now)

    def durable_scan(self, chunk: int) -> Iterator[list[Any]]:
        """The idempotency records a step at a time (``IdemTable.scan_records``),
        for ``durable_records``: a running node compacts its journal a step
        per loop turn, so a million records never hold the loop at once."""
        return self._idem.scan_records(chunk)

    @staticmethod
    def durable_records(records: list[Any], now: int) -> list[tuple]:
        """The live ones of ``records`` (snapshots) in ``restore``'s form."""
        out: list[tuple] = []
        for r in records:
            if not r.finished:
                out.append((r.key, r.fingerprint, r.origin, r.task_id, None, None))
            elif r.expires_at is not None and r.expires_at > now:  # a finished record's is set
                out.append((r.key, r.fingerprint, r.origin, r.task_id, r.outcome, r.expires_at - now))
        return out

    def durable_tombstones(self, now: int) -> list[tuple]:
        """The live tombstones in ``restore``'s form."""
        idem = self._idem
        return [(origin, rtid, idem.tombstone_reason(origin, rtid) or TOMBSTONE_REASON, exp - now)
                for origin, rtid, exp in idem.tombstones() if exp > now]

    # ----------------------------------------------------------------- shutdown
    def begin_drain(self) -> None:
        """Stop admitting new work (rejected with node_shutting_down)."""
        self.draining = True

    def cancel_all(self, reason: tuple = CANCEL_SHUTDOWN) -> int:
        """Cancel every running task; returns how many were asked to stop."""
        n = 0
        for task in list(self._running.values()):
            if task.cancel_reason is None:
                n += 1
            self._cancel_task(task, reason, E_RECV_CANCEL)
        return n

    def close_all(self, message: str = "node shutting down") -> None:
        """ERROR shutting_down on every connection, then close them (the last step of a drain)."""
        self.flush_acks()
        for conn in list(self._conns):
            self._send(conn, Error(self.name, self._stamp(), ERR_SHUTTING_DOWN, message))
            self.actions.append((CLOSE, conn, None))
            self.close_connection(conn, 0)

    def live_connection_ids(self) -> list[Any]:
        return list(self._conns)

    def has_undelivered(self) -> bool:
        return self._idem.held_origins > 0


# Spawn admission (PROTOCOL.md section 7, "Spawn admission"), in order: the
# first rule that returns a verdict decides; a spawn none decides is admitted.
# Each name is a NodeEngine method ``(origin, fields, comp) -> verdict | None``;
# NodeEngine.admission_verdict is this list written out as straight-line calls.
ADMISSION_RULES: tuple[str, ...] = (
    "_rule_origin_matches",
    "_rule_key_length",
    "_rule_lease_positive",
    "_rule_lease_trackable",
    "_rule_input_size",
    "_rule_capability",
    "_rule_task_id_held",
    "_rule_tombstoned",
    "_rule_key_known",
    "_rule_not_draining",
    "_rule_computation_known",
    "_rule_capacity",
    "_rule_input_valid",
    "_rule_capability_uses",
)
