"""Wire v1 message objects (PROTOCOL.md section 4), built from ``rsc._core.schema``.

Both envelope twins build and read these same classes, so a message decoded by
the compiled codec is indistinguishable from one decoded by the pure twin.

Representation rules (what a caller may rely on):

- Every message has ``sender`` (str) and ``sender_time`` (logical time).
- Logical time is an ``int`` (Lamport), a ``tuple[int, int]`` (hybrid:
  physical_ns, logical) or a ``dict[str, int]`` (vector).
- ``budget`` is ``None`` or a 4-tuple ``(deadline_remaining_ms | None,
  poll_quota | None, cost_quota | None, priority)``.
- A cancel reason on the wire is a 2-tuple ``(kind, message | None)``; it is
  also the payload of a Cancelled ``ResultDelivery``.
- ``LeaseRenewalBatch.remote_task_ids`` is a list of ints.
- ``features`` and ``stats`` are dicts with str keys; their values are plain
  MessagePack values (arrays decode as lists).
- Trailing elements a receiver does not know are dropped on decode.

Classes use ``__slots__`` and positional constructors because the codec builds
one per frame on the hot path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform

# Message kinds (PROTOCOL.md section 4); the schema is their one home.
from rsc._core.schema import (  # re-exported: callers import the kinds from here
    AUTH as AUTH,
    BY_KIND as BY_KIND,
    CANCEL_REQUEST as CANCEL_REQUEST,
    ERROR as ERROR,
    HELLO as HELLO,
    LEASE_RENEWAL as LEASE_RENEWAL,
    LEASE_RENEWAL_BATCH as LEASE_RENEWAL_BATCH,
    LEASE_RENEWAL_DIGEST as LEASE_RENEWAL_DIGEST,
    LEASE_RESYNC_REQUEST as LEASE_RESYNC_REQUEST,
    MAX_SEGMENTS as MAX_SEGMENTS,
    MESSAGES as MESSAGES,
    OPTIONAL_DEFAULTS,
    PING as PING,
    PONG as PONG,
    RESULT_DELIVERY as RESULT_DELIVERY,
    SPAWN_ACK as SPAWN_ACK,
    SPAWN_REQUEST as SPAWN_REQUEST,
    STATUS_REPLY as STATUS_REPLY,
    STATUS_REQUEST as STATUS_REQUEST,
    WELCOME as WELCOME,
    PY_TYPES,
    LogicalTime,
    MessageSpec,
    WireBudget,
    WireReason,
)

PROTOCOL_VERSION = 1

# WELCOME ``features`` key of a node that understands SPAWN_REQUEST's
# ``drawn`` flag (value 1); an origin sets the flag only for such a node.
DRAWN_KEYS_FEATURE = "drawn_keys"
# HELLO and WELCOME ``features`` key (value 1) of a peer that lets a node's
# RESULT_DELIVERY stand for the SPAWN_ACK of a task that ended before its ACK
# was written: the node then sends only the RESULT (PROTOCOL.md section 4,
# "A result that stands for its ACK"). Used on a connection when both offered it.
ACK_BY_RESULT_FEATURE = "ack_by_result"


def offers_feature(features: object, key: str) -> bool:
    """True if a HELLO's or WELCOME's ``features`` offer the extension ``key``
    (the int 1 or higher; a bool is no version)."""
    if not isinstance(features, dict):
        return False
    v = features.get(key)
    return type(v) is int and v >= 1


def offers_ack_by_result(features: object) -> bool:
    """True if a HELLO's or WELCOME's ``features`` offer ``ack_by_result``."""
    return offers_feature(features, ACK_BY_RESULT_FEATURE)

# HELLO and WELCOME ``features`` key (value 1) of a peer that takes value
# segments: a msgpack value's large bytes-like leaves sent beside the packed
# value, each as a bin of its own (PROTOCOL.md section 4, "Value segments").
# A side sends segments only on a connection where both offered it.
VALUE_SEGMENTS_FEATURE = "value_segments"


def offers_value_segments(features: object) -> bool:
    """True if a HELLO's or WELCOME's ``features`` offer ``value_segments``."""
    return offers_feature(features, VALUE_SEGMENTS_FEATURE)


# SPAWN_ACK status
ACK_ACCEPTED = 0
ACK_REJECTED = 1

# Cancel reason kinds (the first element of a reason on the wire; rsc.types.CancelKind
# is the enum over these)
CANCEL_KIND_USER = 0
CANCEL_KIND_TIMEOUT = 1
CANCEL_KIND_DEADLINE = 2
CANCEL_KIND_POLL_QUOTA = 3
CANCEL_KIND_COST_BUDGET = 4
CANCEL_KIND_FAIL_FAST = 5
CANCEL_KIND_RACE_LOST = 6
CANCEL_KIND_PARENT_CANCELLED = 7
CANCEL_KIND_RESOURCE_UNAVAILABLE = 8
CANCEL_KIND_SHUTDOWN = 9
CANCEL_KIND_LINKED_EXIT = 10
CANCEL_KIND_LEASE_EXPIRED = 11

# RESULT_DELIVERY outcome kinds
OUTCOME_SUCCESS = 0
OUTCOME_FAILED = 1
OUTCOME_CANCELLED = 2
OUTCOME_PANICKED = 3

# ERROR codes (PROTOCOL.md section 5)
ERR_VERSION_MISMATCH = 1
ERR_AUTH_FAILED = 2
ERR_FRAME_TOO_LARGE = 3
ERR_MALFORMED = 4
ERR_UNEXPECTED_MESSAGE = 5
ERR_SHUTTING_DOWN = 6
ERR_TIMEOUT = 7  # the peer left its handshake or a frame unfinished for too long

# SPAWN_ACK reject codes
REJECT_UNKNOWN_COMPUTATION = 1
REJECT_CAPACITY_EXCEEDED = 2
REJECT_NODE_SHUTTING_DOWN = 3
REJECT_INVALID_INPUT = 4
REJECT_IDEMPOTENCY_CONFLICT = 5
REJECT_CAPABILITY_DENIED = 6

DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
# The most that a SPAWN_REQUEST's or RESULT_DELIVERY's envelope and fields other
# than the input or output take: names of at most 255 bytes, a 16-byte key, a
# 32-byte capability, a budget, ints and a Lamport time come to well under 1 KiB.
# An input or output of at most (frame cap - FRAME_OVERHEAD_BYTES) always fits.
FRAME_OVERHEAD_BYTES = 4096
# A failure's or panic's message is cut to this many characters by the node
# (a str of n characters is at most 4n UTF-8 bytes, so it always fits a frame).
MAX_FAILURE_MESSAGE_CHARS = 64 * 1024
# Cap on a frame from a peer whose handshake is not complete (HELLO, WELCOME and
# AUTH take a few hundred bytes): what an unauthenticated peer can make a
# receiver buffer per connection.
HANDSHAKE_MAX_FRAME_BYTES = 64 * 1024
MAX_VECTOR_CLOCK_ENTRIES = 1024
MAX_NODE_ID_BYTES = 255


_M = TypeVar("_M", bound="Message")


# What each message class declares (class name -> its annotated fields),
# recorded by ``declared``; ``declaration_mismatches`` compares it to the schema.
DECLARED: dict[str, dict[str, str]] = {}


@dataclass_transform(eq_default=False)
def declared(kind: int | None) -> Callable[[type[_M]], type[_M]]:
    """Class decorator: the message class of schema kind ``kind``, built by
    ``message_class`` from the schema (its fields, slots and constructor come
    from the schema alone). The decorated declaration is what type checkers
    read: its annotated fields, after the envelope's declared on ``Message``,
    are the constructor's parameters. ``declaration_mismatches`` (run by the
    test suite) holds each declaration to the schema. ``kind=None`` marks
    ``Message`` itself, whose fields are the envelope's."""

    def build(cls: type[_M]) -> type[_M]:
        DECLARED[cls.__name__] = {name: text for name, text in inspect.get_annotations(cls).items()
                                  if not text.startswith("ClassVar[")}
        if kind is None:
            return cls
        return message_class(BY_KIND[kind], cls.__doc__)  # type: ignore[return-value]  # its declaration, built

    return build


