"""Core value types of rsc: identifiers, inputs, keys, budgets, cancel reasons, outcomes.

All are immutable, compare by value, hash where that makes sense, and print
readably. Constructors validate and raise ``InvalidArgument`` saying what to fix.
"""

from __future__ import annotations

import enum
import itertools
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

from rsc._core import messages as _m
from rsc.value_codec import pack_input, unpack_value

from rsc.errors import (
    InvalidArgument,
    RemoteCancelled,
    failed_error,
    panicked_error,
)

U64_MAX = (1 << 64) - 1
MAX_NAME_BYTES = 255


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{kind} must be a str, got {type(value).__name__}")
    n = len(value.encode("utf-8", "surrogatepass"))
    if n == 0:
        raise InvalidArgument(f"{kind} must not be empty")
    if n > MAX_NAME_BYTES:
        raise InvalidArgument(f"{kind} is {n} bytes in UTF-8; at most {MAX_NAME_BYTES} are allowed")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidArgument(f"{kind} {value!r} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{kind} {value!r} is not valid Unicode (lone surrogate)") from None
    return value


def check_seconds(name: str, value: object) -> float:
    """``value`` as a float if it is a positive, finite number of seconds
    (an int or a float, not a bool), else ``InvalidArgument`` naming ``name``."""
    seconds = float("nan")
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int past any float
            pass
    if not 0 < seconds < float("inf"):
        raise InvalidArgument(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return seconds


#: Characters a NodeId may not hold besides whitespace and control characters:
#: path separators (a node's name becomes its socket file's name).
_NODE_NAME_FORBIDDEN = frozenset("/\\")


def check_node_name(value: object) -> str:
    """``value`` if it is a valid NodeId, else ``InvalidArgument`` saying why:
    1 to 255 bytes in UTF-8, printable, with no whitespace and no path
    separator (``/`` or ``\\``)."""
    name = _check_name("node name", value)
    for c in name:
        if c.isspace() or not c.isprintable() or c in _NODE_NAME_FORBIDDEN:
            what = "a path separator" if c in _NODE_NAME_FORBIDDEN else (
                "whitespace" if c.isspace() else "an unprintable character")
            raise InvalidArgument(
                f"node name {name!r} contains {what} ({c!r}); a node name is 1 to "
                f"{MAX_NAME_BYTES} bytes of printable characters without whitespace, '/' or '\\' "
                "(e.g. worker-1)")
    return name


class NodeId(str):
    """Name of a node or an origin in a cluster: 1 to 255 bytes in UTF-8 of
    printable characters without whitespace or path separators
    (:func:`check_node_name`).

    A ``str`` subclass, so it goes on the wire and into dicts as itself.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> NodeId:
        if type(value) is cls:
            return value
        return super().__new__(cls, check_node_name(value))

    def __repr__(self) -> str:
        return f"NodeId({str.__repr__(self)})"


_NAME_CACHE: dict[str, ComputationName] = {}
_NAME_CACHE_MAX = 4096


class ComputationName(str):
    """Name under which a node registered a computation (1..255 UTF-8 bytes).

    Validated names are cached: a service spawns the same few names over and over.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> ComputationName:
        if type(value) is cls:
            return value
        cached = _NAME_CACHE.get(value) if type(value) is str else None
        if cached is not None:
            return cached
        name = super().__new__(cls, _check_name("computation name", value))
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[str(name)] = name
        return name

    def __repr__(self) -> str:
        return f"ComputationName({str.__repr__(self)})"


class RemoteTaskId(int):
    """A remote task's id, chosen by its origin (uint64). Nodes key tasks by
    ``(origin_node, remote_task_id)``, never by the id alone."""

    __slots__ = ()

    def __new__(cls, value: int) -> RemoteTaskId:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"RemoteTaskId must be an int, got {type(value).__name__}")
        if not 0 <= value <= U64_MAX:
            raise InvalidArgument(f"RemoteTaskId {value} is outside 0..2**64-1")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"RemoteTaskId({int(self)})"

    def __str__(self) -> str:
        return f"RT-{int(self)}"


