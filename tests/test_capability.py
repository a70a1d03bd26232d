"""Capability tokens (rsc.capability): minting, attenuation and verification,
with every way a token can be tampered with, on the compiled module and its
pure source alike (the same pinned vectors for both)."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import pytest

import rsc.capability as compiled

ROOT_KEY = bytes(range(32))
NONCE = bytes(16)
NOW = 1_800_000_000.0  # seconds since the epoch, fixed so the vectors are stable


def _pure() -> ModuleType:
    """capability.py loaded from its source, beside the compiled build."""
    path = os.path.join(os.path.dirname(compiled.__file__), "capability.py")
    spec = importlib.util.spec_from_file_location("rsc_capability_source", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = mod  # type: ignore[union-attr]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


PURE = _pure()


@pytest.fixture(params=["compiled", "pure"])
def cap(request: pytest.FixtureRequest) -> ModuleType:
    return compiled if request.param == "compiled" else PURE


def test_the_compiled_module_is_compiled() -> None:
    assert not compiled.__file__.endswith(".py") or os.environ.get("RSC_NO_EXTENSIONS") == "1"
    assert PURE.__file__.endswith("capability.py")


def _token(cap: ModuleType) -> object:
    return cap.Capability.mint(ROOT_KEY, key_id="k1", nodes=["worker-1", "worker-2"], nonce=NONCE)


# The wire form, pinned: both twins must make exactly these bytes.
MINTED_HEX = (
    "01026b3100000000000000000000000000000000000208776f726b65722d31f98bf0524cf4fbe400345e5834a2"
    "ce5a8e2b11c3525dab0483e301cd0cf2bbba08776f726b65722d3291e3178edd19023c0bbec9c1b9482206c11f"
    "06f8690c653205fa8731f36b9d11"
)


def test_minted_and_narrowed_tokens_are_the_same_bytes_on_both(cap: ModuleType) -> None:
    token = _token(cap)
    assert token.token.hex() == MINTED_HEX
    narrowed = token.attenuate(computations=["square"], expires_at=NOW + 60, max_input_bytes=1024)
    other = PURE if cap is compiled else compiled
    same = _token(other).attenuate(computations=["square"], expires_at=NOW + 60, max_input_bytes=1024)
    assert narrowed.token == same.token


def _check(cap: ModuleType, token: object, node: str = "worker-1", computation: str = "square",
           size: int = 10, now: float = NOW, key: bytes | None = None) -> tuple[int, str, int]:
    key = cap.node_key(ROOT_KEY, node) if key is None else key
    return token.verify(key, node, computation, size, now)  # type: ignore[attr-defined]


def test_a_valid_token_narrowed_twice_allows_what_both_allow(cap: ModuleType) -> None:
    t = _token(cap).attenuate(computations=["square", "cube"], expires_at=NOW + 60)
    t = t.attenuate(computations=["square"], max_input_bytes=100, max_uses=5)
    t = t.attenuate(max_uses=3)
    assert _check(cap, t) == (cap.OK, "", 3)
    assert _check(cap, t, computation="cube")[0] == cap.DENY_COMPUTATION
    assert _check(cap, t, size=101)[0] == cap.DENY_INPUT_TOO_LARGE
    assert _check(cap, t, node="worker-2")[0] == cap.OK


def test_expiry_and_not_before(cap: ModuleType) -> None:
    t = _token(cap).attenuate(expires_at=NOW + 60, not_before=NOW - 60)
    assert _check(cap, t)[0] == cap.OK
    assert _check(cap, t, now=NOW + 61)[0] == cap.DENY_EXPIRED
    assert _check(cap, t, now=NOW - 61)[0] == cap.DENY_NOT_YET_VALID


def test_wrong_node_and_narrowing_to_nodes(cap: ModuleType) -> None:
    t = _token(cap)
    assert _check(cap, t, node="worker-3")[0] == cap.DENY_NODE
    one = t.attenuate(nodes=["worker-2"])
    assert one.nodes == ["worker-2"]
    assert _check(cap, one, node="worker-1")[0] == cap.DENY_NODE
    assert _check(cap, one, node="worker-2")[0] == cap.OK
    with pytest.raises(cap.TokenError, match="not good for"):
        one.attenuate(nodes=["worker-1"])


def test_a_node_key_verifies_only_its_own_node(cap: ModuleType) -> None:
    t = _token(cap)
    leaked = cap.node_key(ROOT_KEY, "worker-1")
    # worker-1's key used to forge worker-2's view fails
    assert _check(cap, t, node="worker-2", key=leaked)[0] == cap.DENY_SIGNATURE


def _rebuild(cap: ModuleType, token: bytes, *, caveats=None, sigs=None, key_id=None) -> bytes:
    _v, kid, nonce, cavs, sg = cap.parse(token)
    return cap._build(key_id or kid, nonce, cavs if caveats is None else caveats,
                      sg if sigs is None else sigs)


def test_tampering_is_refused(cap: ModuleType) -> None:
    t = _token(cap).attenuate(computations=["square"]).attenuate(max_input_bytes=100)
    _v, _k, _n, cavs, sigs = cap.parse(t.token)
    forged_sig = [(n, bytes(32)) for n, _ in sigs]
    removed = cavs[1:]
    reordered = [cavs[1], cavs[0]]
    widened = [(cap.CAVEAT_COMPUTATIONS, cap._names(["square", "cube"])), cavs[1]]
    for bad in (_rebuild(cap, t.token, sigs=forged_sig), _rebuild(cap, t.token, caveats=removed),
                _rebuild(cap, t.token, caveats=reordered), _rebuild(cap, t.token, caveats=widened)):
        assert cap.verify(bad, {b"k1": cap.node_key(ROOT_KEY, "worker-1")}, "worker-1", "cube",
                          1, int(NOW * 1000))[0] == cap.DENY_SIGNATURE


def test_unknown_caveat_fails_closed(cap: ModuleType) -> None:
    t = _token(cap)
    _v, kid, nonce, _c, _s = cap.parse(t.token)
    key = cap.node_key(ROOT_KEY, "worker-1")
    caveat = (99, b"whatever")
    sig = cap._extend(cap._start(key, kid, nonce), cap._caveat_bytes(*caveat))
    token = cap._build(kid, nonce, [caveat], [("worker-1", sig)])
    code, detail, _ = cap.verify(token, {kid: key}, "worker-1", "square", 1, int(NOW * 1000))
    assert code == cap.DENY_UNKNOWN_CAVEAT and "99" in detail


def test_truncated_and_malformed_tokens(cap: ModuleType) -> None:
    raw = _token(cap).attenuate(computations=["square"]).token
    keys = {b"k1": cap.node_key(ROOT_KEY, "worker-1")}
    for cut in range(len(raw)):
        code, detail, _ = cap.verify(raw[:cut], keys, "worker-1", "square", 1, int(NOW * 1000))
        assert code == cap.DENY_MALFORMED, (cut, detail)
    code, detail, _ = cap.verify(raw + b"x", keys, "worker-1", "square", 1, int(NOW * 1000))
    assert code == cap.DENY_MALFORMED and "after the token" in detail
    code, _d, _ = cap.verify(b"\x02" + raw[1:], keys, "worker-1", "square", 1, int(NOW * 1000))
    assert code == cap.DENY_VERSION
    with pytest.raises(cap.TokenError):
        cap.Capability(b"\x01")


def test_key_ids_and_rotation(cap: ModuleType) -> None:
    old = cap.Capability.mint(ROOT_KEY, key_id="2026-11", nodes=["worker-1"], nonce=NONCE)
    new_root = bytes(range(32, 64))
    new = cap.Capability.mint(new_root, key_id="2026-12", nodes=["worker-1"], nonce=NONCE)
    keys = {b"2026-11": cap.node_key(ROOT_KEY, "worker-1"), b"2026-12": cap.node_key(new_root, "worker-1")}
    for t in (old, new):
        assert cap.verify(t.token, keys, "worker-1", "sq", 1, int(NOW * 1000))[0] == cap.OK
    del keys[b"2026-11"]  # retired
    code, detail, _ = cap.verify(old.token, keys, "worker-1", "sq", 1, int(NOW * 1000))
    assert code == cap.DENY_UNKNOWN_KEY and "323032362d3131" in detail
    assert cap.verify(new.token, keys, "worker-1", "sq", 1, int(NOW * 1000))[0] == cap.OK


def test_denials_never_carry_key_material(cap: ModuleType) -> None:
    t = _token(cap).attenuate(computations=["square"])
    key = cap.node_key(ROOT_KEY, "worker-1")
    for node, comp in (("worker-1", "cube"), ("worker-9", "square")):
        _code, detail, _ = t.verify(key, node, comp, 1, NOW)
        assert key.hex() not in detail and ROOT_KEY.hex() not in detail


def test_bad_arguments_say_what_to_fix(cap: ModuleType) -> None:
    with pytest.raises(cap.TokenError, match="at least 16 bytes"):
        cap.Capability.mint(b"short", key_id="k", nodes=["w"])
    with pytest.raises(cap.TokenError, match="at least one node"):
        cap.Capability.mint(ROOT_KEY, key_id="k", nodes=[])
    with pytest.raises(cap.TokenError, match="0..2\\*\\*64-1"):
        _token(cap).attenuate(max_uses=-1)
    with pytest.raises(cap.TokenError, match="at most 32 caveats"):
        t = _token(cap)
        for _ in range(33):
            t = t.attenuate(max_uses=1)
