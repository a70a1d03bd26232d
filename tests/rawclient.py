"""A raw-socket rsc protocol client written from the wire specification alone.

Deliberately independent of rsc: it uses only the standard library and
``msgpack`` (``use_bin_type=True`` / ``raw=False``), never rsc's codec or
engines, so tests built on it check a real node against the spec and not
against the project's own reading of it.

Synchronous and blocking, one socket per ``RawClient``; every receive takes a
timeout. Messages are plain lists ``[kind, sender, sender_time, *fields]``.
The client's own Lamport clock merges every time it receives (section 2) and
stamps every message it sends with a strictly larger value, unless the caller
passes an explicit ``time=`` (used to send hybrid or vector stamps).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack

# Message kinds (section 3).
HELLO = 0
WELCOME = 1
AUTH = 2
ERROR = 3
SPAWN_REQUEST = 10
SPAWN_ACK = 11
CANCEL_REQUEST = 12
RESULT_DELIVERY = 13
LEASE_RENEWAL = 14
LEASE_RENEWAL_BATCH = 15
PING = 16
PONG = 17
STATUS_REQUEST = 18
STATUS_REPLY = 19
# The compact-renewal extension (section 4, "Compact renewals"), offered with
# HELLO/WELCOME features {"renewal_digest": 1}.
LEASE_RENEWAL_DIGEST = 20
LEASE_RESYNC_REQUEST = 21
RENEWAL_DIGEST_FEATURE = "renewal_digest"

# ERROR codes (section 5).
E_VERSION_MISMATCH = 1
E_AUTH_FAILED = 2
E_FRAME_TOO_LARGE = 3
E_MALFORMED = 4
E_UNEXPECTED_MESSAGE = 5
E_SHUTTING_DOWN = 6

# SPAWN_ACK status and reject codes.
ACCEPTED = 0
REJECTED = 1
R_UNKNOWN_COMPUTATION = 1
R_CAPACITY_EXCEEDED = 2
R_NODE_SHUTTING_DOWN = 3
R_INVALID_INPUT = 4
R_IDEMPOTENCY_CONFLICT = 5
R_CAPABILITY_DENIED = 6

# RESULT_DELIVERY outcome kinds.
SUCCESS = 0
FAILED = 1
CANCELLED = 2
PANICKED = 3

# Cancel reason kinds.
C_USER = 0
C_SHUTDOWN = 9
C_LEASE_EXPIRED = 11

PROTOCOL_VERSION = 1
NONCE_BYTES = 32
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolViolation(AssertionError):
    """The node sent something PROTOCOL.md does not allow."""


class Closed(ConnectionError):
    """The peer closed the connection while a frame was awaited."""


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def frame(body: bytes) -> bytes:
    """``u32 length, big-endian`` followed by ``body``."""
    return _HEADER.pack(len(body)) + body


def unpack_body(body: bytes) -> list:
    """Decode one frame body: exactly one MessagePack array whose first element
    is a uint kind (raises ProtocolViolation otherwise)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(body) + 1)
    unpacker.feed(body)
    try:
        value = unpacker.unpack()
    except msgpack.OutOfData:
        raise ProtocolViolation(f"frame body is not one complete MessagePack value: {body[:64]!r}") from None
    if unpacker.tell() != len(body):
        raise ProtocolViolation(f"trailing bytes after the value in a frame: {body[:64]!r}")
    if not isinstance(value, list) or len(value) < 3:
        raise ProtocolViolation(f"frame body is not a message array: {value!r}")
    if not isinstance(value[0], int) or isinstance(value[0], bool) or value[0] < 0:
        raise ProtocolViolation(f"message kind is not a uint: {value!r}")
    return value


