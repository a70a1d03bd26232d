"""rsc._core envelope (wire v1): both twins against the golden vectors and each other.

The golden file ``tests/golden/wire_v1.json`` is the source of truth; see
``tests/golden/make_wire_v1.py`` for its format.
"""

from __future__ import annotations

import enum
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import msgpack
import pytest

from rsc._core import messages as m
from rsc.errors import (
    FrameTooLarge,
    InvalidArgument,
    MalformedFrame,
    ProtocolError,
    UnexpectedMessage,
    VersionMismatch,
)

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN: list[dict] = json.loads((GOLDEN_DIR / "wire_v1.json").read_text(encoding="utf-8"))
U64_MAX = 2**64 - 1
NONCE = bytes(range(32))
KEY = bytes(range(16))


# --- reading the golden file ---------------------------------------------------------


def value_from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [value_from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, body), = value.items()
    if tag == "bin":
        return bytes.fromhex(body)
    if tag == "bin_repeat":
        return bytes.fromhex(body[0]) * body[1]
    if tag == "str_repeat":
        return body[0] * body[1]
    if tag == "tuple":
        return tuple(value_from_json(v) for v in body)
    if tag == "map":
        return {value_from_json(k): value_from_json(v) for k, v in body}
    if tag == "float":
        return float(body)
    raise ValueError(f"unknown golden tag {tag!r}")


def message_from_json(description: dict) -> m.Message:
    cls = {c.__name__: c for c in m.MESSAGE_CLASSES.values()}[description["class"]]
    fields = description["fields"]
    assert list(fields) == list(cls.__slots_all__())
    return cls(*(value_from_json(fields[name]) for name in cls.__slots_all__()))


def bytes_from_json(parts: Any) -> bytes:
    if isinstance(parts, str):
        return bytes.fromhex(parts)
    return b"".join(bytes.fromhex(p) if isinstance(p, str) else bytes.fromhex(p["repeat"])
                    * p["count"] for p in parts)


ROUNDTRIP = [v for v in GOLDEN if "message" in v and not v.get("decode_only")]
DECODE_ONLY = [v for v in GOLDEN if v.get("decode_only")]
INVALID = [v for v in GOLDEN if "error" in v]
ERRORS = {cls.__name__: cls for cls in (MalformedFrame, VersionMismatch, UnexpectedMessage)}


def _name(vector: dict) -> str:
    return vector["name"]


@pytest.mark.parametrize("vector", ROUNDTRIP, ids=_name)
def test_golden_encode(envelope_mod: ModuleType, vector: dict) -> None:
    assert envelope_mod.encode(message_from_json(vector["message"])) == bytes_from_json(
        vector["hex"])


@pytest.mark.parametrize("vector", ROUNDTRIP + DECODE_ONLY, ids=_name)
def test_golden_decode(envelope_mod: ModuleType, vector: dict) -> None:
    decoded = envelope_mod.decode(bytes_from_json(vector["hex"]))
    assert decoded == message_from_json(vector["message"])


@pytest.mark.parametrize("vector", INVALID, ids=_name)
def test_golden_invalid(envelope_mod: ModuleType, vector: dict) -> None:
    with pytest.raises(ProtocolError) as info:
        envelope_mod.decode(bytes_from_json(vector["hex"]))
    assert type(info.value) is ERRORS[vector["error"]]
    assert info.value.code == vector["code"]


def test_golden_covers_every_kind_and_time_kind() -> None:
    seen: dict[str, set[str]] = {}
    for vector in ROUNDTRIP:
        msg = message_from_json(vector["message"])
        time_kind = type(msg.sender_time).__name__
        seen.setdefault(type(msg).__name__, set()).add(time_kind)
    assert set(seen) == {cls.__name__ for cls in m.MESSAGE_CLASSES.values()}
    assert all(kinds == {"int", "tuple", "dict"} for kinds in seen.values()), seen
    assert {v["error"] for v in INVALID} == set(ERRORS)


