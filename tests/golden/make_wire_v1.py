"""Regenerate ``wire_v1.json``, the golden vectors of wire v1 (docs/PROTOCOL.md).

    python tests/golden/make_wire_v1.py            # rewrite the file
    python tests/golden/make_wire_v1.py --check    # exit 1 if the file differs

The committed JSON is the source of truth: tests compare both codec twins
against it and never regenerate it. Rerun this only when the wire format
changes on purpose, and review the diff.

The file is a list of vectors, each ``{"name", "hex", ...}`` plus one of:

- ``"message"`` -- both twins encode the message to exactly ``hex`` and
  decode ``hex`` back to it; with ``"decode_only": true`` the bytes are not
  what the encoder produces (trailing elements, non-minimal encodings) and
  only decoding is checked;
- ``"error"`` and ``"code"`` -- decoding ``hex`` raises that ProtocolError
  class with that PROTOCOL.md error code.

``hex`` is a hex string, or a list of parts (hex strings and
``{"repeat": hex, "count": n}``) joined in order, so long values stay short
in the file. In a message, values are JSON except: ``{"bin": hex}`` bytes,
``{"bin_repeat": [hex, n]}`` bytes repeated, ``{"str_repeat": [s, n]}`` a str
repeated, ``{"tuple": [...]}`` a tuple, ``{"map": [[key, value], ...]}`` a
dict (any key type, order kept) and ``{"float": repr}`` a float.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgpack

from rsc._core import _envelope_py as envelope
from rsc._core import messages as m
from rsc.errors import MalformedFrame, ProtocolError, UnexpectedMessage, VersionMismatch

OUT = Path(__file__).with_name("wire_v1.json")
RUN_MIN = 64  # byte runs at least this long are stored as {"repeat": ...}

NONCE_O = bytes(range(32))
NONCE_N = bytes(range(32, 64))
PROOF = bytes(range(0xA0, 0xC0))
KEY = bytes(range(16))


# --- value <-> JSON --------------------------------------------------------------


def to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, str) and len(value) >= RUN_MIN and len(set(value)) == 1:
            return {"str_repeat": [value[0], len(value)]}
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, bytes):
        if len(value) >= RUN_MIN and len(set(value)) == 1:
            return {"bin_repeat": [value[:1].hex(), len(value)]}
        return {"bin": value.hex()}
    if isinstance(value, tuple):
        return {"tuple": [to_json(v) for v in value]}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {"map": [[to_json(k), to_json(v)] for k, v in value.items()]}
    raise TypeError(f"no JSON form for {value!r}")


def message_to_json(msg: m.Message) -> dict:
    return {"class": type(msg).__name__,
            "fields": {name: to_json(getattr(msg, name)) for name in msg.__slots_all__()}}


def hex_parts(data: bytes) -> Any:
    parts: list[Any] = []
    literal_start = 0
    i = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        if j - i >= RUN_MIN:
            if literal_start < i:
                parts.append(data[literal_start:i].hex())
            parts.append({"repeat": data[i:i + 1].hex(), "count": j - i})
            literal_start = j
        i = j
    if literal_start < len(data):
        parts.append(data[literal_start:].hex())
    if len(parts) == 1 and isinstance(parts[0], str):
        return parts[0]
    return parts


# --- the vectors -------------------------------------------------------------------

vectors: list[dict] = []


def roundtrip(name: str, msg: m.Message) -> None:
    data = envelope.encode(msg)
    back = envelope.decode(data)
    assert back == msg, (name, back, msg)
    vectors.append({"name": name, "message": message_to_json(msg), "hex": hex_parts(data)})


def decode_only(name: str, data: bytes, msg: m.Message) -> None:
    back = envelope.decode(data)
    assert back == msg, (name, back, msg)
    assert envelope.encode(msg) != data, f"{name}: the encoder produces these bytes"
    vectors.append({"name": name, "message": message_to_json(msg), "decode_only": True,
                    "hex": hex_parts(data)})


def invalid(name: str, data: bytes, error: type[ProtocolError]) -> None:
    try:
        envelope.decode(data)
    except ProtocolError as exc:
        assert type(exc) is error, (name, exc)
    else:
        raise AssertionError(f"{name}: decoded")
    vectors.append({"name": name, "error": error.__name__, "code": error.code,
                    "hex": hex_parts(data)})


def pack(*elements: Any) -> bytes:
    return msgpack.packb(list(elements), use_bin_type=True)


def spawn(sender_time: Any = 7, **changes: Any) -> m.SpawnRequest:
    fields = dict(remote_task_id=42, computation="math.add", input=b"\x92\x01\x02",
                  lease_ms=30_000, idempotency_key=KEY, budget=(5_000, None, 1_000, 3),
                  origin_node="origin-1", origin_region=3, origin_task=9, capability=None)
    fields.update(changes)
    return m.SpawnRequest("origin-1", sender_time, **fields)


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def build() -> None:
    # Every kind, Lamport time.
    roundtrip("hello", m.Hello("origin-1", 1, 1, "origin", NONCE_O, {}))
    roundtrip("hello_features", m.Hello("origin-1", 1, 1, "origin", NONCE_O,
                                        {"clock": "hybrid", "codecs": ["msgpack", "raw"]}))
    roundtrip("welcome_unkeyed", m.Welcome("node-1", 1, 1, NONCE_N, None, {"clock": "hybrid"}))
    roundtrip("welcome_keyed", m.Welcome("node-1", 2, 1, NONCE_N, PROOF, {}))
    roundtrip("auth_unkeyed", m.Auth("origin-1", 2, None))
    roundtrip("auth_keyed", m.Auth("origin-1", 2, PROOF))
    roundtrip("error", m.Error("node-1", 3, m.ERR_MALFORMED, "frame 7: budget is not an array"))
    roundtrip("spawn_request", spawn())
    roundtrip("spawn_request_no_budget_capability",
              spawn(budget=None, capability=pack("k1", [], b"\x00" * 32)))
    roundtrip("spawn_request_budget_nils", spawn(budget=(None, None, None, 0)))
    roundtrip("spawn_request_budget_max", spawn(budget=(2**64 - 1, 2**32, 65_536, 255)))
    roundtrip("spawn_request_key_not_16_lease_0", spawn(idempotency_key=b"\x01\x02", lease_ms=0))
    roundtrip("spawn_request_drawn", spawn(drawn=True))  # the optional trailing flag, set
    # value segments (optional, after the flag, which is then written even when clear)
    roundtrip("spawn_request_segments", spawn(input=b"\x81\xa1a\xd4\x52\x00",
                                              segments=[b"\x01\x02\x03"]))
    roundtrip("spawn_request_drawn_segments", spawn(input=b"\x92\xd4\x52\x00\xd4\x52\x01",
                                                    drawn=True, segments=[b"ab", b""]))
    roundtrip("result_success_segments", m.ResultDelivery("node-1", 10, 42, m.OUTCOME_SUCCESS,
                                                          b"\xd4\x52\x00", 5, [b"\x07" * 3]))
    roundtrip("spawn_ack_accepted", m.SpawnAck("node-1", 8, 42, m.ACK_ACCEPTED, 0, "", "node-1"))
    roundtrip("spawn_ack_rejected", m.SpawnAck("node-1", 8, 42, m.ACK_REJECTED,
                                               m.REJECT_UNKNOWN_COMPUTATION,
                                               "no computation 'math.sub'", "node-1"))
    roundtrip("cancel_request", m.CancelRequest("origin-1", 9, 42, (0, "user asked"), "origin-1"))
    roundtrip("cancel_request_no_message", m.CancelRequest("origin-1", 9, 42, (1, None),
                                                           "origin-1"))
    roundtrip("result_success", m.ResultDelivery("node-1", 10, 42, m.OUTCOME_SUCCESS,
                                                 b"\x03", 1_234_567))
    roundtrip("result_failed", m.ResultDelivery("node-1", 10, 42, m.OUTCOME_FAILED,
                                                "ZeroDivisionError: division by zero", 5))
    roundtrip("result_cancelled", m.ResultDelivery("node-1", 10, 42, m.OUTCOME_CANCELLED,
                                                   (11, "lease expired"), 0))
    roundtrip("result_cancelled_no_message", m.ResultDelivery("node-1", 10, 42,
                                                              m.OUTCOME_CANCELLED, (9, None), 0))
    roundtrip("result_panicked", m.ResultDelivery("node-1", 10, 42, m.OUTCOME_PANICKED,
                                                  "worker died (signal 9)", 2**40))
    for state in range(6):
        roundtrip(f"lease_renewal_state_{state}",
                  m.LeaseRenewal("node-1", 11, 42, 30_000, state, "node-1"))
    roundtrip("lease_renewal_batch", m.LeaseRenewalBatch("node-1", 12, 30_000, "node-1",
                                                         [1, 2, 300, 2**64 - 1]))
    roundtrip("lease_renewal_batch_empty", m.LeaseRenewalBatch("node-1", 12, 100, "node-1", []))
    roundtrip("lease_renewal_batch_15", m.LeaseRenewalBatch("node-1", 12, 100, "node-1",
                                                            list(range(15))))
    roundtrip("lease_renewal_batch_16", m.LeaseRenewalBatch("node-1", 12, 100, "node-1",
                                                            list(range(16))))
    roundtrip("ping", m.Ping("origin-1", 13, 99))
    roundtrip("pong", m.Pong("node-1", 14, 99))
    roundtrip("status_request", m.StatusRequest("origin-1", 15))
    roundtrip("status_reply", m.StatusReply("node-1", 16, {
        "pid": 4242, "uptime_s": 12.5, "rss_bytes": 50_000_000, "cpu_percent": 0.0,
        "capacity": 8, "running": 2, "accepted": 10, "completed": 7, "failed": 1,
        "cancelled": 0, "panicked": 0, "rejected": 1, "idempotency_records": 9,
        "tombstones": 0, "connections": 1, "version": "0.1.0"}))
    roundtrip("status_reply_empty", m.StatusReply("node-1", 16, {}))
    # The compact-renewal extension (kinds 20 and 21). The digest of ids 1..3
    # is task_hash(1) ^ task_hash(2) ^ task_hash(3) (SplitMix64, PROTOCOL.md
    # section 4, "Compact renewals"): 0x1b590cd64e9485e2.
    roundtrip("lease_renewal_digest", m.LeaseRenewalDigest("node-1", 17, 30_000, 3,
                                                           0x1B590CD64E9485E2))
    roundtrip("lease_renewal_digest_empty", m.LeaseRenewalDigest("node-1", 17, 100, 0, 0))
    roundtrip("lease_renewal_digest_max", m.LeaseRenewalDigest("node-1", 17, 2**32 - 1,
                                                               2**64 - 1, 2**64 - 1))
    roundtrip("lease_resync_request", m.LeaseResyncRequest("origin-1", 18, 30_000))
    roundtrip("hello_renewal_digest", m.Hello("origin-1", 1, 1, "origin", NONCE_O,
                                              {"renewal_digest": 1}))

    # Every kind with hybrid and with vector time.
    hybrid = (1_700_000_000_123_456_789, 3)
    vector = {"origin-1": 5, "node-1": 2}
    for label, time in (("hybrid", hybrid), ("vector", vector)):
        roundtrip(f"hello_{label}", m.Hello("origin-1", time, 1, "origin", NONCE_O,
                                            {"clock": label}))
        roundtrip(f"welcome_{label}", m.Welcome("node-1", time, 1, NONCE_N, PROOF,
                                                {"clock": label}))
        roundtrip(f"auth_{label}", m.Auth("origin-1", time, None))
        roundtrip(f"error_{label}", m.Error("node-1", time, 6, "shutting down"))
        roundtrip(f"spawn_request_{label}", spawn(time))
        roundtrip(f"spawn_ack_{label}", m.SpawnAck("node-1", time, 42, 0, 0, "", "node-1"))
        roundtrip(f"cancel_request_{label}", m.CancelRequest("origin-1", time, 42, (7, None),
                                                             "origin-1"))
        roundtrip(f"result_{label}", m.ResultDelivery("node-1", time, 42, 0, b"", 1))
        roundtrip(f"lease_renewal_{label}", m.LeaseRenewal("node-1", time, 42, 100, 1, "node-1"))
        roundtrip(f"lease_renewal_batch_{label}", m.LeaseRenewalBatch("node-1", time, 100,
                                                                      "node-1", [42]))
        roundtrip(f"lease_renewal_digest_{label}", m.LeaseRenewalDigest("node-1", time, 100, 1,
                                                                        0xE220A8397B1DCDAF))
        roundtrip(f"lease_resync_request_{label}", m.LeaseResyncRequest("origin-1", time, 100))
        roundtrip(f"ping_{label}", m.Ping("origin-1", time, 1))
        roundtrip(f"pong_{label}", m.Pong("node-1", time, 1))
        roundtrip(f"status_request_{label}", m.StatusRequest("origin-1", time))
        roundtrip(f"status_reply_{label}", m.StatusReply("node-1", time, {"pid": 1}))
    roundtrip("time_vector_empty", m.Ping("origin-1", {}, 1))
    roundtrip("time_vector_16", m.Ping("origin-1", {f"n{i}": i for i in range(16)}, 1))
    roundtrip("time_vector_1024", m.Ping("origin-1", {f"n{i}": i for i in range(1024)}, 1))
    roundtrip("time_hybrid_max", m.Ping("origin-1", (2**64 - 1, 2**64 - 1), 1))

    # uint boundaries (smallest encoding each time).
    for value in (0, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1):
        roundtrip(f"uint_{value}", m.Ping("origin-1", value, value))

    # str lengths (fixstr / str8 / str16 / str32) and non-ASCII text.
    for length in (0, 31, 32, 255, 256, 65_535, 65_536):
        roundtrip(f"str_{length}", m.Error("node-1", 1, 4, "x" * length))
    roundtrip("str_utf8", m.Error("node-1", 1, 4, "héllo ☃ 🙂 naïve"))
    roundtrip("sender_255_bytes", m.Ping("n" * 255, 1, 1))
    roundtrip("sender_utf8", m.Ping("nœud-ü", 1, 1))

    # bin lengths (bin8 / bin16 / bin32).
    for length in (0, 255, 256, 65_535, 65_536):
        roundtrip(f"bin_{length}", spawn(input=b"\xab" * length))

    # Generic values in features and stats.
    roundtrip("features_nested", m.Hello("origin-1", 1, 1, "origin", NONCE_O, {
        "clock": "vector",
        "limits": {"max_frame_bytes": 67_108_864, "ratio": 0.5},
        "list": [None, True, False, 1, -1, "s", b"\x00\xff", [], {}],
        "int_keys": {1: "one", -2: "minus two", 300: [1, [2, [3]]]},
        "scalar_keys": {None: 0, True: 1, 2.5: 2, b"k": 3},
        "floats": [1.5, -0.0, float("inf"), float("-inf"), 1e300],
        "negatives": [-1, -32, -33, -128, -129, -32_768, -32_769, -2**31, -2**31 - 1, -2**63],
        "big": [2**63, 2**64 - 1],
        "many": list(range(20)),
        "many_keys": {str(i): i for i in range(20)},
    }))
    roundtrip("features_max_depth", m.Hello("origin-1", 1, 1, "origin", NONCE_O,
                                            {"deep": nested(62)}))
    roundtrip("hello_role_other", m.Hello("origin-1", 1, 1, "observer", NONCE_O, {}))

    # --- decode only: what another implementation may send ------------------------
    decode_only("extra_top_level_elements",
                pack(16, "origin-1", 1, 5, "later field", {"x": [1, 2]}, None),
                m.Ping("origin-1", 1, 5))
    decode_only("extra_digest_elements", pack(20, "node-1", 1, 100, 1, 5, "later"),
                m.LeaseRenewalDigest("node-1", 1, 100, 1, 5))
    decode_only("extra_budget_elements",
                pack(10, "origin-1", 7, 42, "math.add", b"\x92\x01\x02", 30_000, KEY,
                     [5_000, None, 1_000, 3, "extra", [1]], "origin-1", 3, 9, None),
                spawn())
    decode_only("spawn_request_drawn_false",  # a clear flag written out: the encoder omits it
                pack(10, "origin-1", 7, 42, "math.add", b"\x92\x01\x02", 30_000, KEY,
                     [5_000, None, 1_000, 3], "origin-1", 3, 9, None, False),
                spawn())
    decode_only("extra_spawn_request_elements_after_the_segments",
                pack(10, "origin-1", 7, 42, "math.add", b"\x92\x01\x02", 30_000, KEY,
                     [5_000, None, 1_000, 3], "origin-1", 3, 9, None, True, [b"s"], "later", [1]),
                spawn(drawn=True, segments=[b"s"]))
    decode_only("spawn_request_segments_empty",  # an empty array: no segments (the encoder omits it)
                pack(10, "origin-1", 7, 42, "math.add", b"\x92\x01\x02", 30_000, KEY,
                     [5_000, None, 1_000, 3], "origin-1", 3, 9, None, False, []),
                spawn())
    decode_only("extra_result_elements_after_the_segments",
                pack(13, "node-1", 10, 42, 0, b"abc", 5, [b"s"], "later"),
                m.ResultDelivery("node-1", 10, 42, 0, b"abc", 5, [b"s"]))
    decode_only("extra_cancel_reason_elements",
                pack(12, "origin-1", 9, 42, [0, "user asked", {"origin_region": 3}], "origin-1"),
                m.CancelRequest("origin-1", 9, 42, (0, "user asked"), "origin-1"))
    decode_only("extra_result_reason_elements",
                pack(13, "node-1", 10, 42, 2, [11, "lease expired", 123, 456], 0),
                m.ResultDelivery("node-1", 10, 42, 2, (11, "lease expired"), 0))
    decode_only("extra_hybrid_time_elements", pack(16, "origin-1", [100, 2, "x"], 5),
                m.Ping("origin-1", (100, 2), 5))
    decode_only("extra_hello_elements",
                pack(0, "origin-1", 1, 1, "origin", NONCE_O, {}, "extension"),
                m.Hello("origin-1", 1, 1, "origin", NONCE_O, {}))
    decode_only("extra_status_request_elements", pack(18, "origin-1", 1, [1, 2]),
                m.StatusRequest("origin-1", 1))
    ping = m.Ping("origin-1", 1, 5)
    decode_only("uint16_holding_5", bytes.fromhex("94 10 a8") + b"origin-1" + bytes.fromhex(
        "01 cd0005"), ping)
    decode_only("uint64_holding_5", bytes.fromhex("94 10 a8") + b"origin-1" + bytes.fromhex(
        "01 cf0000000000000005"), ping)
    decode_only("int8_holding_5", bytes.fromhex("94 10 a8") + b"origin-1" + bytes.fromhex(
        "01 d005"), ping)
    decode_only("int64_holding_5", bytes.fromhex("94 10 a8") + b"origin-1" + bytes.fromhex(
        "01 d30000000000000005"), ping)
    decode_only("kind_as_uint8", bytes.fromhex("94 cc10 a8") + b"origin-1" + bytes.fromhex(
        "01 05"), ping)
    decode_only("str8_holding_short", bytes.fromhex("94 10 d908") + b"origin-1" + bytes.fromhex(
        "01 05"), ping)
    decode_only("str32_holding_short", bytes.fromhex("94 10 db00000008") + b"origin-1" +
                bytes.fromhex("01 05"), ping)
    decode_only("array16_envelope", bytes.fromhex("dc0004 10 a8") + b"origin-1" +
                bytes.fromhex("01 05"), ping)
    decode_only("array32_envelope", bytes.fromhex("dd00000004 10 a8") + b"origin-1" +
                bytes.fromhex("01 05"), ping)
    decode_only("bin32_holding_short",
                bytes.fromhex("97 0d a6") + b"node-1"
                + bytes.fromhex("0a 2a 00 c600000003 616263 05"),
                m.ResultDelivery("node-1", 10, 42, 0, b"abc", 5))
    decode_only("map32_features", bytes.fromhex("97 00 a8") + b"origin-1" + bytes.fromhex("01 01")
                + bytes.fromhex("a6") + b"origin" + bytes.fromhex("c420") + NONCE_O
                + bytes.fromhex("df00000001 a1 61 01"),
                m.Hello("origin-1", 1, 1, "origin", NONCE_O, {"a": 1}))
    decode_only("float32_feature", bytes.fromhex("97 00 a8") + b"origin-1" + bytes.fromhex("01 01")
                + bytes.fromhex("a6") + b"origin" + bytes.fromhex("c420") + NONCE_O
                + bytes.fromhex("81 a1 66 ca3fc00000"),
                m.Hello("origin-1", 1, 1, "origin", NONCE_O, {"f": 1.5}))
    decode_only("duplicate_feature_keys", bytes.fromhex("97 00 a8") + b"origin-1"
                + bytes.fromhex("01 01 a6") + b"origin" + bytes.fromhex("c420") + NONCE_O
                + bytes.fromhex("82 a1 61 01 a1 61 02"),
                m.Hello("origin-1", 1, 1, "origin", NONCE_O, {"a": 2}))
    decode_only("time_vector_uint16_counter", bytes.fromhex("94 10 a8") + b"origin-1"
                + bytes.fromhex("81 a1 61 cd0007 05"), m.Ping("origin-1", {"a": 7}, 5))

    # --- invalid ---------------------------------------------------------------------
    ping_head = bytes.fromhex("94 10 a8") + b"origin-1" + b"\x01"
    invalid("empty_body", b"", MalformedFrame)
    invalid("body_not_array", msgpack.packb(16), MalformedFrame)
    invalid("body_map", msgpack.packb({"kind": 16}), MalformedFrame)
    invalid("envelope_2_elements", pack(16, "origin-1"), MalformedFrame)
    invalid("kind_str", pack("16", "origin-1", 1, 5), MalformedFrame)
    invalid("kind_negative", pack(-1, "origin-1", 1, 5), MalformedFrame)
    invalid("kind_bool", pack(True, "origin-1", 1, 5), MalformedFrame)
    invalid("kind_nil", pack(None, "origin-1", 1, 5), MalformedFrame)
    invalid("kind_unknown", pack(4, "origin-1", 1), UnexpectedMessage)
    invalid("kind_unknown_with_fields", pack(99, "origin-1", 1, "a", [1, {"b": None}]),
            UnexpectedMessage)
    invalid("kind_unknown_max", pack(2**64 - 1, "origin-1", 1), UnexpectedMessage)
    invalid("kind_unknown_bad_sender", pack(99, "", 1), MalformedFrame)
    invalid("kind_unknown_bad_time", pack(99, "origin-1", -1), MalformedFrame)
    invalid("kind_unknown_trailing_bytes", pack(99, "origin-1", 1) + b"\x00", MalformedFrame)
    invalid("kind_unknown_ext_inside", bytes.fromhex("94 63 a8") + b"origin-1"
            + bytes.fromhex("01 d40100"), MalformedFrame)
    invalid("hello_version_2", pack(0, "origin-1", 1, 2, "origin", NONCE_O, {}), VersionMismatch)
    invalid("hello_version_2_other_shape", pack(0, "origin-1", 1, 2, {"role": 1}), VersionMismatch)
    invalid("hello_version_2_only", pack(0, "origin-1", 1, 2), VersionMismatch)
    invalid("hello_version_0", pack(0, "origin-1", 1, 0, "origin", NONCE_O, {}), VersionMismatch)
    invalid("welcome_version_2", pack(1, "node-1", 1, 2, NONCE_N, None, {}), VersionMismatch)
    invalid("hello_version_2_trailing_bytes", pack(0, "origin-1", 1, 2) + b"\xc0", MalformedFrame)
    invalid("hello_version_2_bad_sender", pack(0, 5, 1, 2), MalformedFrame)
    invalid("hello_version_str", pack(0, "origin-1", 1, "1", "origin", NONCE_O, {}),
            MalformedFrame)
    invalid("hello_version_missing", pack(0, "origin-1", 1), MalformedFrame)
    invalid("hello_missing_features", pack(0, "origin-1", 1, 1, "origin", NONCE_O),
            MalformedFrame)
    invalid("hello_nonce_31", pack(0, "origin-1", 1, 1, "origin", NONCE_O[:31], {}),
            MalformedFrame)
    invalid("hello_nonce_str", pack(0, "origin-1", 1, 1, "origin", "n" * 32, {}), MalformedFrame)
    invalid("hello_role_bin", pack(0, "origin-1", 1, 1, b"origin", NONCE_O, {}), MalformedFrame)
    invalid("hello_features_int_key", pack(0, "origin-1", 1, 1, "origin", NONCE_O, {1: 2}),
            MalformedFrame)
    invalid("hello_features_array", pack(0, "origin-1", 1, 1, "origin", NONCE_O, []),
            MalformedFrame)
    invalid("hello_features_too_deep", pack(0, "origin-1", 1, 1, "origin", NONCE_O,
                                            {"deep": nested(63)}), MalformedFrame)
    invalid("hello_features_ext", bytes.fromhex("97 00 a8") + b"origin-1"
            + bytes.fromhex("01 01 a6") + b"origin" + bytes.fromhex("c420") + NONCE_O
            + bytes.fromhex("81 a1 74 d6ff00000001"), MalformedFrame)
    invalid("hello_features_array_key", bytes.fromhex("97 00 a8") + b"origin-1"
            + bytes.fromhex("01 01 a6") + b"origin" + bytes.fromhex("c420") + NONCE_O
            + bytes.fromhex("81 a1 61 81 91 01 02"), MalformedFrame)
    invalid("hello_features_map_key", bytes.fromhex("97 00 a8") + b"origin-1"
            + bytes.fromhex("01 01 a6") + b"origin" + bytes.fromhex("c420") + NONCE_O
            + bytes.fromhex("81 a1 61 81 80 02"), MalformedFrame)
    invalid("welcome_proof_33", pack(1, "node-1", 1, 1, NONCE_N, PROOF + b"\x00", {}),
            MalformedFrame)
    invalid("auth_proof_str", pack(2, "origin-1", 1, "proof"), MalformedFrame)
    invalid("sender_empty", pack(16, "", 1, 5), MalformedFrame)
    invalid("sender_256_bytes", pack(16, "n" * 256, 1, 5), MalformedFrame)
    invalid("sender_int", pack(16, 5, 1, 5), MalformedFrame)
    invalid("sender_bin", pack(16, b"origin-1", 1, 5), MalformedFrame)
    invalid("sender_invalid_utf8", bytes.fromhex("94 10 a2 c328 01 05"), MalformedFrame)
    invalid("sender_surrogate_utf8", bytes.fromhex("94 10 a3 eda080 01 05"), MalformedFrame)
    invalid("time_negative", pack(16, "origin-1", -1, 5), MalformedFrame)
    invalid("time_float", pack(16, "origin-1", 1.0, 5), MalformedFrame)
    invalid("time_nil", pack(16, "origin-1", None, 5), MalformedFrame)
    invalid("time_hybrid_1", pack(16, "origin-1", [1], 5), MalformedFrame)
    invalid("time_hybrid_str", pack(16, "origin-1", [1, "2"], 5), MalformedFrame)
    invalid("time_vector_int_key", pack(16, "origin-1", {1: 2}, 5), MalformedFrame)
    invalid("time_vector_negative", pack(16, "origin-1", {"a": -2}, 5), MalformedFrame)
    invalid("time_vector_1025", pack(16, "origin-1", {f"n{i}": i for i in range(1025)}, 5),
            MalformedFrame)
    invalid("trailing_bytes", pack(16, "origin-1", 1, 5) + b"\x00", MalformedFrame)
    invalid("truncated", pack(16, "origin-1", 1, 5)[:-1], MalformedFrame)
    invalid("str_claims_4gib", bytes.fromhex("94 10 dbffffffff 6f"), MalformedFrame)
    invalid("bin_claims_4gib", bytes.fromhex("97 0d a6") + b"node-1"
            + bytes.fromhex("0a 2a 00 c6ffffffff 00"), MalformedFrame)
    invalid("array_claims_4g_elements", bytes.fromhex("ddffffffff 10"), MalformedFrame)
    invalid("map_claims_4g_entries", ping_head[:-1] + bytes.fromhex("dfffffffff a1 61"),
            MalformedFrame)
    invalid("batch_ids_claim_65535", bytes.fromhex("96 0f a6") + b"node-1"
            + bytes.fromhex("01 64 a6") + b"node-1" + bytes.fromhex("dcffff 01 02"),
            MalformedFrame)
    invalid("reserved_byte_c1", ping_head + b"\xc1", MalformedFrame)
    invalid("ext_for_uint", ping_head + bytes.fromhex("d40105"), MalformedFrame)
    invalid("timestamp_in_trailing_element", bytes.fromhex("95 10 a8") + b"origin-1"
            + bytes.fromhex("01 05 d6ff00000001"),
            MalformedFrame)
    invalid("invalid_utf8_in_trailing_element", bytes.fromhex("95 10 a8") + b"origin-1"
            + bytes.fromhex("01 05 a1 ff"), MalformedFrame)
    invalid("uint_as_bool", pack(16, "origin-1", 1, True), MalformedFrame)
    invalid("uint_as_float", pack(16, "origin-1", 1, 5.0), MalformedFrame)
    invalid("uint_negative", pack(16, "origin-1", 1, -5), MalformedFrame)
    invalid("ping_missing_nonce", pack(16, "origin-1", 1), MalformedFrame)
    invalid("error_code_str", pack(3, "node-1", 1, "4", "bad"), MalformedFrame)
    good = [10, "origin-1", 7, 42, "math.add", b"\x92\x01\x02", 30_000, KEY,
            [5_000, None, 1_000, 3], "origin-1", 3, 9, None]

    def spawn_with(index: int, value: Any) -> bytes:
        elements = list(good)
        elements[index] = value
        return pack(*elements)

    invalid("spawn_request_12_elements", pack(*good[:12]), MalformedFrame)
    invalid("spawn_request_task_id_str", spawn_with(3, "42"), MalformedFrame)
    invalid("spawn_request_computation_bin", spawn_with(4, b"math.add"), MalformedFrame)
    invalid("spawn_request_input_str", spawn_with(5, "input"), MalformedFrame)
    invalid("spawn_request_input_nil", spawn_with(5, None), MalformedFrame)
    invalid("spawn_request_lease_negative", spawn_with(6, -1), MalformedFrame)
    invalid("spawn_request_key_str", spawn_with(7, "k" * 16), MalformedFrame)
    invalid("spawn_request_budget_3", spawn_with(8, [1, 2, 3]), MalformedFrame)
    invalid("spawn_request_budget_map", spawn_with(8, {"deadline": 1}), MalformedFrame)
    invalid("spawn_request_priority_256", spawn_with(8, [None, None, None, 256]), MalformedFrame)
    invalid("spawn_request_priority_nil", spawn_with(8, [None, None, None, None]),
            MalformedFrame)
    invalid("spawn_request_deadline_negative", spawn_with(8, [-1, None, None, 0]),
            MalformedFrame)
    invalid("spawn_request_origin_node_nil", spawn_with(9, None), MalformedFrame)
    invalid("spawn_request_region_float", spawn_with(10, 3.0), MalformedFrame)
    invalid("spawn_request_capability_str", spawn_with(12, "cap"), MalformedFrame)
    invalid("spawn_request_drawn_uint", pack(*good, 1), MalformedFrame)
    invalid("spawn_request_drawn_nil", pack(*good, None), MalformedFrame)
    invalid("spawn_request_drawn_str", pack(*good, "later field"), MalformedFrame)
    invalid("spawn_request_segments_str", pack(*good, False, "segments"), MalformedFrame)
    invalid("spawn_request_segments_item_str", pack(*good, False, [b"a", "b"]), MalformedFrame)
    invalid("spawn_request_segments_nil", pack(*good, False, None), MalformedFrame)
    invalid("spawn_request_segments_33", pack(*good, False, [b"x"] * 33), MalformedFrame)
    invalid("result_segments_uint", pack(13, "node-1", 1, 42, 0, b"abc", 5, 1), MalformedFrame)
    invalid("spawn_ack_status_2", pack(11, "node-1", 1, 42, 2, 0, "", "node-1"), MalformedFrame)
    invalid("spawn_ack_detail_nil", pack(11, "node-1", 1, 42, 1, 4, None, "node-1"),
            MalformedFrame)
    invalid("cancel_reason_kind_12", pack(12, "origin-1", 1, 42, [12, None], "origin-1"),
            MalformedFrame)
    invalid("cancel_reason_1_element", pack(12, "origin-1", 1, 42, [0], "origin-1"),
            MalformedFrame)
    invalid("cancel_reason_message_int", pack(12, "origin-1", 1, 42, [0, 5], "origin-1"),
            MalformedFrame)
    invalid("cancel_reason_nil", pack(12, "origin-1", 1, 42, None, "origin-1"), MalformedFrame)
    invalid("result_outcome_4", pack(13, "node-1", 1, 42, 4, "x", 0), MalformedFrame)
    invalid("result_success_str_payload", pack(13, "node-1", 1, 42, 0, "x", 0), MalformedFrame)
    invalid("result_failed_bin_payload", pack(13, "node-1", 1, 42, 1, b"x", 0), MalformedFrame)
    invalid("result_cancelled_str_payload", pack(13, "node-1", 1, 42, 2, "x", 0),
            MalformedFrame)
    invalid("result_panicked_nil_payload", pack(13, "node-1", 1, 42, 3, None, 0),
            MalformedFrame)
    invalid("result_missing_time", pack(13, "node-1", 1, 42, 0, b"x"), MalformedFrame)
    invalid("lease_renewal_state_6", pack(14, "node-1", 1, 42, 100, 6, "node-1"),
            MalformedFrame)
    invalid("batch_ids_not_array", pack(15, "node-1", 1, 100, "node-1", 42), MalformedFrame)
    invalid("batch_ids_with_str", pack(15, "node-1", 1, 100, "node-1", [1, "2"]),
            MalformedFrame)
    invalid("batch_ids_with_negative", pack(15, "node-1", 1, 100, "node-1", [1, -2]),
            MalformedFrame)
    invalid("digest_count_negative", pack(20, "node-1", 1, 100, -1, 5), MalformedFrame)
    invalid("digest_digest_str", pack(20, "node-1", 1, 100, 1, "5"), MalformedFrame)
    invalid("digest_digest_float", pack(20, "node-1", 1, 100, 1, 1.5), MalformedFrame)
    invalid("digest_missing_digest", pack(20, "node-1", 1, 100, 1), MalformedFrame)
    invalid("resync_lease_bool", pack(21, "origin-1", 1, True), MalformedFrame)
    invalid("resync_missing_lease", pack(21, "origin-1", 1), MalformedFrame)
    invalid("kind_22_unknown", pack(22, "origin-1", 1), UnexpectedMessage)
    invalid("status_reply_stats_array", pack(19, "node-1", 1, [1, 2]), MalformedFrame)
    invalid("status_reply_stats_bin_key", pack(19, "node-1", 1, {b"pid": 1}), MalformedFrame)

    # Added after the vectors above, so that tests drawing random mutations
    # per vector in file order draw the same ones for those.
    # The computation catalogue (PROTOCOL.md section 5): complete in a WELCOME,
    # partial in a WELCOME with the rest in STATUS_REPLY, and an entry with a
    # trailing element a later version may add (kept by the codec, ignored by
    # rsc.catalogue.parse).
    catalogue = [["greet", "msgpack", "sync", "thread", "Say hello."],
                 ["shout", "raw", "async", "loop", ""]]
    roundtrip("welcome_catalogue", m.Welcome("node-1", 1, 1, NONCE_N, None, {
        "instance": "0123456789abcdef", "max_frame_bytes": 64 << 20,
        "max_input_bytes": 16 << 20, "max_result_bytes": (64 << 20) - 4096,
        "computations": catalogue, "computations_total": 2}))
    roundtrip("welcome_catalogue_partial", m.Welcome("node-1", 1, 1, NONCE_N, None, {
        "computations": catalogue[:1], "computations_total": 2}))
    roundtrip("status_reply_catalogue", m.StatusReply("node-1", 16, {
        "node": "node-1", "computations": catalogue, "computations_total": 2}))
    roundtrip("welcome_catalogue_entry_trailing", m.Welcome("node-1", 1, 1, NONCE_N, None, {
        "computations": [["greet", "msgpack", "sync", "process", "Say hello.", {"v": 2}]],
        "computations_total": 1}))


def render() -> str:
    vectors.clear()
    build()
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)), "duplicate vector names"
    # One vector per line: compact, and a diff shows which vectors changed.
    lines = ",\n".join(json.dumps(v, ensure_ascii=False) for v in vectors)
    return f"[\n{lines}\n]\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date; rerun {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
