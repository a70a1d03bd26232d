"""Capability tokens: what a node would pay per spawn to verify one.

Group ``capability-verify``: the compiled ``verify`` and its pure source on a
token for two nodes with three caveats (computations, expiry, input size),
beside the floor it cannot go under: the four HMAC-SHA256 computations its
chain needs (one per caveat plus the start), done with ``hmac.digest``
alone. The ratios in the table say how far verification is from that floor.
Run with ``python -m pytest bench/bench_capability.py --benchmark-only``.
"""

from __future__ import annotations

import hmac
import importlib.util
import os
from types import ModuleType

import pytest

import rsc.capability as compiled

ROOT = bytes(range(32))
NOW_MS = 1_800_000_000_000


def _source() -> ModuleType:
    path = os.path.join(os.path.dirname(compiled.__file__), "capability.py")
    spec = importlib.util.spec_from_file_location("rsc_capability_bench_source", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _token(mod: ModuleType) -> bytes:
    cap = mod.Capability.mint(ROOT, key_id="k1", nodes=["worker-1", "worker-2"])
    return cap.attenuate(computations=["square"], expires_at=2e9, max_input_bytes=1 << 20).token


@pytest.mark.benchmark(group="capability-verify")
@pytest.mark.parametrize("side", ["compiled", "pure"])
def test_verify(benchmark, side: str) -> None:
    mod = compiled if side == "compiled" else _source()
    token, keys = _token(mod), {b"k1": mod.node_key(ROOT, "worker-1")}
    code, _detail, _uses = benchmark(mod.verify, token, keys, "worker-1", "square", 100, NOW_MS)
    assert code == mod.OK


@pytest.mark.benchmark(group="capability-verify")
def test_floor_four_hmacs(benchmark) -> None:
    key, data = compiled.node_key(ROOT, "worker-1"), b"x" * 40

    def four() -> bytes:
        sig = hmac.digest(key, data, "sha256")
        for _ in range(3):
            sig = hmac.digest(sig, data, "sha256")
        return sig

    assert len(benchmark(four)) == 32


@pytest.mark.benchmark(group="capability-verify")
@pytest.mark.parametrize("token_seen", [False, True], ids=["first-use", "seen-before"])
def test_node_gate_check(benchmark, token_seen: bool) -> None:
    """What a node that requires capabilities pays per spawn (``TokenGate.check``):
    a token's first use verifies its chain; later uses of the same token (a
    client reusing its token, the common case) find the verified chain
    remembered and check only the caveats."""
    from rsc.node.tokens import TokenGate

    token = _token(compiled)
    gate = TokenGate.from_root_keys("worker-1", {"k1": ROOT}, clock=lambda: NOW_MS / 1000)
    if token_seen:
        assert gate.check(token, "square", 100) is None
        result = benchmark(gate.check, token, "square", 100)
    else:
        def fresh() -> str | None:
            gate._verified.clear()
            return gate.check(token, "square", 100)
        result = benchmark(fresh)
    assert result is None
