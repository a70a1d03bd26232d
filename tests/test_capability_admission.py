"""Capability tokens enforced: a node that requires them runs nothing without a
token that allows this computation, on this node, now, for this input size
(PROTOCOL.md section 7, admission rules 6 and 14)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import rsc
from rsc import capability as C
from rsc._core.messages import REJECT_CAPABILITY_DENIED
from rsc._engine import origin as O
from rsc._engine.states import OriginState
from rsc.errors import CapabilityDenied, InvalidArgument, UnsafePath
from rsc.node import tokens as T
from rsc.node.tokens import MAX_COUNTED_TOKENS, TokenGate, gate_from_files
from tests.engine_link import Link

ROOT = b"r" * 32
OLD_ROOT = b"o" * 32
NOW = 1_800_000_000.0  # Unix seconds the gates below live at


def _gate(node: str = "worker-1", **kw: Any) -> TokenGate:
    return TokenGate.from_root_keys(node, {"k1": ROOT}, clock=lambda: NOW, **kw)


def _cap(nodes: tuple[str, ...] = ("worker-1", "worker-2"), key_id: str = "k1",
         root: bytes = ROOT) -> C.Capability:
    return C.Capability.mint(root, key_id=key_id, nodes=nodes)


def _reason(why: str | None) -> str | None:
    return None if why is None else why.split(":")[0]


# -- the gate -------------------------------------------------------------------------------


def test_every_caveat_is_checked_and_a_denial_names_it() -> None:
    g = _gate()
    cap = _cap()
    ok = cap.attenuate(computations=["square"], expires_at=NOW + 60, max_input_bytes=100)
    assert g.check(bytes(ok), "square", 100) is None
    assert _reason(g.check(None, "square", 1)) == "missing"
    assert _reason(g.check(bytes(ok), "cube", 1)) == "computation_not_allowed"
    assert _reason(g.check(bytes(ok), "square", 101)) == "input_too_large"
    assert _reason(g.check(bytes(cap.attenuate(expires_at=NOW - 1)), "square", 1)) == "expired"
    assert _reason(g.check(bytes(cap.attenuate(not_before=NOW + 60)), "square", 1)) == "not_yet_valid"
    assert _reason(g.check(bytes(_cap(nodes=("worker-2",))), "square", 1)) == "wrong_node"
    assert _reason(g.check(bytes(cap.attenuate(nodes=["worker-2", "worker-1"]).attenuate(
        nodes=["worker-2"])), "square", 1)) == "wrong_node"  # narrowed away from this node
    assert _reason(TokenGate("worker-1", {"k1": C.node_key(ROOT, "worker-2")}).check(
        bytes(cap), "square", 1)) == "bad_signature"  # another node's key
    assert _reason(g.check(bytes(_cap(key_id="k9")), "square", 1)) == "unknown_key_id"
    assert _reason(g.check(bytes(ok)[:-5], "square", 1)) == "malformed"
    assert _reason(g.check(b"\x07" + bytes(ok)[1:], "square", 1)) == "unknown_version"


def test_a_token_cannot_be_widened_forged_or_have_a_caveat_removed_or_reordered() -> None:
    g = _gate()
    two = _cap().attenuate(computations=["square"]).attenuate(max_input_bytes=10)
    _v, kid, nonce, caveats, sigs = C.parse(bytes(two))
    assert sigs[0][0] == "worker-1"
    forged = C._build(kid, nonce, caveats, [("worker-1", bytes([sigs[0][1][0] ^ 1]) + sigs[0][1][1:])]
                      + sigs[1:])
    removed = C._build(kid, nonce, caveats[:1], sigs)
    reordered = C._build(kid, nonce, caveats[::-1], sigs)
    widened = C._build(kid, nonce, [(C.CAVEAT_COMPUTATIONS, C._names(["square", "rm_rf"]))] + caveats[1:],
                       sigs)
    for bad in (forged, removed, reordered, widened):
        assert _reason(g.check(bad, "square", 1)) == "bad_signature"
    assert g.check(bytes(two), "square", 10) is None  # narrowed twice, still good


def test_an_unknown_caveat_fails_closed_even_with_a_valid_chain() -> None:
    _v, kid, nonce, caveats, sigs = C.parse(bytes(_cap(nodes=("worker-1",))))
    unknown = (99, b"\x00" * 8)
    sig = C._extend(sigs[0][1], C._caveat_bytes(*unknown))
    token = C._build(kid, nonce, [unknown], [("worker-1", sig)])
    assert _reason(_gate().check(token, "square", 1)) == "unknown_caveat"


def test_rotation_accepts_the_old_key_until_it_is_retired() -> None:
    old = bytes(_cap(key_id="k0", root=OLD_ROOT))
    both = TokenGate.from_root_keys("worker-1", {"k0": OLD_ROOT, "k1": ROOT}, clock=lambda: NOW)
    assert both.check(old, "square", 1) is None and both.check(bytes(_cap()), "square", 1) is None
    assert _reason(_gate().check(old, "square", 1)) == "unknown_key_id"  # k0 retired


def test_max_uses_counts_admitted_work_only() -> None:
    g = _gate()
    token = bytes(_cap().attenuate(max_uses=2))
    for _ in range(2):
        assert g.check(token, "square", 1) is None and g.uses_left(token) is None
        g.admitted(token)
    assert g.check(token, "square", 1) is None  # still authentic: a resend may pass
    assert _reason(g.uses_left(token)) == "uses_exceeded"  # but no new work
    assert g.uses(token) == 2
    free = bytes(_cap())
    g.check(free, "square", 1)
    g.admitted(free)
    assert g.uses(free) == 0 and g.uses_left(free) is None  # no max_uses: nothing counted


def test_a_verified_chain_is_remembered_but_caveats_are_checked_every_time(monkeypatch) -> None:
    now = [NOW]
    g = TokenGate.from_root_keys("worker-1", {"k1": ROOT}, clock=lambda: now[0])
    calls = []
    real = T.verify_chain
    monkeypatch.setattr(T, "verify_chain", lambda *a: calls.append(1) or real(*a))
    token = bytes(_cap().attenuate(expires_at=NOW + 10))
    assert g.check(token, "square", 1) is None and g.check(token, "square", 1) is None
    assert len(calls) == 1
    now[0] = NOW + 11
    assert _reason(g.check(token, "square", 1)) == "expired"
    monkeypatch.setattr(T, "CACHE_TOKENS", 2)
    for _ in range(3):
        g.check(bytes(_cap()), "square", 1)
    assert len(g._verified) == 2  # bounded


def test_the_use_table_is_bounded_and_fails_closed(monkeypatch) -> None:
    monkeypatch.setattr(T, "MAX_COUNTED_TOKENS", 1)
    g = _gate()
    a, b = bytes(_cap().attenuate(max_uses=5)), bytes(_cap().attenuate(max_uses=5))
    g.check(a, "square", 1)
    g.admitted(a)
    g.check(b, "square", 1)
    assert _reason(g.uses_left(b)) == "uses_exceeded" and "table full" in g.uses_left(b)
    assert MAX_COUNTED_TOKENS >= 1024


def test_key_files_are_checked_and_named(tmp_path: Path) -> None:
    root = tmp_path / "root.key"
    root.write_bytes(ROOT)
    os.chmod(root, 0o600)
    gate = gate_from_files("worker-1", True, [f"k1={root}"], [])
    assert gate is not None and gate.check(bytes(_cap()), "square", 1) is None
    assert gate_from_files("worker-1", False, [], []) is None
    with pytest.raises(InvalidArgument, match="--require-capability too"):
        gate_from_files("worker-1", False, [str(root)], [])
    with pytest.raises(InvalidArgument, match="needs a key"):
        gate_from_files("worker-1", True, [], [])
    os.chmod(root, 0o644)
    with pytest.raises(UnsafePath, match="chmod 600"):
        gate_from_files("worker-1", True, [str(root)], [])


# -- the engine -----------------------------------------------------------------------------


def test_the_engine_checks_before_deduplication_and_counts_new_work_only() -> None:
    link = Link()
    link.node.capabilities = _gate("node-1")
    token = bytes(C.Capability.mint(ROOT, key_id="k1", nodes=["node-1"]).attenuate(max_uses=1))
    link.connect()
    t1 = link.spawn(capability=token)
    assert t1.state is OriginState.RUNNING
    link.disconnect()
    link.connect()  # t1 is resent with its token: a duplicate, not a new use
    t2 = link.spawn(capability=token)  # new work: its one use is taken
    t3 = link.spawn(key=t1.key)  # t1's key without a token fetches nothing
    rejected = {e[1].rtid: e[2] for e in link.events_of(O.EV_REJECTED)}
    assert t1.state is OriginState.RUNNING and t1.rtid not in rejected
    assert rejected[t2.rtid][0] == REJECT_CAPABILITY_DENIED and rejected[t2.rtid][1].startswith("uses_exceeded")
    assert rejected[t3.rtid][0] == REJECT_CAPABILITY_DENIED and rejected[t3.rtid][1].startswith("missing")
    assert link.node.capabilities.uses(token) == 1
    assert sum(e == "capability_denied" for e, _f in link.traces) == 2  # traced, like every reject


# -- real nodes -----------------------------------------------------------------------------


@pytest.fixture
def root_key(tmp_path: Path) -> str:
    path = tmp_path / "root.key"
    path.write_bytes(ROOT)
    os.chmod(path, 0o600)
    return str(path)


def test_real_nodes_run_only_what_a_token_allows_and_nested_work_carries_it(
        cluster: Any, tmp_path: Path, root_key: str) -> None:
    peers = str(tmp_path / "peers.json")
    c = cluster(2, directory=str(tmp_path / "s"), cluster_file=peers,
                extra_args=["--require-capability", "--root-key-file", f"k1={root_key}",
                            "--peers", peers])

    async def main() -> None:
        async with rsc.Runtime(c.nodes) as rt:
            bare = rt.cx()
            with pytest.raises(CapabilityDenied) as no_token:
                await rsc.spawn_remote(bare, "worker-1", "square", 3).join()
            assert no_token.value.denied_by == "missing"
            cap = C.Capability.mint(ROOT, key_id="k1", nodes=["worker-1", "worker-2"])
            cx = rt.cx()
            cx.remote_cap = cx.remote_cap.with_token(cap)
            assert await rsc.spawn_remote(cx, "worker-1", "square", 3).join() == 9
            only_square = cx.attenuate(computations=["square"])
            with pytest.raises(CapabilityDenied) as other:
                await rsc.spawn_remote(only_square, "worker-1", "relay",
                                       {"node": "worker-2", "x": 4}).join()
            assert other.value.denied_by == "computation_not_allowed" and "relay" in str(other.value)
            # the relay on worker-1 spawns on worker-2 under the token it was called with,
            # narrowed by itself to square
            relay_and_square = cx.attenuate(computations=["relay", "square"])
            assert await rsc.spawn_remote(relay_and_square, "worker-1", "relay",
                                          {"node": "worker-2", "x": 4, "narrow": True}).join() == 16
            # a token good only on worker-1: the nested spawn on worker-2 is refused there
            here_only = cx.attenuate(nodes=["worker-1"])
            with pytest.raises(rsc.RemoteFailed, match="capability_denied"):
                await rsc.spawn_remote(here_only, "worker-1", "relay",
                                       {"node": "worker-2", "x": 4}).join()

    asyncio.run(main())


def test_a_world_readable_root_key_stops_the_node_with_a_clear_message(
        cluster: Any, root_key: str) -> None:
    os.chmod(root_key, 0o644)
    from rsc.supervise import NodeStartError

    with pytest.raises(NodeStartError, match="chmod 600"):
        cluster(1, extra_args=["--require-capability", "--root-key-file", root_key])


def test_the_capability_example_runs() -> None:
    import subprocess
    import sys

    from tests.cluster import REPO_ROOT

    out = subprocess.run([sys.executable, "examples/capability_tokens.py"], cwd=REPO_ROOT, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["sum of squares, nested on worker-2: 14",
                                       "refused: computation_not_allowed", "refused: missing"]