def test_golden_file_matches_its_generator() -> None:
    spec = importlib.util.spec_from_file_location("make_wire_v1", GOLDEN_DIR / "make_wire_v1.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.render() == (GOLDEN_DIR / "wire_v1.json").read_text(encoding="utf-8"), (
        "tests/golden/wire_v1.json is out of date with make_wire_v1.py")


def test_golden_hex_is_what_msgpack_packs(both_envelopes: tuple[ModuleType, ModuleType]) -> None:
    # An independent check of the encoders: re-packing the decoded array with the
    # msgpack library gives the same bytes (smallest encodings, float64).
    for vector in ROUNDTRIP:
        data = bytes_from_json(vector["hex"])
        wire = msgpack.unpackb(data, raw=False, strict_map_key=False)
        assert msgpack.packb(wire, use_bin_type=True) == data, vector["name"]


# --- the twins' API -------------------------------------------------------------------


def test_twins_have_the_same_api(both_envelopes: tuple[ModuleType, ModuleType]) -> None:
    c, py = both_envelopes
    assert c.__all__ == py.__all__
    for name in c.__all__:
        assert hasattr(c, name) and hasattr(py, name), name
    for name in ("DEFAULT_MAX_FRAME_BYTES", "MAX_NESTING_DEPTH", "MAX_CANCEL_KIND",
                 "MAX_TASK_STATE", "MAX_PRIORITY", "NONCE_BYTES", "PROOF_BYTES"):
        assert getattr(c, name) == getattr(py, name), name
    assert c.DEFAULT_MAX_FRAME_BYTES == m.DEFAULT_MAX_FRAME_BYTES
    assert (c.IMPLEMENTATION, py.IMPLEMENTATION) == ("c", "py")


def test_compiled_twin_is_compiled(both_envelopes: tuple[ModuleType, ModuleType]) -> None:
    c, _ = both_envelopes
    assert not c.__file__.endswith(".py"), c.__file__
    assert type(c.encode).__name__ in ("cython_function_or_method", "builtin_function_or_method")


# --- round trips ----------------------------------------------------------------------

TIMES: dict[str, Any] = {"lamport": 17, "hybrid": (1_700_000_000_000_000_000, 4),
                         "vector": {"origin-1": 3, "node-1": 9}}

FACTORIES: dict[str, Callable[[Any], m.Message]] = {
    "hello": lambda t: m.Hello("origin-1", t, 1, "origin", NONCE, {"clock": "hybrid"}),
    "welcome": lambda t: m.Welcome("node-1", t, 1, NONCE, NONCE[::-1], {"x": [1, {"y": None}]}),
    "auth": lambda t: m.Auth("origin-1", t, None),
    "error": lambda t: m.Error("node-1", t, 2, "auth failed"),
    "spawn_request": lambda t: m.SpawnRequest("origin-1", t, 7, "math.add", b"\x01" * 64,
                                              30_000, KEY, (1_000, None, 5, 200),
                                              "origin-1", 1, 2, b"cap"),
    "spawn_ack": lambda t: m.SpawnAck("node-1", t, 7, 1, 2, "capacity", "node-1"),
    "cancel_request": lambda t: m.CancelRequest("origin-1", t, 7, (5, "fail fast"), "origin-1"),
    "result_success": lambda t: m.ResultDelivery("node-1", t, 7, 0, b"out", 10),
    "result_failed": lambda t: m.ResultDelivery("node-1", t, 7, 1, "boom", 10),
    "result_cancelled": lambda t: m.ResultDelivery("node-1", t, 7, 2, (1, None), 10),
    "result_panicked": lambda t: m.ResultDelivery("node-1", t, 7, 3, "crash", 10),
    "lease_renewal": lambda t: m.LeaseRenewal("node-1", t, 7, 30_000, 1, "node-1"),
    "lease_renewal_batch": lambda t: m.LeaseRenewalBatch("node-1", t, 30_000, "node-1", [7, 8]),
    "ping": lambda t: m.Ping("origin-1", t, 12345),
    "pong": lambda t: m.Pong("node-1", t, 12345),
    "status_request": lambda t: m.StatusRequest("origin-1", t),
    "status_reply": lambda t: m.StatusReply("node-1", t, {"pid": 1, "version": "0.1"}),
}


