"""The origin side of the protocol as a sans-I/O engine.

The engine tracks every remote task this origin started, per node link. Feed
it link events (``link_up`` once a byte stream to the node is open,
``link_down`` when it is gone), decoded messages and clock readings (ns). It
queues for its driver:

- ``self.actions``: ``(SEND, node, message)`` and ``(CLOSE, node, None)``;
- ``self.events``: ``(EV_ACCEPTED | EV_REJECTED | EV_RESULT | EV_LEASE_EXPIRED, task, detail)``
  (EV_ACCEPTED only while ``accept_events`` is set, as it is by default),
  ``(EV_NODE_RESTARTED, task, kept_journal)``, ``(EV_PROTOCOL_ERROR, task, RemoteProtocolError)``,
  plus ``(EV_STATUS, None, (node, stats))`` and ``(EV_HANDSHAKE_FAILED, None, (node, code, message))``;
  an EV_REJECTED's detail is ``(reject_code, detail)``, or ``(reject_code, detail, error)``
  for a spawn refused at the origin by the node's catalogue (``rsc.catalogue``)

and keeps every deadline it has in ``self.timers`` (a ``Deadlines``: leases,
escalation steps, keep-alive pings), which the driver's timer follows; at or
after ``timers.next_deadline()`` the driver calls ``tick(now)``.

Every change of a task's state goes through one method, ``_process(task,
event)``, which follows ``states.ORIGIN_TRANSITIONS``: an event that does not
fit the task's state is dropped, counted (``protocol_errors``) and reported as
EV_PROTOCOL_ERROR with a ``RemoteProtocolError``. Set ``record`` to a list to
have every transition appended to it as ``(rtid, state, event, next state)``.

Rules this engine keeps (PROTOCOL.md section 4, "Rules an origin keeps"):
an unacknowledged or unfinished spawn is re-sent with the same idempotency key
after every reconnect (a cancelled one as CANCEL then SPAWN, so the node
answers it Cancelled without running it); a PING goes to every node with live
tasks at least every third of the shortest lease; a task whose lease lapses
with neither renewal nor result becomes LeaseExpired, and a renewal (or a
first accept) that arrives after the deadline does not renew it: the task
lapses then, whether or not the timer has fired yet; a task written to a node
that then answers a reconnect as a new instance (WELCOME ``features["instance"]``
changed) is not re-sent but reported EV_NODE_RESTARTED at once, its lease
lapsed, with whether the node kept its journal (its driver applies the task's
policy); at most one outcome is ever reported per task (EV_RESULT, EV_REJECTED
or EV_LEASE_EXPIRED/EV_NODE_RESTARTED, once).
"""

from __future__ import annotations

from typing import Any, Callable

try:  # the class decorators below: Cython's when compiled, no-ops in Python
    import cython  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # the pure twin without Cython installed
    from rsc._pure_cython import cython

from rsc._core import USING_EXTENSIONS
from rsc._core.schema import RESULT_DELIVERY, SPAWN_ACK, expect_fields
from rsc._core.messages import (
    ACK_ACCEPTED,
    ACK_BY_RESULT_FEATURE,
    VALUE_SEGMENTS_FEATURE,
    DEFAULT_MAX_FRAME_BYTES,
    DRAWN_KEYS_FEATURE,
    FRAME_OVERHEAD_BYTES,
    REJECT_INVALID_INPUT,
    CancelRequest,
    Error,
    LeaseRenewal,
    LeaseRenewalBatch,
    LeaseRenewalDigest,
    LeaseResyncRequest,
    Message,
    Ping,
    Pong,
    ResultDelivery,
    SpawnAck,
    StatusReply,
    StatusRequest,
    Welcome,
    offers_value_segments,
)
from rsc._engine.deadlines import NO_DEADLINE, Deadlines
from rsc._engine.escalation import Cancel, EscEvent, EscState, Escalation, Forget, Reattempt, Settle
from rsc._engine.handshake import OriginHandshake
from rsc._engine.logical import LamportClock
from rsc._engine.renewal import FEATURE as RENEWAL_FEATURE
from rsc._engine.renewal import VERSION as RENEWAL_VERSION
from rsc._engine.renewal import LeaseGroup, offers_digests
from rsc._engine import trace_names as TN
from rsc._engine.states import ORIGIN_TERMINAL, OriginEvent, OriginState, origin_after
from rsc.catalogue import Catalogue, parse as parse_catalogue
from rsc.errors import ProtocolError, RemoteProtocolError, UnexpectedMessage
from rsc.value_codec import Segmented

SEND, CLOSE = 0, 1
# The sites that unpack a message's fields by position check the order at import.
_ACK_FIELDS = expect_fields(SPAWN_ACK, "remote_task_id", "status", "reject_code", "reject_detail",
                            "assigned_node")
_RESULT_FIELDS = expect_fields(RESULT_DELIVERY, "remote_task_id", "outcome_kind", "payload",
                               "execution_time_ns", "segments")
# The codec's builder of SpawnRequest (no Python __init__ call), its
# fields() (a message's fields as a tuple, in one call) and sender_time(), from the codec
# rsc._core.envelope is: the compiled build of this module cimports them from
# the compiled codec and calls them as C (origin.pxd).
if USING_EXTENSIONS:
    from rsc._core._envelope import fields as _fields, sender_time as _sender_time
    from rsc._core._envelope import spawn_request as _spawn_request
else:
    from rsc._core._envelope_py import fields as _fields, sender_time as _sender_time
    from rsc._core._envelope_py import spawn_request as _spawn_request
EV_ACCEPTED, EV_REJECTED, EV_RESULT, EV_LEASE_EXPIRED, EV_STATUS, EV_HANDSHAKE_FAILED = 0, 1, 2, 3, 4, 5
EV_NODE_RESTARTED, EV_PROTOCOL_ERROR = 6, 7
EV_SETTLE, EV_REATTEMPT, EV_WANT_LINK = 8, 9, 10
MS = 1_000_000
# The kinds of deadline in the engine's timers (keyed by task id, or link id for PING)
T_LEASE, T_ESCALATION, T_PING = 0, 1, 2
# What an origin assumes a node accepts before its WELCOME says (an input that
# fits one frame at the default cap).
DEFAULT_INPUT_LIMIT = DEFAULT_MAX_FRAME_BYTES - FRAME_OVERHEAD_BYTES
# Views of renewal groups a link keeps before a new one makes it drop the
# empty ones (one per lease length in use, plus these).
MAX_IDLE_GROUPS = 16