class RemoteTaskIdAllocator:
    """Hands out RemoteTaskIds for one origin: increasing, never reused in a process.

    Thread-safe. Ids start at 1 (0 is never issued, so it can mean "none").

    .. deprecated::
       Making one warns (``DeprecationWarning``); it will be removed. An
       ``rsc.Runtime`` never used it: a runtime numbers its own tasks, counting
       up from a random start below 2**52 (``rsc.remote.first_task_id``), so
       that a runtime restarted under the same name does not reuse the ids of
       its earlier run, which the nodes still hold. Ids from this allocator,
       counting from 1 in every process, would meet exactly that. Code that
       needs ids of its own can count with ``itertools.count``.
    """

    __slots__ = ("_counter", "_lock")

    def __init__(self, start: int = 1) -> None:
        warnings.warn("rsc.types.RemoteTaskIdAllocator is deprecated and will be removed: an "
                      "rsc.Runtime numbers its own tasks from a random start "
                      "(rsc.remote.first_task_id); count with itertools.count if you need ids",
                      DeprecationWarning, stacklevel=2)
        if start < 1:
            raise InvalidArgument("RemoteTaskIdAllocator start must be >= 1")
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> RemoteTaskId:
        """The next id (1, 2, 3, ...)."""
        with self._lock:
            return RemoteTaskId(next(self._counter))


class RemoteInput:
    """Opaque input bytes for a named computation, with msgpack helpers."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(
                f"RemoteInput takes bytes, got {type(data).__name__}; "
                "use RemoteInput.pack(value) for Python values"
            )
        self._data = bytes(data)

    @classmethod
    def empty(cls) -> RemoteInput:
        """An empty input (``b""``)."""
        return cls(b"")

    @classmethod
    def pack(cls, value: Any) -> RemoteInput:
        """Serialize a plain value (None, bool, int, float, str, bytes, list, dict) with msgpack."""
        return cls(pack_input(value))

    def unpack(self) -> Any:
        """Inverse of :meth:`pack`."""
        return unpack_value(self._data)

    @property
    def data(self) -> bytes:
        """The input's bytes."""
        return self._data

    def __bytes__(self) -> bytes:
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RemoteInput):
            return self._data == other._data
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._data)

    def __repr__(self) -> str:
        head = self._data[:16].hex()
        more = "…" if len(self._data) > 16 else ""
        return f"RemoteInput({len(self._data)} bytes: {head}{more})"


