"""Value segments through an origin engine and a node engine joined in memory.

What each side sends depends on what both offered (``value_segments`` in HELLO
and WELCOME); a segmented input or result is kept as it is (a resend after a
reconnect, a duplicate answered from a kept result) and joined into plain
msgpack for a peer without the extension. The idempotency fingerprint covers
the segments. Runs on both twins (tests/test_twins_env.py lists this file).
"""

from __future__ import annotations

from typing import Any

import msgpack

from rsc._core.messages import REJECT_IDEMPOTENCY_CONFLICT, SpawnRequest
from rsc._engine.origin import EV_REJECTED, EV_RESULT, OriginTask
from rsc.value_codec import Segmented, pack_segmented, unpack_value
from tests.engine_link import Link

KiB = 1024
VALUE = {"id": 7, "blob": bytes(range(256)) * 1024 + b"tail"}


def _segmented(value: Any = VALUE) -> Segmented:
    seg = pack_segmented(value)
    assert type(seg) is Segmented
    return seg


def _link(*, origin: bool = True, node: bool = True) -> Link:
    link = Link(max_input_bytes=1 << 20, value_segments=node)
    if not origin:
        link.origin.features.pop("value_segments")
    link.connect()
    return link


def _sent_spawns(link: Link) -> list[SpawnRequest]:
    link.collect()
    return [m for m in link.to_node if type(m) is SpawnRequest]


def test_both_offered_the_input_and_the_result_go_with_their_segments() -> None:
    link = _link()
    seg = _segmented()
    task = link.spawn(data=seg, flush=False)
    (msg,) = _sent_spawns(link)
    assert msg.segments == seg.segments and bytes(msg.input) == bytes(seg.packed)
    link.flush()
    (started,) = link.started
    assert type(started.input) is Segmented and started.input.segments == seg.segments
    assert unpack_value(started.input) == VALUE
    out = _segmented({"out": VALUE["blob"]})
    link.finish(started, payload=out)
    ((_, got_task, (kind, payload, _ns)),) = link.events_of(EV_RESULT)
    assert got_task is task and kind == 0
    assert type(payload) is Segmented and payload.segments == out.segments
    assert unpack_value(payload) == {"out": VALUE["blob"]}


def test_an_origin_without_segments_gets_the_result_joined() -> None:
    link = _link(origin=False)
    assert not link.origin.link_for("node-1").segments
    link.spawn(data=msgpack.packb(VALUE))
    (started,) = link.started
    link.finish(started, payload=_segmented())
    ((_, _task, (_kind, payload, _ns)),) = link.events_of(EV_RESULT)
    assert type(payload) is bytes and payload == msgpack.packb(VALUE, use_bin_type=True)


def test_a_node_without_segments_gets_the_input_joined() -> None:
    link = _link(node=False)
    assert not link.origin.link_for("node-1").segments
    link.spawn(data=_segmented(), flush=False)
    (msg,) = _sent_spawns(link)
    assert msg.segments is None and msg.input == msgpack.packb(VALUE, use_bin_type=True)
    link.flush()
    (started,) = link.started
    assert type(started.input) is bytes


def test_a_resend_after_a_reconnect_carries_the_segments_and_is_a_duplicate() -> None:
    link = _link()
    seg = _segmented()
    link.spawn(data=seg)
    (started,) = link.started
    link.disconnect()
    seen: list = []
    link.connect(complete=False)
    link.flush(seen)
    resent = [m for m in seen if type(m) is SpawnRequest]
    assert len(resent) == 1 and resent[0].segments == seg.segments
    assert link.started == [started]  # the resend started nothing: a duplicate
    assert not link.events_of(EV_REJECTED)


def test_a_kept_result_answers_a_duplicate_with_the_same_segments() -> None:
    link = _link()
    seg, key = _segmented(), b"k" * 16
    link.spawn(data=seg, key=key)
    (started,) = link.started
    out = _segmented({"out": VALUE["blob"]})
    link.finish(started, payload=out)
    again = link.spawn(data=_segmented(), key=key)  # an equal value: the same fingerprint
    assert link.started == [started]
    results = [e for e in link.events_of(EV_RESULT) if e[1] is again]
    (_, _, (_kind, payload, _ns)), = results
    assert type(payload) is Segmented and payload.segments == out.segments


def test_a_key_reused_with_other_segments_is_a_conflict() -> None:
    link = _link()
    key = b"k" * 16
    link.spawn(data=_segmented(), key=key)
    other = {"id": 7, "blob": VALUE["blob"][:-1] + b"X"}
    task = link.spawn(data=_segmented(other), key=key)
    ((_, got, detail),) = link.events_of(EV_REJECTED)
    assert got is task and detail[0] == REJECT_IDEMPOTENCY_CONFLICT, detail
    # and the same bytes cut otherwise (one more segment) is no duplicate either
    packed = msgpack.packb([msgpack.ExtType(82, b"\x00"), msgpack.ExtType(82, b"\x01")])
    third = OriginTask(99, "node-1", "echo", Segmented(packed, [b"ab", b"c"]), 3000, b"q" * 16,
                       None, None, 7, 8, None, None)
    link.origin.spawn(third, link.now)
    link.flush()
    fourth = OriginTask(100, "node-1", "echo", Segmented(packed, [b"a", b"bc"]), 3000, b"q" * 16,
                        None, None, 7, 8, None, None)
    link.origin.spawn(fourth, link.now)
    link.flush()
    assert [e[1] for e in link.events_of(EV_REJECTED)] == [task, fourth]
