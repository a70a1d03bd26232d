"""Wire v1 envelope codec: the pure-Python twin of ``rsc._core._envelope``.

Both twins have the same API and the same behaviour, byte for byte; the
compiled module is the fast one, this one is the readable reference. The rules
(docs/PROTOCOL.md sections 1 to 5; the message layouts are in
``rsc._core.schema``):

- A frame body is one MessagePack array ``[kind, sender, sender_time,
  field...]``; a frame on the stream is a u32 big-endian length, then the body.
- ``decode`` accepts exactly the bodies PROTOCOL.md calls well-formed and
  raises only these errors (whatever the bytes):

  * ``MalformedFrame`` -- not exactly one MessagePack value, an ext type
    anywhere, invalid UTF-8, containers nested deeper than
    ``MAX_NESTING_DEPTH`` (the body's array is level 1), a map key that is an
    array or a map, a bad envelope, or a known kind whose listed fields are
    missing or of the wrong type;
  * ``UnexpectedMessage`` -- a well-formed body and envelope with a uint kind
    that is not a v1 kind;
  * ``VersionMismatch`` -- a well-formed body and envelope of a HELLO or
    WELCOME whose element 3 is a uint other than 1 (read before the rest of
    the message is looked at, so a later version may reshape it).

  A message's optional fields (``schema.FLAG``, e.g. ``SpawnRequest.drawn``,
  and ``schema.SEGMENTS``, ``SpawnRequest.segments``) are trailing
  elements: a missing flag decodes as ``False`` and missing (or empty)
  segments as ``None``; a present flag must be a bool, present segments an
  array of at most ``schema.MAX_SEGMENTS`` bins. Extra trailing elements of the message (after its
  flags) and of its nested arrays (budget, cancel reason, hybrid time) are
  accepted and dropped. Any MessagePack
  encoding of a value is accepted (a uint16 holding 5, an int8 holding a
  non-negative value, a float32), not only the smallest. A decoded
  idempotency key of a length other than 16, or a zero lease, is not
  malformed: the node rejects such a request as invalid_input. Values whose
  meaning is the engine's business are not checked here either: any str
  ``role``, any uint ERROR code or reject code, any ``stats`` keys.
- ``encode`` refuses (``InvalidArgument`` naming the field) any message the
  decoder would not accept back unchanged; it never produces such bytes. It
  writes a message's flags only up to the last one that is set, so a message
  whose flags are all clear is the same bytes as before the flags existed. So
  it encodes only protocol version 1 (a test that needs another version's
  HELLO packs it by hand).
- ``decode`` of a body over 64 KiB builds only the values the message keeps:
  elements it drops (trailing ones, an unknown kind's, a later version's
  rest) are checked by a walk over the bytes that builds nothing, and an
  element is checked for its shape before it is built, so such a body costs
  its bytes plus the message (see "The walk" below). Smaller bodies are
  built whole by msgpack and then checked: faster, and bounded by their size.
- ``FrameDecoder`` cuts a byte stream into messages (see its docstring).

Value rules beyond the message classes' docstring: a "uint" is an ``int``
(never a ``bool``) in 0..2**64-1; a node id (``sender``) is a str of 1..255
UTF-8 bytes; budget priority is 0..255; cancel reason kinds are 0..11;
``LeaseRenewal.current_state`` is 0..5; ``SpawnAck.status`` is 0 or 1;
``ResultDelivery.outcome_kind`` is 0..3 and picks the payload type (bin, str,
cancel reason, str); nonces are 32 bytes, proofs 32 bytes or None; a vector
time has at most 1,024 distinct str keys (duplicate map keys: the last wins,
as everywhere in a map). Generic
values (``features``, ``stats``) are None, bool, int (-2**63..2**64-1), float
(sent as float64), str, bytes-like, lists/tuples (decoded as lists) and dicts
whose keys are scalars (None, bool, int, float, str, bytes); ``features`` and
``stats`` themselves need str keys.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any, Callable

import msgpack

from rsc._core import schema
from rsc._core.messages import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_NODE_ID_BYTES,
    MAX_VECTOR_CLOCK_ENTRIES,
    MESSAGE_CLASSES,
    OUTCOME_PANICKED,
    PROTOCOL_VERSION,
    Message,
    ResultDelivery,
    SpawnAck,
    SpawnRequest,
)
from rsc.errors import (
    FrameTooLarge,
    InvalidArgument,
    MalformedFrame,
    ProtocolError,
    UnexpectedMessage,
    VersionMismatch,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "IMPLEMENTATION",
    "MAX_NESTING_DEPTH",
    "FrameDecoder",
    "decode",
    "encode",
    "encode_frame",
    "encode_frame_parts",
    "encode_frames",
    "fields",
    "result_delivery",
    "spawn_ack",
    "spawn_request",
]

IMPLEMENTATION = "py"

MAX_NESTING_DEPTH = 64
"""Deepest array/map nesting a body may have; the body's own array is level 1."""

MAX_CANCEL_KIND = 11
MAX_TASK_STATE = 5
MAX_PRIORITY = 255
NONCE_BYTES = 32
PROOF_BYTES = 32

_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1
_I64_MIN = -(2**63)
_FRAME_HEADER = 4
# A frame of at least this many body bytes is, once its header is here,
# received into a buffer of its full size (``FrameDecoder.receive_buffer``).
_LARGE_FRAME = 65536

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40


def _short(value: object) -> str:
    return f"{_repr.repr(value)} ({type(value).__name__})"


# --- encoding: validate, then hand a plain list to msgpack ------------------------


def _bad(field: str, expected: str, value: object) -> InvalidArgument:
    return InvalidArgument(f"{field} must be {expected}, got {_short(value)}")


def _e_uint(value: Any, field: str) -> int:
    if type(value) is int:
        if 0 <= value <= _U64_MAX:
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= _U64_MAX:
            return int(value)
    raise _bad(field, "an int in 0..2**64-1", value)


def _e_uint_max(value: Any, field: str, maximum: int) -> int:
    value = _e_uint(value, field)
    if value > maximum:
        raise _bad(field, f"an int in 0..{maximum}", value)
    return value


def _utf8_len(value: str, field: str) -> int:
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad(field, "a str encodable as UTF-8", value) from None


def _e_str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _bad(field, "a str", value)
    _utf8_len(value, field)
    return value


def _e_str_or_nil(value: Any, field: str) -> str | None:
    return None if value is None else _e_str(value, field)