@pytest.mark.parametrize("time_kind", list(TIMES))
@pytest.mark.parametrize("kind", list(FACTORIES))
def test_roundtrip_every_kind(envelope_mod: ModuleType, kind: str, time_kind: str) -> None:
    msg = FACTORIES[kind](TIMES[time_kind])
    body = envelope_mod.encode(msg)
    assert envelope_mod.decode(body) == msg
    assert envelope_mod.encode_frame(msg) == len(body).to_bytes(4, "big") + body


def test_decoded_representation(envelope_mod: ModuleType) -> None:
    msg = envelope_mod.decode(envelope_mod.encode(FACTORIES["spawn_request"]([5, 6])))
    assert type(msg) is m.SpawnRequest
    assert msg.sender_time == (5, 6) and type(msg.sender_time) is tuple
    assert type(msg.input) is bytes and type(msg.idempotency_key) is bytes
    assert type(msg.capability) is bytes
    assert msg.budget == (1_000, None, 5, 200) and type(msg.budget) is tuple
    reason = envelope_mod.decode(envelope_mod.encode(FACTORIES["cancel_request"](1))).reason
    assert reason == (5, "fail fast") and type(reason) is tuple
    batch = envelope_mod.decode(envelope_mod.encode(FACTORIES["lease_renewal_batch"](1)))
    assert batch.remote_task_ids == [7, 8] and type(batch.remote_task_ids) is list
    hello = envelope_mod.decode(envelope_mod.encode(
        m.Hello("o", 1, 1, "origin", NONCE, {"t": (1, 2), "u": 2**64 - 1, "f": 0.25})))
    assert hello.features == {"t": [1, 2], "u": 2**64 - 1, "f": 0.25}


BUILDERS: list[tuple[str, type, tuple]] = [
    ("spawn_request", m.SpawnRequest, ("origin-1", 17, 7, "math.add", b"\x01" * 64, 30_000, KEY,
                                       (1_000, None, 5, 200), "origin-1", 1, 2, None)),
    ("spawn_ack", m.SpawnAck, ("node-1", (5, 6), 7, 0, 0, "", "node-1")),
    ("result_delivery", m.ResultDelivery, ("node-1", {"a": 1}, 7, 2, (1, None), 10)),
]


@pytest.mark.parametrize("name, cls, args", BUILDERS, ids=[b[0] for b in BUILDERS])
def test_builders_make_what_the_constructors_make(envelope_mod: ModuleType, name: str,
                                                  cls: type, args: tuple) -> None:
    built = getattr(envelope_mod, name)(*args)
    assert type(built) is cls
    assert built == cls(*args)
    for field, value in zip(("sender", "sender_time") + cls.fields, args):
        assert getattr(built, field) is value  # stored as given, not copied or converted
    assert envelope_mod.encode(built) == envelope_mod.encode(cls(*args))
    assert envelope_mod.decode(envelope_mod.encode(built)) == built
    # like the constructors, builders check nothing: encode names the unfit field
    bad = list(args)
    bad[2] = -1
    with pytest.raises(InvalidArgument, match="remote_task_id"):
        envelope_mod.encode(getattr(envelope_mod, name)(*bad))


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_fields_reads_every_field_in_wire_order(envelope_mod: ModuleType, kind: str) -> None:
    msg = FACTORIES[kind](17)
    values = envelope_mod.fields(msg)
    assert type(values) is tuple and len(values) == len(type(msg).fields)
    for name, value in zip(type(msg).fields, values):
        assert value is getattr(msg, name)


def test_fields_of_a_subclass_and_of_non_messages(envelope_mod: ModuleType) -> None:
    class Ack(m.SpawnAck):
        __slots__ = ()

    assert envelope_mod.fields(Ack("n", 1, 7, 0, 0, "", "n")) == (7, 0, 0, "", "n")
    for bad in (None, (1, 2), m.Message()):
        with pytest.raises(InvalidArgument, match="wire message"):
            envelope_mod.fields(bad)
    unset = m.SpawnAck.__new__(m.SpawnAck)
    unset.sender, unset.sender_time = "n", 1
    with pytest.raises(InvalidArgument):
        envelope_mod.fields(unset)


