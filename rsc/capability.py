"""Capability tokens: attenuable proofs that a caller may spawn (``rsc.Capability``).

A token is an HMAC-SHA256 caveat chain (the macaroon construction), with
first-party, typed caveats only:

- **Minting** needs the cluster's root key: ``Capability.mint(root_key,
  key_id=..., nodes=[...])``. The token carries one signature per node it is
  good for, each keyed by that node's *derived key* ``node_key(root, node) =
  HMAC(root, "rsc/cap/node/v1" | node)``. A node holds only its derived key:
  it can verify tokens for itself, and a leaked node key lets nobody spawn on
  another node.
- **Attenuating** needs only the token: ``cap.attenuate(computations=...,
  nodes=..., expires_at=..., not_before=..., max_input_bytes=...,
  max_uses=...)`` appends caveats and extends every signature chain by them
  (``sig' = HMAC(sig, caveat)``). Narrowing ``nodes`` also drops the other
  nodes' signatures. Nothing can be removed, reordered or widened: that
  would need the key the chain started from.
- **Verifying** (``verify``) recomputes the chain for this node from its key
  and checks every caveat against the request: the computation, this node,
  the time, the input size. Every caveat must hold; a caveat kind this code
  does not know fails closed. ``max_uses`` is returned for the caller to
  count (the node counts uses per token).

Binary form (all integers big-endian)::

    u8 version (1) | u8 n, key_id (1..64 bytes) | 16-byte nonce
    | u8 count, caveats: (u8 kind | u16 n | value)*
    | u8 count, signatures: (u8 n | node name | 32-byte HMAC)*

A caveat's value is a list of names (``u8 count, (u8 n | utf-8)*``) for
``computations`` and ``nodes``, and a u64 for the others (times in ms since
the Unix epoch). This module is compiled (with ``capability.pxd``) and is its
own pure twin.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Iterable

VERSION = 1
NONCE_BYTES = 16
SIG_BYTES = 32
MAX_KEY_ID_BYTES = 64
MAX_CAVEATS = 32
MAX_NAMES = 64
MAX_TOKEN_BYTES = 8192

CAVEAT_COMPUTATIONS = 1
CAVEAT_NODES = 2
CAVEAT_NOT_AFTER = 3
CAVEAT_NOT_BEFORE = 4
CAVEAT_MAX_INPUT_BYTES = 5
CAVEAT_MAX_USES = 6

# Why a token was refused (verify's first result; 0: it allows the request).
OK = 0
DENY_MALFORMED = 1
DENY_UNKNOWN_KEY = 2
DENY_SIGNATURE = 3
DENY_EXPIRED = 4
DENY_NOT_YET_VALID = 5
DENY_NODE = 6
DENY_COMPUTATION = 7
DENY_INPUT_TOO_LARGE = 8
DENY_USES_EXCEEDED = 9
DENY_UNKNOWN_CAVEAT = 10
DENY_VERSION = 11
DENY_REASONS = {
    DENY_MALFORMED: "malformed", DENY_UNKNOWN_KEY: "unknown_key_id", DENY_SIGNATURE: "bad_signature",
    DENY_EXPIRED: "expired", DENY_NOT_YET_VALID: "not_yet_valid", DENY_NODE: "wrong_node",
    DENY_COMPUTATION: "computation_not_allowed", DENY_INPUT_TOO_LARGE: "input_too_large",
    DENY_USES_EXCEEDED: "uses_exceeded", DENY_UNKNOWN_CAVEAT: "unknown_caveat",
    DENY_VERSION: "unknown_version",
}

_NODE_LABEL = b"rsc/cap/node/v1"
_ROOT_LABEL = b"rsc/cap/v1"
_NAME_LISTS = (CAVEAT_COMPUTATIONS, CAVEAT_NODES)


class TokenError(ValueError):
    """A token that cannot be parsed, or an attenuation that cannot be made."""

    def __init__(self, message: str) -> None:
        """``message`` says what is wrong with the token or the attenuation."""
        super().__init__(message)


def node_key(root_key: bytes, node: str) -> bytes:
    """The key ``node`` verifies tokens with, derived from the root key."""
    return hmac.digest(root_key, _NODE_LABEL + _name(node), "sha256")


def _name(value: str) -> bytes:
    raw = value.encode() if isinstance(value, str) else b""
    if not 1 <= len(raw) <= 255:
        raise TokenError(f"a name in a token must be a str of 1..255 UTF-8 bytes, got {value!r}")
    return raw


def _names(values: Iterable[str]) -> bytes:
    items = [_name(v) for v in values]
    if not 1 <= len(items) <= MAX_NAMES:
        raise TokenError(f"a caveat names 1..{MAX_NAMES} entries, got {len(items)}")
    return bytes([len(items)]) + b"".join(bytes([len(r)]) + r for r in items)


def _caveat_bytes(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def _start(key: bytes, key_id: bytes, nonce: bytes) -> bytes:
    return hmac.digest(key, _ROOT_LABEL + bytes([VERSION, len(key_id)]) + key_id + nonce, "sha256")


def _extend(sig: bytes, caveat: bytes) -> bytes:
    return hmac.digest(sig, caveat, "sha256")


def _take(token: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(token):
        raise TokenError("token is truncated")
    return token[pos:pos + n]


def parse(token: bytes) -> tuple[int, bytes, bytes, list[tuple[int, bytes]], list[tuple[str, bytes]]]:
    """``(version, key_id, nonce, caveats, signatures)`` of a token; TokenError
    (with the reason) if it is not exactly one well-formed token."""
    if not isinstance(token, bytes) or not 0 < len(token) <= MAX_TOKEN_BYTES:
        raise TokenError(f"a token is 1..{MAX_TOKEN_BYTES} bytes")
    version = token[0]
    if version != VERSION:
        raise TokenError(f"token version {version}; this side knows {VERSION}")
    n = _take(token, 1, 1)[0]
    key_id = _take(token, 2, n)
    if not key_id:
        raise TokenError("token has an empty key id")
    pos = 2 + n
    nonce = _take(token, pos, NONCE_BYTES)
    pos += NONCE_BYTES
    count = _take(token, pos, 1)[0]
    pos += 1
    if count > MAX_CAVEATS:
        raise TokenError(f"token has more than {MAX_CAVEATS} caveats")
    caveats = []
    for _ in range(count):
        head = _take(token, pos, 3)
        n = int.from_bytes(head[1:], "big")
        caveats.append((head[0], _take(token, pos + 3, n)))
        pos += 3 + n
    count = _take(token, pos, 1)[0]
    pos += 1
    sigs = []
    for _ in range(count):
        n = _take(token, pos, 1)[0]
        try:
            node = _take(token, pos + 1, n).decode()
        except UnicodeDecodeError:
            raise TokenError("token names a node in invalid UTF-8") from None
        sigs.append((node, _take(token, pos + 1 + n, SIG_BYTES)))
        pos += 1 + n + SIG_BYTES
    if pos != len(token):
        raise TokenError(f"{len(token) - pos} bytes after the token")
    return version, key_id, nonce, caveats, sigs


def _build(key_id: bytes, nonce: bytes, caveats: list[tuple[int, bytes]],
           sigs: list[tuple[str, bytes]]) -> bytes:
    out = bytearray([VERSION, len(key_id)])
    out += key_id + nonce + bytes([len(caveats)])
    for kind, value in caveats:
        out += _caveat_bytes(kind, value)
    out.append(len(sigs))
    for node, sig in sigs:
        raw = _name(node)
        out += bytes([len(raw)]) + raw + sig
    if len(out) > MAX_TOKEN_BYTES:
        raise TokenError(f"token would be {len(out)} bytes, over {MAX_TOKEN_BYTES}")
    return bytes(out)


def _decode_names(value: bytes) -> list[str] | None:
    """The names of a name-list caveat, or None if it is malformed."""
    if not value:
        return None
    count, pos, names = value[0], 1, []
    for _ in range(count):
        if pos >= len(value):
            return None
        n = value[pos]
        raw = value[pos + 1:pos + 1 + n]
        if n == 0 or len(raw) != n:
            return None
        try:
            names.append(raw.decode())
        except UnicodeDecodeError:
            return None
        pos += 1 + n
    return names if pos == len(value) and names else None


def verify(token: bytes, keys: dict, node: str, computation: str, input_bytes: int,
           now_ms: int) -> tuple[int, str, int]:
    """Check ``token`` for running ``computation`` on ``node`` with an input of
    ``input_bytes`` at ``now_ms`` (Unix ms). ``keys`` maps a key id (bytes) to
    this node's derived key. Returns ``(code, detail, max_uses)``: code ``OK``
    (0) or a ``DENY_*`` reason with a detail that names no key material, and
    the tightest ``max_uses`` caveat (0 when there is none) for the caller
    to count. It is ``verify_chain`` then ``check_caveats``."""
    code, detail, caveats = verify_chain(token, keys, node)
    if code != OK:
        return code, detail, 0
    return check_caveats(caveats, node, computation, input_bytes, now_ms)


def verify_chain(token: bytes, keys: dict, node: str) -> tuple[int, str, list]:
    """The half of ``verify`` that depends on the token and the node's keys
    only: parse it, recompute this node's signature chain, and check every
    caveat's form. Returns ``(OK, "", caveats)`` or ``(DENY_*, detail, [])``.
    What it accepts stays accepted until the key is retired, so a verifier
    may remember it and run only ``check_caveats`` per request."""
    try:
        _version, key_id, nonce, caveats, sigs = parse(token)
    except TokenError as exc:
        code = DENY_VERSION if "version" in str(exc) else DENY_MALFORMED
        return code, str(exc), []
    key = keys.get(key_id)
    if key is None:
        return DENY_UNKNOWN_KEY, f"no key with id {key_id.hex()} on node {node!r}", []
    mine = [sig for n, sig in sigs if n == node]
    if len(mine) != 1:
        return DENY_NODE, f"the token is not good for node {node!r}", []
    sig = _start(key, key_id, nonce)
    for kind, value in caveats:
        sig = _extend(sig, _caveat_bytes(kind, value))
    if not hmac.compare_digest(sig, mine[0]):
        return DENY_SIGNATURE, "the token's signature does not verify on this node", []
    checked: list[tuple[int, list[str] | int]] = []
    for kind, value in caveats:
        if kind in _NAME_LISTS:
            names = _decode_names(value)
            if names is None:
                return DENY_MALFORMED, f"caveat {kind} is not a list of names", []
            checked.append((kind, names))
        elif kind > CAVEAT_MAX_USES:
            return DENY_UNKNOWN_CAVEAT, f"caveat kind {kind} is unknown here (fails closed)", []
        elif len(value) != 8:
            return DENY_MALFORMED, f"caveat {kind} is not a u64", []
        else:
            checked.append((kind, int.from_bytes(value, "big")))
    return OK, "", checked


def check_caveats(caveats: list, node: str, computation: str, input_bytes: int,
                  now_ms: int) -> tuple[int, str, int]:
    """The half of ``verify`` that depends on the request: every caveat that
    ``verify_chain`` returned must hold for ``computation`` on ``node`` with
    ``input_bytes`` of input at ``now_ms``. Returns ``(code, detail, max_uses)``."""
    max_uses = 0
    for kind, value in caveats:
        if kind == CAVEAT_COMPUTATIONS:
            if computation not in value:
                return DENY_COMPUTATION, f"the token does not allow computation {computation!r}", 0
        elif kind == CAVEAT_NODES:
            if node not in value:
                return DENY_NODE, f"the token does not allow node {node!r}", 0
        elif kind == CAVEAT_NOT_AFTER:
            if now_ms > value:
                return DENY_EXPIRED, f"the token expired at {value} ms", 0
        elif kind == CAVEAT_NOT_BEFORE:
            if now_ms < value:
                return DENY_NOT_YET_VALID, f"the token is valid from {value} ms", 0
        elif kind == CAVEAT_MAX_INPUT_BYTES:
            if input_bytes > value:
                return DENY_INPUT_TOO_LARGE, f"input of {input_bytes} bytes; the token allows {value}", 0
        else:  # CAVEAT_MAX_USES
            max_uses = value if max_uses == 0 else min(max_uses, value)
    return OK, "", max_uses


def _ms(t: float | int | None) -> int | None:
    if t is None:
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
        raise TokenError(f"a time is seconds since the Unix epoch, got {t!r}")
    return int(t * 1000)


def _u64(kind: int, n: int) -> tuple[int, bytes]:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 1 << 64:
        raise TokenError(f"caveat {kind} needs an int in 0..2**64-1, got {n!r}")
    return kind, n.to_bytes(8, "big")


class Capability:
    """An attenuable capability token (see the module docstring)."""

    __slots__ = ("token",)

    def __init__(self, token: bytes) -> None:
        parse(token)  # refuse what is not a token at once
        self.token = token

    @classmethod
    def mint(cls, root_key: bytes, *, key_id: bytes | str, nodes: Iterable[str],
             nonce: bytes | None = None) -> Capability:
        """A token with no caveats, good on each of ``nodes`` (root key holders only)."""
        if not isinstance(root_key, bytes) or len(root_key) < 16:
            raise TokenError("a root key is at least 16 bytes")
        kid = key_id.encode() if isinstance(key_id, str) else key_id
        if not isinstance(kid, bytes) or not 1 <= len(kid) <= MAX_KEY_ID_BYTES:
            raise TokenError(f"key_id is 1..{MAX_KEY_ID_BYTES} bytes")
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        if len(nonce) != NONCE_BYTES:
            raise TokenError(f"a nonce is {NONCE_BYTES} bytes")
        names = list(dict.fromkeys(nodes))
        if not names:
            raise TokenError("a token is good for at least one node")
        sigs = [(n, _start(node_key(root_key, n), kid, nonce)) for n in names]
        return cls(_build(kid, nonce, [], sigs))

    def attenuate(self, *, computations: Iterable[str] | None = None,
                  nodes: Iterable[str] | None = None, expires_at: float | None = None,
                  not_before: float | None = None, max_input_bytes: int | None = None,
                  max_uses: int | None = None) -> Capability:
        """A narrower token: this one's caveats and the given ones (times in
        seconds since the Unix epoch). Needs no key."""
        _v, key_id, nonce, caveats, sigs = parse(self.token)
        new: list[tuple[int, bytes]] = []
        if computations is not None:
            new.append((CAVEAT_COMPUTATIONS, _names(computations)))
        if nodes is not None:
            keep = set(nodes)
            new.append((CAVEAT_NODES, _names(sorted(keep))))
            sigs = [(n, s) for n, s in sigs if n in keep]
            if not sigs:
                raise TokenError("narrowed to nodes the token is not good for")
        for kind, t in ((CAVEAT_NOT_AFTER, _ms(expires_at)), (CAVEAT_NOT_BEFORE, _ms(not_before))):
            if t is not None:
                new.append(_u64(kind, t))
        if max_input_bytes is not None:
            new.append(_u64(CAVEAT_MAX_INPUT_BYTES, max_input_bytes))
        if max_uses is not None:
            new.append(_u64(CAVEAT_MAX_USES, max_uses))
        if len(caveats) + len(new) > MAX_CAVEATS:
            raise TokenError(f"a token holds at most {MAX_CAVEATS} caveats")
        for caveat in new:
            raw = _caveat_bytes(*caveat)
            sigs = [(n, _extend(s, raw)) for n, s in sigs]
        return Capability(_build(key_id, nonce, caveats + new, sigs))

    @property
    def key_id(self) -> bytes:
        """The id of the root key the token was minted from."""
        return parse(self.token)[1]

    @property
    def nodes(self) -> list[str]:
        """The nodes this token carries a signature for."""
        return [n for n, _ in parse(self.token)[4]]

    def verify(self, key: bytes, node: str, computation: str, input_bytes: int = 0,
               now: float | None = None) -> tuple[int, str, int]:
        """``verify`` with this node's derived ``key`` for this token's key id."""
        now_ms = int((time.time() if now is None else now) * 1000)
        return verify(self.token, {self.key_id: key}, node, computation, input_bytes, now_ms)

    def __bytes__(self) -> bytes:
        return self.token

    def __repr__(self) -> str:
        _v, key_id, _n, caveats, sigs = parse(self.token)
        return (f"Capability(key_id={key_id!r}, nodes={[n for n, _ in sigs]}, "
                f"caveats={[k for k, _ in caveats]})")


def key_hash(key: bytes) -> str:
    """A short, non-reversible name for a key in logs (never the key)."""
    return hashlib.blake2b(key, digest_size=6).hexdigest()
