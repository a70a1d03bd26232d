"""The wire v1 message schema, as plain data (PROTOCOL.md sections 2 and 4).

This is the one place a message's layout is written down. Everything else is
derived from it:

- the message classes in ``rsc._core.messages`` (their ``__slots__``,
  ``fields`` and constructor);
- the pure-Python codec ``rsc._core._envelope_py`` (its table-driven reader and
  writer);
- the compiled codec ``rsc._core._envelope`` (its C schema tables, built from
  ``MESSAGES`` when it is imported);
- the named field indices below, for code that reads ``envelope.fields(msg)``.

A frame body is ``[kind, sender, sender_time, field...]``; ``MESSAGES`` lists,
per kind, the fields after the envelope in wire order, each with a field
type code. What a caller may rely on:

- ``MESSAGES`` is ordered by kind and never changes at run time;
- a field's index in ``MessageSpec.fields`` is its index in the tuple that
  ``envelope.fields(msg)`` returns, and its wire element is that index + 3;
- a new field is added at the end of its message (a v1 receiver drops
  trailing elements it does not know), by adding it here; its class in
  ``rsc._core.messages`` declares it too, with the Python type of its code
  (``PY_TYPES``), for type checkers (``messages.declaration_mismatches``);
- a ``FLAG`` or ``SEGMENTS`` field is optional: optional fields come after
  every other field of their message (``MessageSpec.required`` counts the
  others), a sender writes them only up to the last one that is set (a flag
  that is True, segments that are a non-empty list), and a receiver reads a
  missing one as its ``OPTIONAL_DEFAULTS`` value (False, None). So a message
  whose optional fields are all clear is the same bytes as it was before they
  existed, and one is sent only to a peer that said (in its HELLO/WELCOME
  ``features``) it knows it.
"""

from __future__ import annotations

import keyword
from typing import Any, NamedTuple, Protocol, cast

# Message kinds (PROTOCOL.md section 4).
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
# The compact-renewal extension of v1 (PROTOCOL.md section 4, "Compact
# renewals"): sent only to a peer whose HELLO/WELCOME ``features`` asked for it.
LEASE_RENEWAL_DIGEST = 20
LEASE_RESYNC_REQUEST = 21

# Field type codes: what a field may hold on the wire (PROTOCOL.md section 2).
UINT = "uint"                  # uint 0..2**64-1
STR = "str"                    # UTF-8 str
BIN = "bin"                    # bin of any length
BIN_OR_NIL = "bin_or_nil"      # bin or nil
BIN32 = "bin32"                # bin of exactly 32 bytes
BIN32_OR_NIL = "bin32_or_nil"  # bin of exactly 32 bytes, or nil
BUDGET = "budget"              # nil or [deadline_ms|nil, poll|nil, cost|nil, priority 0..255]
REASON = "reason"              # cancel reason [kind 0..11, message str|nil]
STATUS = "status"              # SPAWN_ACK status, uint 0..1
STATE = "state"                # task state, uint 0..5
OUTCOME = "outcome"            # outcome kind, uint 0..3; picks the next field's type
PAYLOAD = "payload"            # typed by the OUTCOME just before it (PAYLOAD_TYPES)
VERSION = "version"            # uint; a value other than 1 is VersionMismatch
STR_MAP = "str_map"            # map str -> any MessagePack value
UINT_LIST = "uint_list"        # array of uint
FLAG = "flag"                  # bool; optional and trailing: absent reads as false
SEGMENTS = "segments"          # array of at most MAX_SEGMENTS bins; optional and trailing:
                               # absent (or empty) reads as None (PROTOCOL.md section 4)

# The most segments one SPAWN_REQUEST or RESULT_DELIVERY may carry.
MAX_SEGMENTS = 32
# The optional trailing field types, and what a receiver reads for one left out.
OPTIONAL_DEFAULTS: dict[str, Any] = {FLAG: False, SEGMENTS: None}

# A PAYLOAD's type, by the value of the OUTCOME before it (0 success: the
# output; 1 failed: the message; 2 cancelled: the reason; 3 panicked: the message).
PAYLOAD_TYPES: dict[int, str] = {0: BIN, 1: STR, 2: REASON, 3: STR}

# The Python value a message holds for a field, by field type code: the
# annotation its class declares in rsc._core.messages (checked at import).
LogicalTime = int | tuple[int, int] | dict[str, int]  # Lamport, hybrid, vector
WireBudget = tuple[int | None, int | None, int | None, int]  # deadline_ms, poll, cost, priority
WireReason = tuple[int, str | None]  # cancel kind, message
PY_TYPES: dict[str, str] = {
    UINT: "int", STR: "str", BIN: "bytes", BIN_OR_NIL: "bytes | None", BIN32: "bytes",
    BIN32_OR_NIL: "bytes | None", BUDGET: "WireBudget | None", REASON: "WireReason",
    STATUS: "int", STATE: "int", OUTCOME: "int", PAYLOAD: "bytes | str | WireReason",
    VERSION: "int", STR_MAP: "dict[str, Any]", UINT_LIST: "list[int]", FLAG: "bool",
    SEGMENTS: "list[bytes] | None",
}

