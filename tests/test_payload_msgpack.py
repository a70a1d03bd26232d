"""msgpack values with large binary leaves: packed once, unpacked once.

A spawn's msgpack input, and a msgpack computation's result, holding a
bytes-like leaf of 256 KiB or more (``VIEW_MIN_BYTES``) is packed into a buffer of its size and handed to the socket as a
read-only view of that buffer (``rsc.value_codec.pack_value``; the compiled
codec writes such a view as a part of its own, as it does a large ``bytes``),
where ``msgpack.packb`` grew a 256 KiB buffer by ``realloc`` and then copied
it into a new ``bytes``. A node that checks an input at admission (it must
unpack it) hands the computation that same value instead of unpacking it
again. The bytes on the wire are ``packb``'s either way; these tests hold
that, and what a caller and a computation get back, on real nodes.
"""

from __future__ import annotations

import asyncio
import os
from types import ModuleType
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsc import RemoteInput, Runtime, spawn_remote
from rsc._core import messages as m
from rsc.errors import InvalidInput, SerializationError
from rsc.registry import Computation
from rsc.value_codec import (
    SIZE_WALK_ITEMS,
    VIEW_MIN_BYTES,
    DecodedInputs,
    pack_input,
    pack_value,
    packed_size_guess,
)

KiB, MiB = 1024, 1024 * 1024
REGISTRY = "tests.registries_payload:payload"
KEY = bytes(range(16))


def blob(n: int, seed: int = 0) -> bytes:
    return (bytes(range(seed % 256, 256)) + bytes(range(seed % 256))) * (n // 256) + bytes(n % 256)


# ----------------------------------------------------------------------------- packing


@pytest.mark.parametrize("value", [
    {"id": 7, "blob": blob(VIEW_MIN_BYTES)},
    {"id": 7, "blob": blob(1 * MiB)},
    [blob(300 * KiB), bytearray(blob(310 * KiB)), memoryview(blob(320 * KiB)), "é" * 10, 1.5, None],
    ("a tuple", blob(VIEW_MIN_BYTES + 1)),
])
def test_a_large_value_packs_to_packbs_bytes_as_a_read_only_view(value: Any) -> None:
    out = pack_value(value)
    assert type(out) is memoryview and out.readonly and out.c_contiguous
    assert out.tobytes() == msgpack.packb(value, use_bin_type=True)
    guess = packed_size_guess(value)
    assert guess is not None and out.nbytes <= guess <= out.nbytes * 17 // 16


@pytest.mark.parametrize("value", [
    b"", 7, "x", {"id": 7, "blob": blob(VIEW_MIN_BYTES - 100)},
    # more items than the size walk reads: msgpack's own buffer, copied out
    [blob(1024) for _ in range(SIZE_WALK_ITEMS + 1)],
    # a guess that falls short (non-ASCII str counts 1 byte a character): copied out
    "é" * (100 * KiB),
    # a large leaf below the top level: packb's way (only the top level is looked at)
    {"nested": {"deeper": [blob(100 * KiB), -(2**63), 2**64 - 1, True]}},
])
def test_a_small_or_misjudged_value_packs_to_bytes(value: Any) -> None:
    out = pack_value(value)
    assert type(out) is bytes
    assert out == msgpack.packb(value, use_bin_type=True)


@settings(max_examples=60, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=64)
    | st.integers(0, 3).map(lambda k: blob(VIEW_MIN_BYTES + k * 40_000, k)),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=12))
def test_pack_value_is_packb(value: Any) -> None:
    out = pack_value(value)
    assert bytes(out) == msgpack.packb(value, use_bin_type=True)
    assert type(out) is bytes or (out.readonly and out.nbytes >= VIEW_MIN_BYTES)
    top = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    guess = packed_size_guess(value)
    if any(isinstance(v, bytes) and len(v) >= VIEW_MIN_BYTES for v in top) and guess is not None \
            and guess >= len(bytes(out)):
        assert type(out) is memoryview  # a guess that held: a view, never a copy


def test_what_cannot_be_packed_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot pack set"):
        pack_input({1, 2})
    with pytest.raises(SerializationError, match="cannot pack dict"):
        pack_input({"blob": blob(VIEW_MIN_BYTES), "bad": object()})
    with pytest.raises(SerializationError, match="cannot pack int"):
        pack_input(2**64)
    with pytest.raises(SerializationError, match="cannot pack set"):
        RemoteInput.pack({1})


# ------------------------------------------------------------------ the codec's parts


def _spawn(data: Any) -> m.SpawnRequest:
    return m.SpawnRequest("origin-1", 3, 7, "echo", data, 30_000, KEY, None, "origin-1", 1, 2, None)


def _result(data: Any) -> m.ResultDelivery:
    return m.ResultDelivery("node-1", 4, 7, 0, data, 10)


