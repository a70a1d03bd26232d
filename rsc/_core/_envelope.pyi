"""Wire v1 envelope codec, compiled; the same API as ``rsc._core._envelope_py``."""

from collections.abc import Iterable
from typing import Any, Final, Literal

from typing_extensions import disjoint_base

from rsc._core.messages import Message, ResultDelivery, SpawnAck, SpawnRequest

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "IMPLEMENTATION",
    "MAX_NESTING_DEPTH",
    "FrameDecoder",
    "decode",
    "encode",
    "encode_frame",
    "encode_frame_parts",
    "encode_frames",
    "fields",
    "result_delivery",
    "spawn_ack",
    "spawn_request",
]

IMPLEMENTATION: Final[Literal["c"]]
DEFAULT_MAX_FRAME_BYTES: Final[int]
MAX_NESTING_DEPTH: Final[int]
MAX_CANCEL_KIND: Final[int]
MAX_TASK_STATE: Final[int]
MAX_PRIORITY: Final[int]
NONCE_BYTES: Final[int]
PROOF_BYTES: Final[int]

def encode(msg: Message) -> bytes:
    """The frame body of ``msg``; ``InvalidArgument`` naming the field if one is unfit."""

def encode_frame(msg: Message) -> bytes:
    """``msg`` as one frame: a u32 big-endian length, then the body."""

def encode_frame_parts(msg: Message) -> bytes | tuple[bytes, ...]:
    """``msg`` as one frame: its bytes, or parts whose concatenation they are
    (a ``bytes`` value of 64 KiB or more is a part of its own, not copied)."""

def encode_frames(msgs: Iterable[Message]) -> bytes:
    """Several frames back to back, for one coalesced write."""

def decode(body: bytes | bytearray | memoryview) -> Message:
    """The message in one frame body.

    Raises only ``MalformedFrame``, ``VersionMismatch`` or ``UnexpectedMessage``
    for any bytes (``TypeError`` if ``body`` is not bytes-like).
    """

@disjoint_base
class FrameDecoder:
    """Cuts a byte stream into messages; see ``rsc._core._envelope_py.FrameDecoder``."""

    def __init__(self, max_frame_bytes: int = ..., handshake_max_frame_bytes: int | None = ...,
                 handshake_last_kind: int | None = ...) -> None:
        """Frames are capped at ``handshake_max_frame_bytes`` until one of kind
        ``handshake_last_kind`` has been decoded, then at ``max_frame_bytes``."""
    @property
    def max_frame_bytes(self) -> int: ...
    @property
    def in_handshake(self) -> bool:
        """True while the handshake cap applies (never without one)."""
    @property
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Messages of every frame completed so far.

        Raises a ``ProtocolError`` (``MalformedFrame``, ``FrameTooLarge``,
        ``VersionMismatch``, ``UnexpectedMessage``) whose ``messages`` attribute
        holds the messages of the frames before the bad one; the decoder then
        stays poisoned until ``reset()``.
        """

    def receive_buffer(self) -> memoryview | None:
        """A writable view the stream's next bytes may be written straight
        into (the large frame in progress), or None when none is in progress;
        valid until the next ``received``, ``feed`` or ``reset``."""

    def received(self, n: int) -> list[Message]:
        """``n`` bytes were written at the start of ``receive_buffer()``'s
        view: the messages they completed; the errors and poisoning of
        ``feed``, ``InvalidArgument`` if ``n`` is not within the view."""

    def reset(self) -> None:
        """Forget buffered bytes and any error, ready for a new stream."""

def fields(msg: Message) -> tuple[Any, ...]:
    """``msg``'s fields after the envelope, in wire order, as a tuple
    (``rsc._core.schema`` names each index: ``SpawnRequestF.computation``)."""

def sender_time(msg: Message) -> Any:
    """``msg.sender_time``, its envelope's time."""

def spawn_request(sender: str, sender_time: Any, remote_task_id: int, computation: str,
                  input: bytes, lease_ms: int, idempotency_key: bytes, budget: tuple | None,
                  origin_node: str, origin_region: int, origin_task: int,
                  capability: bytes | None, drawn: bool = False,
                  segments: list | None = None) -> SpawnRequest:
    """``SpawnRequest(...)``, the same object, built without its ``__init__``."""

def spawn_ack(sender: str, sender_time: Any, remote_task_id: int, status: int, reject_code: int,
              reject_detail: str, assigned_node: str) -> SpawnAck:
    """``SpawnAck(...)``, the same object, built without its ``__init__``."""

def result_delivery(sender: str, sender_time: Any, remote_task_id: int, outcome_kind: int,
                    payload: Any, execution_time_ns: int,
                    segments: list | None = None) -> ResultDelivery:
    """``ResultDelivery(...)``, the same object, built without its ``__init__``."""