def test_sender_time_reads_the_envelope_time(envelope_mod: ModuleType) -> None:
    for kind in FACTORIES:
        msg = FACTORIES[kind](17)
        assert envelope_mod.sender_time(msg) is msg.sender_time
    for bad in (None, (1, 2), m.Message()):
        with pytest.raises(InvalidArgument, match="wire message"):
            envelope_mod.sender_time(bad)
    unset = m.SpawnAck.__new__(m.SpawnAck)
    unset.sender = "n"
    with pytest.raises(InvalidArgument):
        envelope_mod.sender_time(unset)


def test_encode_frames(envelope_mod: ModuleType) -> None:
    msgs = [FACTORIES[k](1) for k in FACTORIES]
    assert envelope_mod.encode_frames(msgs) == b"".join(envelope_mod.encode_frame(x)
                                                        for x in msgs)
    assert envelope_mod.encode_frames(iter(msgs[:2])) == b"".join(
        envelope_mod.encode_frame(x) for x in msgs[:2])
    assert envelope_mod.encode_frames([]) == b""
    big = [m.Ping("origin-1", i, i) for i in range(5_000)]  # grows past any first buffer
    stream = envelope_mod.encode_frames(big)
    assert envelope_mod.FrameDecoder().feed(stream) == big


def test_decode_accepts_bytes_like(envelope_mod: ModuleType) -> None:
    msg = FACTORIES["spawn_request"](3)
    body = envelope_mod.encode(msg)
    assert envelope_mod.decode(bytearray(body)) == msg
    assert envelope_mod.decode(memoryview(body)) == msg
    assert envelope_mod.decode(memoryview(b"xx" + body + b"yy")[2:-2]) == msg
    with pytest.raises(TypeError):
        envelope_mod.decode("not bytes")  # type: ignore[arg-type]


def test_decode_does_not_keep_a_bytearray_locked(envelope_mod: ModuleType) -> None:
    good = bytearray(envelope_mod.encode(FACTORIES["ping"](1)))
    envelope_mod.decode(good)
    good.extend(b"x")  # would raise BufferError if an export were left behind
    bad = bytearray(b"\x93\x10\xa1o\xc1")
    with pytest.raises(MalformedFrame) as info:
        envelope_mod.decode(bad)
    bad.extend(b"x")
    del info


class Kind(enum.IntEnum):
    PARENT = 7


class Detail(str):
    pass


def test_encode_accepts_equivalent_inputs(envelope_mod: ModuleType) -> None:
    base = m.SpawnRequest("origin-1", (1, 2), 7, "math.add", b"abc", 100, KEY,
                          (None, 1, None, 2), "origin-1", 1, 2, None)
    same = m.SpawnRequest("origin-1", [1, 2], 7, "math.add", bytearray(b"abc"), 100,
                          memoryview(KEY), [None, 1, None, 2], "origin-1", 1, 2, None)
    assert envelope_mod.encode(same) == envelope_mod.encode(base)
    reason = m.CancelRequest("origin-1", 1, 7, [Kind.PARENT, Detail("why")], "origin-1")
    assert envelope_mod.decode(envelope_mod.encode(reason)).reason == (7, "why")
    features = {"t": (1, (2, 3)), "b": bytearray(b"x"), "k": Kind.PARENT}
    hello = envelope_mod.decode(envelope_mod.encode(m.Hello("o", 1, 1, "origin", NONCE, features)))
    assert hello.features == {"t": [1, [2, 3]], "b": b"x", "k": 7}


class MyPing(m.Ping):
    __slots__ = ("note",)


def test_encode_subclass_of_a_message(envelope_mod: ModuleType) -> None:
    sub = MyPing("origin-1", 1, 5)
    assert envelope_mod.encode(sub) == envelope_mod.encode(m.Ping("origin-1", 1, 5))


# --- encode refuses what decode would reject ----------------------------------------------