@pytest.mark.parametrize("make", [_spawn, _result], ids=["spawn", "result"])
def test_a_packers_view_is_a_part_of_its_own_and_decodes_as_its_bytes(
        envelope_mod: ModuleType, make: Any) -> None:
    data = blob(300 * KiB + 5)
    view = pack_value({"blob": data})
    assert type(view) is memoryview
    packed = view.tobytes()
    parts = envelope_mod.encode_frame_parts(make(view))
    frame = b"".join(parts) if type(parts) is tuple else parts
    assert frame == envelope_mod.encode_frame(make(packed))
    if envelope_mod.__name__.endswith("_envelope"):  # the compiled twin leaves it out of its buffer
        assert type(parts) is tuple and any(p is view for p in parts)
    decoder = envelope_mod.FrameDecoder()
    (got,) = [msg for i in range(0, len(frame), 64 * KiB) for msg in decoder.feed(frame[i:i + 64 * KiB])]
    assert got == make(packed)
    assert type(got.input if make is _spawn else got.payload) is bytes


def test_a_view_of_anything_else_is_copied_when_encoded(envelope_mod: ModuleType) -> None:
    """A buffer that could change after the spawn returned (a read-only view
    of a bytearray too) is copied: the frame holds the bytes it had when it
    was encoded."""
    buf = bytearray(blob(200 * KiB))
    for view in (memoryview(buf), memoryview(buf).toreadonly()):
        parts = envelope_mod.encode_frame_parts(_spawn(view))
        before = envelope_mod.encode_frame(_spawn(bytes(buf)))
        buf[-1] ^= 0xFF
        assert (b"".join(parts) if type(parts) is tuple else parts) == before
        assert type(parts) is bytes or all(type(p) is bytes for p in parts)


# ------------------------------------------------------------------ unpacking once


def test_decoded_inputs_give_a_value_back_once_for_the_same_object() -> None:
    kept = DecodedInputs()
    data = blob(DecodedInputs.MIN_BYTES)
    value = {"v": 1}
    kept.keep(data, value)
    assert kept.take(bytes(bytearray(data))) == (False, None)  # equal, not the same object
    assert kept.take(data) == (True, value)
    assert kept.take(data) == (False, None)  # once
    small = blob(DecodedInputs.MIN_BYTES - 1)
    kept.keep(small, value)
    assert len(kept) == 0 and kept.take(small) == (False, None)


def test_decoded_inputs_are_bounded_oldest_first() -> None:
    kept = DecodedInputs()
    inputs = [blob(DecodedInputs.MIN_BYTES, i) for i in range(64 + 3)]
    for i, data in enumerate(inputs):
        kept.keep(data, i)
    assert len(kept) == kept.max_entries == 64
    assert [kept.take(d)[0] for d in inputs[:3]] == [False] * 3
    assert kept.take(inputs[3]) == (True, 3) and kept.take(inputs[-1]) == (True, len(inputs) - 1)
    by_bytes = DecodedInputs(max_bytes=3 * DecodedInputs.MIN_BYTES)
    for i, data in enumerate(inputs[:5]):
        by_bytes.keep(data, i)
    assert len(by_bytes) == 3 and by_bytes.take(inputs[1]) == (False, None)
    assert by_bytes.take(inputs[4]) == (True, 4)


def test_a_checked_input_is_unpacked_once() -> None:
    seen: list[int] = []
    comp = Computation("c", lambda cx, v: v, codec="msgpack",
                       validate=lambda v: seen.append(id(v)) or isinstance(v, dict))
    data = msgpack.packb({"blob": blob(300 * KiB)})
    assert comp.check_input(data) is None
    value = comp.decode_input(data)
    assert id(value) == seen[-1]
    again = comp.decode_input(data)  # the check's value was handed over once
    assert again == value and again is not value
    # a refused input is not kept, and a small one is unpacked again
    refused = msgpack.packb([blob(300 * KiB)])
    assert "rejected" in (comp.check_input(refused) or "")
    assert comp.decode_input(refused) == [blob(300 * KiB)] and len(comp._decoded) == 0
    small = msgpack.packb({"n": 1})
    assert comp.check_input(small) is None and len(comp._decoded) == 0
    # a codec-None computation keeps nothing and gets its bytes as they came
    raw = Computation("r", lambda cx, v: v)
    big = blob(300 * KiB)
    assert raw.check_input(big) is None and raw.decode_input(big) is big and len(raw._decoded) == 0


def test_which_inputs_are_kept_is_decoded_inputs_rule_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """``DecodedInputs.MIN_BYTES`` is the one rule for which inputs a
    computation keeps unpacked: moved, the registry follows it both ways."""
    seen: list[Any] = []
    comp = Computation("c", lambda cx, v: v, codec="msgpack", validate=lambda v: seen.append(v) or True)
    small, large = msgpack.packb({"n": 1}), msgpack.packb({"blob": blob(300 * KiB)})
    monkeypatch.setattr(DecodedInputs, "MIN_BYTES", 4)
    assert comp.check_input(small) is None and len(comp._decoded) == 1
    assert comp.decode_input(small) is seen[-1]
    monkeypatch.setattr(DecodedInputs, "MIN_BYTES", 1 << 30)
    assert comp.check_input(large) is None and len(comp._decoded) == 0
    assert comp.decode_input(large) is not seen[-1]


# ------------------------------------------------------------------ real nodes


COMPUTATIONS = ["echo_async", "echo_thread", "echo_inline", "echo_process"]