class _RandomBits(Protocol):
    def getrandbits(self, k: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A 128-bit key that makes a retried spawn safe: a node runs a key at most once."""

    raw: int

    def __post_init__(self) -> None:
        if isinstance(self.raw, bool) or not isinstance(self.raw, int) or not 0 <= self.raw < (1 << 128):
            raise InvalidArgument(f"IdempotencyKey must be an int in 0..2**128-1, got {self.raw!r}")

    @classmethod
    def from_raw(cls, value: int) -> IdempotencyKey:
        """The key whose 128-bit value is ``value``."""
        return cls(value)

    @classmethod
    def from_bytes(cls, data: bytes) -> IdempotencyKey:
        """The key of 16 big-endian bytes (its wire form); InvalidArgument for any other
        length."""
        if not isinstance(data, (bytes, bytearray)) or len(data) != 16:
            raise InvalidArgument("IdempotencyKey.from_bytes needs exactly 16 bytes")
        return cls(int.from_bytes(data, "big"))

    @classmethod
    def generate(cls, rng: _RandomBits) -> IdempotencyKey:
        """A fresh key from ``rng`` (``random.Random``, ``secrets.SystemRandom`` or a Cx's entropy)."""
        return cls(rng.getrandbits(128))

    def to_bytes(self) -> bytes:
        """The key as 16 big-endian bytes (its wire form)."""
        return self.raw.to_bytes(16, "big")

    def __str__(self) -> str:
        return f"IK-{self.raw:032x}"

    def __repr__(self) -> str:
        return f"IdempotencyKey({self})"


class CancelKind(enum.IntEnum):
    """Why a task was cancelled; values are the wire kinds of PROTOCOL.md."""

    USER = _m.CANCEL_KIND_USER
    TIMEOUT = _m.CANCEL_KIND_TIMEOUT
    DEADLINE = _m.CANCEL_KIND_DEADLINE
    POLL_QUOTA = _m.CANCEL_KIND_POLL_QUOTA
    COST_BUDGET = _m.CANCEL_KIND_COST_BUDGET
    FAIL_FAST = _m.CANCEL_KIND_FAIL_FAST
    RACE_LOST = _m.CANCEL_KIND_RACE_LOST
    PARENT_CANCELLED = _m.CANCEL_KIND_PARENT_CANCELLED
    RESOURCE_UNAVAILABLE = _m.CANCEL_KIND_RESOURCE_UNAVAILABLE
    SHUTDOWN = _m.CANCEL_KIND_SHUTDOWN
    LINKED_EXIT = _m.CANCEL_KIND_LINKED_EXIT
    LEASE_EXPIRED = _m.CANCEL_KIND_LEASE_EXPIRED

    @property
    def severity(self) -> int:
        """Higher is more severe; ``CancelReason.strengthen`` keeps the higher."""
        return _CANCEL_SEVERITY[self]

    def __str__(self) -> str:
        return self.name.lower()


_CANCEL_SEVERITY = {
    CancelKind.USER: 0,
    CancelKind.TIMEOUT: 1,
    CancelKind.DEADLINE: 1,
    CancelKind.POLL_QUOTA: 2,
    CancelKind.COST_BUDGET: 2,
    CancelKind.FAIL_FAST: 3,
    CancelKind.RACE_LOST: 3,
    CancelKind.LINKED_EXIT: 3,
    CancelKind.PARENT_CANCELLED: 4,
    CancelKind.RESOURCE_UNAVAILABLE: 4,
    CancelKind.LEASE_EXPIRED: 4,
    CancelKind.SHUTDOWN: 5,
}

MAX_CAUSE_DEPTH = 16


@dataclass(frozen=True, slots=True)
class CancelReason:
    """A cancellation's kind and message, where it started, when, and what caused it.

    The cause chain is bounded at ``MAX_CAUSE_DEPTH`` (16) links: deeper causes
    are dropped, oldest first, so a reason never grows without bound.
    """

    kind: CancelKind
    message: str | None = None
    origin_region: int | None = None
    origin_task: int | None = None
    timestamp_ns: int | None = None
    cause: CancelReason | None = field(default=None, compare=True)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", CancelKind(self.kind))
        except ValueError:
            raise InvalidArgument(f"unknown cancel kind {self.kind!r}; expected 0..11") from None
        if self.message is not None and not isinstance(self.message, str):
            raise InvalidArgument("CancelReason.message must be a str or None")
        if self.cause is not None and self.cause.depth >= MAX_CAUSE_DEPTH:
            object.__setattr__(self, "cause", self.cause._truncated(MAX_CAUSE_DEPTH - 1))

    @property
    def depth(self) -> int:
        """Number of links in the cause chain including this one."""
        d, r = 1, self.cause
        while r is not None:
            d, r = d + 1, r.cause
        return d

    def _truncated(self, keep: int) -> CancelReason:
        if keep <= 1 or self.cause is None:
            return CancelReason(self.kind, self.message, self.origin_region, self.origin_task,
                                self.timestamp_ns, None)
        return CancelReason(self.kind, self.message, self.origin_region, self.origin_task,
                            self.timestamp_ns, self.cause._truncated(keep - 1))

    def chain(self) -> list[CancelReason]:
        """This reason, then its cause, its cause's cause, ...: the whole chain, newest
        first."""
        out: list[CancelReason] = []
        r: CancelReason | None = self
        while r is not None:
            out.append(r)
            r = r.cause
        return out

    def caused(self, kind: CancelKind, message: str | None = None, **where: Any) -> CancelReason:
        """A new reason of ``kind`` whose cause is this one (e.g. parent_cancelled)."""
        return CancelReason(kind, message, cause=self, **where)

    def strengthen(self, other: CancelReason) -> CancelReason:
        """The more severe of the two; on a tie the existing one (self) stays."""
        return other if other.kind.severity > self.kind.severity else self

    @classmethod
    def user(cls, message: str | None = None) -> CancelReason:
        """A reason of kind ``user`` with ``message``: a cancel the program asked for."""
        return cls(CancelKind.USER, message)

    def to_wire(self) -> tuple[int, str | None]:
        """``(kind, message)``, the reason's form on the wire (the cause chain stays
        local)."""
        return (int(self.kind), self.message)

    @classmethod
    def from_wire(cls, value: tuple) -> CancelReason:
        """The reason of a wire ``(kind, message)``."""
        return cls(CancelKind(value[0]), value[1])

    def __str__(self) -> str:
        s = str(self.kind) + (f": {self.message}" if self.message else "")
        if self.cause is not None:
            s += f" (caused by {self.cause})"
        return s


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits a task runs under. ``None`` means unlimited.

    ``deadline_ns`` is absolute on the holder's own clock; it crosses the wire
    as time remaining (``to_wire``) and is rebuilt on the receiver's clock
    (``from_wire``). ``priority`` is 0..255, higher runs first.
    """

    deadline_ns: int | None = None
    poll_quota: int | None = None
    cost_quota: int | None = None
    priority: int = 128

    def __post_init__(self) -> None:
        for name in ("deadline_ns", "poll_quota", "cost_quota"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise InvalidArgument(f"Budget.{name} must be a non-negative int or None, got {v!r}")
        p = self.priority
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 255:
            raise InvalidArgument(f"Budget.priority must be an int in 0..255, got {p!r}")

    def meet(self, other: Budget) -> Budget:
        """The tighter of each limit; the higher priority."""

        def tighter(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return Budget(
            tighter(self.deadline_ns, other.deadline_ns),
            tighter(self.poll_quota, other.poll_quota),
            tighter(self.cost_quota, other.cost_quota),
            max(self.priority, other.priority),
        )

    @property
    def is_unlimited(self) -> bool:
        """Whether the budget sets no deadline and no quota."""
        return self.deadline_ns is None and self.poll_quota is None and self.cost_quota is None

    def remaining_ms(self, now_ns: int) -> int | None:
        """Milliseconds left until the deadline at ``now_ns`` (rounded up, 0 once
        passed), or None without a deadline."""
        if self.deadline_ns is None:
            return None
        return max(0, -(-(self.deadline_ns - now_ns) // 1_000_000))

    def to_wire(self, now_ns: int) -> tuple[int | None, int | None, int | None, int]:
        """``(remaining_ms, poll_quota, cost_quota, priority)`` at ``now_ns``: the
        deadline crosses the wire as time remaining."""
        return (self.remaining_ms(now_ns), self.poll_quota, self.cost_quota, self.priority)

    @classmethod
    def from_wire(cls, value: tuple, now_ns: int) -> Budget:
        """The budget of a wire tuple, its deadline rebuilt on this side's clock at
        ``now_ns``."""
        remaining_ms, poll, cost, prio = value[0], value[1], value[2], value[3]
        deadline = None if remaining_ms is None else now_ns + remaining_ms * 1_000_000
        return cls(deadline, poll, cost, prio)


# The identity of ``meet``: no limits and no claim to priority (meet keeps the higher).
Budget.INFINITE = Budget(priority=0)  # type: ignore[attr-defined]


class Severity(enum.IntEnum):
    """Outcome severity lattice: Ok < Err < Cancelled < Panicked."""

    OK = 0
    ERR = 1
    CANCELLED = 2
    PANICKED = 3


class OutcomeKind(enum.IntEnum):
    """RESULT_DELIVERY outcome kinds."""

    SUCCESS = 0
    FAILED = 1
    CANCELLED = 2
    PANICKED = 3


@dataclass(frozen=True, slots=True)
class RemoteOutcome:
    """How a remote task ended: its output bytes, an error message, a cancel reason or a panic."""

    kind: OutcomeKind
    value: Any
    execution_time_ns: int = field(default=0, compare=False)

    @classmethod
    def success(cls, data: bytes, execution_time_ns: int = 0) -> RemoteOutcome:
        """A successful outcome with output ``data``."""
        return cls(OutcomeKind.SUCCESS, bytes(data), execution_time_ns)

    @classmethod
    def failed(cls, message: str, execution_time_ns: int = 0) -> RemoteOutcome:
        """A failed outcome: the computation raised; ``message`` is ``"ExcType: text"``."""
        return cls(OutcomeKind.FAILED, message, execution_time_ns)

    @classmethod
    def cancelled(cls, reason: CancelReason, execution_time_ns: int = 0) -> RemoteOutcome:
        """A cancelled outcome, with the reason that took effect."""
        return cls(OutcomeKind.CANCELLED, reason, execution_time_ns)

    @classmethod
    def panicked(cls, message: str, execution_time_ns: int = 0) -> RemoteOutcome:
        """A panicked outcome: the computation ended outside the error path."""
        return cls(OutcomeKind.PANICKED, message, execution_time_ns)

    @property
    def severity(self) -> Severity:
        """Where the outcome sits in the severity order: Ok < Err < Cancelled < Panicked."""
        return Severity(int(self.kind))

    @property
    def is_success(self) -> bool:
        """Whether the task succeeded."""
        return self.kind is OutcomeKind.SUCCESS

    def unwrap(self) -> bytes:
        """The output bytes, or the matching error raised."""
        if self.kind is OutcomeKind.SUCCESS:
            return self.value
        raise self.error()

    def error(self) -> Exception:
        """The error ``join`` raises for this outcome (RemoteFailed, RemoteCancelled,
        RemotePanicked or a subclass); InvalidArgument for a success."""
        if self.kind is OutcomeKind.FAILED:
            return failed_error(self.value)
        if self.kind is OutcomeKind.CANCELLED:
            return RemoteCancelled(self.value)
        if self.kind is OutcomeKind.PANICKED:
            return panicked_error(self.value)
        raise InvalidArgument("a successful outcome has no error")

    def to_wire(self) -> tuple[int, Any]:
        """``(kind, payload)``, the outcome's form in RESULT_DELIVERY."""
        if self.kind is OutcomeKind.CANCELLED:
            return (2, self.value.to_wire())
        return (int(self.kind), self.value)

    @classmethod
    def from_wire(cls, kind: int, payload: Any, execution_time_ns: int = 0) -> RemoteOutcome:
        """The outcome of a RESULT_DELIVERY's ``(kind, payload)``."""
        k = _OUTCOME_KINDS[kind]  # (calling the Enum is ~10x slower than indexing)
        if k is _CANCELLED_KIND:
            payload = CancelReason.from_wire(payload)
        return cls(k, payload, execution_time_ns)

    def __str__(self) -> str:
        if self.kind is OutcomeKind.SUCCESS:
            return f"Success({len(self.value)} bytes)"
        return f"{self.kind.name.capitalize()}: {self.value}"


_OUTCOME_KINDS = tuple(OutcomeKind)
_CANCELLED_KIND = OutcomeKind.CANCELLED  # a global: Enum class attributes are slow to read (3.11)


class RemoteTaskState(enum.IntEnum):
    """A remote task's lifecycle as seen from its origin; values are the wire states."""

    PENDING = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3
    CANCELLED = 4
    LEASE_EXPIRED = 5

    @property
    def is_terminal(self) -> bool:
        """Whether the task has ended (Completed, Failed or Cancelled)."""
        return self in (RemoteTaskState.COMPLETED, RemoteTaskState.FAILED, RemoteTaskState.CANCELLED)

    def __str__(self) -> str:
        return self.name.title().replace("_", "")