def _hello(**features: Any) -> m.Hello:
    return m.Hello("origin-1", 1, 1, "origin", NONCE, features)


def _spawn(**changes: Any) -> m.SpawnRequest:
    fields = dict(remote_task_id=7, computation="c", input=b"i", lease_ms=100,
                  idempotency_key=KEY, budget=None, origin_node="origin-1", origin_region=1,
                  origin_task=2, capability=None)
    fields.update(changes)
    return m.SpawnRequest("origin-1", 1, **fields)


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


UNFIT: list[tuple[str, Callable[[], Any], str]] = [
    ("nonce_negative", lambda: m.Ping("o", 1, -1), "Ping.nonce"),
    ("nonce_2**64", lambda: m.Ping("o", 1, 2**64), "Ping.nonce"),
    ("nonce_bool", lambda: m.Ping("o", 1, True), "Ping.nonce"),
    ("nonce_float", lambda: m.Ping("o", 1, 1.0), "Ping.nonce"),
    ("nonce_str", lambda: m.Ping("o", 1, "1"), "Ping.nonce"),
    ("nonce_none", lambda: m.Pong("o", 1, None), "Pong.nonce"),
    ("sender_empty", lambda: m.Ping("", 1, 1), "Ping.sender"),
    ("sender_256", lambda: m.Ping("x" * 256, 1, 1), "Ping.sender"),
    ("sender_256_utf8", lambda: m.Ping("é" * 128, 1, 1), "Ping.sender"),
    ("sender_bytes", lambda: m.Ping(b"o", 1, 1), "Ping.sender"),
    ("sender_surrogate", lambda: m.Ping("\ud800", 1, 1), "Ping.sender"),
    ("time_negative", lambda: m.Ping("o", -1, 1), "Ping.sender_time"),
    ("time_bool", lambda: m.Ping("o", True, 1), "Ping.sender_time"),
    ("time_float", lambda: m.Ping("o", 1.5, 1), "Ping.sender_time"),
    ("time_none", lambda: m.Ping("o", None, 1), "Ping.sender_time"),
    ("time_hybrid_1", lambda: m.Ping("o", (1,), 1), "Ping.sender_time"),
    ("time_hybrid_3", lambda: m.Ping("o", (1, 2, 3), 1), "Ping.sender_time"),
    ("time_hybrid_negative", lambda: m.Ping("o", (1, -2), 1), "Ping.sender_time"),
    ("time_vector_int_key", lambda: m.Ping("o", {1: 2}, 1), "Ping.sender_time"),
    ("time_vector_negative", lambda: m.Ping("o", {"a": -2}, 1), "Ping.sender_time"),
    ("time_vector_1025", lambda: m.Ping("o", {str(i): i for i in range(1025)}, 1),
     "Ping.sender_time"),
    ("computation_bytes", lambda: _spawn(computation=b"c"), "SpawnRequest.computation"),
    ("input_str", lambda: _spawn(input="i"), "SpawnRequest.input"),
    ("input_none", lambda: _spawn(input=None), "SpawnRequest.input"),
    ("input_strided_view", lambda: _spawn(input=memoryview(b"abcd")[::2]), "SpawnRequest.input"),
    ("key_str", lambda: _spawn(idempotency_key="k" * 16), "SpawnRequest.idempotency_key"),
    ("budget_3", lambda: _spawn(budget=(1, 2, 3)), "SpawnRequest.budget"),
    ("budget_5", lambda: _spawn(budget=(1, 2, 3, 4, 5)), "SpawnRequest.budget"),
    ("budget_dict", lambda: _spawn(budget={"priority": 1}), "SpawnRequest.budget"),
    ("budget_priority_256", lambda: _spawn(budget=(None, None, None, 256)),
     "SpawnRequest.budget"),
    ("budget_priority_none", lambda: _spawn(budget=(None, None, None, None)),
     "SpawnRequest.budget"),
    ("budget_deadline_negative", lambda: _spawn(budget=(-1, None, None, 0)),
     "SpawnRequest.budget"),
    ("origin_node_none", lambda: _spawn(origin_node=None), "SpawnRequest.origin_node"),
    ("capability_str", lambda: _spawn(capability="cap"), "SpawnRequest.capability"),
    ("ack_status_2", lambda: m.SpawnAck("n", 1, 7, 2, 0, "", "n"), "SpawnAck.status"),
    ("ack_detail_none", lambda: m.SpawnAck("n", 1, 7, 0, 0, None, "n"), "SpawnAck.reject_detail"),
    ("reason_kind_12", lambda: m.CancelRequest("o", 1, 7, (12, None), "o"), "CancelRequest.reason"),
    ("reason_message_int", lambda: m.CancelRequest("o", 1, 7, (0, 5), "o"),
     "CancelRequest.reason"),
    ("reason_1", lambda: m.CancelRequest("o", 1, 7, (0,), "o"), "CancelRequest.reason"),
    ("reason_none", lambda: m.CancelRequest("o", 1, 7, None, "o"), "CancelRequest.reason"),
    ("outcome_4", lambda: m.ResultDelivery("n", 1, 7, 4, "x", 0), "ResultDelivery.outcome_kind"),
    ("success_str", lambda: m.ResultDelivery("n", 1, 7, 0, "x", 0), "ResultDelivery.payload"),
    ("failed_bytes", lambda: m.ResultDelivery("n", 1, 7, 1, b"x", 0), "ResultDelivery.payload"),
    ("cancelled_str", lambda: m.ResultDelivery("n", 1, 7, 2, "x", 0), "ResultDelivery.payload"),
    ("panicked_none", lambda: m.ResultDelivery("n", 1, 7, 3, None, 0), "ResultDelivery.payload"),
    ("exec_time_negative", lambda: m.ResultDelivery("n", 1, 7, 0, b"", -1),
     "ResultDelivery.execution_time_ns"),
    ("state_6", lambda: m.LeaseRenewal("n", 1, 7, 100, 6, "n"), "LeaseRenewal.current_state"),
    ("batch_ids_str", lambda: m.LeaseRenewalBatch("n", 1, 100, "n", "123"),
     "LeaseRenewalBatch.remote_task_ids"),
    ("batch_ids_negative", lambda: m.LeaseRenewalBatch("n", 1, 100, "n", [1, -1]),
     "LeaseRenewalBatch.remote_task_ids"),
    ("batch_ids_bool", lambda: m.LeaseRenewalBatch("n", 1, 100, "n", [True]),
     "LeaseRenewalBatch.remote_task_ids"),
    ("hello_version_2", lambda: m.Hello("o", 1, 2, "origin", NONCE, {}), "Hello.protocol_version"),
    ("welcome_version_0", lambda: m.Welcome("n", 1, 0, NONCE, None, {}),
     "Welcome.protocol_version"),
    ("hello_nonce_31", lambda: m.Hello("o", 1, 1, "origin", NONCE[:31], {}), "Hello.nonce"),
    ("hello_role_none", lambda: m.Hello("o", 1, 1, None, NONCE, {}), "Hello.role"),
    ("welcome_proof_31", lambda: m.Welcome("n", 1, 1, NONCE, NONCE[:31], {}), "Welcome.proof"),
    ("auth_proof_str", lambda: m.Auth("o", 1, "p" * 32), "Auth.proof"),
    ("features_list", lambda: m.Hello("o", 1, 1, "origin", NONCE, []), "Hello.features"),
    ("features_int_key", lambda: m.Hello("o", 1, 1, "origin", NONCE, {1: 2}), "Hello.features"),
    ("features_object", lambda: _hello(a=object()), "Hello.features"),
    ("features_set", lambda: _hello(a={1, 2}), "Hello.features"),
    ("features_tuple_key", lambda: _hello(a={(1, 2): 3}), "Hello.features"),
    ("features_int_too_big", lambda: _hello(a=2**64), "Hello.features"),
    ("features_int_too_small", lambda: _hello(a=-(2**63) - 1), "Hello.features"),
    ("features_surrogate", lambda: _hello(a=["\udc80"]), "Hello.features"),
    ("features_too_deep", lambda: _hello(a=_deep(63)), "Hello.features"),
    ("stats_bytes_key", lambda: m.StatusReply("n", 1, {b"pid": 1}), "StatusReply.stats"),
    ("error_code_negative", lambda: m.Error("n", 1, -4, "x"), "Error.code"),
]