# states.ORIGIN_TRANSITIONS as one tuple per event, indexed by state
# (_AFTER[event][state]): what _process reads, without a dict lookup or an
# Enum hash per task.
_AFTER = tuple(origin_after(e) for e in OriginEvent)
# Events as plain ints: module globals read on every task (see node.py)
_SEND_SPAWN, _ACK_ACCEPTED, _ACK_REJECTED = int(OriginEvent.SEND_SPAWN), int(OriginEvent.ACK_ACCEPTED), int(OriginEvent.ACK_REJECTED)
_RENEWAL, _RESULT, _SEND_CANCEL = int(OriginEvent.RENEWAL), int(OriginEvent.RESULT), int(OriginEvent.SEND_CANCEL)
_LEASE_LAPSED, _NODE_RESTARTED, _REFUSE = int(OriginEvent.LEASE_LAPSED), int(OriginEvent.NODE_RESTARTED), int(OriginEvent.REFUSE)
_SPAWNED = OriginState.SPAWNED
# ... and the public constants a task's path reads, as private copies (C
# globals when compiled: origin.pxd; a module global is a dict lookup per read)
_MS, _SEND, _EV_RESULT, _T_LEASE, _T_PING = MS, SEND, EV_RESULT, T_LEASE, T_PING
_ACK_OK, _ResultDelivery, _SpawnAck = ACK_ACCEPTED, ResultDelivery, SpawnAck
_Segmented = Segmented  # a C global in the compiled build (origin.pxd): one pointer compare
_INIT = OriginState.INIT  # a module global, not an Enum class attribute read per task (node.py)


def input_too_large(size: int, node: str, limit: int) -> str:
    """The reason an input is refused before it is sent (rejected as invalid_input)."""
    return (f"input is {size} bytes; node {node!r} accepts at most {limit} "
            f"(send large data by another channel, or raise the node's --max-input-bytes)")


# Compiled, a freed OriginTask is kept for the next spawn (up to 1,024, as
# many RemoteHandles: rsc.handle): one that comes off the free list is
# tracked by the cyclic collector as a new one is, but does not count as an
# allocation towards its next young collection. A burst of spawns then
# allocates few new tracked objects, and the young collections that walk
# every task outstanding come far less often (not the thresholds: the
# user's). The decorators do nothing in Python; cclass is what lets Cython
# apply freelist to a class its .pxd declares.
@cython.freelist(1024)
@cython.cclass
class OriginTask:
    """One remote task as its origin sees it."""

    __slots__ = ("rtid", "node", "computation", "input", "lease_ms", "key", "deadline_ns",
                 "budget", "region", "task", "capability", "state", "handle", "reported",
                 "cancel_reason", "sent", "accepted", "policy", "lease_until", "renewals", "lapsed_at",
                 "input_codec", "group", "group_mark", "drawn")

    def __init__(self, rtid: int, node: str, computation: str, input: Any, lease_ms: int,
                 key: bytes, budget: tuple | None, deadline_ns: int | None, region: int,
                 task: int, capability: bytes | None, handle: Any) -> None:
        self._init(rtid, node, computation, input, lease_ms, key, budget, deadline_ns, region, task,
                   capability, handle)

    def _init(self, rtid: int, node: str, computation: str, input: Any, lease_ms: int,  # noqa: A002
              key: bytes, budget: tuple | None, deadline_ns: int | None, region: int,
              task: int, capability: bytes | None, handle: Any) -> None:
        """``__init__``'s work (a C call when compiled: see ``new_task``)."""
        self.rtid = rtid
        self.node = node
        self.computation = computation
        self.input = input  # bytes, a view of a packer's buffer, or a Segmented (value segments)
        self.lease_ms = lease_ms
        self.key = key
        self.budget = budget  # wire budget; element 0 recomputed from deadline_ns at each send
        self.deadline_ns = deadline_ns
        self.region = region
        self.task = task
        self.capability = capability
        self.state = _INIT
        self.handle = handle
        self.reported = False
        self.cancel_reason: tuple | None = None
        self.sent = False  # written to a connection at least once (may have reached the node)
        self.accepted = False  # the node accepted it (its first SPAWN_ACK said so)
        # its lease's deadline (ns) while watched; the timers hold it there or
        # earlier (a renewal moves only this: _renew)
        self.lease_until = 0
        self.renewals = 0  # renewals from its node that moved that deadline (handle.lease)
        self.lapsed_at = 0  # when its lease ran out (ns; 0: it has not), as handle.lease says
        # the LeaseGroup whose compact renewals keep its lease (None: its own
        # deadline only), and that group's ``renewals`` when it joined or was
        # last folded in (OriginEngine._fold)
        self.group: Any = None
        self.group_mark = 0
        # its lease escalation policy (rsc.lease); None: the engine only reports
        # a lapse (EV_LEASE_EXPIRED) or a node restart (EV_NODE_RESTARTED)
        self.policy: Any = None
        # how its input was encoded ("raw", "msgpack"; None: by the caller, it
        # fits any codec): checked against the node's catalogue if it is sent
        # only once the node's WELCOME has said what it serves (_resend_all)
        self.input_codec: str | None = None
        # its key was drawn at random by the runtime, never a caller's
        # IdempotencyKey: sent as SPAWN_REQUEST's "drawn" to a node that
        # offers it, which then records the key owner-only, not hashed
        self.drawn = False

    def __repr__(self) -> str:
        return f"OriginTask({self.node}/{self.rtid} {self.computation} {self.state.name})"


def new_task(rtid: int, node: str, computation: str, input: Any, lease_ms: int,  # noqa: A002
             key: bytes, budget: tuple | None, deadline_ns: int | None, region: int,
             task: int, capability: bytes | None, handle: Any) -> OriginTask:
    """``OriginTask(...)`` without a Python-level call (one per spawn)."""
    t = OriginTask.__new__(OriginTask)
    t._init(rtid, node, computation, input, lease_ms, key, budget, deadline_ns, region, task,
            capability, handle)
    return t