def _e_node_id(value: Any, field: str) -> str:
    if isinstance(value, str) and 1 <= _utf8_len(value, field) <= MAX_NODE_ID_BYTES:
        return value
    raise _bad(field, f"a str of 1..{MAX_NODE_ID_BYTES} UTF-8 bytes", value)


def _bin_len(value: Any) -> int:
    """Length of a bytes-like value msgpack packs as bin, or -1 if it is not one."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, memoryview):
        try:
            if value.c_contiguous:
                return value.nbytes
        except ValueError:  # a released view
            pass
    return -1


def _e_bin(value: Any, field: str) -> Any:
    if _bin_len(value) < 0:
        raise _bad(field, "bytes", value)
    return value


def _e_bin_or_nil(value: Any, field: str) -> Any:
    return None if value is None else _e_bin(value, field)


def _e_bin_sized(value: Any, field: str, size: int) -> Any:
    if _bin_len(value) != size:
        raise _bad(field, f"{size} bytes", value)
    return value


def _e_bin_sized_or_nil(value: Any, field: str, size: int) -> Any:
    return None if value is None else _e_bin_sized(value, field, size)


def _e_time(value: Any, field: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return _e_uint(value, field)
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise _bad(field, "a hybrid time (physical_ns, logical)", value)
        return (_e_uint(value[0], field + "[0]"), _e_uint(value[1], field + "[1]"))
    if isinstance(value, dict):
        if len(value) > MAX_VECTOR_CLOCK_ENTRIES:
            raise _bad(field, f"a vector time of at most {MAX_VECTOR_CLOCK_ENTRIES} entries",
                       value)
        for node, counter in value.items():
            _e_str(node, field + " key")
            _e_uint(counter, f"{field}[{node!r}]")
        return value
    raise _bad(field, "a Lamport int, a hybrid (physical_ns, logical) or a vector dict", value)


def _e_budget(value: Any, field: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 4:
        raise _bad(field, "None or a 4-tuple (deadline_ms, poll_quota, cost_quota, priority)",
                   value)
    return (
        None if value[0] is None else _e_uint(value[0], field + ".deadline_remaining_ms"),
        None if value[1] is None else _e_uint(value[1], field + ".poll_quota"),
        None if value[2] is None else _e_uint(value[2], field + ".cost_quota"),
        _e_uint_max(value[3], field + ".priority", MAX_PRIORITY),
    )


def _e_reason(value: Any, field: str) -> Any:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _bad(field, "a cancel reason 2-tuple (kind, message | None)", value)
    return (_e_uint_max(value[0], field + ".kind", MAX_CANCEL_KIND),
            _e_str_or_nil(value[1], field + ".message"))


_SCALAR_KEY_TYPES = (type(None), bool, int, float, str, bytes)


def _e_generic(value: Any, field: str, level: int) -> None:
    """Check a generic value; ``level`` is the nesting level it has as a container."""
    if value is None or isinstance(value, (bool, float)):
        return
    if isinstance(value, int):
        if not _I64_MIN <= value <= _U64_MAX:
            raise _bad(field, "an int in -2**63..2**64-1", value)
        return
    if isinstance(value, str):
        _e_str(value, field)
        return
    if _bin_len(value) >= 0:
        return
    if isinstance(value, (dict, list, tuple)):
        if level > MAX_NESTING_DEPTH:
            raise InvalidArgument(
                f"{field} nests arrays/maps deeper than {MAX_NESTING_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, _SCALAR_KEY_TYPES):
                    raise _bad(field + " key", "None, bool, int, float, str or bytes", key)
                _e_generic(key, field + " key", level + 1)
                _e_generic(item, f"{field}[{key!r}]", level + 1)
        else:
            for index, item in enumerate(value):
                _e_generic(item, f"{field}[{index}]", level + 1)
        return
    raise _bad(field, "a MessagePack value (None, bool, int, float, str, bytes, list, dict)",
               value)


def _e_str_map(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise _bad(field, "a dict with str keys", value)
    for key, item in value.items():
        if not isinstance(key, str):
            raise _bad(field + " key", "a str", key)
        _e_str(key, field + " key")
        _e_generic(item, f"{field}[{key!r}]", 3)
    return value


def _e_version(value: Any, field: str) -> int:
    if _e_uint(value, field) != PROTOCOL_VERSION:
        raise _bad(field, f"{PROTOCOL_VERSION} (this codec speaks wire v1 only)", value)
    return PROTOCOL_VERSION


def _e_flag(value: Any, field: str) -> bool:
    if value is True or value is False:
        return value
    raise _bad(field, "a bool", value)


def _e_segments(value: Any, field: str) -> list:
    if value is None:
        return []  # written only before a later optional field that is set
    if not isinstance(value, (list, tuple)) or len(value) > schema.MAX_SEGMENTS:
        raise _bad(field, f"None or a list of at most {schema.MAX_SEGMENTS} bytes", value)
    for index, item in enumerate(value):
        _e_bin(item, f"{field}[{index}]")
    return list(value)


def _e_uint_list(value: Any, field: str) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise _bad(field, "a list of ints", value)
    return [_e_uint(item, f"{field}[{index}]") for index, item in enumerate(value)]


# Field type code -> its check and the arguments after (value, "Class.field"):
# the check returns the value to pack.
_ENCODERS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    schema.UINT: (_e_uint, ()),
    schema.STR: (_e_str, ()),
    schema.BIN: (_e_bin, ()),
    schema.BIN_OR_NIL: (_e_bin_or_nil, ()),
    schema.BIN32: (_e_bin_sized, (NONCE_BYTES,)),  # = PROOF_BYTES
    schema.BIN32_OR_NIL: (_e_bin_sized_or_nil, (PROOF_BYTES,)),
    schema.BUDGET: (_e_budget, ()),
    schema.REASON: (_e_reason, ()),
    schema.STATUS: (_e_uint_max, (1,)),
    schema.STATE: (_e_uint_max, (MAX_TASK_STATE,)),
    schema.OUTCOME: (_e_uint_max, (OUTCOME_PANICKED,)),
    schema.VERSION: (_e_version, ()),
    schema.STR_MAP: (_e_str_map, ()),
    schema.UINT_LIST: (_e_uint_list, ()),
    schema.FLAG: (_e_flag, ()),
    schema.SEGMENTS: (_e_segments, ()),
}


def _generated(name: str, source: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """The function ``name`` defined by ``source``, whose globals are ``namespace``.

    The readers and writers below are generated from the schema, as
    ``collections.namedtuple`` generates its methods: a straight-line function
    per kind runs as fast as a hand-written one, where a loop over the fields
    costs a fifth more per message.
    """
    exec(source, namespace)  # noqa: S102 - source built from rsc._core.schema only
    return namespace[name]


def _field_lines(checks: dict[str, tuple[Callable[..., Any], tuple[int, ...]]], index: int,
                 code: str, subject: str, label: str, namespace: dict[str, Any]) -> list[str]:
    """Source lines that set ``f<index>`` to the checked ``subject``: one call
    of the field type's check, or for a payload one per outcome before it."""
    def call(code: str, suffix: str) -> str:
        check, extra = checks[code]
        namespace[f"check{index}{suffix}"] = check
        args = "".join(f", {arg!r}" for arg in extra)
        return f"f{index} = check{index}{suffix}({subject}, {label}{args})"

    if code != schema.PAYLOAD:
        return ["    " + call(code, "")]
    lines = []
    choices = sorted(schema.PAYLOAD_TYPES.items())
    for n, (outcome, payload_code) in enumerate(choices):  # the outcome is checked already
        lines.append("    else:" if n == len(choices) - 1
                     else f"    {'elif' if n else 'if'} f{index - 1} == {outcome}:")
        lines.append("        " + call(payload_code, f"_{outcome}"))
    return lines