@pytest.mark.parametrize("build, field", [(b, f) for _, b, f in UNFIT],
                         ids=[name for name, _, _ in UNFIT])
def test_encode_refuses_unfit_fields(envelope_mod: ModuleType, build: Callable[[], Any],
                                     field: str) -> None:
    msg = build()
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        envelope_mod.encode(msg)
    with pytest.raises(InvalidArgument):
        envelope_mod.encode_frames([m.Ping("o", 1, 1), msg])


def test_encode_accepts_the_deepest_features(envelope_mod: ModuleType) -> None:
    msg = _hello(a=_deep(62))
    assert envelope_mod.decode(envelope_mod.encode(msg)) == msg


def test_encode_refuses_non_messages(envelope_mod: ModuleType) -> None:
    for value in (None, 5, "ping", {"kind": 16}, m.Message()):
        with pytest.raises(InvalidArgument, match="wire message"):
            envelope_mod.encode(value)


def test_encode_refuses_unset_fields(envelope_mod: ModuleType) -> None:
    msg = m.Ping.__new__(m.Ping)
    msg.sender = "o"
    msg.sender_time = 1
    with pytest.raises(InvalidArgument, match="Ping.nonce"):
        envelope_mod.encode(msg)


# --- FrameDecoder ------------------------------------------------------------------------

