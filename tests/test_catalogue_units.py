"""rsc.catalogue without processes: the entries a registry gives, their bounds,
how an origin reads a catalogue (the golden vectors' included, and malformed
ones), and which spawns it refuses."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from rsc.catalogue import (
    CATALOGUE_MAX_BYTES_STATUS,
    CATALOGUE_MAX_BYTES_WELCOME,
    DOC_MAX_BYTES,
    Catalogue,
    ComputationInfo,
    catalogue_features,
    describe,
    parse,
    publish_catalogue,
)
from rsc.errors import CodecMismatch, ComputationNotServed, InvalidInput, UnknownComputation
from rsc.registry import Registry

GOLDEN = json.loads((Path(__file__).parent / "golden" / "wire_v1.json").read_text(encoding="utf-8"))


def _registry() -> Registry:
    reg = Registry()

    @reg.computation("a", codec="msgpack")
    async def a(cx: Any, v: Any) -> Any:
        """  First line.  \n\n        More."""
        return v

    @reg.computation("b")
    def b(cx: Any, data: bytes) -> bytes:
        return data

    @reg.computation("c", codec="msgpack", inline=True)
    def c(cx: Any, v: Any) -> Any:
        """Inline."""
        return v

    def d(cx: Any, data: bytes, scale: int = 1) -> bytes:
        """Partial's target."""
        return data

    reg.register("d", functools.partial(d, scale=2), isolation="process")
    reg.register("e", b, time_limit=2.0)  # a limit implies a worker process
    return reg


def test_entries_say_codec_kind_isolation_and_the_first_docstring_line() -> None:
    reg = _registry()
    got = [describe(reg.get(n)) for n in reg]  # type: ignore[arg-type]
    assert got == [
        ComputationInfo("a", "msgpack", "async", "loop", "First line."),
        ComputationInfo("b", "raw", "sync", "thread", ""),
        ComputationInfo("c", "msgpack", "inline", "loop", "Inline."),
        ComputationInfo("d", "raw", "sync", "process", "Partial's target."),
        ComputationInfo("e", "raw", "sync", "process", ""),
    ]
    # a node whose --isolation is process runs b there too
    assert describe(reg.get("b"), "process").isolation == "process"  # type: ignore[arg-type]


def test_a_long_docstring_line_is_cut_on_a_character_boundary() -> None:
    reg = Registry()

    def f(cx: Any, data: bytes) -> bytes:
        return data

    f.__doc__ = "é" * 500
    reg.register("f", f)
    doc = describe(reg.get("f")).doc  # type: ignore[arg-type]
    assert doc.endswith("…") and len(doc.encode()) <= DOC_MAX_BYTES
    assert set(doc[:-1]) == {"é"}


def _big(n: int) -> Registry:
    reg = Registry()
    for i in range(n):
        def f(cx: Any, data: bytes) -> bytes:
            return data

        f.__doc__ = "x" * 1000
        reg.register(f"{i:05d}" + "n" * 250, f)  # 255 bytes, the longest name
    return reg


def test_the_welcome_part_is_bounded_and_says_how_many_there_are() -> None:
    reg = _big(200)
    feats = catalogue_features(reg)
    part = feats["computations"]
    assert feats["computations_total"] == 200 and 60 <= len(part) < 200
    assert len(msgpack.packb(part)) <= CATALOGUE_MAX_BYTES_WELCOME + 5  # + the array header
    assert max(len(msgpack.packb(e)) for e in part) <= 520
    # the node keeps the whole list for STATUS_REPLY only when the WELCOME's is partial
    features: dict = {}
    status = publish_catalogue(features, reg)
    assert status is not None and len(status["computations"]) == 200
    assert features["computations"] == part
    small: dict = {}
    assert publish_catalogue(small, _registry()) is None and small["computations_total"] == 5
    assert len(catalogue_features(_big(3), max_bytes=CATALOGUE_MAX_BYTES_STATUS)["computations"]) == 3


def test_an_empty_registry_publishes_an_empty_complete_catalogue() -> None:
    feats = catalogue_features(Registry())
    cat = parse("n", feats)
    assert feats == {"computations": [], "computations_total": 0}
    assert cat is not None and cat.complete and cat.computations == ()
    assert isinstance(cat.refusal("x", "raw"), ComputationNotServed)


def _golden_value(node: Any) -> Any:
    if isinstance(node, dict) and "map" in node:
        return {k: _golden_value(v) for k, v in node["map"]}
    if isinstance(node, list):
        return [_golden_value(v) for v in node]
    return node