def _writer(spec: schema.MessageSpec) -> Callable[[Any], list]:
    """``write(msg)``: the checked values of ``spec``'s fields, in wire order;
    its trailing flags only up to the last one that is set."""
    namespace: dict[str, Any] = {}
    lines = []
    for index, (name, code) in enumerate(spec.fields):
        lines += _field_lines(_ENCODERS, index, code, f"m.{name}",
                              repr(f"{spec.class_name}.{name}"), namespace)
    n = len(spec.fields)
    for last in range(n - 1, spec.required - 1, -1):  # the last flag set, if any
        values = ", ".join(f"f{index}" for index in range(last + 1))
        lines.append(f"    if f{last}:\n        return [{values}]")
    values = ", ".join(f"f{index}" for index in range(spec.required))
    source = "def write(m):\n" + "".join(line + "\n" for line in lines) + f"    return [{values}]\n"
    return _generated("write", source, namespace)


_WRITERS: dict[type, tuple[int, Callable[[Any], list]]] = {
    MESSAGE_CLASSES[spec.kind]: (spec.kind, _writer(spec)) for spec in schema.MESSAGES
}


def _writer_for(msg: object) -> tuple[int, Callable[[Any], list]]:
    entry = _WRITERS.get(type(msg))
    if entry is None:
        for base in type(msg).__mro__[1:]:
            entry = _WRITERS.get(base)
            if entry is not None:
                break
        else:
            raise InvalidArgument(f"expected a wire message (rsc._core.messages), got "
                                  f"{_short(msg)}")
    return entry


def _to_wire(msg: Message) -> list:
    kind, write = _writer_for(msg)
    name = type(msg).__name__
    try:
        sender = _e_node_id(msg.sender, f"{name}.sender")
        sender_time = _e_time(msg.sender_time, f"{name}.sender_time")
        fields = write(msg)
    except AttributeError as exc:
        raise InvalidArgument(f"{name}.{exc.name} is not set") from None
    return [kind, sender, sender_time, *fields]


def encode(msg: Message) -> bytes:
    """The frame body of ``msg``: one MessagePack array."""
    wire = _to_wire(msg)
    try:
        return msgpack.packb(wire, use_bin_type=True)
    except (ValueError, OverflowError) as exc:  # e.g. a str over 4 GiB
        raise InvalidArgument(f"{type(msg).__name__} cannot be encoded: {exc}") from None


def _frame_header(body: bytes) -> bytes:
    if len(body) > _U32_MAX:
        raise InvalidArgument(f"a body of {len(body)} bytes does not fit a frame "
                              "(at most 2**32-1)")
    return len(body).to_bytes(_FRAME_HEADER, "big")


def encode_frame(msg: Message) -> bytes:
    """``msg`` as one frame: a u32 big-endian length, then the body."""
    body = encode(msg)
    return _frame_header(body) + body


def encode_frame_parts(msg: Message) -> bytes | tuple[bytes, ...]:
    """``msg`` as one frame, to be written as it comes.

    The compiled twin returns, for a message with a ``bytes`` value (or a
    memoryview of a msgpack ``Packer``'s buffer) of at least 64 KiB, a tuple of parts (the bytes around each such value and the
    value itself, not copied) whose concatenation is the frame; this twin
    always returns the frame itself, which is the same bytes."""
    return encode_frame(msg)


def encode_frames(msgs: Iterable[Message]) -> bytes:
    """Several frames back to back, for one coalesced write."""
    parts: list[bytes] = []
    for msg in msgs:
        body = encode(msg)
        parts.append(_frame_header(body))
        parts.append(body)
    return b"".join(parts)


def fields(msg: Message) -> tuple:
    """``msg``'s fields after the envelope, in wire order, as a tuple
    (``rsc._core.schema`` names each index: ``SpawnRequestF.computation``)."""
    if not isinstance(msg, Message) or msg.kind < 0:
        raise InvalidArgument(f"expected a wire message (rsc._core.messages), got {_short(msg)}")
    try:
        return tuple(getattr(msg, name) for name in msg.fields)
    except AttributeError as exc:
        raise InvalidArgument(f"{type(msg).__name__}: {exc}") from None


def sender_time(msg: Message) -> Any:
    """``msg.sender_time``, its envelope's time."""
    if not isinstance(msg, Message) or msg.kind < 0:
        raise InvalidArgument(f"expected a wire message (rsc._core.messages), got {_short(msg)}")
    try:
        return msg.sender_time
    except AttributeError as exc:
        raise InvalidArgument(f"{type(msg).__name__}: {exc}") from None


# --- building the per-task messages (the compiled twin skips __init__) ----------


def spawn_request(sender: str, sender_time: Any, remote_task_id: int, computation: str,
                  input: bytes, lease_ms: int, idempotency_key: bytes, budget: tuple | None,  # noqa: A002
                  origin_node: str, origin_region: int, origin_task: int,
                  capability: bytes | None, drawn: bool = False,
                  segments: list | None = None) -> SpawnRequest:
    """``SpawnRequest(...)``."""
    return SpawnRequest(sender, sender_time, remote_task_id, computation, input, lease_ms,
                        idempotency_key, budget, origin_node, origin_region, origin_task,
                        capability, drawn, segments)