STREAM_MSGS = [FACTORIES[k](i) for i, k in enumerate(FACTORIES)]


def test_frame_decoder_whole_and_byte_by_byte(envelope_mod: ModuleType) -> None:
    stream = envelope_mod.encode_frames(STREAM_MSGS)
    decoder = envelope_mod.FrameDecoder()
    assert decoder.feed(stream) == STREAM_MSGS
    assert decoder.buffered == 0
    ends = [0]
    for msg in STREAM_MSGS:
        ends.append(ends[-1] + len(envelope_mod.encode_frame(msg)))
    out = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i:i + 1]))
        done = max(end for end in ends if end <= i + 1)
        assert decoder.buffered == i + 1 - done
        assert len(out) == ends.index(done)
    assert out == STREAM_MSGS and decoder.buffered == 0
    assert decoder.feed(b"") == []


def test_frame_decoder_buffered_counts_partial_bytes(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(FACTORIES["spawn_request"](1))
    decoder = envelope_mod.FrameDecoder()
    assert decoder.feed(frame[:2]) == [] and decoder.buffered == 2
    assert decoder.feed(frame[2:10]) == [] and decoder.buffered == 10
    assert decoder.feed(frame[10:] + frame[:5]) == [FACTORIES["spawn_request"](1)]
    assert decoder.buffered == 5


def test_frame_decoder_accepts_bytes_like_and_releases_them(envelope_mod: ModuleType) -> None:
    stream = bytearray(envelope_mod.encode_frames(STREAM_MSGS))
    decoder = envelope_mod.FrameDecoder()
    half = len(stream) // 2
    out = decoder.feed(memoryview(stream)[:half]) + decoder.feed(stream[half:])
    assert out == STREAM_MSGS
    stream.extend(b"more")  # no export left behind
    bad = bytearray(b"\x00\x00\x00\x02\xc1\xc1")
    with pytest.raises(MalformedFrame):
        envelope_mod.FrameDecoder().feed(bad)
    bad.extend(b"more")


def test_frame_decoder_large_frame_in_small_pieces(envelope_mod: ModuleType) -> None:
    msg = _spawn(input=bytes(range(256)) * 8192)  # 2 MiB
    stream = envelope_mod.encode_frames([msg, m.Ping("o", 1, 1)])
    decoder = envelope_mod.FrameDecoder()
    out = []
    for start in range(0, len(stream), 4096):
        out.extend(decoder.feed(stream[start:start + 4096]))
    assert out == [msg, m.Ping("o", 1, 1)] and decoder.buffered == 0


def test_frame_decoder_zero_length(envelope_mod: ModuleType) -> None:
    decoder = envelope_mod.FrameDecoder()
    with pytest.raises(MalformedFrame) as info:
        decoder.feed(b"\x00\x00\x00\x00")
    assert info.value.code == 4


def test_frame_decoder_too_large_on_the_header_alone(envelope_mod: ModuleType) -> None:
    decoder = envelope_mod.FrameDecoder(max_frame_bytes=100)
    assert decoder.max_frame_bytes == 100
    assert decoder.feed((100).to_bytes(4, "big") + b"\x00" * 10) == []  # at the limit: waits
    decoder = envelope_mod.FrameDecoder(max_frame_bytes=100)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"\x00\x65")
    assert info.value.code == 3
    with pytest.raises(FrameTooLarge):
        envelope_mod.FrameDecoder().feed(b"\xff\xff\xff\xff")
    assert envelope_mod.FrameDecoder().max_frame_bytes == m.DEFAULT_MAX_FRAME_BYTES


