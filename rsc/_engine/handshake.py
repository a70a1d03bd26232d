"""The three-message handshake (PROTOCOL.md section 4), both sides.

Proofs are HMAC-SHA256 over fixed labels and both nonces; comparisons are
constant-time. With no cluster key every proof is nil, and a keyed side
refuses a nil or wrong proof with auth_failed.
"""

from __future__ import annotations

import hashlib
import hmac

from rsc._core.messages import PROTOCOL_VERSION, Auth, Hello, Welcome
from rsc.errors import AuthFailed, UnexpectedMessage, VersionMismatch

NODE_LABEL = b"rsc/1 node"
ORIGIN_LABEL = b"rsc/1 origin"
NONCE_BYTES = 32


def node_proof(key: bytes, nonce_o: bytes, nonce_n: bytes) -> bytes:
    return hmac.new(key, NODE_LABEL + nonce_o + nonce_n, hashlib.sha256).digest()


def origin_proof(key: bytes, nonce_n: bytes, nonce_o: bytes) -> bytes:
    return hmac.new(key, ORIGIN_LABEL + nonce_n + nonce_o, hashlib.sha256).digest()


def _check_proof(expected: bytes, got: bytes | None, who: str) -> None:
    if got is None:
        raise AuthFailed(f"{who} sent no proof but this side has a cluster key")
    if not hmac.compare_digest(expected, got):
        raise AuthFailed(f"{who}'s proof does not match this side's cluster key")


class NodeHandshake:
    """Node side: HELLO in, WELCOME out, AUTH in, done."""

    __slots__ = ("name", "key", "nonce_n", "features", "peer", "peer_features", "_nonce_o", "done")

    def __init__(self, name: str, key: bytes | None, nonce: bytes, features: dict | None = None) -> None:
        self.name = name
        self.key = key
        self.nonce_n = nonce
        self.features = features or {}
        self.peer: str | None = None
        self.peer_features: dict = {}
        self._nonce_o: bytes | None = None
        self.done = False

    def on_hello(self, msg: Hello, stamp: int) -> Welcome:
        if self._nonce_o is not None:
            raise UnexpectedMessage("HELLO received twice on one connection")
        if msg.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatch(f"this node speaks protocol version 1, peer sent {msg.protocol_version}")
        self._nonce_o = msg.nonce
        self.peer = msg.sender
        self.peer_features = msg.features
        proof = node_proof(self.key, msg.nonce, self.nonce_n) if self.key is not None else None
        return Welcome(self.name, stamp, PROTOCOL_VERSION, self.nonce_n, proof, self.features)

    def on_auth(self, msg: Auth) -> None:
        if self._nonce_o is None or self.done:
            raise UnexpectedMessage("AUTH received outside the handshake")
        if self.key is not None:
            _check_proof(origin_proof(self.key, self.nonce_n, self._nonce_o), msg.proof, "origin")
        self.done = True


class OriginHandshake:
    """Origin side: HELLO out, WELCOME in, AUTH out, done."""

    __slots__ = ("name", "key", "nonce_o", "features", "peer", "peer_features", "done")

    def __init__(self, name: str, key: bytes | None, nonce: bytes, features: dict | None = None) -> None:
        self.name = name
        self.key = key
        self.nonce_o = nonce
        self.features = features or {}
        self.peer: str | None = None
        self.peer_features: dict = {}
        self.done = False

    def hello(self, stamp: int) -> Hello:
        return Hello(self.name, stamp, PROTOCOL_VERSION, "origin", self.nonce_o, self.features)

    def on_welcome(self, msg: Welcome, stamp: int) -> Auth:
        if self.done:
            raise UnexpectedMessage("WELCOME received after the handshake completed")
        if msg.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatch(f"this origin speaks protocol version 1, node sent {msg.protocol_version}")
        if self.key is not None:
            _check_proof(node_proof(self.key, self.nonce_o, msg.nonce), msg.proof, "node")
        self.peer = msg.sender
        self.peer_features = msg.features
        self.done = True
        proof = origin_proof(self.key, msg.nonce, self.nonce_o) if self.key is not None else None
        return Auth(self.name, stamp, proof)
