"""Wire v1 message objects (shared/PROTOCOL.md section 3).

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

# Message kinds (PROTOCOL.md section 3).
HELLO = 0
WELCOME = 1
AUTH = 2
ERROR = 3
SPAWN_REQUEST = 10
SPAWN_ACK = 11
CANCEL_REQUEST = 12
RESULT_DELIVERY = 13
LEASE_RENEWAL = 14
LEASE_RENEWAL_BATCH = 15
PING = 16
PONG = 17
STATUS_REQUEST = 18
STATUS_REPLY = 19

PROTOCOL_VERSION = 1

# SPAWN_ACK status
ACK_ACCEPTED = 0
ACK_REJECTED = 1

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


class Hello(Message):
    __slots__ = ("protocol_version", "role", "nonce", "features")
    kind = HELLO
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, protocol_version: int,
                 role: str, nonce: bytes, features: dict) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.protocol_version = protocol_version
        self.role = role
        self.nonce = nonce
        self.features = features


class Welcome(Message):
    __slots__ = ("protocol_version", "nonce", "proof", "features")
    kind = WELCOME
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, protocol_version: int,
                 nonce: bytes, proof: bytes | None, features: dict) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.protocol_version = protocol_version
        self.nonce = nonce
        self.proof = proof
        self.features = features


class Auth(Message):
    __slots__ = ("proof",)
    kind = AUTH
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, proof: bytes | None) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.proof = proof


class Error(Message):
    __slots__ = ("code", "message")
    kind = ERROR
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, code: int, message: str) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.code = code
        self.message = message


class SpawnRequest(Message):
    __slots__ = ("remote_task_id", "computation", "input", "lease_ms",
                 "idempotency_key", "budget", "origin_node", "origin_region",
                 "origin_task", "capability")
    kind = SPAWN_REQUEST
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, remote_task_id: int,
                 computation: str, input: bytes, lease_ms: int,
                 idempotency_key: bytes, budget: tuple | None, origin_node: str,
                 origin_region: int, origin_task: int,
                 capability: bytes | None) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.remote_task_id = remote_task_id
        self.computation = computation
        self.input = input
        self.lease_ms = lease_ms
        self.idempotency_key = idempotency_key
        self.budget = budget
        self.origin_node = origin_node
        self.origin_region = origin_region
        self.origin_task = origin_task
        self.capability = capability


class SpawnAck(Message):
    __slots__ = ("remote_task_id", "status", "reject_code", "reject_detail",
                 "assigned_node")
    kind = SPAWN_ACK
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, remote_task_id: int,
                 status: int, reject_code: int, reject_detail: str,
                 assigned_node: str) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.remote_task_id = remote_task_id
        self.status = status
        self.reject_code = reject_code
        self.reject_detail = reject_detail
        self.assigned_node = assigned_node


class CancelRequest(Message):
    __slots__ = ("remote_task_id", "reason", "origin_node")
    kind = CANCEL_REQUEST
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, remote_task_id: int,
                 reason: tuple, origin_node: str) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.remote_task_id = remote_task_id
        self.reason = reason
        self.origin_node = origin_node


class ResultDelivery(Message):
    __slots__ = ("remote_task_id", "outcome_kind", "payload", "execution_time_ns")
    kind = RESULT_DELIVERY
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, remote_task_id: int,
                 outcome_kind: int, payload: Any, execution_time_ns: int) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.remote_task_id = remote_task_id
        self.outcome_kind = outcome_kind
        self.payload = payload
        self.execution_time_ns = execution_time_ns


class LeaseRenewal(Message):
    __slots__ = ("remote_task_id", "new_lease_ms", "current_state", "node")
    kind = LEASE_RENEWAL
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, remote_task_id: int,
                 new_lease_ms: int, current_state: int, node: str) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.remote_task_id = remote_task_id
        self.new_lease_ms = new_lease_ms
        self.current_state = current_state
        self.node = node


class LeaseRenewalBatch(Message):
    __slots__ = ("new_lease_ms", "node", "remote_task_ids")
    kind = LEASE_RENEWAL_BATCH
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, new_lease_ms: int,
                 node: str, remote_task_ids: list) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.new_lease_ms = new_lease_ms
        self.node = node
        self.remote_task_ids = remote_task_ids


class Ping(Message):
    __slots__ = ("nonce",)
    kind = PING
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, nonce: int) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.nonce = nonce


class Pong(Message):
    __slots__ = ("nonce",)
    kind = PONG
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, nonce: int) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.nonce = nonce


class StatusRequest(Message):
    __slots__ = ()
    kind = STATUS_REQUEST
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any) -> None:
        self.sender = sender
        self.sender_time = sender_time


class StatusReply(Message):
    __slots__ = ("stats",)
    kind = STATUS_REPLY
    fields = __slots__

    def __init__(self, sender: str, sender_time: Any, stats: dict) -> None:
        self.sender = sender
        self.sender_time = sender_time
        self.stats = stats


MESSAGE_CLASSES: dict[int, type[Message]] = {
    cls.kind: cls
    for cls in (Hello, Welcome, Auth, Error, SpawnRequest, SpawnAck, CancelRequest,
                ResultDelivery, LeaseRenewal, LeaseRenewalBatch, Ping, Pong,
                StatusRequest, StatusReply)
}