def spawn_ack(sender: str, sender_time: Any, remote_task_id: int, status: int, reject_code: int,
              reject_detail: str, assigned_node: str) -> SpawnAck:
    """``SpawnAck(...)``."""
    return SpawnAck(sender, sender_time, remote_task_id, status, reject_code, reject_detail,
                    assigned_node)


def result_delivery(sender: str, sender_time: Any, remote_task_id: int, outcome_kind: int,
                    payload: Any, execution_time_ns: int,
                    segments: list | None = None) -> ResultDelivery:
    """``ResultDelivery(...)``."""
    return ResultDelivery(sender, sender_time, remote_task_id, outcome_kind, payload,
                          execution_time_ns, segments)


# --- decoding: a walk over the bytes finds each element; msgpack builds only the
# values a message keeps, and each is checked as it is read -------------------------


def _malformed(what: str, expected: str, value: object) -> MalformedFrame:
    got = value.what if type(value) is _Unbuilt else _short(value)
    return MalformedFrame(f"{what}: expected {expected}, got {got}")


def _d_uint(value: Any, what: str) -> int:
    # msgpack yields exact ints (bools are their own type), never above 2**64-1.
    if type(value) is int and value >= 0:
        return value
    raise _malformed(what, "uint", value)


def _d_uint_max(value: Any, what: str, maximum: int) -> int:
    if type(value) is int and 0 <= value <= maximum:
        return value
    raise _malformed(what, f"uint 0..{maximum}", value)


def _d_uint_or_nil(value: Any, what: str) -> int | None:
    if value is None or (type(value) is int and value >= 0):
        return value
    raise _malformed(what, "uint or nil", value)


def _d_str(value: Any, what: str) -> str:
    if type(value) is str:
        return value
    raise _malformed(what, "str", value)