FIELD_TYPES: tuple[str, ...] = (UINT, STR, BIN, BIN_OR_NIL, BIN32, BIN32_OR_NIL, BUDGET,
                                REASON, STATUS, STATE, OUTCOME, PAYLOAD, VERSION, STR_MAP,
                                UINT_LIST, FLAG, SEGMENTS)


class MessageSpec(NamedTuple):
    """One message kind: its number, its name in PROTOCOL.md, the name of its
    class in ``rsc._core.messages`` and its fields after the envelope, in wire
    order, as ``(name, field type code)`` pairs."""

    kind: int
    wire_name: str
    class_name: str
    fields: tuple[tuple[str, str], ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        """The fields' names, in wire order."""
        return tuple(name for name, _ in self.fields)

    @property
    def required(self) -> int:
        """How many fields every frame of this kind holds: all but the
        trailing optional (``FLAG``, ``SEGMENTS``) fields, which a sender may
        leave out."""
        n = len(self.fields)
        while n and self.fields[n - 1][1] in OPTIONAL_DEFAULTS:
            n -= 1
        return n


MESSAGES: tuple[MessageSpec, ...] = (
    MessageSpec(HELLO, "HELLO", "Hello", (
        ("protocol_version", VERSION), ("role", STR), ("nonce", BIN32), ("features", STR_MAP))),
    MessageSpec(WELCOME, "WELCOME", "Welcome", (
        ("protocol_version", VERSION), ("nonce", BIN32), ("proof", BIN32_OR_NIL),
        ("features", STR_MAP))),
    MessageSpec(AUTH, "AUTH", "Auth", (
        ("proof", BIN32_OR_NIL),)),
    MessageSpec(ERROR, "ERROR", "Error", (
        ("code", UINT), ("message", STR))),
    MessageSpec(SPAWN_REQUEST, "SPAWN_REQUEST", "SpawnRequest", (
        ("remote_task_id", UINT), ("computation", STR), ("input", BIN), ("lease_ms", UINT),
        ("idempotency_key", BIN), ("budget", BUDGET), ("origin_node", STR),
        ("origin_region", UINT), ("origin_task", UINT), ("capability", BIN_OR_NIL),
        # set by an origin for a key it drew at random itself, sent only to a
        # node that offers the "drawn_keys" feature (PROTOCOL.md section 4)
        ("drawn", FLAG),
        # the input's large leaves, sent only to a node that offers the
        # "value_segments" feature (PROTOCOL.md section 4, "Value segments")
        ("segments", SEGMENTS))),
    MessageSpec(SPAWN_ACK, "SPAWN_ACK", "SpawnAck", (
        ("remote_task_id", UINT), ("status", STATUS), ("reject_code", UINT),
        ("reject_detail", STR), ("assigned_node", STR))),
    MessageSpec(CANCEL_REQUEST, "CANCEL_REQUEST", "CancelRequest", (
        ("remote_task_id", UINT), ("reason", REASON), ("origin_node", STR))),
    MessageSpec(RESULT_DELIVERY, "RESULT_DELIVERY", "ResultDelivery", (
        ("remote_task_id", UINT), ("outcome_kind", OUTCOME), ("payload", PAYLOAD),
        ("execution_time_ns", UINT),
        # the output's large leaves, sent only to an origin that offers "value_segments"
        ("segments", SEGMENTS))),
    MessageSpec(LEASE_RENEWAL, "LEASE_RENEWAL", "LeaseRenewal", (
        ("remote_task_id", UINT), ("new_lease_ms", UINT), ("current_state", STATE),
        ("node", STR))),
    MessageSpec(LEASE_RENEWAL_BATCH, "LEASE_RENEWAL_BATCH", "LeaseRenewalBatch", (
        ("new_lease_ms", UINT), ("node", STR), ("remote_task_ids", UINT_LIST))),
    MessageSpec(PING, "PING", "Ping", (
        ("nonce", UINT),)),
    MessageSpec(PONG, "PONG", "Pong", (
        ("nonce", UINT),)),
    MessageSpec(STATUS_REQUEST, "STATUS_REQUEST", "StatusRequest", ()),
    MessageSpec(STATUS_REPLY, "STATUS_REPLY", "StatusReply", (
        ("stats", STR_MAP),)),
    MessageSpec(LEASE_RENEWAL_DIGEST, "LEASE_RENEWAL_DIGEST", "LeaseRenewalDigest", (
        ("new_lease_ms", UINT), ("task_count", UINT), ("digest", UINT))),
    MessageSpec(LEASE_RESYNC_REQUEST, "LEASE_RESYNC_REQUEST", "LeaseResyncRequest", (
        ("lease_ms", UINT),)),
)

# Kinds are below this (the compiled codec keeps one table slot per kind).
MAX_KINDS = 32

BY_KIND: dict[int, MessageSpec] = {spec.kind: spec for spec in MESSAGES}


def check(messages: tuple[MessageSpec, ...]) -> None:
    """Raise ``ValueError`` unless ``messages`` is a well-formed schema: kinds
    unique and ascending, names unique identifiers, known field type codes, a PAYLOAD
    only right after an OUTCOME, a VERSION only as a first field and optional
    fields (FLAG, SEGMENTS) only after every other field."""
    kinds = [spec.kind for spec in messages]
    if kinds != sorted(set(kinds)) or any(not 0 <= k < MAX_KINDS for k in kinds):
        raise ValueError(f"message kinds must be unique, ascending, in 0..{MAX_KINDS - 1}: {kinds}")
    for spec in messages:
        names = spec.field_names
        # The classes and the pure codec are generated from these names.
        for name in (spec.class_name, spec.wire_name) + names:
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"{spec.wire_name}: {name!r} is not a Python identifier")
        if len(set(names)) != len(names) or {"sender", "sender_time"} & set(names):
            raise ValueError(f"{spec.wire_name}: field names must be unique and not the "
                             f"envelope's: {names}")
        for index, (name, code) in enumerate(spec.fields):
            if code not in FIELD_TYPES:
                raise ValueError(f"{spec.wire_name} {name}: unknown field type {code!r}")
            if code == PAYLOAD and (index == 0 or spec.fields[index - 1][1] != OUTCOME):
                raise ValueError(f"{spec.wire_name} {name}: a payload follows an outcome")
            if code == VERSION and index != 0:
                raise ValueError(f"{spec.wire_name} {name}: a version is the first field")
            if code in OPTIONAL_DEFAULTS and index < spec.required:
                raise ValueError(f"{spec.wire_name} {name}: optional fields come after every "
                                 "other field")


