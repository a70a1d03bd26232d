"""What a node pays to fingerprint a segmented input (a spawn with a user's
idempotency key), against the same value's plain bytes, in the same run.

Groups ``fingerprint-<shape>-<size>`` (1 MiB and 16 MiB of leaves), each
comparing, on the compiled modules:

``plain``
    ``fingerprint(name, bytes)`` of the value's plain MessagePack: what the
    same input sent without segments costs (the baseline).
``spliced``
    ``fingerprint(name, seg.fingerprint_parts())``: the parts of the plain
    form, found by a walk of the packed value's headers (what a node does now).
``framed``
    ``fingerprint(name, seg.framed_fingerprint_parts())``: the head, the packed
    value and each segment after its length (what a node did before the
    fingerprint of a segmented input was its plain form's; a node still
    checks a mismatch against it).
``parts``
    ``seg.fingerprint_parts()`` alone, no hashing: the walk's own cost.

Shapes: ``blob`` is ``{"id": 7, "blob": data}`` (what bench_payload sends);
``rows`` adds 10,000 small ints beside the blob, so the packed value the walk
goes through holds 10,000 items (a dense value: the walk's worst case at that
size). The module prints each figure's ratio to ``plain`` at the end. Run with
``python -m pytest bench/bench_fingerprint.py --benchmark-only``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from bench.figures import write_past_capture
from rsc._core import _idemtable
from rsc.value_codec import Segmented, pack_segmented, pack_value

MiB = 1024 * 1024
SIZES = {"1mib": MiB, "16mib": 16 * MiB}
IMPLS = ("plain", "spliced", "framed", "parts")
NAME = "images.thumbnail"


def _value(shape: str, size: int) -> Any:
    blob = os.urandom(size)
    if shape == "rows":
        return {"id": 7, "blob": blob, "rows": list(range(10_000))}
    return {"id": 7, "blob": blob}


_values: dict[tuple[str, str], tuple[bytes, Segmented]] = {}


def _inputs(shape: str, size: str) -> tuple[bytes, Segmented]:
    if (shape, size) not in _values:
        _values.clear()  # one size at a time: 16 MiB values add up
        value = _value(shape, SIZES[size])
        seg = pack_segmented(value)
        assert type(seg) is Segmented
        _values[(shape, size)] = (bytes(pack_value(value)), seg)
    return _values[(shape, size)]


_results: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _ratios(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    lines = ["fingerprint: us per input (best round); in brackets, times plain's"] if _results else []
    for group, by_impl in sorted(_results.items()):
        base = by_impl.get("plain")
        cells = [f"{impl} {by_impl[impl]:.1f}" + (f" ({by_impl[impl] / base:.3f}x)" if base else "")
                 for impl in IMPLS if impl in by_impl]
        lines.append(f"  {group:24} " + ", ".join(cells))
    write_past_capture(request, lines)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("shape", ["blob", "rows"])
@pytest.mark.parametrize("impl", IMPLS)
def test_fingerprint(benchmark: Any, impl: str, shape: str, size: str) -> None:
    benchmark.group = f"fingerprint-{shape}-{size}"
    plain, seg = _inputs(shape, size)
    expected = _idemtable.fingerprint(NAME, plain)
    if impl == "plain":
        got = benchmark(_idemtable.fingerprint, NAME, plain)
    elif impl == "spliced":
        got = benchmark(lambda: _idemtable.fingerprint(NAME, seg.fingerprint_parts()))
    elif impl == "framed":
        got = benchmark(lambda: _idemtable.fingerprint(NAME, seg.framed_fingerprint_parts()))
        assert got != expected
        got = expected
    else:
        parts = benchmark(seg.fingerprint_parts)
        got = _idemtable.fingerprint(NAME, parts)
    assert got == expected
    if benchmark.stats is not None:
        us = benchmark.stats.stats.min * 1e6
        benchmark.extra_info.update(impl=impl, us_per_input=round(us, 2))
        _results.setdefault(benchmark.group, {})[impl] = us