def _d_str_or_nil(value: Any, what: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _malformed(what, "str or nil", value)


def _d_bin(value: Any, what: str) -> bytes:
    if type(value) is bytes:
        return value
    raise _malformed(what, "bin", value)


def _d_bin_or_nil(value: Any, what: str) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    raise _malformed(what, "bin or nil", value)


def _d_bin_sized(value: Any, what: str, size: int) -> bytes:
    if type(value) is bytes and len(value) == size:
        return value
    raise _malformed(what, f"bin {size}", value)


def _d_bin_sized_or_nil(value: Any, what: str, size: int) -> bytes | None:
    if value is None or (type(value) is bytes and len(value) == size):
        return value
    raise _malformed(what, f"bin {size} or nil", value)


_GENERIC_SCALARS = frozenset((type(None), bool, int, float, str, bytes))


def _d_generic(value: Any, what: str, level: int) -> None:
    """Check a generic value; ``level`` is the nesting level it has as a container."""
    kind = type(value)
    if kind in _GENERIC_SCALARS:
        return
    if kind is list or kind is dict:
        if level > MAX_NESTING_DEPTH:
            raise MalformedFrame(f"{what}: arrays/maps nested deeper than "
                                 f"{MAX_NESTING_DEPTH} levels")
        if kind is list:
            for item in value:
                _d_generic(item, what, level + 1)
        else:
            for key, item in value.items():
                if type(key) not in _GENERIC_SCALARS:  # e.g. a Timestamp key
                    raise _malformed(what + " key", "a scalar", key)
                _d_generic(item, what, level + 1)
        return
    raise _malformed(what, "a MessagePack value without ext types", value)


def _d_extras(body: _Body | list, start: int, what: str, level: int) -> None:
    """Trailing elements a v1 receiver does not know: checked, then dropped
    (a walked body: walked, never built); nothing may follow the array."""
    if isinstance(body, list):
        _d_rest(body, start, what, level)
    else:
        body.skip_rest(start, level)


def _d_rest(value: list, start: int, what: str, level: int) -> None:
    """Trailing items of a nested array (hybrid time, budget, cancel reason).
    A walked body keeps none (the walk checked them); a built one keeps them all."""
    for index in range(start, len(value)):
        _d_generic(value[index], what, level)


def _d_str_map(value: Any, what: str) -> dict:
    if type(value) is not dict:
        raise _malformed(what, "map", value)
    for key, item in value.items():
        if type(key) is not str:
            raise _malformed(what + " key", "str", key)
        _d_generic(item, what, 3)
    return value


def _d_sender(value: Any) -> str:
    if type(value) is str and 1 <= len(value) and (
            len(value) <= MAX_NODE_ID_BYTES if value.isascii()
            else len(value.encode("utf-8")) <= MAX_NODE_ID_BYTES):
        return value
    raise _malformed("sender", f"str of 1..{MAX_NODE_ID_BYTES} UTF-8 bytes", value)


def _d_time(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        if value >= 0:
            return value
    elif kind is list:
        if len(value) >= 2:
            physical = _d_uint(value[0], "sender_time physical_ns")
            logical = _d_uint(value[1], "sender_time logical")
            _d_rest(value, 2, "sender_time", 3)
            return (physical, logical)
    elif kind is dict:
        if len(value) > MAX_VECTOR_CLOCK_ENTRIES:
            raise MalformedFrame(f"sender_time: vector time of {len(value)} entries "
                                 f"(at most {MAX_VECTOR_CLOCK_ENTRIES})")
        for node, counter in value.items():
            _d_str(node, "sender_time node id")
            _d_uint(counter, "sender_time counter")
        return value
    raise _malformed("sender_time", "uint, [uint, uint] or map str->uint", value)


def _d_budget(value: Any, what: str) -> tuple | None:
    if value is None:
        return None
    if type(value) is not list or len(value) < 4:
        raise _malformed(what, "nil or array of 4", value)
    budget = (_d_uint_or_nil(value[0], what + " deadline_remaining_ms"),
              _d_uint_or_nil(value[1], what + " poll_quota"),
              _d_uint_or_nil(value[2], what + " cost_quota"),
              _d_uint_max(value[3], what + " priority", MAX_PRIORITY))
    _d_rest(value, 4, what, 3)
    return budget


def _d_reason(value: Any, what: str) -> tuple:
    if type(value) is not list or len(value) < 2:
        raise _malformed(what, "cancel reason [kind, message]", value)
    reason = (_d_uint_max(value[0], what + " kind", MAX_CANCEL_KIND),
              _d_str_or_nil(value[1], what + " message"))
    _d_rest(value, 2, what, 3)
    return reason


def _need(body: _Body | list, count: int, name: str) -> None:
    if len(body) < count:
        raise MalformedFrame(f"{name} needs {count} elements, got {len(body)}")


def _d_version(body: _Body | list, name: str) -> int:
    _need(body, 4, name)
    version = _d_uint(body[3], name + " protocol_version")
    if version != PROTOCOL_VERSION:
        _d_extras(body, 4, name, 2)
        raise VersionMismatch(f"{name} speaks protocol version {version}; "
                              f"this side speaks {PROTOCOL_VERSION}")
    return version


def _d_flag(value: Any, what: str) -> bool:
    if value is True or value is False:
        return value
    raise _malformed(what, "bool", value)


def _d_segments(value: Any, what: str) -> list | None:
    if type(value) is not list or len(value) > schema.MAX_SEGMENTS:
        raise _malformed(what, f"array of at most {schema.MAX_SEGMENTS} bins", value)
    for item in value:
        if type(item) is not bytes:
            raise _malformed(what + " item", "bin", item)
    return value or None  # an empty array: no segments, as when it is left out


def _d_uint_list(value: Any, what: str) -> list:
    if type(value) is not list:
        raise _malformed(what, "array of uint", value)
    for item in value:
        _d_uint(item, what + " item")
    return value


# Field type code -> its check and the arguments after (value, "WIRE_NAME
# field"): the check returns the value the message keeps.
_DECODERS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    schema.UINT: (_d_uint, ()),
    schema.STR: (_d_str, ()),
    schema.BIN: (_d_bin, ()),
    schema.BIN_OR_NIL: (_d_bin_or_nil, ()),
    schema.BIN32: (_d_bin_sized, (NONCE_BYTES,)),  # = PROOF_BYTES
    schema.BIN32_OR_NIL: (_d_bin_sized_or_nil, (PROOF_BYTES,)),
    schema.BUDGET: (_d_budget, ()),
    schema.REASON: (_d_reason, ()),
    schema.STATUS: (_d_uint_max, (1,)),
    schema.STATE: (_d_uint_max, (MAX_TASK_STATE,)),
    schema.OUTCOME: (_d_uint_max, (OUTCOME_PANICKED,)),
    schema.STR_MAP: (_d_str_map, ()),
    schema.UINT_LIST: (_d_uint_list, ()),
    schema.FLAG: (_d_flag, ()),
    schema.SEGMENTS: (_d_segments, ()),
}

# What each field type may be when a walked body builds it (see _Body): a
# payload may be a cancel reason, so it is shaped as one.
_FIELD_SHAPES: dict[str, tuple[int, bool]] = {
    schema.BUDGET: (4, False),
    schema.REASON: (2, False),
    schema.PAYLOAD: (2, False),
    schema.STR_MAP: (0, True),
    schema.UINT_LIST: (-1, False),
    schema.SEGMENTS: (-1, False),
}


def _reader(spec: schema.MessageSpec) -> Callable[[Any, str, Any], Message]:
    """``read(body, sender, time)``: ``spec``'s message from the elements of
    ``body`` after the envelope (a version first, then the element count,
    then each field in order, a missing flag as False, then the trailing
    elements are checked)."""
    name, count = spec.wire_name, 3 + len(spec.fields)
    namespace: dict[str, Any] = {"cls": MESSAGE_CLASSES[spec.kind], "_need": _need,
                                 "_d_version": _d_version, "_d_extras": _d_extras}
    lines = []
    for index, (field, code) in enumerate(spec.fields):
        what = repr(f"{name} {field}")
        if code == schema.VERSION:  # read before the count: a later version may reshape the rest
            lines.append(f"    f{index} = _d_version(body, {name!r})")
        elif index >= spec.required:  # a flag or segments: optional
            lines.append(f"    f{index} = {schema.OPTIONAL_DEFAULTS[code]!r}")
            lines.append(f"    if len(body) > {index + 3}:")
            lines += ["    " + line for line in _field_lines(_DECODERS, index, code,
                                                             f"body[{index + 3}]", what, namespace)]
        else:
            lines += _field_lines(_DECODERS, index, code, f"body[{index + 3}]", what, namespace)
    versioned = bool(spec.fields) and spec.fields[0][1] == schema.VERSION
    need = f"    _need(body, {3 + spec.required}, {name!r})"
    lines.insert(1 if versioned else 0, need)
    values = "".join(f", f{index}" for index in range(len(spec.fields)))
    rest = str(count) if spec.required == len(spec.fields) else f"min(len(body), {count})"
    source = ("def read(body, sender, time):\n" + "".join(line + "\n" for line in lines)
              + f"    msg = cls(sender, time{values})\n"
              + f"    _d_extras(body, {rest}, {name!r}, 2)\n    return msg\n")
    return _generated("read", source, namespace)


# The walk. A peer decides how many values a body holds, so the decoder must not
# build one Python object per value before it knows the message wants them: a
# 16 MiB body of empty arrays would cost ~1 GB as lists. So the body is walked
# byte by byte (``_skip`` checks a value as msgpack and the rules above would,
# and builds nothing), and msgpack builds only an element the message keeps,
# once the walk has found where it ends. Element positions are local ints
# only: a slice of the caller's buffer never outlives the expression that
# made it (a memoryview in a traceback would keep a bytearray locked).

_ARRAY = 1
_MAP = 2
# Bytes a value takes, for the markers whose size is fixed.
_FIXED_SIZES = {0xc0: 1, 0xc2: 1, 0xc3: 1, 0xca: 5, 0xcb: 9, 0xcc: 2, 0xcd: 3, 0xce: 5,
                0xcf: 9, 0xd0: 2, 0xd1: 3, 0xd2: 5, 0xd3: 9}


class _Unbuilt:
    """A container the decoder did not build because the message has no
    container there; every field check rejects it, naming ``what``."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


def _truncated() -> MalformedFrame:
    return MalformedFrame("body ends inside a value (truncated or a length that claims "
                          "more bytes than there are)")


def _marker_name(data: Any, pos: int) -> str:
    if pos >= len(data):
        return "end of body"
    b = data[pos]
    if b < 0x80 or b >= 0xe0 or 0xcc <= b <= 0xd3:
        return "int"
    if b <= 0x8f or b in (0xde, 0xdf):
        return "map"
    if b <= 0x9f or b in (0xdc, 0xdd):
        return "array"
    if b <= 0xbf or 0xd9 <= b <= 0xdb:
        return "str"
    if b == 0xc0:
        return "nil"
    if b in (0xc2, 0xc3):
        return "bool"
    if 0xc4 <= b <= 0xc6:
        return "bin"
    if b in (0xca, 0xcb):
        return "float"
    if b == 0xc1:
        return "reserved byte 0xc1"
    return "ext"


def _uint_at(data: Any, pos: int, size: int, end: int) -> int:
    if end - pos < size:
        raise _truncated()
    return int.from_bytes(data[pos:pos + size], "big")


def _container(data: Any, pos: int, end: int) -> tuple[int, int, int]:
    """``(_ARRAY or _MAP, count, position of the first item)`` for the
    container at ``pos``; ``(0, 0, pos)`` for any other value."""
    b = data[pos]
    if 0x90 <= b <= 0x9f:
        what, count, pos = _ARRAY, b & 0x0f, pos + 1
    elif 0x80 <= b <= 0x8f:
        what, count, pos = _MAP, b & 0x0f, pos + 1
    elif b in (0xdc, 0xde):
        what, count, pos = (_ARRAY if b == 0xdc else _MAP), _uint_at(data, pos + 1, 2, end), pos + 3
    elif b in (0xdd, 0xdf):
        what, count, pos = (_ARRAY if b == 0xdd else _MAP), _uint_at(data, pos + 1, 4, end), pos + 5
    else:
        return 0, 0, pos
    if count * what > end - pos:  # every item takes a byte at least (a map entry two)
        raise _truncated()
    return what, count, pos


def _skip(data: Any, pos: int, end: int, level: int) -> int:
    """Check the value at ``pos`` (no ext, valid UTF-8, containers at most
    MAX_NESTING_DEPTH deep, map keys not containers) and return where it
    ends; ``level`` is the nesting level it has as a container."""
    if pos >= end:
        raise _truncated()
    b = data[pos]
    if b < 0x80 or b >= 0xe0:
        return pos + 1
    size = _FIXED_SIZES.get(b)
    if size is not None:
        if end - pos < size:
            raise _truncated()
        return pos + size
    what, count, pos = _container(data, pos, end)
    if what:
        if level > MAX_NESTING_DEPTH:
            raise MalformedFrame(f"arrays/maps nested deeper than {MAX_NESTING_DEPTH} levels")
        if what == _ARRAY:
            for _ in range(count):
                pos = _skip(data, pos, end, level + 1)
            return pos
        for _ in range(count):
            if pos < end and (0x80 <= data[pos] <= 0x9f or 0xdc <= data[pos] <= 0xdf):
                raise MalformedFrame("a map key is an array or a map")
            pos = _skip(data, _skip(data, pos, end, level + 1), end, level + 1)
        return pos
    if 0xa0 <= b <= 0xbf or 0xd9 <= b <= 0xdb:
        start, size = _blob(data, pos, end)
        _text(data, start, size)
        return start + size
    if 0xc4 <= b <= 0xc6:
        start, size = _blob(data, pos, end)
        return start + size
    if b == 0xc1:
        raise MalformedFrame("reserved MessagePack byte 0xc1")
    raise MalformedFrame("MessagePack ext types are not part of wire v1")


def _blob(data: Any, pos: int, end: int) -> tuple[int, int]:
    """``(start, size)`` of the bytes of the str or bin at ``pos``."""
    b = data[pos]
    if b <= 0xbf:
        size, pos = b & 0x1f, pos + 1
    else:
        width = 1 << ((b - 0xd9) if b >= 0xd9 else (b - 0xc4))
        size, pos = _uint_at(data, pos + 1, width, end), pos + 1 + width
    if size > end - pos:
        raise _truncated()
    return pos, size


def _text(data: Any, start: int, size: int) -> str:
    try:
        return str(data[start:start + size], "utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("a str is not valid UTF-8") from None


def _scalar(data: Any, pos: int, end: int) -> tuple[Any, int]:
    """The value at ``pos`` (not a container) and where it ends. The markers
    the per-task messages use are read here; the rest (floats, negative ints,
    bools) by msgpack once the walk has checked them."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    if 0xa0 <= b <= 0xbf or 0xd9 <= b <= 0xdb:
        start, size = _blob(data, pos, end)
        return _text(data, start, size), start + size
    if 0xc4 <= b <= 0xc6:
        start, size = _blob(data, pos, end)
        return bytes(data[start:start + size]), start + size
    if b == 0xc0:
        return None, pos + 1
    if 0xcc <= b <= 0xcf:
        width = 1 << (b - 0xcc)
        return _uint_at(data, pos + 1, width, end), pos + 1 + width
    after = _skip(data, pos, end, 0)
    return _build(data, pos, after), after


def _build(data: Any, pos: int, end: int) -> Any:
    return msgpack.unpackb(data[pos:end], raw=False, strict_map_key=False,
                           ext_hook=_reject_ext)


# What an element may be, as (array items built, map built): (0, False) a
# scalar; (k, False) an array whose first k items are built (all if k < 0),
# the rest walked; (k, True) a map too.
_SCALAR = (0, False)
_TIME = (2, True)
_ENVELOPE = (_SCALAR, _SCALAR, _TIME)
_READERS: dict[int, Callable[[Any, str, Any], Message]] = {
    spec.kind: _reader(spec) for spec in schema.MESSAGES
}
# The shape of each element of a kind's body, for a walked body (see _Body).
_SHAPES: dict[int, tuple[tuple[int, bool], ...]] = {
    spec.kind: _ENVELOPE + tuple(_FIELD_SHAPES.get(code, _SCALAR) for _name, code in spec.fields)
    for spec in schema.MESSAGES
}


class _Body:
    """The elements of a body's array, read in order (``body[i]`` for the
    next ``i`` only): each is checked for its shape before it is built, so a
    frame that cannot be its message stops at the first wrong element."""

    __slots__ = ("data", "pos", "end", "count", "index", "shapes")

    def __init__(self, data: Any) -> None:
        self.data = data
        self.end = len(data)
        if not self.end:
            raise MalformedFrame("empty body")
        what, self.count, self.pos = _container(data, 0, self.end)
        if what != _ARRAY:
            raise MalformedFrame(f"body: expected array, got {_marker_name(data, 0)}")
        self.index = 0
        self.shapes: tuple[tuple[int, bool], ...] = _ENVELOPE

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Any:
        if index != self.index or self.pos < 0:
            raise RuntimeError(f"the decoder reads elements in order (asked {index})")
        self.index += 1
        value, self.pos = self._element(self.pos, self.shapes[index], 2)
        return value

    def _element(self, pos: int, shape: tuple[int, bool], level: int) -> tuple[Any, int]:
        """The element at ``pos`` (built, or an _Unbuilt with position -1)
        and where it ends."""
        data, end = self.data, self.end
        if pos >= end:
            raise _truncated()
        what, count, first = _container(data, pos, end)
        keep, map_ok = shape
        if what == _MAP and map_ok:
            after = _skip(data, pos, end, level)
            return _build(data, pos, after), after
        if what == _ARRAY and keep:
            items: list[Any] = []
            pos = first
            for index in range(count):
                if index < keep or keep < 0:
                    item, pos = self._element(pos, _SCALAR, level + 1)
                    items.append(item)
                    if pos < 0:
                        break  # the check of items rejects it
                else:
                    pos = _skip(data, pos, end, level + 1)
            return items, pos
        if what:
            return _Unbuilt(f"{'array' if what == _ARRAY else 'map'} of {count}"), -1
        return _scalar(data, pos, end)

    def skip_rest(self, start: int, level: int) -> None:
        """Walk the elements from ``start`` on (the next to read) and the end."""
        if start != self.index or self.pos < 0:
            raise RuntimeError(f"the decoder reads elements in order (asked {start})")
        pos = self.pos
        for _ in range(self.count - start):
            pos = _skip(self.data, pos, self.end, level)
        self.index = self.count
        if pos != self.end:
            raise MalformedFrame(f"{self.end - pos} bytes after the message's array")


# Small bodies are built by msgpack in one call and then checked, which is
# several times faster in Python than the walk. What that can cost is bounded
# by the size: at most ~60 bytes of objects per byte (an empty list per 0x90),
# under 4 MB for the largest such body, and freed as soon as the check ends.
_BUILT_MAX_BYTES = 64 * 1024


def _built(data: Any) -> list:
    """A small body, built by msgpack in one call (it is checked as it is read)."""
    try:
        items = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_reject_ext)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a malformed frame
        if isinstance(exc, MalformedFrame):
            raise MalformedFrame(exc.message) from None
        raise MalformedFrame(f"body is not exactly one MessagePack value ({exc})") from None
    if type(items) is not list:
        raise _malformed("body", "array", items)
    return items