def test_frame_decoder_frame_at_the_limit(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(FACTORIES["ping"](1))
    decoder = envelope_mod.FrameDecoder(max_frame_bytes=len(frame) - 4)
    assert decoder.feed(frame) == [FACTORIES["ping"](1)]
    with pytest.raises(FrameTooLarge):
        envelope_mod.FrameDecoder(max_frame_bytes=len(frame) - 5).feed(frame)


@pytest.mark.parametrize("bad_tail, error", [
    (b"\x00\x00\x00\x00", MalformedFrame),
    (b"\x00\x00\x00\x01\xc1", MalformedFrame),
    (b"\x7f\xff\xff\xff", FrameTooLarge),
    (b"\x00\x00\x00\x03\x93\x63\xa1", MalformedFrame),
    (b"\x00\x00\x00\x04\x93\x63\xa1o", MalformedFrame),
    (b"\x00\x00\x00\x05\x93\x63\xa1o\x01", UnexpectedMessage),
    (b"\x00\x00\x00\x06\x94\x00\xa1o\x01\x02", VersionMismatch),
])
def test_frame_decoder_poisoned_after_an_error(envelope_mod: ModuleType, bad_tail: bytes,
                                               error: type[ProtocolError]) -> None:
    good = envelope_mod.encode_frames(STREAM_MSGS[:3])
    decoder = envelope_mod.FrameDecoder(max_frame_bytes=1 << 20)
    with pytest.raises(error) as info:
        decoder.feed(good + bad_tail + good)
    assert info.value.messages == STREAM_MSGS[:3]  # frames before the bad one are not lost
    for _ in range(2):
        with pytest.raises(error) as again:
            decoder.feed(good)
        assert again.value.messages == []
    decoder.reset()
    assert decoder.buffered == 0
    assert decoder.feed(good) == STREAM_MSGS[:3]


def test_frame_decoder_reset_drops_partial_bytes(envelope_mod: ModuleType) -> None:
    frame = envelope_mod.encode_frame(FACTORIES["ping"](1))
    decoder = envelope_mod.FrameDecoder()
    decoder.feed(frame[:7])
    decoder.reset()
    assert decoder.buffered == 0
    assert decoder.feed(frame) == [FACTORIES["ping"](1)]


@pytest.mark.parametrize("limit", [0, -1, 1.5, "64", True, None])
def test_frame_decoder_refuses_bad_limits(envelope_mod: ModuleType, limit: Any) -> None:
    with pytest.raises(InvalidArgument, match="max_frame_bytes"):
        envelope_mod.FrameDecoder(max_frame_bytes=limit)


def test_frame_decoder_huge_limit(envelope_mod: ModuleType) -> None:
    decoder = envelope_mod.FrameDecoder(max_frame_bytes=2**70)
    assert decoder.max_frame_bytes == 2**70
    assert decoder.feed(b"\xff\xff\xff\xff") == [] and decoder.buffered == 4