def declaration_mismatches() -> list[str]:
    """How the declared message classes differ from the schema: each must name
    its schema message's fields in wire order, annotated with the Python types
    of their field type codes (``schema.PY_TYPES``). Empty when they agree."""
    out = []
    envelope = {"sender": "str", "sender_time": "LogicalTime"}
    if DECLARED.get("Message") != envelope:
        out.append(f"Message declares {DECLARED.get('Message')}, the envelope is {envelope}")
    for spec in MESSAGES:
        want = {name: PY_TYPES[code] for name, code in spec.fields}
        have = DECLARED.get(spec.class_name)
        if have is None or list(have.items()) != list(want.items()):
            out.append(f"class {spec.class_name} declares fields {have}; the schema's "
                       f"{spec.wire_name} has {want}, in this order")
    return out


@declared(None)
class Message:
    """Base of all wire messages: field-wise equality and a readable repr."""

    __slots__ = ("sender", "sender_time")
    kind: ClassVar[int] = -1
    fields: ClassVar[tuple[str, ...]] = ()

    sender: str
    sender_time: LogicalTime

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots_all__())

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]  # mutable payloads (dicts, lists)

    @classmethod
    def __slots_all__(cls) -> tuple[str, ...]:
        return ("sender", "sender_time") + cls.fields

    def __repr__(self) -> str:
        parts = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots_all__())
        return f"{type(self).__name__}({parts})"


