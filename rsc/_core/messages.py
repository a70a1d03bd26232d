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

from typing import Any

# Message kinds (PROTOCOL.md section 4); the schema is their one home.
from rsc._core.schema import (  # re-exported: callers import the kinds from here
    AUTH,
    CANCEL_REQUEST,
    ERROR,
    HELLO,
    LEASE_RENEWAL,
    LEASE_RENEWAL_BATCH,
    LEASE_RENEWAL_DIGEST,
    LEASE_RESYNC_REQUEST,
    MESSAGES,
    PING,
    PONG,
    RESULT_DELIVERY,
    SPAWN_ACK,
    SPAWN_REQUEST,
    STATUS_REPLY,
    STATUS_REQUEST,
    WELCOME,
    MessageSpec,
)

PROTOCOL_VERSION = 1

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


class Message:
    """Base of all wire messages: field-wise equality and a readable repr."""

    __slots__ = ("sender", "sender_time")
    kind: int = -1
    fields: tuple[str, ...] = ()

    sender: str
    sender_time: Any

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


def message_class(spec: MessageSpec) -> type[Message]:
    """The message class of ``spec``: a ``Message`` subclass named
    ``spec.class_name`` whose ``__slots__`` and ``fields`` are the spec's field
    names and whose constructor takes ``(sender, sender_time, *fields)``,
    positionally or by name, in wire order."""
    names = spec.field_names
    params = ", ".join(("sender", "sender_time") + names)
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
        "__doc__": f"{spec.wire_name} (kind {spec.kind}): fields {', '.join(names) or 'none'}.",
    })
    return cls


_CLASSES = {spec.kind: message_class(spec) for spec in MESSAGES}

Hello = _CLASSES[HELLO]
Welcome = _CLASSES[WELCOME]
Auth = _CLASSES[AUTH]
Error = _CLASSES[ERROR]
SpawnRequest = _CLASSES[SPAWN_REQUEST]
SpawnAck = _CLASSES[SPAWN_ACK]
CancelRequest = _CLASSES[CANCEL_REQUEST]
ResultDelivery = _CLASSES[RESULT_DELIVERY]
LeaseRenewal = _CLASSES[LEASE_RENEWAL]
LeaseRenewalBatch = _CLASSES[LEASE_RENEWAL_BATCH]
Ping = _CLASSES[PING]
Pong = _CLASSES[PONG]
StatusRequest = _CLASSES[STATUS_REQUEST]
StatusReply = _CLASSES[STATUS_REPLY]
LeaseRenewalDigest = _CLASSES[LEASE_RENEWAL_DIGEST]
LeaseResyncRequest = _CLASSES[LEASE_RESYNC_REQUEST]

MESSAGE_CLASSES: dict[int, type[Message]] = dict(_CLASSES)