def _reject_ext(code: int, data: bytes) -> Any:
    raise MalformedFrame(f"MessagePack ext type {code} is not part of wire v1")


def _byte_view(data: Any) -> memoryview:
    """A fresh flat byte view of ``data`` (TypeError/BufferError if not bytes-like).

    Callers release it, so no export on a caller's bytearray outlives the call
    (not even through a traceback).
    """
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        with view:
            return view.cast("B")  # raises for non-contiguous buffers
    return view


def _decode_view(data: Any) -> Message:
    # A body is a list (small, built whole) or a _Body (walked); the readers
    # index both alike, in order.
    body: Any = _built(data) if len(data) <= _BUILT_MAX_BYTES else _Body(data)
    if len(body) < 3:
        raise MalformedFrame(f"envelope needs 3 elements, got {len(body)}")
    kind = _d_uint(body[0], "message kind")
    sender = _d_sender(body[1])
    time = _d_time(body[2])
    read = _READERS.get(kind)
    if read is None:
        _d_extras(body, 3, "message", 2)
        raise UnexpectedMessage(f"unknown message kind {kind}")
    if type(body) is _Body:
        body.shapes = _SHAPES[kind]
    return read(body, sender, time)


def _decode_slice(view: memoryview, start: int, end: int) -> Message:
    frame = view[start:end]
    try:
        return _decode_view(frame)
    finally:
        frame.release()