def message_class(spec: MessageSpec, doc: str | None = None) -> type[Message]:
    """The message class of ``spec``: a ``Message`` subclass named
    ``spec.class_name`` whose ``__slots__`` and ``fields`` are the spec's field
    names and whose constructor takes ``(sender, sender_time, *fields)``,
    positionally or by name, in wire order; ``doc`` is its docstring (by
    default one naming the fields)."""
    names = spec.field_names
    # an optional field (schema.FLAG, SEGMENTS) is optional on the wire and in the
    # constructor too: its default is what a receiver reads for one left out
    params = ", ".join(("sender", "sender_time") + names[:spec.required]
                       + tuple(f"{name}={OPTIONAL_DEFAULTS[code]!r}"
                               for name, code in spec.fields[spec.required:]))
    body = "".join(f"\n    self.{name} = {name}" for name in ("sender", "sender_time") + names)
    # Generated source, as namedtuple does: a plain __init__ that stores its
    # arguments is what a hand-written class would have, at the same speed.
    namespace: dict[str, Any] = {}
    exec(f"def __init__(self, {params}) -> None:{body}", namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__qualname__ = f"{spec.class_name}.__init__"
    cls = type(spec.class_name, (Message,), {
        "__slots__": names, "kind": spec.kind, "fields": names, "__init__": init,
        "__module__": __name__,
        "__doc__": doc or f"{spec.wire_name} (kind {spec.kind}): fields {', '.join(names) or 'none'}.",
    })
    return cls


# The message classes. Each name below is bound to the class built from the
# schema; the declaration under it is what type checkers read, and
# ``declaration_mismatches`` holds it to the schema. A field added to the
# schema is declared here too.

@declared(HELLO)
class Hello(Message):
    """HELLO (kind 0): the dialling side's first frame."""

    protocol_version: int
    role: str
    nonce: bytes
    features: dict[str, Any]


@declared(WELCOME)
class Welcome(Message):
    """WELCOME (kind 1): the node's answer to HELLO."""

    protocol_version: int
    nonce: bytes
    proof: bytes | None
    features: dict[str, Any]


@declared(AUTH)
class Auth(Message):
    """AUTH (kind 2): the dialling side's proof, ending the handshake."""

    proof: bytes | None


@declared(ERROR)
class Error(Message):
    """ERROR (kind 3): a connection-level error; the sender closes after it."""

    code: int
    message: str


@declared(SPAWN_REQUEST)
class SpawnRequest(Message):
    """SPAWN_REQUEST (kind 10): run a named computation."""

    remote_task_id: int
    computation: str
    input: bytes
    lease_ms: int
    idempotency_key: bytes
    budget: WireBudget | None
    origin_node: str
    origin_region: int
    origin_task: int
    capability: bytes | None
    # The origin drew ``idempotency_key`` at random itself (it is never a
    # caller's key); sent only to a node that offers the "drawn_keys" feature.
    drawn: bool = False
    # The input's large leaves, each referred to from ``input`` by a segment
    # reference (PROTOCOL.md section 4, "Value segments"); sent only to a node
    # that offers the "value_segments" feature. None: the input is all in ``input``.
    segments: list[bytes] | None = None


@declared(SPAWN_ACK)
class SpawnAck(Message):
    """SPAWN_ACK (kind 11): a spawn accepted or rejected."""

    remote_task_id: int
    status: int
    reject_code: int
    reject_detail: str
    assigned_node: str


@declared(CANCEL_REQUEST)
class CancelRequest(Message):
    """CANCEL_REQUEST (kind 12): cancel a remote task."""

    remote_task_id: int
    reason: WireReason
    origin_node: str


@declared(RESULT_DELIVERY)
class ResultDelivery(Message):
    """RESULT_DELIVERY (kind 13): a task's outcome; ``payload`` is typed by
    ``outcome_kind`` (the output bytes, a failure or panic message, or a cancel
    reason)."""

    remote_task_id: int
    outcome_kind: int
    payload: bytes | str | WireReason
    execution_time_ns: int
    # The output's large leaves (a success's only), as ``SpawnRequest.segments``;
    # sent only to an origin that offers the "value_segments" feature.
    segments: list[bytes] | None = None


@declared(LEASE_RENEWAL)
class LeaseRenewal(Message):
    """LEASE_RENEWAL (kind 14): one task's lease renewed."""

    remote_task_id: int
    new_lease_ms: int
    current_state: int
    node: str


@declared(LEASE_RENEWAL_BATCH)
class LeaseRenewalBatch(Message):
    """LEASE_RENEWAL_BATCH (kind 15): the leases of several tasks renewed."""

    new_lease_ms: int
    node: str
    remote_task_ids: list[int]


@declared(LEASE_RENEWAL_DIGEST)
class LeaseRenewalDigest(Message):
    """LEASE_RENEWAL_DIGEST (kind 20): every task of one lease group renewed, named by
    their count and the XOR of their ids' hashes (compact renewals)."""

    new_lease_ms: int
    task_count: int
    digest: int


@declared(LEASE_RESYNC_REQUEST)
class LeaseResyncRequest(Message):
    """LEASE_RESYNC_REQUEST (kind 21): the origin asks for a lease group's full list."""

    lease_ms: int


@declared(PING)
class Ping(Message):
    """PING (kind 16): keeps a quiet connection alive."""

    nonce: int


@declared(PONG)
class Pong(Message):
    """PONG (kind 17): the answer to a PING, with its nonce."""

    nonce: int


@declared(STATUS_REQUEST)
class StatusRequest(Message):
    """STATUS_REQUEST (kind 18): ask a node for its figures."""


@declared(STATUS_REPLY)
class StatusReply(Message):
    """STATUS_REPLY (kind 19): a node's figures."""

    stats: dict[str, Any]


MESSAGE_CLASSES: dict[int, type[Message]] = {cls.kind: cls for cls in (
    Hello, Welcome, Auth, Error, SpawnRequest, SpawnAck, CancelRequest, ResultDelivery,
    LeaseRenewal, LeaseRenewalBatch, Ping, Pong, StatusRequest, StatusReply,
    LeaseRenewalDigest, LeaseResyncRequest)}
if sorted(MESSAGE_CLASSES) != [spec.kind for spec in MESSAGES]:
    raise ImportError("rsc._core.messages: a schema kind has no declared class")
