"""The error family of rsc.

Every failure a user can meet has its own type. Errors that travel on the wire
carry their PROTOCOL.md code in ``code`` (ERROR codes for connection-level
errors, reject codes for ``SpawnRejected``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, ClassVar, Protocol

from rsc._core.messages import (
    ERR_AUTH_FAILED,
    ERR_FRAME_TOO_LARGE,
    ERR_MALFORMED,
    ERR_TIMEOUT,
    ERR_UNEXPECTED_MESSAGE,
    ERR_VERSION_MISMATCH,
    REJECT_CAPABILITY_DENIED,
    REJECT_CAPACITY_EXCEEDED,
    REJECT_IDEMPOTENCY_CONFLICT,
    REJECT_INVALID_INPUT,
    REJECT_NODE_SHUTTING_DOWN,
    REJECT_UNKNOWN_COMPUTATION,
)


class CancelReasonLike(Protocol):
    """What a cancellation error carries: an ``rsc.types.CancelReason``.

    Named here by its shape because rsc.types builds errors of this module,
    so this module cannot import it (imports between rsc's modules form no circle).
    """

    @property
    def kind(self) -> int:
        """The cancel's kind (an ``rsc.CancelKind``)."""

    @property
    def message(self) -> str | None:
        """The cancel's message, or None."""


class RemoteError(Exception):
    """Base of every error rsc raises on purpose."""

    def __init__(self, *args: object) -> None:
        """``args`` as for ``Exception``: usually one message saying what
        happened and what to do about it."""
        # Written out so that inspect.signature can read the errors that add
        # no fields of their own (Exception's own __init__ has no signature).
        super().__init__(*args)


# --- wire / connection level -------------------------------------------------


class ProtocolError(RemoteError):
    """A connection-level protocol violation; ``code`` is the ERROR code."""

    code: int = 0

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, {self.message!r})"


class VersionMismatch(ProtocolError):
    """The peer speaks a protocol version other than 1 (ERROR code 1)."""

    code = ERR_VERSION_MISMATCH


class AuthFailed(ProtocolError):
    """The peer's handshake proof was missing or wrong (ERROR code 2)."""

    code = ERR_AUTH_FAILED


class FrameTooLarge(ProtocolError):
    """A frame's length exceeds the receiver's max_frame_bytes (ERROR code 3)."""

    code = ERR_FRAME_TOO_LARGE


class MalformedFrame(ProtocolError):
    """Bytes that are not a well-formed message (ERROR code 4)."""

    code = ERR_MALFORMED


class UnexpectedMessage(ProtocolError):
    """A message this side never accepts here, or an unknown kind (ERROR code 5)."""

    code = ERR_UNEXPECTED_MESSAGE


class PeerTimeout(ProtocolError):
    """The peer left its handshake, or a frame it had started, unfinished for
    longer than the receiver allows (ERROR code 7)."""

    code = ERR_TIMEOUT


class RemoteProtocolError(RemoteError):
    """A node's message that does not fit its task's state (PROTOCOL.md section 9).

    The message is dropped and the connection stays open (it is not a
    connection-level ``ProtocolError``); the runtime counts it
    (``Runtime.stats()["protocol_errors"]``) and the task's handle lists it in
    ``RemoteHandle.protocol_errors``. ``rule`` names the rule the message
    broke, ``remote_task_id`` and ``node`` the task, ``state`` the task's state
    when it came (an ``OriginState`` name) and ``event`` what the message meant
    (an ``OriginEvent`` name).
    """

    def __init__(self, rule: str, node: str, remote_task_id: int, state: str, event: str) -> None:
        super().__init__(f"{event} does not fit task {remote_task_id} on node {node!r} in state "
                         f"{state} ({rule})")
        self.rule = rule
        self.node = node
        self.remote_task_id = remote_task_id
        self.state = state
        self.event = event