def decode(body: bytes | bytearray | memoryview) -> Message:
    """The message in one frame body; see the module docstring for what is rejected."""
    if type(body) is bytes:
        return _decode_view(body)
    with _byte_view(body) as view:
        return _decode_view(view)


# --- streams -----------------------------------------------------------------------


def _check_limit(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"{name} must be an int >= 1, got {_short(value)}")
    return int(value)


def _check_kind(value: Any) -> type:
    cls = (_KIND_CLASSES.get(int(value))
           if isinstance(value, int) and not isinstance(value, bool) else None)
    if cls is None:
        raise InvalidArgument(f"handshake_last_kind must be a message kind, got {_short(value)}")
    return cls


_KIND_CLASSES = dict(MESSAGE_CLASSES)


class FrameDecoder:
    """Cuts a byte stream into messages.

    ``feed(data)`` returns the messages of every frame completed so far and
    keeps the bytes of a partial frame (``buffered`` counts them). A frame
    length of zero raises ``MalformedFrame``; one above ``max_frame_bytes``
    raises ``FrameTooLarge`` as soon as its 4-byte header arrives. A body that
    does not decode raises what ``decode`` raises. The error carries, in
    ``messages``, the messages of the frames before the bad one in that call
    (so no frame is lost, however the stream was split). After an error the
    decoder is poisoned: every ``feed`` raises the same error class until
    ``reset()``, which also drops buffered bytes, makes it ready for a new
    connection.

    With ``handshake_max_frame_bytes`` and ``handshake_last_kind``, frames
    are capped at the smaller handshake cap until a frame of that kind has
    been decoded (AUTH on a node, WELCOME on an origin); later frames in the
    same ``feed`` already get the full cap. ``in_handshake`` tells which cap
    applies.
    """

    __slots__ = ("_max", "_partial", "_large", "_large_filled", "_error", "_opening_max",
                 "_opening_class", "_opening", "_limit")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 handshake_max_frame_bytes: int | None = None,
                 handshake_last_kind: int | None = None) -> None:
        self._max = _check_limit(max_frame_bytes, "max_frame_bytes")
        self._opening_max: int | None = None
        self._opening_class: type | None = None
        if handshake_max_frame_bytes is not None or handshake_last_kind is not None:
            self._opening_max = _check_limit(handshake_max_frame_bytes,
                                             "handshake_max_frame_bytes")
            self._opening_class = _check_kind(handshake_last_kind)
        # Bytes of the one frame that is not complete yet (header included),
        # unless it is large: then _large, the whole frame's size, holds its
        # first _large_filled bytes.
        self._partial = bytearray()
        self._large: bytearray | None = None
        self._large_filled = 0
        self._error: tuple[type[ProtocolError], str] | None = None
        self._start()

    def _start(self) -> None:
        opening_max = self._opening_max
        self._opening = opening_max is not None
        self._limit = min(opening_max, self._max) if opening_max is not None else self._max

    @property
    def max_frame_bytes(self) -> int:
        return self._max

    @property
    def in_handshake(self) -> bool:
        """True while the handshake cap applies (never without one)."""
        return self._opening

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""
        return len(self._partial) + self._large_filled

    def reset(self) -> None:
        """Forget buffered bytes and any error, ready for a new stream."""
        # A fresh buffer: a memoryview on the old one may still live in a traceback.
        self._partial = bytearray()
        self._large = None
        self._large_filled = 0
        self._error = None
        self._start()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        self._raise_if_poisoned()
        out: list[Message] = []
        try:
            self._feed(data, out)
        except ProtocolError as exc:
            self._error = (type(exc), exc.message)
            exc.messages = out  # type: ignore[attr-defined]
            raise
        return out

    def receive_buffer(self) -> memoryview | None:
        """A writable view of the bytes the large frame in progress still
        needs, or None when none is in progress (a frame of at least 64 KiB
        whose header is here). Write the next bytes of the stream at the
        view's start, then call ``received`` with their count; the view is
        valid until that call (or ``feed``/``reset``)."""
        large = self._large
        if large is None or self._error is not None:
            return None
        return memoryview(large)[self._large_filled:]

    def received(self, n: int) -> list[Message]:
        """``n`` bytes of the stream were written at the start of the view
        ``receive_buffer`` returned: the messages of the frames they
        completed, with the errors ``feed`` raises (and the same poisoning).
        ``InvalidArgument`` if ``n`` is negative or more than the view held."""
        self._raise_if_poisoned()
        room = 0 if self._large is None else len(self._large) - self._large_filled
        if not (type(n) is int and 0 <= n <= room):
            raise InvalidArgument(f"received({n!r}): the receive buffer held {room} bytes; "
                                  "pass the count written into it")
        out: list[Message] = []
        self._large_filled += n
        if n and n == room:
            try:
                self._finish_large(out)
            except ProtocolError as exc:
                self._error = (type(exc), exc.message)
                exc.messages = out  # type: ignore[attr-defined]
                raise
        return out

    def _raise_if_poisoned(self) -> None:
        if self._error is not None:
            error_class, text = self._error
            exc = error_class(text)
            exc.messages = []  # type: ignore[attr-defined]
            raise exc

    def _finish_large(self, out: list[Message]) -> None:
        large = self._large
        assert large is not None
        self._large = None
        self._large_filled = 0
        with memoryview(large) as whole:
            self._decoded(out, _decode_slice(whole, _FRAME_HEADER, len(large)))

    def _fill_large(self, view: memoryview, out: list[Message]) -> int:
        """Take what the large frame in progress still needs from ``view``;
        decode it once complete. Returns the bytes taken."""
        large = self._large
        assert large is not None
        filled = self._large_filled
        take = min(len(large) - filled, len(view))
        large[filled:filled + take] = view[:take]
        self._large_filled = filled + take
        if self._large_filled == len(large):
            self._finish_large(out)
        return take

    def _keep_partial(self) -> None:
        """The partial frame's header is checked: a large frame moves into a
        buffer of its full size, for ``receive_buffer``."""
        partial = self._partial
        if len(partial) >= _FRAME_HEADER:
            length = int.from_bytes(partial[:_FRAME_HEADER], "big")
            if length >= _LARGE_FRAME:
                large = bytearray(_FRAME_HEADER + length)
                large[:len(partial)] = partial
                self._large = large
                self._large_filled = len(partial)
                self._partial = bytearray()

    def _frame_length(self, header: Any, at: int) -> int:
        length = int.from_bytes(header[at:at + _FRAME_HEADER], "big")
        if length == 0:
            raise MalformedFrame("zero-length frame")
        if length > self._limit:
            if self._opening:
                raise FrameTooLarge(f"frame of {length} bytes exceeds the {self._limit} "
                                    "bytes a peer may send before its handshake completes")
            raise FrameTooLarge(f"frame of {length} bytes exceeds max_frame_bytes "
                                f"{self._max}")
        return length

    def _decoded(self, out: list[Message], msg: Message) -> None:
        out.append(msg)
        if self._opening and type(msg) is self._opening_class:
            self._opening = False
            self._limit = self._max

    def _feed(self, data: Any, out: list[Message]) -> None:
        with _byte_view(data) as view:
            size = len(view)
            pos = 0
            if self._large is not None:
                pos = self._fill_large(view, out)
                if self._large is not None:
                    return
            partial = self._partial
            if partial:
                # Complete the pending frame first, taking only the bytes it needs.
                if len(partial) < _FRAME_HEADER:
                    take = min(_FRAME_HEADER - len(partial), size - pos)
                    partial += view[pos:pos + take]
                    pos += take
                    if len(partial) < _FRAME_HEADER:
                        return
                    length = self._frame_length(partial, 0)
                    self._keep_partial()
                else:
                    length = int.from_bytes(partial[:_FRAME_HEADER], "big")
                if self._large is not None:  # its header completed a large frame's
                    with view[pos:] as rest:
                        pos += self._fill_large(rest, out)
                    if self._large is not None:
                        return
                else:
                    take = min(_FRAME_HEADER + length - len(partial), size - pos)
                    partial += view[pos:pos + take]
                    pos += take
                    if len(partial) < _FRAME_HEADER + length:
                        return
                    self._partial = bytearray()
                    with memoryview(partial) as whole:
                        self._decoded(out, _decode_slice(whole, _FRAME_HEADER, len(partial)))
            while size - pos >= _FRAME_HEADER:
                length = self._frame_length(view, pos)
                end = pos + _FRAME_HEADER + length
                if end > size:
                    break
                self._decoded(out, _decode_slice(view, pos + _FRAME_HEADER, end))
                pos = end
            if pos < size:
                self._partial += view[pos:]
                self._keep_partial()