class _Link:
    __slots__ = ("node", "lid", "handshake", "ready", "confirmed", "ever_ready", "tasks",
                 "lease_counts", "main_lease", "main_count", "last_sent", "ping_nonce", "ping_at",
                 "first_sends", "instance",
                 "journal", "max_input", "catalogue", "codecs", "digests", "groups", "last_group",
                 "drawn_keys", "segments")

    def __init__(self, node: str, lid: int) -> None:
        self.node = node
        self.lid = lid  # its key in the engine's timers (its PING deadline)
        # the largest input the node takes (its WELCOME's max_input_bytes)
        self.max_input = DEFAULT_INPUT_LIMIT
        # what the node serves (its WELCOME's catalogue, rsc.catalogue), and
        # its codecs by name: None from a node that does not say
        self.catalogue: Catalogue | None = None
        self.codecs: dict[str, str] | None = None
        # the node takes SPAWN_REQUEST's "drawn" flag (its WELCOME's drawn_keys)
        self.drawn_keys = False
        # the node takes value segments (its WELCOME's value_segments, and this
        # origin offered them): a segmented input goes with its segments
        self.segments = False
        self.handshake: OriginHandshake | None = None
        self.ready = False
        # The handshake ends with our AUTH, which the node never acknowledges: a
        # link is *confirmed* by the first non-ERROR frame after it. Only then
        # can spawns have reached the node (ever_ready), and an ERROR before it
        # means the node refused the handshake.
        self.confirmed = False
        self.ever_ready = False
        # tasks first written on this not-yet-confirmed connection: if the node
        # refuses the handshake they never reached it
        self.first_sends: list[OriginTask] = []
        self.tasks: dict[int, OriginTask] = {}
        # How many of its tasks ask for each lease length (ms): the first
        # length it saw (main_lease; most spawns ask for their cap's default)
        # counted in main_count, every other one in lease_counts.
        self.main_lease = 0
        self.main_count = 0
        self.lease_counts: dict[int, int] = {}
        self.last_sent = 0
        self.ping_nonce = 0
        self.ping_at = NO_DEADLINE  # when its PING deadline is set for (timers), if it is
        # what the node's last WELCOME said it is: its process instance and
        # its durable journal's id (None from a node that does not say)
        self.instance: Any = None
        self.journal: Any = None
        # compact renewals: both ends offered them (the node's last WELCOME
        # did), and this origin's view of each of the node's renewal groups,
        # by the group's lease_ms (rsc._engine.renewal.LeaseGroup)
        self.digests = False
        self.groups: dict[int, LeaseGroup] = {}
        self.last_group: LeaseGroup | None = None  # the group a task joined last (in groups)


    def count_lease(self, lease_ms: int) -> None:
        """One more of its tasks asks for ``lease_ms``."""
        if lease_ms == self.main_lease:
            self.main_count += 1
        elif self.main_lease == 0:
            self.main_lease = lease_ms
            self.main_count = 1
        else:
            counts = self.lease_counts
            counts[lease_ms] = counts.get(lease_ms, 0) + 1

    def uncount_lease(self, lease_ms: int) -> None:
        """One task that asked for ``lease_ms`` is gone."""
        if lease_ms == self.main_lease:
            self.main_count -= 1
            return
        counts = self.lease_counts
        n = counts[lease_ms] - 1
        if n:
            counts[lease_ms] = n
        else:
            del counts[lease_ms]

    def shortest_lease(self) -> int:
        """The shortest lease (ms) any of its tasks asks for; 0 if none does."""
        shortest = self.main_lease if self.main_count else 0
        if self.lease_counts:
            other = min(self.lease_counts)
            if not shortest or other < shortest:
                shortest = other
        return shortest


