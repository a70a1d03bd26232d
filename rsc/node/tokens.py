"""What a node that requires capabilities asks of every spawn: ``TokenGate``.

A node started with ``--require-capability`` runs nothing without a token
(``rsc.capability``) that allows this computation, on this node, now, for
this input size. The node engine asks the gate twice (PROTOCOL.md section 7,
"Spawn admission"):

- ``check(token, computation, input_bytes)`` before deduplication, so an
  idempotency key alone never fetches a result: the token must verify with
  one of this node's keys and every caveat must hold;
- ``uses_left(token)`` only for new work (a resend or duplicate of admitted
  work is not a new use), and ``admitted(token)`` once the task is admitted,
  which counts a use against the token's ``max_uses`` caveat.

A token whose chain verified is remembered (at most ``CACHE_TOKENS``, least
recently used dropped first), so a token used again costs only the caveat
checks. Use counts are kept for at most ``MAX_COUNTED_TOKENS`` tokens; when
that many are counted, a new token with a ``max_uses`` caveat is refused
(``DENY_USES_EXCEEDED``, "use table full") rather than counted nowhere.
Counts live as long as the node process.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Callable

from rsc.capability import (CAVEAT_MAX_USES, DENY_REASONS, DENY_USES_EXCEEDED, OK, check_caveats,
                            node_key, verify_chain)
from rsc.errors import InvalidArgument
from rsc.localfs import read_key_file

CACHE_TOKENS = 4096
MAX_COUNTED_TOKENS = 65536




def denial(code: int, detail: str) -> str:
    """A reject's detail: the reason's name, then what failed (no key material).
    The origin's ``CapabilityDenied`` reads the name back as ``denied_by``."""
    return f"{DENY_REASONS.get(code, f'deny_{code}')}: {detail}"


class TokenGate:
    """Checks capability tokens for one node. ``keys`` maps a key id (bytes or
    str) to this node's derived key (``node_key(root, node)``); several ids
    are several keys accepted at once (rotation: retire one by leaving it out)."""

    __slots__ = ("node", "keys", "_clock", "_verified", "_uses", "_last_token", "_last_digest")

    def __init__(self, node: str, keys: dict, *, clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise InvalidArgument("a node that requires capabilities needs at least one key")
        self.node = str(node)
        self.keys = {(k.encode() if isinstance(k, str) else k): v for k, v in keys.items()}
        for kid, key in self.keys.items():
            if not isinstance(kid, bytes) or not isinstance(key, bytes) or len(key) < 16:
                raise InvalidArgument(f"capability key {kid!r}: a key id and a key of at least 16 bytes")
        self._clock = clock  # Unix seconds (the lab hands in its own)
        self._verified: OrderedDict[bytes, tuple[list, int]] = OrderedDict()  # digest -> (caveats, max_uses)
        self._uses: dict[bytes, int] = {}
        # the three calls of one spawn (check, uses_left, admitted) hash its token once
        self._last_token: bytes | None = None
        self._last_digest = b""

    def _digest(self, token: bytes) -> bytes:
        if token is not self._last_token:
            self._last_token = token
            self._last_digest = hashlib.blake2b(token, digest_size=16).digest()
        return self._last_digest

    @classmethod
    def from_root_keys(cls, node: str, root_keys: dict, **kw: object) -> TokenGate:
        """A gate for ``node`` from the cluster's root keys (key id -> root key)."""
        return cls(node, {kid: node_key(root, node) for kid, root in root_keys.items()}, **kw)  # type: ignore[arg-type]

    def check(self, token: bytes | None, computation: str, input_bytes: int) -> str | None:
        """None if ``token`` allows ``computation`` with ``input_bytes`` of input
        here and now; else the reject's detail (``denial``)."""
        if token is None:
            return "missing: this node requires a capability token (RemoteCap.with_token)"
        digest = self._digest(token)
        known = self._verified.get(digest)
        if known is None:
            code, detail, caveats = verify_chain(token, self.keys, self.node)
            if code != OK:
                return denial(code, detail)
            limits = [n for kind, n in caveats if kind == CAVEAT_MAX_USES]
            known = (caveats, min(limits) if limits else 0)
            if len(self._verified) >= CACHE_TOKENS:
                self._verified.popitem(last=False)
            self._verified[digest] = known
        else:
            self._verified.move_to_end(digest)
        code, detail, _max_uses = check_caveats(known[0], self.node, computation, input_bytes,
                                                int(self._clock() * 1000))
        return None if code == OK else denial(code, detail)

    def uses_left(self, token: bytes | None) -> str | None:
        """None if a new task may be admitted under ``token`` (which ``check``
        accepted), else the reject's detail."""
        if token is None:
            return None
        digest = self._digest(token)
        known = self._verified.get(digest)
        max_uses = 0 if known is None else known[1]
        if max_uses == 0:
            return None
        used = self._uses.get(digest, 0)
        if used >= max_uses:
            return denial(DENY_USES_EXCEEDED, f"the token allows {max_uses} uses, all taken")
        if used == 0 and len(self._uses) >= MAX_COUNTED_TOKENS:
            return denial(DENY_USES_EXCEEDED, "use table full: this node counts no more tokens")
        return None

    def admitted(self, token: bytes | None) -> None:
        """A new task was admitted under ``token``: count a use if it has a limit."""
        if token is None:
            return
        digest = self._digest(token)
        known = self._verified.get(digest)
        if known is not None and known[1]:
            self._uses[digest] = self._uses.get(digest, 0) + 1

    def uses(self, token: bytes) -> int:
        """How many tasks were admitted under ``token`` (counted only for tokens with ``max_uses``)."""
        return self._uses.get(self._digest(token), 0)


DEFAULT_KEY_ID = "default"


def _key_files(flag: str, specs: list[str], holder_can: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for spec in specs:
        kid, sep, path = spec.partition("=")
        if not sep:
            kid, path = DEFAULT_KEY_ID, spec
        if not kid or kid in keys:
            raise InvalidArgument(f"{flag} {spec!r}: give each key as KEY_ID=PATH, each key id once")
        keys[kid] = read_key_file(path, flag, holder_can)
    return keys


def gate_from_files(node: str, require: bool, root_key_files: list[str],
                    node_key_files: list[str]) -> TokenGate | None:
    """The gate ``rsc node --require-capability --root-key-file [ID=]PATH
    --node-key-file [ID=]PATH`` asks for (each flag repeatable, one key per
    key id; a bare PATH is key id ``default``), or None without the flag."""
    if not require:
        if root_key_files or node_key_files:
            raise InvalidArgument("--root-key-file/--node-key-file are capability keys: give "
                                  "--require-capability too (without it the node checks no token)")
        return None
    roots = _key_files("--root-key-file", root_key_files, "mint capability tokens for every node")
    mine = _key_files("--node-key-file", node_key_files, "mint capability tokens for this node")
    keys = {kid: node_key(root, node) for kid, root in roots.items()}
    for kid, key in mine.items():
        if kid in keys:
            raise InvalidArgument(f"key id {kid!r} is given as both a root and a node key")
        keys[kid] = key
    if not keys:
        raise InvalidArgument("--require-capability needs a key: --root-key-file PATH (the "
                              "cluster's root key) or --node-key-file PATH (this node's derived key)")
    return TokenGate(node, keys)