@pytest.mark.parametrize("name,complete,names", [
    ("welcome_catalogue", True, ["greet", "shout"]),
    ("welcome_catalogue_partial", False, ["greet"]),
    ("status_reply_catalogue", True, ["greet", "shout"]),
    ("welcome_catalogue_entry_trailing", True, ["greet"]),
])
def test_the_golden_catalogues_read_as_documented(name: str, complete: bool, names: list) -> None:
    vector = next(v for v in GOLDEN if v["name"] == name)
    fields = vector["message"]["fields"]
    source = _golden_value(fields.get("features", fields.get("stats")))
    cat = parse("node-1", source)
    assert cat is not None and cat.complete is complete
    assert [c.name for c in cat.computations] == names
    assert cat.computations[0].codec == "msgpack" and cat.codecs["greet"] == "msgpack"


@pytest.mark.parametrize("source", [
    None, [], {"computations_total": 3}, {"computations": {"a": 1}},
    {"computations": [["a", "raw", "sync", "thread"]]},  # too short
    {"computations": [["a", "raw", "sync", "thread", None]]},  # not a str
    {"computations": [["", "raw", "sync", "thread", ""]]},  # an empty name
    {"computations": [["n" * 256, "raw", "sync", "thread", ""]]},  # over 255 bytes
    {"computations": [], "computations_total": -1},
    {"computations": [], "computations_total": True},
    {"computations": [7]},
])
def test_a_malformed_catalogue_counts_as_none(source: Any) -> None:
    assert parse("n", source) is None


def test_duplicates_keep_the_first_and_a_short_total_means_complete() -> None:
    cat = parse("n", {"computations": [["a", "raw", "sync", "thread", "1"],
                                       ["a", "msgpack", "async", "loop", "2"]],
                      "computations_total": 0})
    assert cat is not None and cat.complete and cat.total == 1
    assert cat.get("a") == ComputationInfo("a", "raw", "sync", "thread", "1")
    assert cat.get("b") is None


def _cat(total: int | None = None) -> Catalogue:
    entries = [["greet", "msgpack", "sync", "thread", ""], ["shout", "raw", "async", "loop", ""],
               ["future", "cbor", "sync", "thread", ""]]
    source: dict = {"computations": entries}
    if total is not None:
        source["computations_total"] = total
    cat = parse("w1", source)
    assert cat is not None
    return cat


def test_which_spawns_are_refused() -> None:
    cat = _cat()
    assert cat.refusal("greet", "msgpack") is None
    assert cat.refusal("shout", "raw") is None
    assert cat.refusal("shout", None) is None and cat.refusal("greet", None) is None  # RemoteInput
    assert cat.refusal("future", "raw") is None and cat.refusal("future", "msgpack") is None
    wrong = cat.refusal("shout", "msgpack", "str")
    assert isinstance(wrong, CodecMismatch) and isinstance(wrong, InvalidInput)
    assert (wrong.codec, wrong.sent, wrong.node, wrong.computation) == ("raw", "msgpack", "w1", "shout")
    assert "a str would be sent packed with msgpack" in str(wrong)
    other = cat.refusal("greet", "raw", "bytes")
    assert isinstance(other, CodecMismatch) and "takes msgpack values (codec 'msgpack')" in str(other)
    unknown = cat.refusal("gret", "msgpack")
    assert isinstance(unknown, ComputationNotServed) and isinstance(unknown, UnknownComputation)
    assert unknown.suggestions == ("greet",) and unknown.served == ("greet", "shout", "future")
    assert unknown.code == 1 and unknown.reason == "unknown_computation"
    # partial: a missing name may be among those not received
    assert _cat(total=10).refusal("gret", "msgpack") is None


def test_a_refusal_lists_at_most_twenty_names() -> None:
    cat = parse("n", {"computations": [[f"c{i}", "raw", "sync", "thread", ""] for i in range(30)]})
    err = cat.refusal("zzz", "raw")  # type: ignore[union-attr]
    assert isinstance(err, ComputationNotServed) and len(err.served) == 30
    assert "c19 and 10 more" in str(err) and "c20" not in str(err)


def test_a_fuller_list_is_merged_after_the_known_entries() -> None:
    part = _cat(total=4)
    rest = parse("w1", {"computations": [["shout", "raw", "async", "loop", ""],
                                         ["late", "msgpack", "sync", "thread", ""]],
                        "computations_total": 4})
    both = part.merged(rest)  # type: ignore[arg-type]
    assert [c.name for c in both.computations] == ["greet", "shout", "future", "late"]
    assert both.complete and both.codecs["late"] == "msgpack"