check(MESSAGES)


class FieldIndices(Protocol):
    """What type checkers know of a ``field_index`` class: each attribute is an int."""

    def __getattr__(self, name: str) -> int: ...


def field_index(spec: MessageSpec) -> FieldIndices:
    """A class whose attributes are ``spec``'s field names, each holding the
    field's index in ``envelope.fields(msg)``: ``fs[SpawnRequestF.computation]``
    reads a field by name from the tuple one ``fields`` call returns."""
    namespace: dict[str, Any] = {name: index for index, name in enumerate(spec.field_names)}
    return cast(FieldIndices, type(spec.class_name + "F", (), {
        "__slots__": (), "__doc__": f"Field indices of {spec.wire_name}.", **namespace}))


HelloF = field_index(BY_KIND[HELLO])
WelcomeF = field_index(BY_KIND[WELCOME])
AuthF = field_index(BY_KIND[AUTH])
ErrorF = field_index(BY_KIND[ERROR])
SpawnRequestF = field_index(BY_KIND[SPAWN_REQUEST])
SpawnAckF = field_index(BY_KIND[SPAWN_ACK])
CancelRequestF = field_index(BY_KIND[CANCEL_REQUEST])
ResultDeliveryF = field_index(BY_KIND[RESULT_DELIVERY])
LeaseRenewalF = field_index(BY_KIND[LEASE_RENEWAL])
LeaseRenewalBatchF = field_index(BY_KIND[LEASE_RENEWAL_BATCH])
PingF = field_index(BY_KIND[PING])
PongF = field_index(BY_KIND[PONG])
StatusRequestF = field_index(BY_KIND[STATUS_REQUEST])
StatusReplyF = field_index(BY_KIND[STATUS_REPLY])
LeaseRenewalDigestF = field_index(BY_KIND[LEASE_RENEWAL_DIGEST])
LeaseResyncRequestF = field_index(BY_KIND[LEASE_RESYNC_REQUEST])


def expect_fields(kind: int, *names: str) -> tuple[str, ...]:
    """``names`` if they are the fields of ``kind`` in wire order, else ``ImportError``.

    For a hot path that unpacks ``envelope.fields(msg)`` positionally (a tuple
    unpack is the cheapest read there is, compiled or not): calling this once
    at import, with the names the unpacking site binds, makes a schema change
    that reorders, renames or adds a field fail loudly at import instead of
    shifting values silently::

        _SPAWN = expect_fields(SPAWN_REQUEST, "remote_task_id", "computation", ...)
    """
    spec = BY_KIND.get(kind)
    if spec is None:
        raise ImportError(f"rsc._core.schema: no message kind {kind}")
    if names != spec.field_names:
        raise ImportError(f"rsc._core.schema: {spec.wire_name} fields are {spec.field_names}, "
                          f"the unpacking site expects {names}")
    return names