class PeerError(RemoteError):
    """The peer sent an ERROR frame and closed the connection."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"peer reported error {code}: {message}")
        self.code = code
        self.message = message


class TransportError(RemoteError):
    """The connection to a node failed (reset, refused, closed)."""


class NodeUnreachable(TransportError):
    """No connection to the node could be made."""

    def __init__(self, node: str, detail: str = "") -> None:
        msg = f"node {node!r} is unreachable"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.node = node


class RuntimeClosed(RemoteError):
    """The origin Runtime closed before this task's outcome arrived (its cancel
    was sent; the node cancels the work, or its lease does)."""


# --- spawning ------------------------------------------------------------------


class NoCapability(RemoteError):
    """spawn_remote was called with a Cx that holds no RemoteCap."""

    def __init__(self, message: str = (
        "this Cx carries no RemoteCap; build it with Cx(..., remote_cap=RemoteCap(...)) "
        "or derive it from one that has one"
    )) -> None:
        super().__init__(message)


REJECT_REASONS = {
    REJECT_UNKNOWN_COMPUTATION: "unknown_computation",
    REJECT_CAPACITY_EXCEEDED: "capacity_exceeded",
    REJECT_NODE_SHUTTING_DOWN: "node_shutting_down",
    REJECT_INVALID_INPUT: "invalid_input",
    REJECT_IDEMPOTENCY_CONFLICT: "idempotency_conflict",
    REJECT_CAPABILITY_DENIED: "capability_denied",
}


class SpawnRejected(RemoteError):
    """The node refused the spawn; ``code`` is the reject code, ``reason`` its name."""

    def __init__(self, code: int, detail: str, node: str = "", computation: str = "") -> None:
        self.code = code
        self.reason = REJECT_REASONS.get(code, f"reject_code_{code}")
        self.detail = detail
        self.node = node
        self.computation = computation
        where = f" by node {str(node)!r}" if node else ""
        what = f" of {str(computation)!r}" if computation else ""
        super().__init__(f"spawn{what} rejected{where}: {self.reason}" + (f" ({detail})" if detail else ""))


class UnknownComputation(SpawnRejected):
    """The node has no computation registered under that name."""


class CapacityExceeded(SpawnRejected):
    """The node is running as many tasks as its capacity allows."""


class NodeShuttingDown(SpawnRejected):
    """The node is draining and admits no new work."""


class InvalidInput(SpawnRejected):
    """The node refused the input (size limit, validator, unusable values)."""


class IdempotencyConflict(SpawnRejected):
    """The idempotency key was already used for a different request."""


class CapabilityDenied(SpawnRejected):
    """The node requires a capability token and this one does not allow the
    spawn. ``denied_by`` names the check that failed: ``missing`` (no token)
    or one of ``rsc.capability.DENY_REASONS`` (``bad_signature``, ``expired``,
    ``not_yet_valid``, ``wrong_node``, ``computation_not_allowed``,
    ``input_too_large``, ``uses_exceeded``, ``unknown_key_id``,
    ``unknown_caveat``, ``malformed``, ``unknown_version``); ``detail`` says
    more. Neither ever holds key material."""

    def __init__(self, code: int, detail: str, node: str = "", computation: str = "") -> None:
        super().__init__(code, detail, node, computation)
        head, sep, _rest = detail.partition(": ")
        self.denied_by = head if sep and head.isidentifier() else "unknown"


class ComputationNotServed(UnknownComputation):
    """Refused at the origin, before anything was sent: the node's catalogue
    (``rsc.catalogue``) is complete and does not list the name. ``served``
    holds every name the node serves, ``suggestions`` the close matches
    (possibly none). An ``UnknownComputation``, as the node would have sent."""

    def __init__(self, node: str, computation: str, served: tuple[str, ...],
                 suggestions: tuple[str, ...], shown: int = 20) -> None:
        self.served = served
        self.suggestions = suggestions
        hint = f"did you mean {' or '.join(map(repr, suggestions))}? " if suggestions else ""
        listed = ", ".join(served[:shown]) + (f" and {len(served) - shown} more" if len(served) > shown else "")
        detail = (f"node {str(node)!r} serves no computation {str(computation)!r}; {hint}"
                  f"it serves: {listed or 'nothing'}")
        super().__init__(REJECT_UNKNOWN_COMPUTATION, detail, node, computation)


class CatalogueUnavailable(RemoteError):
    """The node publishes no computation catalogue (an older rsc, or one
    started without it): ``Runtime.computations`` has nothing to return, and
    spawns to it are checked by the node alone, as before catalogues."""

    def __init__(self, node: str) -> None:
        super().__init__(f"node {str(node)!r} publishes no computation catalogue (an older rsc, "
                         "or a node started without one); its spawns are checked by the node alone")
        self.node = node


class CodecMismatch(InvalidInput):
    """Refused at the origin, before anything was sent: the input does not fit
    the codec the node's catalogue gives the computation (``codec``: "raw" or
    "msgpack"; ``sent``: how the input would have been sent). An
    ``InvalidInput``, as the node would have sent."""

    def __init__(self, node: str, computation: str, codec: str, sent: str, value_type: str = "") -> None:
        self.codec = codec
        self.sent = sent
        got = f"a {value_type}" if value_type else "an input"
        if codec == "raw":
            detail = (f"computation {str(computation)!r} takes raw bytes (codec 'raw'), but {got} "
                      "would be sent packed with msgpack; pass bytes, bytearray, memoryview or "
                      "RemoteInput (and no codec=)")
        else:
            detail = (f"computation {str(computation)!r} takes msgpack values (codec {codec!r}), but "
                      f"{got} would be sent as raw bytes; pass codec='msgpack' to send the bytes as a "
                      "msgpack value, or RemoteInput(data) if they are msgpack-encoded already")
        super().__init__(REJECT_INVALID_INPUT, detail, node, computation)


_REJECT_CLASSES: dict[int, type[SpawnRejected]] = {
    REJECT_UNKNOWN_COMPUTATION: UnknownComputation,
    REJECT_CAPACITY_EXCEEDED: CapacityExceeded,
    REJECT_NODE_SHUTTING_DOWN: NodeShuttingDown,
    REJECT_INVALID_INPUT: InvalidInput,
    REJECT_IDEMPOTENCY_CONFLICT: IdempotencyConflict,
    REJECT_CAPABILITY_DENIED: CapabilityDenied,
}


def spawn_rejected(code: int, detail: str, node: str = "", computation: str = "") -> SpawnRejected:
    """The precise SpawnRejected subclass for a reject code."""
    return _REJECT_CLASSES.get(code, SpawnRejected)(code, detail, node, computation)


# --- outcomes ------------------------------------------------------------------


class RemoteTaskError(RemoteError):
    """Base of the errors that report how a remote task ended badly."""


class RemoteFailed(RemoteTaskError):
    """The computation raised an ordinary error; ``message`` is its text."""

    def __init__(self, message: str) -> None:
        super().__init__(f"remote task failed: {message}")
        self.message = message


class _WireText:
    """An error a node states in an outcome's text (a FAILED or PANICKED
    outcome, so an older origin still shows the text): the text starts with
    the class's name, ``_PATTERN`` matches it, and its groups, converted by
    ``_GROUPS`` (None stays None), are the constructor's arguments after the
    message. ``text`` (each class's own) makes it; ``parse`` reads it back."""

    _PATTERN: ClassVar[re.Pattern[str]]
    _GROUPS: ClassVar[tuple[Callable[[str], Any], ...]]

    @classmethod
    def parse(cls, message: str) -> Any:
        """The error an outcome with ``message`` stands for, if it is this one, else None."""
        if not message.startswith(cls.__name__ + ": "):
            return None
        m = cls._PATTERN.match(message)
        if m is None:
            return None
        return cls(message, *(None if g is None else conv(g)  # type: ignore[call-arg]
                              for conv, g in zip(cls._GROUPS, m.groups())))


class ResultTooLarge(_WireText, RemoteFailed):
    """The computation finished, but its output is too large to deliver in one
    frame: the node delivered this failure instead (``size`` and ``limit`` in
    bytes). Return less, or pass large data by another channel."""

    # The failure's text on the wire (a FAILED outcome, so older origins show
    # it as a RemoteFailed with this message): made and read only here.
    _TEXT = "ResultTooLarge: the output of {computation!r} is {size} bytes; this node delivers at most {limit}"
    _PATTERN = re.compile(r"ResultTooLarge: the output of .* is (\d+) bytes; this node delivers at most (\d+)\Z",
                          re.DOTALL)
    _GROUPS = (int, int)

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit

    @classmethod
    def text(cls, computation: str, size: int, limit: int) -> str:
        """The FAILED outcome's message a node sends for an oversized output."""
        return cls._TEXT.format(computation=computation, size=size, limit=limit)


class ResultNotKept(_WireText, RemoteFailed):
    """A duplicate of a task that ran and finished, whose result the node no
    longer keeps: the node keeps at most ``limit`` bytes of finished results
    for duplicates and dropped the oldest ones to stay within it (the record
    stays, so the task is not run again under its idempotency key). Use a
    new idempotency key to run it again, or raise the node's budget
    (``rsc node --max-kept-result-bytes``)."""

    _TEXT = ("ResultNotKept: node {node!r} no longer keeps this task's result: it ran once, but the node "
             "keeps at most {limit} bytes of results for duplicates and dropped the oldest; it will not "
             "run again under this idempotency key (use a new key, or raise --max-kept-result-bytes)")
    _PATTERN = re.compile(r"ResultNotKept: node .* keeps at most (\d+) bytes of results", re.DOTALL)
    _GROUPS = (int,)

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit

    @classmethod
    def text(cls, node: str, limit: int) -> str:
        """The FAILED outcome's message a node answers a duplicate with once its result is dropped."""
        return cls._TEXT.format(node=node, limit=limit)


class TimeLimitExceeded(_WireText, RemoteFailed):
    """A process-isolated computation ran past its ``time_limit``: the node
    killed its worker. ``limit_s`` is the limit in seconds. Raise the limit
    (``time_limit=`` on the registration, ``rsc node --time-limit``) or make
    the work shorter."""

    _TEXT = ("TimeLimitExceeded: computation {computation!r} ran past its time_limit of {limit:g} s; "
             "its worker was killed (raise time_limit=, or split the work)")
    _PATTERN = re.compile(r"TimeLimitExceeded: computation .* ran past its time_limit of ([0-9.e+-]+) s",
                          re.DOTALL)
    _GROUPS = (float,)

    def __init__(self, message: str, limit_s: float) -> None:
        super().__init__(message)
        self.limit_s = limit_s

    @classmethod
    def text(cls, computation: str, limit_s: float) -> str:
        return cls._TEXT.format(computation=computation, limit=limit_s)



class MemoryLimitExceeded(_WireText, RemoteFailed):
    """A process-isolated computation tried to grow past its ``memory_limit``
    (the worker's RLIMIT_AS): its allocation failed with ``MemoryError`` and
    the worker was replaced. ``limit`` is the limit in bytes. Raise it
    (``memory_limit=``, ``rsc node --memory-limit``) or use less memory."""

    _TEXT = ("MemoryLimitExceeded: computation {computation!r} exceeded its memory_limit of {limit} "
             "bytes ({detail}); raise memory_limit=, or use less memory")
    _PATTERN = re.compile(r"MemoryLimitExceeded: computation .* exceeded its memory_limit of (\d+) bytes",
                          re.DOTALL)
    _GROUPS = (int,)

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit

    @classmethod
    def text(cls, computation: str, limit: int, detail: str) -> str:
        return cls._TEXT.format(computation=computation, limit=limit, detail=detail)



def failed_error(message: str) -> RemoteFailed:
    """The error for a FAILED outcome: ResultTooLarge, ResultNotKept,
    TimeLimitExceeded or MemoryLimitExceeded when the node said so, else
    RemoteFailed."""
    if message[:1] in ("R", "T", "M"):
        for cls in (ResultTooLarge, ResultNotKept, TimeLimitExceeded, MemoryLimitExceeded):
            err = cls.parse(message)
            if err is not None:
                return err
    return RemoteFailed(message)


class RemotePanicked(RemoteTaskError):
    """The computation crashed outside the error path."""

    def __init__(self, message: str) -> None:
        super().__init__(f"remote task panicked: {message}")
        self.message = message


class WorkerCrashed(_WireText, RemotePanicked):
    """The worker process running a process-isolated computation died under
    it: killed by a signal (``signal`` is its number: a segfault, an abort,
    the kernel's OOM killer's SIGKILL) or exited (``exit_status``). Every
    other task on the node went on; the node replaced the worker."""

    _PATTERN = re.compile(r"WorkerCrashed: .*?(?:killed by (?:SIG\w+ )?\(signal (\d+)\)|"
                          r"exited with status (\d+))", re.DOTALL)
    _GROUPS = (int, int)

    def __init__(self, message: str, signal: int | None, exit_status: int | None) -> None:
        super().__init__(message)
        self.signal = signal
        self.exit_status = exit_status

    @classmethod
    def text(cls, computation: str, pid: int, returncode: int) -> str:
        """The PANICKED outcome's message for a worker that died with ``returncode``
        (``subprocess``'s: negative for a signal)."""
        if returncode < 0:
            import signal as _signal

            try:
                name = _signal.Signals(-returncode).name + " "
            except ValueError:
                name = ""
            how = f"killed by {name}(signal {-returncode})"
            if -returncode == _signal.SIGKILL:
                how += "; from outside rsc, e.g. the kernel's OOM killer"
        else:
            how = f"exited with status {returncode}"
        return (f"WorkerCrashed: the worker process (pid {pid}) running computation {computation!r} "
                f"{how}")



def panicked_error(message: str) -> RemotePanicked:
    """The error for a PANICKED outcome: WorkerCrashed when the node said so, else RemotePanicked."""
    err: RemotePanicked | None = WorkerCrashed.parse(message)
    return err if err is not None else RemotePanicked(message)


class RemoteCancelled(RemoteTaskError):
    """The remote task was cancelled; ``reason`` is the CancelReason that took effect."""

    def __init__(self, reason: CancelReasonLike) -> None:
        super().__init__(f"remote task cancelled: {reason}")
        self.reason = reason


class LeaseExpired(RemoteTaskError):
    """The task's lease lapsed with neither a renewal nor a result."""


class LeaseError(RemoteError):
    """A lease operation that the lease's state does not allow (``rsc.Lease``).

    Each kind is a subclass, caught by name (``except LeaseError.Expired``):

    - ``LeaseError.Expired``, "lease expired": renewing a lease whose time ran
      out (which also marks it expired), or releasing an expired lease;
    - ``LeaseError.Released``, "lease already released": renewing a released
      lease, or marking it expired;
    - ``LeaseError.AlreadyReleased``, a ``Released``: releasing a lease twice;
    - ``LeaseError.CreationFailed``, "lease creation failed: ...": a lease
      could not be made (rsc itself raises it nowhere today).

    ``str()`` of a kind made without a detail is that text; when rsc raises
    one, what happened follows after a colon. ``detail`` holds that part.
    """

    text: ClassVar[str] = "lease error"
    Expired: ClassVar[type[LeaseError]]
    Released: ClassVar[type[LeaseError]]
    AlreadyReleased: ClassVar[type[LeaseError]]
    CreationFailed: ClassVar[type[LeaseError]]

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{self.text}: {detail}" if detail else self.text)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.detail,)

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({self.detail!r})"


def _lease_error_kind(name: str, text: str, base: type[LeaseError] = LeaseError) -> type[LeaseError]:
    """A kind of LeaseError, reachable as ``LeaseError.<name>`` (and pickled by that name)."""
    cls = type(name, (base,), {"text": text, "__module__": __name__,
                               "__qualname__": f"LeaseError.{name}",
                               "__doc__": f"LeaseError.{name}: {text}."})
    setattr(LeaseError, name, cls)
    return cls


_lease_error_kind("Expired", "lease expired")
_lease_error_kind("Released", "lease already released")
_lease_error_kind("AlreadyReleased", "lease already released", LeaseError.Released)
_lease_error_kind("CreationFailed", "lease creation failed")


class SerializationError(RemoteError):
    """An input or output could not be packed or unpacked by its codec."""


class InvalidArgument(RemoteError, ValueError):
    """A caller passed a value rsc cannot use; the message says what to fix."""


class WorkerStartError(InvalidArgument):
    """A node's worker processes (process isolation) could not start: the
    registry did not import in a fresh interpreter (it must be importable by
    its module name, not defined in ``__main__``), or a worker died or hung
    before it was ready. The message says which and what the worker said."""


class UnsafePath(InvalidArgument):
    """A file or directory rsc was pointed at is not safe to trust: a socket
    directory others may write without the sticky bit or owned by another user,
    or a key file others may read. The message names the path and the fix."""


class PathInUse(InvalidArgument):
    """A socket path something still answers on, or a launcher directory
    another live launcher holds: rsc refuses to take it over."""


def error_from_code(code: int, message: str) -> ProtocolError | PeerError:
    """Map an ERROR code to the local ProtocolError type (for re-raising)."""
    cls: Any = _ERROR_CLASSES.get(code)
    return cls(message) if cls else PeerError(code, message)


# ERROR code -> its ProtocolError type; each class names its own code.
_ERROR_CLASSES: dict[int, type[ProtocolError]] = {
    cls.code: cls
    for cls in (VersionMismatch, AuthFailed, FrameTooLarge, MalformedFrame, UnexpectedMessage, PeerTimeout)
}


class Cancelled(BaseException):
    """Raised by ``Cx.checkpoint()`` inside a cancelled task.

    A BaseException (like asyncio.CancelledError and trio.Cancelled) so that a
    computation's ``except Exception`` cannot swallow it by accident.
    """

    def __init__(self, reason: CancelReasonLike) -> None:
        super().__init__(f"cancelled: {reason}")
        self.reason = reason