class OriginEngine:
    """Per-origin task table, resend on reconnect, lease watch and keep-alive."""

    def __init__(self, name: str, *, key: bytes | None = None, entropy: Callable[[int], bytes],
                 trace: Callable[[str, dict], None] | None = None,
                 compact_renewals: bool = True, ack_by_result: bool = True,
                 value_segments: bool = True) -> None:
        """``compact_renewals``: offer LEASE_RENEWAL_DIGEST in HELLO (False:
        behave as an origin without the extension, renewed by full batches).
        ``ack_by_result``: offer ``ack_by_result`` in HELLO, so a node that
        takes it up sends a task that ended before its SPAWN_ACK was written
        only its RESULT_DELIVERY, which accepts and settles it at once
        (False: every accepted spawn gets its own SPAWN_ACK).
        ``value_segments``: offer value segments in HELLO, so a node that takes
        them sends a msgpack output's large leaves as segments (False: behave
        as an origin without the extension)."""
        self.name = str(name)
        self.compact_renewals = compact_renewals
        # Report a node's first accept of each task as EV_ACCEPTED. A driver
        # that reads acceptance from the task (``OriginTask.accepted``, as
        # rsc.Runtime does) turns it off: one event fewer per task.
        self.accept_events = True
        # HELLO's features (PROTOCOL.md section 3, "Negotiation")
        self.features: dict = {RENEWAL_FEATURE: RENEWAL_VERSION} if compact_renewals else {}
        if ack_by_result:
            self.features[ACK_BY_RESULT_FEATURE] = 1
        if value_segments:
            self.features[VALUE_SEGMENTS_FEATURE] = 1
        self.key = key
        self._entropy = entropy
        self._trace = trace
        self.clock = LamportClock()
        self.actions: list[tuple[int, Any, Any]] = []
        self.events: list[tuple[int, OriginTask, Any]] = []
        self._links: dict[str, _Link] = {}
        self._link_list: list[_Link] = []  # by link id
        self._tasks: dict[int, OriginTask] = {}
        # every deadline: T_LEASE (task id -> lease deadline), T_ESCALATION
        # (task id -> cancel timeout or same-node window), T_PING (link id)
        self.timers = Deadlines()
        self.dropped = 0
        self.protocol_errors = 0  # events that did not fit their task's state (_process)
        # figures for Runtime.stats(), counted where the event happens (never per task)
        self.connection_errors = 0  # connections closed for a protocol error we found
        self.escalations = 0  # leases that lapsed under a policy (an escalation began)
        self.retries = 0  # new attempts made by escalation (retry policies)
        self.record: list[tuple[int, OriginState, int, OriginState]] | None = None
        # lease escalation (rsc._engine.escalation): one record per remote task
        # with a policy whose lease lapsed, keyed by its current attempt's id
        self._escalations: dict[int, Escalation] = {}
        # where new attempts' remote task ids come from (the driver's counter)
        self.new_rtid: Callable[[], int] | None = None

    # ----------------------------------------------------------------- helpers
    def _link(self, node: str) -> _Link:
        link = self._links.get(node)
        if link is None:
            link = self._links[node] = _Link(node, len(self._link_list))
            self._link_list.append(link)
        return link

    def _send(self, link: _Link, msg: Message, now: int) -> None:
        link.last_sent = now
        self.actions.append((_SEND, link.node, msg))

    def _trace_event(self, event: str, **fields: Any) -> None:
        if self._trace is not None:
            self._trace(event, fields)

    def _drop(self, why: str, **fields: Any) -> None:
        self.dropped += 1
        self._trace_event(TN.DROPPED, why=why, **fields)

    def take_actions(self) -> list[tuple[int, Any, Any]]:
        out, self.actions = self.actions, []
        return out

    def take_events(self) -> list[tuple[int, OriginTask, Any]]:
        out, self.events = self.events, []
        return out

    @property
    def live_tasks(self) -> int:
        return len(self._tasks)

    @property
    def lease_count(self) -> int:
        return self.timers.count(T_LEASE)

    def tasks_on(self, node: str) -> list[OriginTask]:
        link = self._links.get(node)
        return list(link.tasks.values()) if link else []

    def ever_ready(self, node: str) -> bool:
        """True once a link to ``node`` was confirmed: spawns may have reached it."""
        link = self._links.get(node)
        return link is not None and link.ever_ready

    def is_ready(self, node: str) -> bool:
        link = self._links.get(node)
        return link is not None and link.ready

    def get(self, rtid: int) -> OriginTask | None:
        return self._tasks.get(rtid)

    def input_limit(self, node: str) -> int:
        """The largest input ``node`` accepts: what its last WELCOME said
        (``features.max_input_bytes``), else what fits one default-size frame."""
        link = self._links.get(node)
        return DEFAULT_INPUT_LIMIT if link is None else link.max_input

    def link_for(self, node: str) -> _Link:
        """The engine's record of ``node`` (made if need be), which the
        runtime reads once per spawn: ``max_input`` (``input_limit``) and
        ``codecs``, the codec of each computation its catalogue lists (None
        while the catalogue is not known)."""
        link = self._links.get(node)
        return self._link(node) if link is None else link

    def catalogue(self, node: str) -> Catalogue | None:
        """What ``node`` said it serves (``rsc.catalogue.Catalogue``), or None."""
        link = self._links.get(node)
        return None if link is None else link.catalogue

    def learn_catalogue(self, node: str, catalogue: Catalogue) -> None:
        """Add a fuller list of ``node``'s computations (its STATUS_REPLY's)."""
        link = self._link(node)
        cat = catalogue if link.catalogue is None else link.catalogue.merged(catalogue)
        link.catalogue, link.codecs = cat, cat.codecs

    def lease_deadline(self, rtid: int) -> int | None:
        """When the task's lease lapses unless renewed (ns), or None if not watched."""
        at = self.timers.deadline_of(T_LEASE, rtid)
        task = self._tasks.get(rtid)
        if at is None or task is None:
            return at
        g = task.group
        if g is not None and g.covers(task.group_mark, task.lease_until):
            return g.until  # renewed with its group; its timer catches up when it fires
        return task.lease_until

    def renewals_of(self, task: OriginTask) -> int:
        """The node's renewals applied to ``task``'s lease (handle.lease.renewal_count):
        its own, plus its group's compact renewals since it joined."""
        g = task.group
        if g is None:
            return task.renewals
        return task.renewals + g.renewals_since(task.group_mark, task.lease_until)

    # ------------------------------------------------------------------- links
    def link_up(self, node: str, now: int) -> None:
        """A byte stream to ``node`` is open: start the handshake."""
        link = self._link(node)
        link.ready = link.confirmed = False
        link.first_sends = []
        link.handshake = OriginHandshake(self.name, self.key, self._entropy(32), self.features)
        for g in link.groups.values():
            g.resync_asked = False  # an answer still owed died with the old connection
        self._send(link, link.handshake.hello(self.clock.send()), now)

    def link_down(self, node: str, now: int) -> None:
        link = self._links.get(node)
        if link is not None:
            link.ready = False
            link.handshake = None

    def _check_instance(self, link: _Link, features: Any, now: int) -> None:
        """After a reconnect: if the node is a new instance, what was written to
        the old one is lost there (unless the node kept its journal), and a
        transparent resend would quietly run it again where it is, whatever the
        task's policy says. Such tasks are lapsed and reported instead."""
        feats = features if isinstance(features, dict) else {}
        instance, journal = feats.get("instance"), feats.get("journal")
        old_instance, old_journal = link.instance, link.journal
        link.instance, link.journal = instance, journal
        if old_instance is None or instance is None or instance == old_instance:
            return  # the same process (a dropped connection), or a node that does not say
        kept = journal is not None and journal == old_journal
        self._trace_event(TN.NODE_RESTARTED, node=link.node, kept_journal=kept)
        for task in list(link.tasks.values()):
            st = task.state
            if task.sent and (st is OriginState.SPAWNED or st is OriginState.RUNNING):
                self._process(task, _NODE_RESTARTED)
                self._leave_group(link, task)
                task.lapsed_at = now
                self.timers.discard(T_LEASE, task.rtid)
                if task.policy is None:
                    self.events.append((EV_NODE_RESTARTED, task, kept))
                else:
                    self._escalate(task, EscEvent.NODE_RESTARTED, kept, now)

    def _learn_limits(self, link: _Link, features: dict) -> None:
        """Take the node's limits, catalogue and whether it takes drawn keys from
        its WELCOME (an older node sends none of them)."""
        limit = features.get("max_input_bytes")
        if type(limit) is int and 0 <= limit:
            link.max_input = min(limit, DEFAULT_INPUT_LIMIT)
        else:
            link.max_input = DEFAULT_INPUT_LIMIT
        cat = link.catalogue = parse_catalogue(link.node, features)
        link.codecs = None if cat is None else cat.codecs
        drawn = features.get(DRAWN_KEYS_FEATURE)
        link.drawn_keys = type(drawn) is int and drawn >= 1
        link.segments = VALUE_SEGMENTS_FEATURE in self.features and offers_value_segments(features)

    def _learn_renewals(self, link: _Link, features: Any) -> None:
        """Whether the node's compact renewals are on for this link (both ends
        offered them). A node that stops offering them (an older one in its
        place) renews every task by its id again: views of its groups go."""
        link.digests = self.compact_renewals and offers_digests(features)
        if not link.digests and link.groups:
            for task in list(link.tasks.values()):
                self._leave_group(link, task)
            link.groups.clear()
            link.last_group = None

    def _resend_all(self, link: _Link, now: int) -> None:
        for task in list(link.tasks.values()):
            if not task.sent and len(task.input) > link.max_input:
                # spawned before the node's limits were known: refuse it here,
                # as the node would, instead of sending a frame it cannot take
                self._process(task, _REFUSE)
                self.forget(task.rtid)
                self._report(EV_REJECTED, task, (REJECT_INVALID_INPUT, input_too_large(
                    len(task.input), link.node, link.max_input)))
                continue
            if not task.sent and link.catalogue is not None:
                # spawned before the node said what it serves: refused as at spawn time
                err = link.catalogue.refusal(task.computation, task.input_codec)
                if err is not None:
                    self._process(task, _REFUSE)
                    self.forget(task.rtid)
                    self._report(EV_REJECTED, task, (err.code, err.detail, err))  # type: ignore[attr-defined]  # a RemoteError
                    continue
            st = task.state
            if st is OriginState.CANCEL_SENT:
                self._send_cancel_msg(link, task, now)
                self._send_spawn_msg(link, task, now)
            elif st is OriginState.SPAWNED or st is OriginState.RUNNING:
                self._send_spawn_msg(link, task, now)

    # ------------------------------------------------------------------- spawn
    def spawn(self, task: OriginTask, now: int) -> None:
        """Start ``task`` (state INIT): SPAWN_REQUEST now if the link is ready,
        else as soon as it is."""
        rtid = task.rtid
        tasks = self._tasks
        n = len(tasks)
        tasks.setdefault(rtid, task)  # one lookup: entered, unless the id is live already
        if len(tasks) == n:
            raise ValueError(f"remote task id {rtid} is already live")
        if self._process(task, _SEND_SPAWN) is None:
            del tasks[rtid]
            raise ValueError(f"{task!r} was already started")
        if self._trace is not None:
            self._trace_event(TN.SPAWN_REQUEST_CREATED, node=task.node, rtid=rtid,
                              computation=task.computation, key=task.key.hex(),
                              region_id=task.region, lease_ms=task.lease_ms)
        link = self._links.get(task.node)
        if link is None:
            link = self._link(task.node)
        link.tasks[rtid] = task
        link.count_lease(task.lease_ms)
        if link.ready:
            self._send_spawn_msg(link, task, now)
        # else: the lease clock starts when the spawn is first written (_send_spawn_msg)

    def _send_spawn_msg(self, link: _Link, t: OriginTask, now: int) -> None:
        if not t.sent:
            t.sent = True
            if not link.confirmed:
                link.first_sends.append(t)
            t.lease_until = now + t.lease_ms * _MS
            self.timers.add(_T_LEASE, t.rtid, t.lease_until)
            at = now + t.lease_ms * _MS // 3  # the link's ping may now come sooner
            if at < link.ping_at:
                link.ping_at = at
                self.timers.put(_T_PING, link.lid, at)
        budget = t.budget
        if budget is not None and t.deadline_ns is not None:
            remaining = max(0, -(-(t.deadline_ns - now) // _MS))
            budget = (remaining, budget[1], budget[2], budget[3])
        data = t.input
        if type(data) is _Segmented:
            return self._send_segmented(link, t, budget, now)
        self._send(link, _spawn_request(self.name, self.clock.send(), t.rtid, t.computation, data,
                                        t.lease_ms, t.key, budget, self.name, t.region, t.task,
                                        t.capability, t.drawn and link.drawn_keys), now)
        if self._trace is not None:
            self._trace_event(TN.SPAWN_REQUEST_SENT, node=link.node, rtid=t.rtid)

    def _send_segmented(self, link: _Link, t: OriginTask, budget: Any, now: int) -> None:
        """SPAWN_REQUEST of a segmented input: with its segments to a node that
        takes them, else joined into plain msgpack (a node of an older rsc)."""
        data = t.input
        if link.segments:
            msg = _spawn_request(self.name, self.clock.send(), t.rtid, t.computation, data.packed,
                                 t.lease_ms, t.key, budget, self.name, t.region, t.task,
                                 t.capability, t.drawn and link.drawn_keys, data.segments)
        else:
            msg = _spawn_request(self.name, self.clock.send(), t.rtid, t.computation,
                                 data.joined(), t.lease_ms, t.key, budget, self.name, t.region,
                                 t.task, t.capability, t.drawn and link.drawn_keys)
        self._send(link, msg, now)
        if self._trace is not None:
            self._trace_event(TN.SPAWN_REQUEST_SENT, node=link.node, rtid=t.rtid)

    def _send_cancel_msg(self, link: _Link, t: OriginTask, now: int) -> None:
        reason = t.cancel_reason
        assert reason is not None  # cancel() set it before any CANCEL_REQUEST is sent
        self._send(link, CancelRequest(self.name, self.clock.send(), t.rtid, reason, self.name), now)
        self._trace_event(TN.CANCEL_SENT, node=link.node, rtid=t.rtid, reason=reason)

    def cancel(self, rtid: int, reason: tuple, now: int) -> bool:
        """Ask the node to cancel; True if a CANCEL_REQUEST is (or will be) sent."""
        task = self._tasks.get(rtid)
        if task is None:
            return False
        was = task.state
        if self._process(task, _SEND_CANCEL) is None:
            return False
        if task.cancel_reason is None or was is OriginState.LEASE_EXPIRED:
            task.cancel_reason = task.cancel_reason or reason
            if was is OriginState.LEASE_EXPIRED:
                # watch again: a node that never answers must not pin the task forever
                task.lease_until = now + task.lease_ms * MS
                self.timers.add(T_LEASE, rtid, task.lease_until)
            link = self._links[task.node]
            if link.ready:
                self._send_cancel_msg(link, task, now)
            return True
        return False

    def give_up_unsent(self, node: str) -> list[OriginTask]:
        """Give up every task on ``node`` never written to a connection (it
        cannot be running anywhere): each goes REFUSE -> REJECTED and is
        forgotten. Returns them, for the driver to settle (the node cannot be
        reached, or refused our handshake)."""
        link = self._links.get(node)
        if link is None:
            return []
        out = []
        for task in list(link.tasks.values()):
            if not task.sent and self._process(task, _REFUSE) is not None:
                self.forget(task.rtid)
                out.append(task)
        return out

    def forget(self, rtid: int) -> None:
        """Drop a task (terminal or given up on); a late message for it is traced and dropped."""
        task = self._tasks.get(rtid)
        if task is not None:
            self._retire(self._links[task.node], task)

    def _retire(self, link: _Link, task: OriginTask) -> None:
        """``forget`` for a live task of ``link``, both known."""
        rtid = task.rtid
        del self._tasks[rtid]
        del link.tasks[rtid]
        self._leave_group(link, task)
        link.uncount_lease(task.lease_ms)
        self.timers.discard(_T_LEASE, rtid)
        if self._escalations:
            if self._escalations.pop(rtid, None) is not None:
                self.timers.discard(T_ESCALATION, rtid)

    def _process(self, task: OriginTask, event: int) -> OriginState | None:
        """The one place a task's state changes: apply ``event`` (an
        ``OriginEvent``) as ``states.ORIGIN_TRANSITIONS`` says and return the
        new state. An event that does not fit leaves the state as it is,
        returns None and is reported (``_misfit``)."""
        state = task.state
        nxt = _AFTER[event][state]
        if nxt is None:
            self._misfit(task, event)
            return None
        task.state = nxt
        if self.record is not None:
            self.record.append((task.rtid, state, event, nxt))
        return nxt

    def _misfit(self, task: OriginTask, event: int) -> None:
        """An event that does not fit its task's state: dropped, counted, traced
        and reported to the driver as a RemoteProtocolError (PROTOCOL.md section 9)."""
        state, ev = OriginState(task.state).name, OriginEvent(event).name
        err = RemoteProtocolError(f"origin table has no transition ({state}, {ev})", task.node,
                                  task.rtid, state, ev)
        self.protocol_errors += 1
        self._drop(f"{ev} does not fit", task=repr(task), rule=err.rule)
        self.events.append((EV_PROTOCOL_ERROR, task, err))

    def _lapse(self, task: OriginTask, now: int) -> None:
        """The task's lease lapsed (its deadline passed with neither renewal nor
        result): LEASE_LAPSED, then its policy's escalation (or EV_LEASE_EXPIRED
        for a task without a policy)."""
        if self._process(task, _LEASE_LAPSED) is None:
            return
        self._leave_group(self._links[task.node], task)
        task.lapsed_at = min(task.lease_until, now)  # the deadline (a late renewal finds it passed)
        self.timers.discard(T_LEASE, task.rtid)
        self._trace_event(TN.LEASE_EXPIRED, node=task.node, rtid=task.rtid, task=repr(task))
        if task.policy is None:
            self.events.append((EV_LEASE_EXPIRED, task, None))
        else:
            self._escalate(task, EscEvent.LAPSED, None, now)

    # -------------------------------------------------------------- escalation
    def escalation_state(self, rtid: int) -> EscState | None:
        """Where the escalation of the task whose current attempt is ``rtid``
        stands, or None if its lease never lapsed."""
        esc = self._escalations.get(rtid)
        return None if esc is None else esc.state

    def _escalate(self, task: OriginTask, event: EscEvent, detail: Any, now: int) -> None:
        """Run the task's escalation machine on ``event`` and apply its decisions."""
        esc = self._escalations.get(task.rtid)
        if esc is None:
            self.escalations += 1
            esc = self._escalations[task.rtid] = Escalation(task.policy)
        self._trace_event(TN.ESCALATE, task=repr(task), on=event.name, policy=str(task.policy))
        if event is EscEvent.LAPSED:
            decisions = esc.on_lapsed(task.node, task.lease_ms, now)
        elif event is EscEvent.NODE_RESTARTED:
            decisions = esc.on_node_restarted(task.node, detail, now)
        else:
            decisions = esc.on_deadline(task.node, task.lease_ms, task.state is not _SPAWNED)
        self._apply(esc, task, decisions, now)

    def _apply(self, esc: Escalation, task: OriginTask, decisions: list, now: int) -> None:
        rtid = task.rtid
        for d in decisions:
            if isinstance(d, Settle):
                self.events.append((EV_SETTLE, task, d.message))
            elif isinstance(d, Cancel):
                if self.cancel(rtid, d.reason, now):
                    self.events.append((EV_WANT_LINK, task, task.node))
            elif isinstance(d, Forget):
                self.forget(rtid)
            elif isinstance(d, Reattempt):
                rtid = self._reattempt(esc, task, d, now)
        self.timers.discard(T_ESCALATION, rtid)
        if esc.deadline is not None and rtid in self._escalations:
            self.timers.add(T_ESCALATION, rtid, esc.deadline)

    def _reattempt(self, esc: Escalation, task: OriginTask, d: Reattempt, now: int) -> int:
        """Supersede ``task`` with a new attempt of the same key on ``d.node``:
        the old one is cancelled where reachable (a later lapse or result of it
        is reported with no policy) and the escalation record moves to the new one."""
        assert self.new_rtid is not None, "an engine that escalates needs new_rtid"
        self.retries += 1
        new = OriginTask(self.new_rtid(), d.node, task.computation, task.input, task.lease_ms,
                         task.key, task.budget, task.deadline_ns, task.region, task.task,
                         task.capability, task.handle)
        new.policy, task.policy = task.policy, None
        new.input_codec = task.input_codec
        new.drawn = task.drawn
        self._escalations[new.rtid] = self._escalations.pop(task.rtid)
        self.timers.discard(T_ESCALATION, task.rtid)
        if self.cancel(task.rtid, d.reason, now):
            self.events.append((EV_WANT_LINK, task, task.node))
        self.spawn(new, now)
        self.events.append((EV_REATTEMPT, task, new))
        return new.rtid

    def _report(self, ev: int, task: OriginTask, detail: Any) -> None:
        if task.reported:
            return self._drop("second outcome", task=repr(task))
        task.reported = True
        self.events.append((ev, task, detail))

    # ----------------------------------------------------------------- receive
    def receive(self, node: str, msg: Message, now: int) -> None:
        """A decoded message from ``node``. Connection-level errors queue ERROR+CLOSE."""
        link = self._links.get(node)
        if link is not None:
            self._receive(link, node, msg, now)

    def receive_all(self, node: str, msgs: list[Message], now: int) -> None:
        """The messages of one read from ``node``, in order: ``receive`` of
        each, with the node's link found once."""
        link = self._links.get(node)
        if link is not None:
            for msg in msgs:
                self._receive(link, node, msg, now)

    def _receive(self, link: _Link, node: str, msg: Message, now: int) -> None:
        if link.handshake is None:  # (an earlier message of the read may have closed it)
            return
        self.clock.merge(_sender_time(msg))
        # type(msg) in each test (Py_TYPE when compiled) narrows msg for type checkers
        try:
            if not link.ready:
                if type(msg) is Welcome:
                    if msg.sender != node:
                        raise UnexpectedMessage(f"dialled node {node!r} but {msg.sender!r} answered")
                    self._send(link, link.handshake.on_welcome(msg, self.clock.send()), now)
                    link.ready = True
                    self._learn_limits(link, msg.features)
                    self._learn_renewals(link, msg.features)
                    if link.catalogue is not None and not link.catalogue.complete:
                        # the rest of what the node serves comes in its STATUS_REPLY
                        self._send(link, StatusRequest(self.name, self.clock.send()), now)
                    self._trace_event(TN.HANDSHAKE, node=node)
                    self._check_instance(link, msg.features, now)
                    self._resend_all(link, now)
                    self._schedule_ping(link)
                elif type(msg) is Error:
                    self._on_peer_error(link, msg, now)
                else:
                    raise UnexpectedMessage(f"{type(msg).__name__} before the handshake completed")
                return
            if not link.confirmed and type(msg) is not Error:
                link.confirmed = link.ever_ready = True
                link.first_sends = []
            if type(msg) is _ResultDelivery:
                self._on_result(link, msg, now)
            elif type(msg) is _SpawnAck:
                self._on_ack(link, msg, now)
            elif type(msg) is LeaseRenewalDigest:
                self._on_digest(link, msg, now)
            elif type(msg) is LeaseRenewalBatch:
                if self._trace is not None:
                    self._trace_event(TN.LEASE_RENEWAL_RECEIVED, node=node, lease_ms=msg.new_lease_ms,
                                      rtids=list(msg.remote_task_ids))
                if link.digests:
                    self._on_full_list(link, msg.new_lease_ms, msg.remote_task_ids, now)
                else:
                    lease_ns = msg.new_lease_ms * MS
                    for rtid in msg.remote_task_ids:
                        self._on_renewal(link, rtid, lease_ns, now)
            elif type(msg) is LeaseRenewal:
                self._trace_event(TN.LEASE_RENEWAL_RECEIVED, node=node, lease_ms=msg.new_lease_ms,
                                  rtids=[msg.remote_task_id])
                self._on_renewal(link, msg.remote_task_id, msg.new_lease_ms * MS, now)
            elif type(msg) is Pong:
                pass
            elif type(msg) is Ping:
                self._send(link, Pong(self.name, self.clock.send(), msg.nonce), now)
            elif type(msg) is StatusReply:
                if link.catalogue is not None and not link.catalogue.complete:
                    fuller = parse_catalogue(node, msg.stats)
                    if fuller is not None:
                        self.learn_catalogue(node, fuller)
                self.events.append((EV_STATUS, None, (node, msg.stats)))  # type: ignore[arg-type]
            elif type(msg) is Error:
                self._on_peer_error(link, msg, now)
            else:
                raise UnexpectedMessage(f"an origin does not accept {type(msg).__name__}")
        except ProtocolError as exc:
            self.protocol_error(node, exc, now)

    def protocol_error(self, node: str, exc: ProtocolError, now: int) -> None:
        link = self._links.get(node)
        if link is None:
            return
        self.connection_errors += 1
        if not link.confirmed:
            self._handshake_refused(link)
            self.events.append((EV_HANDSHAKE_FAILED, None, (node, exc.code, exc.message)))  # type: ignore[arg-type]
        self._trace_event(TN.PROTOCOL_ERROR, node=node, code=exc.code, message=exc.message)
        self._send(link, Error(self.name, self.clock.send(), exc.code, exc.message), now)
        self.actions.append((CLOSE, node, None))
        self.link_down(node, now)

    def _on_peer_error(self, link: _Link, msg: Error, now: int) -> None:
        self._trace_event(TN.PEER_ERROR, node=link.node, code=msg.code, message=msg.message)
        if not link.confirmed:
            self._handshake_refused(link)
            self.events.append((EV_HANDSHAKE_FAILED, None, (link.node, msg.code, msg.message)))  # type: ignore[arg-type]
        self.actions.append((CLOSE, link.node, (msg.code, msg.message)))
        self.link_down(link.node, now)

    def _handshake_refused(self, link: _Link) -> None:
        """Spawns written after our AUTH on a connection the node then refused
        never reached it: they count as unsent again."""
        for t in link.first_sends:
            t.sent = False
            self.timers.discard(T_LEASE, t.rtid)
        link.first_sends = []

    def _drop_unknown(self, link: _Link, rtid: int, what: str) -> None:
        self._drop(f"{what} for an unknown or finished task", node=link.node, rtid=rtid)

    def _on_ack(self, link: _Link, msg: SpawnAck, now: int) -> None:
        rtid, status, reject_code, reject_detail, _node = _fields(msg)  # one call, not five lookups
        task = link.tasks.get(rtid)
        if task is None:
            return self._drop_unknown(link, rtid, "SPAWN_ACK")
        accepted = status == _ACK_OK
        state = task.state
        if self._process(task, _ACK_ACCEPTED if accepted else _ACK_REJECTED) is None:
            return
        if accepted:
            if link.digests:
                # The node put it in a renewal group before this ACK left. It
                # joins the view before the first accept's renewal below: if
                # that renewal comes too late and lapses it, the lapse takes
                # it out again.
                self._join_group(link, task)
            if state is _SPAWNED:  # the first accept
                if self._trace is not None:
                    self._trace_event(TN.SPAWN_ACK_RECEIVED, node=link.node, rtid=rtid)
                task.accepted = True
                if self.accept_events:
                    self.events.append((EV_ACCEPTED, task, None))
                # Only the first accept renews: the answer to a resend after a
                # reconnect does not, so reconnects that make no progress cannot
                # keep a lease alive (LEASE_RENEWAL batches renew a running task).
                self._renew(task, now + task.lease_ms * _MS, now)
        else:
            self._trace_event(TN.SPAWN_REJECTED, node=link.node, rtid=rtid, code=reject_code,
                              detail=reject_detail)
            self.forget(task.rtid)
            self._report(EV_REJECTED, task, (reject_code, reject_detail))

    def _on_renewal(self, link: _Link, rtid: int, lease_ns: int, now: int) -> bool:
        """One task's renewal (LEASE_RENEWAL, or an id of a batch); True if it
        renewed the lease (False: unknown task, a state it does not fit, or
        too late)."""
        task = link.tasks.get(rtid)
        if task is None:
            return False  # renewals racing a result are normal; nothing to trace
        if self._process(task, _RENEWAL) is None:
            return False
        if task.group is not None:
            self._fold(task)  # its deadline as its group's renewals have kept it
        if now > task.lease_until:
            self._renew(task, now + lease_ns, now)  # lapses it: not a renewal applied
            return False
        task.renewals += 1
        self._renew(task, now + lease_ns, now)
        return True

    # ------------------------------------------------------ compact renewals
    # PROTOCOL.md section 4, "Compact renewals". A task is in a LeaseGroup of
    # its link from its node's accept to its outcome or its lapse; while it
    # is, its lease is the later of its own deadline and the group's (fold).

    def _join_group(self, link: _Link, task: OriginTask) -> None:
        """Put ``task`` in the view of the group of the lease it asked for (the
        node's group, unless the node raised the lease or made it an alias:
        then a full list moves it, ``_on_full_list``). No-op if it is in one."""
        if task.group is None:
            self._join(link, task, task.lease_ms)

    def _join(self, link: _Link, task: OriginTask, lease_ms: int) -> None:
        g = link.last_group  # consecutive tasks mostly join the same group
        if g is None or g.lease_ms != lease_ms:
            groups = link.groups
            g = groups.get(lease_ms)
            if g is None:
                if len(groups) >= MAX_IDLE_GROUPS:
                    for empty in [k for k, v in groups.items() if not v.count]:
                        del groups[empty]
                g = groups[lease_ms] = LeaseGroup(lease_ms)
            link.last_group = g
        g.add(task.rtid)
        task.group = g
        task.group_mark = g.renewals

    def _fold(self, task: OriginTask) -> None:
        """Write what the task's group's renewals did for it into the task:
        its own deadline moves to the group's if the group covered it, and
        the renewals applied are counted (its timer still holds the old
        deadline; ``tick`` re-arms it there when it fires)."""
        g = task.group
        mark = task.group_mark
        if mark == g.renewals:
            return  # no group renewal since it joined or was last folded
        own = task.lease_until
        task.renewals += g.renewals_since(mark, own)
        task.group_mark = g.renewals
        if g.covers(mark, own):
            task.lease_until = g.until

    def _leave_group(self, link: _Link, task: OriginTask) -> None:
        """Take ``task`` out of its group's view, its deadline and renewals
        folded in (no-op if it is in none)."""
        g = task.group
        if g is None:
            return
        self._fold(task)
        g.remove(task.rtid)
        task.group = None
        # An emptied group stays: tasks that come and go one at a time would
        # otherwise make and drop a group each (_join drops idle ones in bulk).

    def _on_digest(self, link: _Link, msg: LeaseRenewalDigest, now: int) -> None:
        """LEASE_RENEWAL_DIGEST: every task of one of the node's renewal
        groups is alive. If the count and digest match this origin's view of
        the group, the group's lease moves (every task in it renewed at once);
        otherwise ask for the list, once until it comes."""
        if not link.digests:
            raise UnexpectedMessage("LEASE_RENEWAL_DIGEST from a node whose WELCOME did not "
                                    "offer compact renewals")
        lease_ms, count, digest = _fields(msg)
        g = link.groups.get(lease_ms)
        matched = g is not None and g.matches(count, digest)
        if self._trace is not None:
            self._trace_event(TN.LEASE_RENEWAL_RECEIVED, node=link.node, lease_ms=lease_ms,
                              count=count, digest=digest, matched=matched)
        if matched:
            assert g is not None  # matched implies a group
            g.resync_asked = False
            if now > g.until > 0:
                # Late: the group's span ran out before this renewal came, and
                # it starts a new one. First write the old span into every
                # task of the group (O(tasks), but only after such a gap), so
                # each keeps the deadline that passed and lapses at it.
                for task in list(link.tasks.values()):
                    if task.group is g:
                        self._fold(task)
            g.renewed(now, lease_ms * MS)
        elif g is None or not g.resync_asked:
            if g is not None:
                g.resync_asked = True
            self._send(link, LeaseResyncRequest(self.name, self.clock.send(), lease_ms), now)
            self._trace_event(TN.LEASE_RESYNC_SENT, node=link.node, lease_ms=lease_ms,
                              count=count, expected=0 if g is None else g.count)

    def _on_full_list(self, link: _Link, lease_ms: int, rtids: list, now: int) -> None:
        """A LEASE_RENEWAL_BATCH from a node with compact renewals (the answer
        to a resync request, or a renewal period that owed one): it lists the
        node's whole ``(origin, lease_ms)`` group. Each task listed is renewed
        as in any batch, and the view of the group becomes what it lists:
        tasks listed join it (from the group they were guessed in), tasks in it
        that are not listed leave it (their own deadlines decide them)."""
        g = link.groups.get(lease_ms)
        if g is not None:
            g.resync_asked = False
            if g.count:
                listed = set(rtids)
                for task in list(link.tasks.values()):
                    if task.group is g and task.rtid not in listed:
                        self._leave_group(link, task)
        lease_ns = lease_ms * MS
        for rtid in rtids:
            if self._on_renewal(link, rtid, lease_ns, now):
                task = link.tasks[rtid]
                if task.group is not None and task.group.lease_ms != lease_ms:
                    self._leave_group(link, task)
                if task.group is None:
                    self._join(link, task, lease_ms)

    def _renew(self, task: OriginTask, until: int, now: int) -> None:
        """Move the task's lease deadline to ``until``, unless it has passed
        already: a lease is not revived after its deadline, whether or not the
        timer has fired since (the task lapses now instead).

        The timers hold a task's lease at its deadline or before it, never
        after: a later deadline is only written into the task (``tick``
        re-arms the timer there when the earlier one fires, as for a group's
        renewals), so a node's first accept and its renewals move nothing in
        the timers; an earlier one moves the timer too."""
        if now > task.lease_until:
            self._lapse(task, now)
        else:
            if until < task.lease_until:
                self.timers.move(_T_LEASE, task.rtid, until)
            task.lease_until = until

    def _on_result(self, link: _Link, msg: ResultDelivery, now: int) -> None:
        rtid, kind, payload, exec_ns, segments = _fields(msg)  # one call, not five lookups
        task = link.tasks.get(rtid)
        if task is None:
            return self._drop_unknown(link, rtid, "RESULT_DELIVERY")
        state = task.state
        if self._process(task, _RESULT) is None:
            return
        if state is _SPAWNED:
            # A result before any ACK: the node accepted the task too (with
            # ack_by_result this RESULT stands for its ACK, which never comes;
            # an ACK written first but read later finds the task gone).
            task.accepted = True
            if self.accept_events:
                self.events.append((EV_ACCEPTED, task, None))
        if self._trace is not None:
            self._trace_event(TN.RESULT_DELIVERED, node=link.node, rtid=rtid, kind=kind,
                              execution_time_ns=exec_ns)
        self._retire(link, task)
        if segments:  # the output's large leaves, beside it (value segments)
            payload = _Segmented(payload, segments)
        self._report(_EV_RESULT, task, (kind, payload, exec_ns))

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> int | None:
        """The earliest deadline in ``timers`` (what the driver's timer follows)."""
        return self.timers.next_deadline()

    def _schedule_ping(self, link: _Link) -> None:
        """Set the link's PING deadline: a third of its shortest lease after
        the last frame sent, while it is ready and has tasks with leases."""
        shortest = link.shortest_lease()
        if link.ready and shortest:
            link.ping_at = link.last_sent + shortest * MS // 3
            self.timers.put(T_PING, link.lid, link.ping_at)
        else:
            link.ping_at = NO_DEADLINE
            self.timers.discard(T_PING, link.lid)

    def tick(self, now: int) -> None:
        """Run every deadline due at ``now``, earliest first: lapse leases, take
        escalation steps, send the PINGs that keep quiet links alive."""
        for kind, key in self.timers.pop_due(now):
            if kind == T_LEASE:
                task = self._tasks.get(key)
                if task is None:
                    continue  # (a step earlier in this tick may have forgotten it)
                if task.group is not None:
                    self._fold(task)
                if task.lease_until > now:  # renewed, by its node or its group: watch the new deadline
                    self.timers.add(T_LEASE, key, task.lease_until)
                else:
                    self._lapse(task, now)
            elif kind == T_ESCALATION:
                task = self._tasks.get(key)
                if task is not None and key in self._escalations:
                    self._escalate(task, EscEvent.DEADLINE, None, now)
            else:  # T_PING: re-read from the last frame sent; due now, or later
                link = self._link_list[key]
                self._schedule_ping(link)
                if link.ping_at <= now:
                    link.ping_nonce += 1
                    self._send(link, Ping(self.name, self.clock.send(), link.ping_nonce), now)
                    self._schedule_ping(link)

    def terminal(self, task: OriginTask) -> bool:
        return task.state in ORIGIN_TERMINAL