def task_hash(task_id: int) -> int:
    """A task id's 64-bit hash for a renewal digest: SplitMix64's output
    function applied to ``task_id + 0x9E3779B97F4A7C15`` (mod 2**64)."""
    mask = (1 << 64) - 1
    z = (task_id + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def renewal_digest(task_ids: Any) -> int:
    """The digest of a renewal group: the XOR of ``task_hash`` over its ids."""
    d = 0
    for task_id in task_ids:
        d ^= task_hash(task_id)
    return d


def lamport_of(t: Any) -> int:
    """The Lamport value of a logical time (section 2): the uint itself, the
    logical part of a hybrid time, or the largest entry of a vector time."""
    if isinstance(t, bool):
        raise ProtocolViolation(f"bool is not a logical time: {t!r}")
    if isinstance(t, int):
        return t
    if isinstance(t, list) and len(t) >= 2:
        return int(t[1])
    if isinstance(t, dict):
        return max((int(v) for v in t.values()), default=0)
    raise ProtocolViolation(f"not a logical time: {t!r}")


def origin_proof(key: bytes, nonce_n: bytes, nonce_o: bytes) -> bytes:
    return hmac.new(key, b"rsc/1 origin" + nonce_n + nonce_o, hashlib.sha256).digest()


def node_proof(key: bytes, nonce_o: bytes, nonce_n: bytes) -> bytes:
    return hmac.new(key, b"rsc/1 node" + nonce_o + nonce_n, hashlib.sha256).digest()


class RawClient:
    """One connection to a node: its Unix socket (``PATH`` or ``unix:PATH``),
    or ``tcp:HOST:PORT`` (``tcp:[::1]:PORT``), over TLS when ``tls`` (an
    ``ssl.SSLContext``) is given, checking the node's certificate against
    ``server_hostname``.

    ``received`` keeps every decoded message in arrival order (including those
    ``recv_until`` skipped); ``peer_times`` the Lamport value of each.
    """

    def __init__(self, path: str, name: str = "raw-origin", *, connect_timeout: float = 5.0,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = None) -> None:
        if path.startswith("unix:"):
            path = path[len("unix:"):]
        self.path = path
        self.name = name
        self.clock = 0
        self.sent_times: list[int] = []
        self.peer_times: list[int] = []
        self.received: list[list] = []
        self.welcome: list | None = None
        self.nonce_o: bytes | None = None  # our HELLO nonce, once sent
        self._buf = bytearray()
        self._eof = False
        if path.startswith("tcp:"):
            host, _sep, port = path[len("tcp:"):].rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), connect_timeout)
            if tls is not None:
                try:
                    sock = tls.wrap_socket(sock, server_hostname=server_hostname)
                except BaseException:
                    sock.close()
                    raise
            self.sock = sock
            return
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(connect_timeout)
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- send
    def send_raw(self, data: bytes) -> None:
        self.sock.settimeout(10.0)
        self.sock.sendall(data)

    def send_frame(self, body: bytes) -> None:
        self.send_raw(frame(body))

    def tick(self) -> int:
        self.clock += 1
        self.sent_times.append(self.clock)
        return self.clock

    def message(self, kind: int, *fields: Any, time: Any = None, sender: str | None = None) -> list:
        """The list ``[kind, sender, sender_time, *fields]``, stamped with the
        next Lamport value unless ``time`` is given."""
        stamp = self.tick() if time is None else time
        return [kind, self.name if sender is None else sender, stamp, *fields]

    def encode(self, kind: int, *fields: Any, time: Any = None, sender: str | None = None) -> bytes:
        return frame(pack(self.message(kind, *fields, time=time, sender=sender)))

    def send(self, kind: int, *fields: Any, time: Any = None, sender: str | None = None) -> None:
        self.send_raw(self.encode(kind, *fields, time=time, sender=sender))

    # ------------------------------------------------------------- receive
    def _fill(self, deadline: float) -> None:
        """Read more bytes into the buffer; raises TimeoutError or Closed."""
        if self._eof:
            raise Closed("connection closed by the node")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no frame from the node in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("no frame from the node in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self._eof = True
            raise Closed("connection closed by the node")
        self._buf += data

    def recv_frame_body(self, timeout: float = 5.0, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._buf) < 4:
            self._fill(deadline)
        (length,) = _HEADER.unpack_from(self._buf)
        if length == 0:
            raise ProtocolViolation("node sent a zero-length frame")
        if length > max_frame:
            raise ProtocolViolation(f"node sent a frame of {length} bytes")
        while len(self._buf) < 4 + length:
            self._fill(deadline)
        body = bytes(self._buf[4:4 + length])
        del self._buf[:4 + length]
        return body

    def recv(self, timeout: float = 5.0) -> list:
        """The next message as a decoded list; merges its time into our clock."""
        msg = unpack_body(self.recv_frame_body(timeout))
        if not isinstance(msg[1], str) or not 1 <= len(msg[1].encode()) <= 255:
            raise ProtocolViolation(f"bad sender in {msg!r}")
        t = lamport_of(msg[2])
        self.peer_times.append(t)
        self.clock = max(self.clock, t) + 1
        self.received.append(msg)
        return msg

    def recv_until(self, predicate: Callable[[list], bool], timeout: float = 5.0) -> list:
        """Receive until a message satisfies ``predicate``; returns it. Messages
        skipped on the way stay in ``received``. Raises TimeoutError/Closed."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if predicate(msg):
                return msg

    def recv_kind(self, kind: int, timeout: float = 5.0, task: int | None = None) -> list:
        """The next message of ``kind`` (and, if given, about remote task ``task``)."""
        return self.recv_until(lambda m: m[0] == kind and (task is None or m[3] == task), timeout)

    def expect_closed(self, timeout: float = 5.0) -> bool:
        """True when the node closes the connection within ``timeout`` (frames
        arriving first are read and kept in ``received``); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv(max(0.0, deadline - time.monotonic()))
            except Closed:
                return True
            except TimeoutError:
                return False
            except ProtocolViolation:
                continue

    def recv_error(self, timeout: float = 5.0) -> list:
        """Expect the next message to be ERROR; returns it."""
        msg = self.recv(timeout)
        if msg[0] != ERROR:
            raise ProtocolViolation(f"expected ERROR, got {msg!r}")
        return msg

    # ------------------------------------------------------------ handshake
    def hello(self, version: int = PROTOCOL_VERSION, role: str = "origin",
              features: dict | None = None, extra: tuple = ()) -> bytes:
        """Send HELLO; returns our nonce."""
        nonce = os.urandom(NONCE_BYTES)
        self.nonce_o = nonce
        self.send(HELLO, version, role, nonce, {} if features is None else features, *extra)
        return nonce

    def handshake(self, name: str | None = None, key: bytes | None = None,
                  timeout: float = 5.0, features: dict | None = None) -> list:
        """HELLO / WELCOME / AUTH per section 4. Checks WELCOME's shape and, when
        ``key`` is given, the node's proof (a nil proof from the node is then a
        violation). Returns the WELCOME message."""
        if name is not None:
            self.name = name
        nonce_o = self.hello(features=features)
        welcome = self.recv(timeout)
        if welcome[0] != WELCOME:
            raise ProtocolViolation(f"expected WELCOME, got {welcome!r}")
        if len(welcome) < 7:
            raise ProtocolViolation(f"WELCOME too short: {welcome!r}")
        version, nonce_n, proof, features_n = welcome[3:7]
        if version != PROTOCOL_VERSION:
            raise ProtocolViolation(f"WELCOME version {version!r}")
        if not isinstance(nonce_n, bytes) or len(nonce_n) != NONCE_BYTES:
            raise ProtocolViolation(f"WELCOME nonce is not bin 32: {nonce_n!r}")
        if not isinstance(features_n, dict):
            raise ProtocolViolation(f"WELCOME features is not a map: {features_n!r}")
        if key is None:
            if proof is not None and not (isinstance(proof, bytes) and len(proof) == 32):
                raise ProtocolViolation(f"WELCOME proof is neither nil nor bin 32: {proof!r}")
            self.send(AUTH, None)
        else:
            if not isinstance(proof, bytes) or not hmac.compare_digest(proof, node_proof(key, nonce_o, nonce_n)):
                raise ProtocolViolation(f"node's proof does not verify: {proof!r}")
            self.send(AUTH, origin_proof(key, nonce_n, nonce_o))
        self.welcome = welcome
        return welcome

    # -------------------------------------------------------------- helpers
    def spawn(self, task_id: int, computation: str, input: bytes, *, lease_ms: int = 30_000,
              key: bytes | None = None, budget: list | None = None, origin_node: str | None = None,
              origin_region: int = 0, origin_task: int = 0, capability: bytes | None = None,
              extra: tuple = (), time: Any = None) -> bytes:
        """Send SPAWN_REQUEST; returns the idempotency key used."""
        key = os.urandom(16) if key is None else key
        self.send(SPAWN_REQUEST, task_id, computation, input, lease_ms, key, budget,
                  self.name if origin_node is None else origin_node, origin_region, origin_task,
                  capability, *extra, time=time)
        return key

    def cancel(self, task_id: int, reason: list | None = None, origin_node: str | None = None,
               extra: tuple = ()) -> None:
        self.send(CANCEL_REQUEST, task_id, [C_USER, "raw client"] if reason is None else reason,
                  self.name if origin_node is None else origin_node, *extra)

    def ping(self, nonce: int = 0) -> None:
        self.send(PING, nonce)

    def recv_ack(self, task_id: int, timeout: float = 5.0) -> list:
        return self.recv_kind(SPAWN_ACK, timeout, task_id)

    def recv_result(self, task_id: int, timeout: float = 5.0) -> list:
        return self.recv_kind(RESULT_DELIVERY, timeout, task_id)
