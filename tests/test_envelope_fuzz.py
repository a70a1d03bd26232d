"""rsc._core envelope under Hypothesis: random messages, random and mutated bytes.

Properties, for both twins at once:

- a valid message round-trips, and both twins produce the same bytes;
- any bytes decode to the same message in both twins or are rejected by both
  with the same typed ProtocolError, never any other exception;
- a FrameDecoder gives the same messages however the stream is split, and
  the same error at the same place.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsc._core import messages as m
from rsc._core._envelope_py import encode as encode_py
from rsc.errors import (
    FrameTooLarge,
    InvalidArgument,
    MalformedFrame,
    UnexpectedMessage,
    VersionMismatch,
)

DECODE_ERRORS = (MalformedFrame, VersionMismatch, UnexpectedMessage)
STREAM_ERRORS = DECODE_ERRORS + (FrameTooLarge,)
U64_MAX = 2**64 - 1

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=100, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# --- strategies for valid messages ----------------------------------------------------

BOUNDARIES = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63, U64_MAX]
uints = st.one_of(st.integers(0, 300), st.sampled_from(BOUNDARIES), st.integers(0, U64_MAX))
texts = st.text(max_size=40)
node_ids = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255)
blobs = st.binary(max_size=300)
times = st.one_of(uints, st.tuples(uints, uints),
                  st.dictionaries(st.text(max_size=10), uints, max_size=6))
scalar_keys = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), U64_MAX),
                        st.floats(allow_nan=False), st.text(max_size=10), st.binary(max_size=10))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), U64_MAX),
                    st.floats(allow_nan=False), texts, blobs)
generic = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(scalar_keys, inner, max_size=5)), max_leaves=20)
str_maps = st.dictionaries(texts, generic, max_size=5)
budgets = st.one_of(st.none(), st.tuples(st.none() | uints, st.none() | uints, st.none() | uints,
                                         st.integers(0, 255)))
reasons = st.tuples(st.integers(0, 11), st.none() | texts)
nonces = st.binary(min_size=32, max_size=32)


def _result(sender: str, time: Any, task: int, outcome: int, data: st.DataObject,
            elapsed: int) -> m.ResultDelivery:
    payload = data.draw({0: blobs, 1: texts, 2: reasons, 3: texts}[outcome])
    return m.ResultDelivery(sender, time, task, outcome, payload, elapsed)


messages = st.one_of(
    st.builds(m.Hello, node_ids, times, st.just(1), texts, nonces, str_maps),
    st.builds(m.Welcome, node_ids, times, st.just(1), nonces, st.none() | nonces, str_maps),
    st.builds(m.Auth, node_ids, times, st.none() | nonces),
    st.builds(m.Error, node_ids, times, uints, texts),
    st.builds(m.SpawnRequest, node_ids, times, uints, texts, blobs, uints, blobs, budgets,
              texts, uints, uints, st.none() | blobs),
    st.builds(m.SpawnAck, node_ids, times, uints, st.integers(0, 1), uints, texts, texts),
    st.builds(m.CancelRequest, node_ids, times, uints, reasons, texts),
    st.builds(_result, node_ids, times, uints, st.integers(0, 3), st.data(), uints),
    st.builds(m.LeaseRenewal, node_ids, times, uints, uints, st.integers(0, 5), texts),
    st.builds(m.LeaseRenewalBatch, node_ids, times, uints, texts, st.lists(uints, max_size=20)),
    st.builds(m.Ping, node_ids, times, uints),
    st.builds(m.Pong, node_ids, times, uints),
    st.builds(m.StatusRequest, node_ids, times),
    st.builds(m.StatusReply, node_ids, times, str_maps),
)


# --- comparing the twins on arbitrary bytes ---------------------------------------------


def _outcome(module: ModuleType, body: bytes) -> tuple[str, Any]:
    try:
        msg = module.decode(body)
    except DECODE_ERRORS as exc:
        return ("error", type(exc))
    # repr compares exactly, NaN and -0.0 included (== would not).
    return ("ok", (type(msg), repr(msg)))


def assert_twins_agree(both: tuple[ModuleType, ModuleType], body: bytes) -> tuple[str, Any]:
    c, py = both
    outcome = _outcome(c, body)
    assert outcome == _outcome(py, body), body.hex()
    return outcome


@FUZZ
@given(msg=messages)
def test_valid_messages_roundtrip_identically(both_envelopes: tuple[ModuleType, ModuleType],
                                              msg: m.Message) -> None:
    c, py = both_envelopes
    body = c.encode(msg)
    assert body == py.encode(msg)
    assert c.decode(body) == msg
    assert py.decode(body) == msg
    assert c.encode_frame(msg) == py.encode_frame(msg)
    # What the library packs from the decoded array is the same: smallest encodings.
    assert msgpack.packb(msgpack.unpackb(body, strict_map_key=False), use_bin_type=True) == body


@FUZZ
@given(body=st.binary(max_size=200))
def test_random_bytes(both_envelopes: tuple[ModuleType, ModuleType], body: bytes) -> None:
    assert_twins_agree(both_envelopes, body)


# Type markers (one of each MessagePack family) and headers claiming far more
# than any body holds.
MARKERS = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5,
           0xC6, 0xC7, 0xCA, 0xCB, 0xCC, 0xCF, 0xD0, 0xD3, 0xD4, 0xD9, 0xDB, 0xDC, 0xDD, 0xDE,
           0xDF, 0xE0, 0xFF]
HUGE_HEADERS = [bytes.fromhex(h) for h in ("dbffffffff", "daffff", "d9ff", "c6ffffffff", "c5ffff",
                                           "c4ff", "ddffffffff", "dcffff", "dfffffffff", "deffff",
                                           "c7ff01", "c9ffffffff01")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = bytearray(encode_py(draw(messages)))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["truncate", "extend", "flip", "set", "delete",
                                       "insert", "huge"]))
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        if action == "truncate":
            del body[at:]
        elif action == "extend":
            body += draw(st.binary(min_size=1, max_size=8))
        elif action == "flip" and body:
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and body:
            body[at] = draw(st.sampled_from(MARKERS))
        elif action == "delete" and body:
            del body[at]
        elif action == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "huge":
            body[at:at + 1] = draw(st.sampled_from(HUGE_HEADERS))
    return bytes(body)


@FUZZ
@given(body=mutated())
def test_mutated_messages(both_envelopes: tuple[ModuleType, ModuleType], body: bytes) -> None:
    assert_twins_agree(both_envelopes, body)


def _replace(value: Any, path: list[int], new: Any) -> Any:
    if not path:
        return new
    if isinstance(value, list) and value:
        value = list(value)
        index = path[0] % len(value)
        value[index] = _replace(value[index], path[1:], new)
    elif isinstance(value, dict) and value:
        key = list(value)[path[0] % len(value)]
        value = dict(value)
        value[key] = _replace(value[key], path[1:], new)
    return value


wrong_values = st.one_of(scalars, st.lists(scalars, max_size=4),
                         st.dictionaries(scalar_keys, scalars, max_size=3),
                         st.integers(-(2**63), -1), st.sampled_from([True, False, None, 1.5, ""]))


@FUZZ
@given(msg=messages, path=st.lists(st.integers(0, 20), min_size=1, max_size=3),
       new=wrong_values, extra=st.lists(wrong_values, max_size=2))
def test_wrong_types_in_each_position(both_envelopes: tuple[ModuleType, ModuleType],
                                      msg: m.Message, path: list[int], new: Any,
                                      extra: list[Any]) -> None:
    c, py = both_envelopes
    wire = msgpack.unpackb(py.encode(msg), strict_map_key=False)
    wire = _replace(wire, path, new) + extra
    assert_twins_agree(both_envelopes, msgpack.packb(wire, use_bin_type=True))


@FEW
@given(kind=st.integers(0, 25), sender=st.one_of(node_ids, st.just(""), st.integers(0, 3)),
       version=st.one_of(uints, st.integers(-3, -1), texts),
       rest=st.lists(wrong_values, max_size=4))
def test_kinds_versions_and_envelopes(both_envelopes: tuple[ModuleType, ModuleType], kind: int,
                                      sender: Any, version: Any, rest: list[Any]) -> None:
    body = msgpack.packb([kind, sender, 1, version, *rest], use_bin_type=True)
    outcome = assert_twins_agree(both_envelopes, body)
    valid_envelope = isinstance(sender, str) and sender != ""
    if valid_envelope and kind not in m.MESSAGE_CLASSES:
        assert outcome == ("error", UnexpectedMessage)
    if (valid_envelope and kind in (m.HELLO, m.WELCOME) and type(version) is int
            and version >= 0 and version != 1):
        assert outcome == ("error", VersionMismatch)


@FEW
@given(depth=st.integers(55, 70), wrap=st.sampled_from(["list", "map"]))
def test_nesting_limit(both_envelopes: tuple[ModuleType, ModuleType], depth: int,
                       wrap: str) -> None:
    value: Any = None
    for _ in range(depth):
        value = [value] if wrap == "list" else {"k": value}
    body = msgpack.packb([16, "o", 1, 5, value], use_bin_type=True)  # extra element, level 2
    outcome = assert_twins_agree(both_envelopes, body)
    assert (outcome[0] == "ok") == (depth + 1 <= 64)


# --- encoding: both twins refuse the same unfit values --------------------------------------

unfit_generic = st.recursive(
    st.one_of(scalars, st.integers(), st.sampled_from([object(), {1, 2}, frozenset(), 1j,
                                                       "\ud800", bytearray(b"x")])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.one_of(scalar_keys, st.tuples(st.integers())),
                                            inner, max_size=3)),
    max_leaves=8)


@FUZZ
@given(features=st.dictionaries(st.one_of(texts, st.integers(0, 3)), unfit_generic, max_size=3),
       time=st.one_of(times, st.integers(), st.tuples(st.integers()), st.floats(),
                      st.lists(st.integers(), max_size=3)))
def test_encode_agrees_on_unfit_values(both_envelopes: tuple[ModuleType, ModuleType],
                                       features: dict, time: Any) -> None:
    c, py = both_envelopes
    msg = m.Hello("origin-1", time, 1, "origin", b"n" * 32, features)
    results = []
    for module in (c, py):
        try:
            results.append(module.encode(msg))
        except InvalidArgument:
            results.append(InvalidArgument)
    assert results[0] == results[1]
    if results[0] is not InvalidArgument:
        assert c.decode(results[0]) == py.decode(results[0])  # encodable means decodable


# --- streams -------------------------------------------------------------------------------


def _drain(module: ModuleType, pieces: list[bytes], limit: int) -> tuple[list, Any]:
    """Messages delivered (returned, or carried by the error) and the error class."""
    decoder = module.FrameDecoder(max_frame_bytes=limit)
    out: list = []
    for piece in pieces:
        try:
            out.extend(decoder.feed(piece))
        except STREAM_ERRORS as exc:
            out.extend(exc.messages)
            with pytest.raises(type(exc)):
                decoder.feed(b"")
            decoder.reset()
            assert decoder.buffered == 0 and decoder.feed(b"") == []
            return out, type(exc)
    assert decoder.buffered == sum(map(len, pieces)) - _consumed(module, out)
    return out, None


def _consumed(module: ModuleType, out: list) -> int:
    return sum(len(module.encode_frame(msg)) for msg in out)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@FUZZ
@given(msgs=st.lists(messages, max_size=6), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_stream_splits_give_the_same_messages(both_envelopes: tuple[ModuleType, ModuleType],
                                              msgs: list[m.Message], cuts: list[int]) -> None:
    c, py = both_envelopes
    stream = py.encode_frames(msgs)
    assert c.encode_frames(msgs) == stream
    pieces = _split(stream, cuts)
    for module in (c, py):
        assert _drain(module, pieces, 1 << 20) == (msgs, None)


@FUZZ
@given(msgs=st.lists(messages, min_size=1, max_size=4), bad_at=st.integers(0, 4),
       bad=st.one_of(st.binary(min_size=1, max_size=30).map(
           lambda b: len(b).to_bytes(4, "big") + b), st.sampled_from(
           [b"\x00\x00\x00\x00", b"\x00\x10\x00\x00", b"\xff\xff\xff\xff"])),
       cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_stream_with_a_bad_frame(both_envelopes: tuple[ModuleType, ModuleType],
                                 msgs: list[m.Message], bad_at: int, bad: bytes,
                                 cuts: list[int]) -> None:
    c, py = both_envelopes
    bad_at %= len(msgs) + 1
    stream = py.encode_frames(msgs[:bad_at]) + bad + py.encode_frames(msgs[bad_at:])
    pieces = _split(stream, cuts)
    results = [_drain(module, pieces, 1 << 19) for module in (c, py)]
    assert results[0] == results[1]
    out, error = results[0]
    if error is not None:
        assert out == msgs[:bad_at]


@FUZZ
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=6),
       limit=st.sampled_from([1, 16, 64, 1 << 20]))
def test_stream_of_random_bytes(both_envelopes: tuple[ModuleType, ModuleType], data: bytes,
                                cuts: list[int], limit: int) -> None:
    c, py = both_envelopes
    pieces = _split(data, cuts)
    out_c, error_c = _drain(c, pieces, limit)
    out_py, error_py = _drain(py, pieces, limit)
    assert error_c is error_py
    assert [repr(x) for x in out_c] == [repr(x) for x in out_py]