def _values() -> list[Any]:
    return [
        {"id": 7, "blob": blob(VIEW_MIN_BYTES - 1)},
        {"id": 7, "blob": blob(VIEW_MIN_BYTES)},
        {"id": 7, "blob": blob(1 * MiB + 3)},
        # several large leaves in one value (one packed value, one part of its frame)
        [blob(VIEW_MIN_BYTES + i, i) for i in range(6)],
        [blob(70 * KiB, i) for i in range(6)],
        {"a": [blob(100 * KiB), {"b": blob(130 * KiB, 9)}], "s": "é" * 50_000, "n": [1, 2.5, None]},
    ]


def test_values_round_trip_through_every_kind_of_computation(cluster: Any) -> None:
    c = cluster(1, registry=REGISTRY, extra_args=["--max-input-bytes", str(8 * MiB)])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            for name in COMPUTATIONS:
                handles = [spawn_remote(cx, "worker-1", name, v) for v in _values()]
                for v, h in zip(_values(), handles):
                    assert await h.join() == v, name

    asyncio.run(main())


def test_a_caller_gets_bytes_back_whatever_bytes_like_it_sent(cluster: Any) -> None:
    """bytearray and memoryview leaves travel as msgpack bin: the computation
    and the caller get ``bytes`` for each (what msgpack unpacks), never a
    view of rsc's buffers."""
    c = cluster(1, registry=REGISTRY)
    leaves = [blob(300 * KiB), bytearray(blob(300 * KiB, 1)), memoryview(blob(300 * KiB, 2))]

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "types_of", leaves).join() == ["bytes"] * 3
            for name in ("echo_async", "echo_process"):
                got = await spawn_remote(cx, "worker-1", name, leaves).join()
                assert [type(x) for x in got] == [bytes] * 3
                assert got == [bytes(x) for x in leaves]

    asyncio.run(main())


def test_a_node_unpacks_a_validated_large_input_once(cluster: Any) -> None:
    """The validator and the computation get the same object for a large
    input (a small one is unpacked again)."""
    c = cluster(1, registry=REGISTRY)

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            big, small = blob(1 * MiB), blob(100)
            assert await spawn_remote(cx, "worker-1", "echo_checked", {"blob": big}).join() == [big, True]
            assert await spawn_remote(cx, "worker-1", "echo_checked", {"blob": small}).join() == [small, False]
            with pytest.raises(InvalidInput, match="validator"):
                await spawn_remote(cx, "worker-1", "echo_checked", [big]).join()

    asyncio.run(main())


@pytest.mark.parametrize("bad", [
    b"\xc1",                                   # a byte msgpack never uses
    msgpack.packb({"blob": blob(200 * KiB)})[:-1],  # a large value cut short
    msgpack.packb({"blob": blob(200 * KiB)}) + b"\x00",  # two values
    b"\xc6\xff\xff\xff\xff" + blob(100 * KiB),  # a bin announcing 4 GiB
], ids=["reserved byte", "truncated", "trailing", "huge bin header"])
def test_malformed_msgpack_input_is_refused_and_the_node_serves_on(cluster: Any, bad: bytes) -> None:
    c = cluster(1, registry=REGISTRY)

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            with pytest.raises(InvalidInput, match="cannot unpack msgpack value"):
                await spawn_remote(cx, "worker-1", "echo_async", RemoteInput(bad)).join()
            v = {"blob": blob(300 * KiB)}
            assert await spawn_remote(cx, "worker-1", "echo_async", v).join() == v

    asyncio.run(main())


def answered_from_the_journal_after_a_restart(cluster: Any, tmp_path: Any, value: Any,
                                             first: tuple = ()) -> None:
    """Spawn ``value`` under one key on a node with a state directory, restart
    the node, spawn it again: the same value comes back, from the journal
    (one duplicate, nothing run again). ``first``: values echoed before it on
    each runtime (for instance to learn the node's features)."""
    from rsc import IdempotencyKey

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = IdempotencyKey.from_bytes(os.urandom(16))

    async def once() -> tuple[Any, dict]:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            for v in first:
                assert await spawn_remote(cx, "worker-1", "echo_async", v).join() == v
            got = await spawn_remote(cx, "worker-1", "echo_async", value, idempotency_key=key).join()
            return got, await rt.status("worker-1")

    c = cluster(1, registry=REGISTRY, extra_args=["--state-dir", str(state)])
    got, stats = asyncio.run(once())
    assert got == value and stats["completed"] == len(first) + 1
    c.stop()
    c = cluster(1, registry=REGISTRY, extra_args=["--state-dir", str(state)])
    got, stats = asyncio.run(once())
    assert got == value and stats["completed"] == len(first) and stats["duplicates"] == 1


def test_a_large_result_is_answered_from_the_journal_after_a_restart(cluster: Any, tmp_path: Any) -> None:
    """A result handed to the node as a view of the packer's buffer is
    journaled as its bytes: a resend under the same key after a restart
    gets it back without running again."""
    answered_from_the_journal_after_a_restart(cluster, tmp_path, {"id": 1, "blob": blob(2 * MiB)})
