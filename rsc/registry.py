"""Named computations: the only code a node will run.

A node never receives code. It runs what its :class:`Registry` holds: a name
bound to an ``async def f(cx, data)`` or a plain ``def f(cx, data)``, with an
optional codec and input validator::

    registry = Registry()

    @registry.computation("encode_block")
    async def encode_block(cx, data: bytes) -> bytes: ...

    @registry.computation("sum", codec="msgpack", validate=lambda v: isinstance(v, list))
    def total(cx, values):                      # gets and returns Python values
        return sum(values)

With ``codec=None`` the computation takes the input bytes as they came and must
return bytes-like output. With ``codec="msgpack"`` the input is unpacked (never
unpickled: only plain values) and the output packed with MessagePack.

``load_registry("package.module:attr")`` finds a node's registry by name.

A plain ``def`` may be registered ``isolation="process"``: the node then runs
it in a worker process of its own pool (``rsc.node.workers``), where a cancel
always wins (the worker is killed when the computation ignores it), a crash
is that one task's outcome, and ``time_limit=`` / ``memory_limit=`` /
``max_tasks_per_worker=`` hold (docs/ISOLATION.md).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from rsc.errors import InvalidArgument, SerializationError
from rsc.types import ComputationName
from rsc.value_codec import DecodedInputs, Segmented, pack_segmented, unpack_value

__all__ = ["CODECS", "ISOLATIONS", "Computation", "Registry", "load_registry"]

CODECS: tuple[str | None, ...] = (None, "msgpack")
#: Where a sync computation may run: None (the node's ``--isolation`` decides),
#: "thread" (a thread of the node process), "process" (a worker process).
ISOLATIONS: tuple[str | None, ...] = (None, "thread", "process")

F = TypeVar("F", bound=Callable[..., Any])


def _describe(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _is_async_callable(fn: object) -> bool:
    """True if calling ``fn`` returns a coroutine: ``async def`` functions and
    methods, ``functools.partial`` of one, and objects whose ``__call__`` is
    ``async def``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn) or isinstance(fn, type):
        return False
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise InvalidArgument(
            f"a computation must be a callable taking (cx, data), got {type(fn).__name__} {fn!r}"
        )
    target: Callable[..., Any] = fn  # callable, checked above
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        kind = "an async generator" if inspect.isasyncgenfunction(target) else "a generator"
        raise InvalidArgument(
            f"computation {_describe(fn)} is {kind} function; a computation must return its "
            "whole output (use async def or def that returns bytes)"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no introspectable signature (some builtins): trust the caller
    try:
        sig.bind(None, None)
    except TypeError as exc:
        raise InvalidArgument(
            f"computation {_describe(fn)}{sig} must accept two positional arguments (cx, data): {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class Computation:
    """One registered computation: its name, callable, and input/output handling.

    ``is_async`` is computed from ``fn``: True when calling it returns a
    coroutine (the node then runs it on its event loop; otherwise in its
    thread pool). ``inline=True`` marks a plain function that takes
    microseconds: the node calls it on its event loop thread instead of
    handing it to the pool (see ``Registry.register``). Constructing one
    validates every field and raises ``InvalidArgument`` saying what to fix.
    """

    name: ComputationName
    fn: Callable[..., Any]
    codec: str | None = None
    validate: Callable[[Any], Any] | None = None
    inline: bool = False
    isolation: str | None = None
    time_limit: float | None = None
    memory_limit: int | None = None
    max_tasks_per_worker: int | None = None
    is_async: bool = field(init=False)
    # what check_input unpacked, kept for decode_input of the same input object
    _decoded: DecodedInputs = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", ComputationName(self.name))
        if self.codec not in CODECS:
            raise InvalidArgument(
                f"computation {str(self.name)!r}: unknown codec {self.codec!r}; use None (raw bytes) or 'msgpack'"
            )
        if self.validate is not None and not callable(self.validate):
            raise InvalidArgument(
                f"computation {str(self.name)!r}: validate must be a callable taking the decoded input, "
                f"got {type(self.validate).__name__}"
            )
        _check_callable(self.fn)
        object.__setattr__(self, "is_async", _is_async_callable(self.fn))
        object.__setattr__(self, "_decoded", DecodedInputs())
        if not isinstance(self.inline, bool):
            raise InvalidArgument(f"computation {str(self.name)!r}: inline must be True or False, "
                                  f"got {self.inline!r}")
        if self.inline and self.is_async:
            raise InvalidArgument(
                f"computation {str(self.name)!r}: inline is for plain functions (def) that take "
                "microseconds; an async def already runs on the node's event loop, so drop inline=True"
            )
        self._check_isolation()

    def _check_isolation(self) -> None:
        """Validate isolation and the limits; a limit without an isolation
        implies ``isolation="process"`` (only a worker process can enforce it)."""
        name = str(self.name)
        if self.isolation not in ISOLATIONS:
            raise InvalidArgument(f"computation {name!r}: isolation must be 'thread', 'process' or None "
                                  f"(the node's --isolation decides), got {self.isolation!r}")
        for what, v, kind in (("time_limit", self.time_limit, (int, float)),
                              ("memory_limit", self.memory_limit, int),
                              ("max_tasks_per_worker", self.max_tasks_per_worker, int)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, kind) or not v > 0:
                unit = {"time_limit": "seconds > 0", "memory_limit": "bytes > 0 (an int)",
                        "max_tasks_per_worker": "an int >= 1"}[what]
                raise InvalidArgument(f"computation {name!r}: {what} must be {unit}, or None for no "
                                      f"limit; got {v!r}")
        limited = [w for w in ("time_limit", "memory_limit", "max_tasks_per_worker")
                   if getattr(self, w) is not None]
        if self.memory_limit is not None and self.memory_limit < 1 << 20:
            raise InvalidArgument(f"computation {name!r}: memory_limit is in bytes and must be at "
                                  f"least 1 MiB (1048576), got {self.memory_limit!r}")
        if self.isolation == "process" or (limited and self.isolation is None):
            if self.is_async:
                raise InvalidArgument(
                    f"computation {name!r}: process isolation is for plain functions (def); an async "
                    "def runs on the node's event loop and is cancelled there, so drop "
                    + ("isolation='process'" if self.isolation else ", ".join(f"{w}=" for w in limited)))
            if self.inline:
                raise InvalidArgument(f"computation {name!r}: inline=True runs on the node's loop "
                                      "thread; it cannot also run in a worker process (drop one)")
            if self.isolation is None:
                object.__setattr__(self, "isolation", "process")
        elif limited:
            raise InvalidArgument(
                f"computation {name!r}: {', '.join(limited)} can only be enforced in a worker "
                "process; register it with isolation='process' (or leave isolation unset)")

    # -- input ------------------------------------------------------------------
    def decode_input(self, data: bytes | Segmented) -> Any:
        """The value the computation is called with: the bytes themselves
        (codec None) or the unpacked MessagePack value (for a segmented input,
        each large leaf the very ``bytes`` object received). Raises
        ``SerializationError`` when the bytes are not one MessagePack value,
        or a segmented input's references and segments do not match.

        A large input (``DecodedInputs.MIN_BYTES`` or more) that
        ``check_input`` unpacked is not unpacked again: this returns the value
        the check made, once, for that same bytes object (a node checks an
        input when it admits the spawn and decodes it when the computation
        starts)."""
        if self.codec is None:
            return data
        kept, value = self._decoded.take(data)
        return value if kept else unpack_value(data)

    def check_input(self, data: bytes | Segmented) -> str | None:
        """Why ``data`` is unusable, or None when it is fine.

        Unusable means: not decodable by the codec, or rejected by the
        validator. The validator is called with the decoded input; it rejects
        by returning a false value other than None (``False``, ``0``, ``""``)
        or by raising an ``Exception``, whose message becomes the reason.
        Returning None or a true value accepts (so both predicate-style and
        raise-on-error validators work). For a large input (``decode_input``)
        the computation is later called with the very value the validator
        saw.
        """
        if self.codec is None:
            if type(data) is Segmented:
                return (f"computation {str(self.name)!r} takes bytes (codec None); its input "
                        "came as a segmented msgpack value")
            value: Any = data
        else:
            try:
                value = unpack_value(data)
            except SerializationError as exc:
                return str(exc)
        if self.validate is None:
            self._keep(data, value)
            return None
        try:
            verdict = self.validate(value)
        except Exception as exc:
            detail = str(exc) or type(exc).__name__
            return f"validator of {str(self.name)!r} rejected the input: {detail}"
        if verdict is not None and not verdict:
            return f"validator of {str(self.name)!r} rejected the input"
        self._keep(data, value)
        return None

    def _keep(self, data: bytes | Segmented, value: Any) -> None:
        """Keep an accepted input's unpacked value for ``decode_input`` (if
        it is large enough: ``DecodedInputs`` keeps that rule)."""
        if self.codec is not None:
            self._decoded.keep(data, value)

    # -- output -------------------------------------------------------------------
    def encode_output(self, value: Any) -> bytes | memoryview | Segmented:
        """The result bytes for what the computation returned.

        codec None: ``value`` must be bytes, bytearray or memoryview (returned
        as bytes). msgpack: any plain value MessagePack can carry, packed as
        ``msgpack.packb`` packs it, returned as bytes or, for a packed value of
        256 KiB or more, a read-only memoryview of a buffer of its size that
        nothing else holds (``rsc.value_codec.pack_value``: no copy of a large
        result on its way to the socket); a value holding ``bytes`` leaves of
        256 KiB or more as a ``rsc.value_codec.Segmented`` (the leaves travel
        as value segments to an origin that takes them, and the node joins
        them into plain msgpack for one that does not). ``SerializationError``
        otherwise.
        """
        if self.codec is None:
            if isinstance(value, bytes):
                return value
            if isinstance(value, (bytearray, memoryview)):
                return bytes(value)
            raise SerializationError(
                f"computation {str(self.name)!r} returned {type(value).__name__}, not bytes; "
                "return bytes, or register it with codec='msgpack' to return Python values"
            )
        try:
            return pack_segmented(value)
        except Exception as exc:  # msgpack raises TypeError, ValueError, OverflowError, ...
            raise SerializationError(
                f"computation {str(self.name)!r}: cannot pack its {type(value).__name__} output "
                f"with msgpack: {exc}"
            ) from exc

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "sync"
        extra = f", codec={self.codec!r}" if self.codec else ""
        extra += ", validated" if self.validate is not None else ""
        extra += f", isolation={self.isolation!r}" if self.isolation else ""
        return f"Computation({str(self.name)!r}, {kind} {_describe(self.fn)}{extra})"


class Registry:
    """Name → Computation. Names are unique; iteration yields names in
    registration order."""

    __slots__ = ("_items", "_spec")

    def __init__(self) -> None:
        self._items: dict[ComputationName, Computation] = {}
        self._spec: str | None = None  # "module:attr", once known (load_registry, import_spec)

    def register(self, name: str, fn: Callable[..., Any], *, codec: str | None = None,
                 validate: Callable[[Any], Any] | None = None, inline: bool = False,
                 isolation: str | None = None, time_limit: float | None = None,
                 memory_limit: int | None = None,
                 max_tasks_per_worker: int | None = None) -> Computation:
        """Register ``fn`` under ``name``; returns the new Computation.

        ``inline=True`` (plain functions only) has the node call ``fn`` on its
        event loop thread, like the first step of an async computation, instead
        of in its thread pool: no thread hand-off and no asyncio task, so a
        function that takes microseconds costs a fraction of the usual
        per-task overhead. The node does nothing else while it runs (no
        renewals, no other tasks), and a cancel cannot interrupt it once
        started (one that arrives first means it never runs). Use it for
        short, non-blocking work only.

        ``isolation`` (plain functions only): ``"process"`` runs ``fn`` in a
        worker process of the node's pool, ``"thread"`` in the node's thread
        pool, None lets the node's ``--isolation`` decide (thread by default).
        In a worker, ``time_limit`` (seconds; the worker is killed and the
        outcome is the failure ``TimeLimitExceeded``), ``memory_limit`` (bytes
        of address space the computation may add, RLIMIT_AS; exceeding it is
        the failure ``MemoryLimitExceeded``) and ``max_tasks_per_worker`` (a
        worker that ran this computation that many times is replaced) hold.
        Setting any of the three with isolation None means ``"process"``.
        The worker imports this registry by module name, so it must live in
        an importable module (not ``__main__``).

        Raises ``InvalidArgument`` for a bad name (empty, over 255 UTF-8 bytes,
        control characters), a name already registered, a codec other than
        None/'msgpack', an ``fn`` that cannot be called as ``fn(cx, data)``,
        ``inline=True`` on an async function, an isolation other than
        None/'thread'/'process', process isolation (or a limit) on an async or
        inline function, a limit with isolation 'thread', or a limit that is
        not a positive number.
        """
        cname = ComputationName(name)
        if cname in self._items:
            raise InvalidArgument(
                f"computation {str(cname)!r} is already registered "
                f"(to {_describe(self._items[cname].fn)}); names must be unique"
            )
        comp = Computation(cname, fn, codec=codec, validate=validate, inline=inline,
                           isolation=isolation, time_limit=time_limit, memory_limit=memory_limit,
                           max_tasks_per_worker=max_tasks_per_worker)
        self._items[cname] = comp
        return comp

    @overload
    def computation(self, name: F, /) -> F: ...

    @overload
    def computation(self, name: str | None = None, *, codec: str | None = None,
                    validate: Callable[[Any], Any] | None = None, inline: bool = False,
                    isolation: str | None = None, time_limit: float | None = None,
                    memory_limit: int | None = None,
                    max_tasks_per_worker: int | None = None) -> Callable[[F], F]: ...

    def computation(self, name: str | Callable[..., Any] | None = None, *, codec: str | None = None,
                    validate: Callable[[Any], Any] | None = None, inline: bool = False,
                    isolation: str | None = None, time_limit: float | None = None,
                    memory_limit: int | None = None, max_tasks_per_worker: int | None = None) -> Any:
        """Decorator form of :meth:`register`; returns the function unchanged.

        ``@registry.computation("name")``, ``@registry.computation()`` (the
        function's ``__name__``) and bare ``@registry.computation`` all work.
        """
        if callable(name) and not isinstance(name, str):
            fn = name
            self.register(self._default_name(fn), fn)
            return fn

        def decorate(fn: F) -> F:
            self.register(self._default_name(fn) if name is None else name, fn,
                          codec=codec, validate=validate, inline=inline, isolation=isolation,
                          time_limit=time_limit, memory_limit=memory_limit,
                          max_tasks_per_worker=max_tasks_per_worker)
            return fn

        return decorate

    @staticmethod
    def _default_name(fn: object) -> str:
        n = getattr(fn, "__name__", None)
        if not isinstance(n, str):
            raise InvalidArgument(
                f"{fn!r} has no __name__; pass the name: @registry.computation('name')"
            )
        return n

    def get(self, name: str) -> Computation | None:
        """The computation registered under ``name``, or None."""
        if not isinstance(name, str):
            return None
        return self._items.get(name)  # type: ignore[call-overload]

    def import_spec(self) -> str | None:
        """``"package.module:attr"`` under which a fresh interpreter finds this
        very registry (what a node's worker processes import), or None.

        Known when :func:`load_registry` loaded it; otherwise looked for as a
        global of the modules its functions come from (never ``__main__``,
        which a worker cannot import by name)."""
        if self._spec is not None:
            return self._spec
        import sys

        for comp in self._items.values():
            fn: Any = comp.fn
            while isinstance(fn, functools.partial):
                fn = fn.func
            mod_name = getattr(fn, "__module__", None)
            mod = sys.modules.get(mod_name) if isinstance(mod_name, str) else None
            if mod is None or mod_name == "__main__":
                continue
            for attr, value in vars(mod).items():
                if value is self and _dotted(attr):
                    self._spec = f"{mod_name}:{attr}"
                    return self._spec
        return None

    def needs_workers(self, default_isolation: str = "thread") -> bool:
        """True if any computation would run in a worker process on a node
        whose ``--isolation`` is ``default_isolation``."""
        return any(runs_in_process(c, default_isolation) for c in self._items.values())

    def names(self) -> tuple[ComputationName, ...]:
        """The names of the registered computations, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[ComputationName]:
        return iter(tuple(self._items))

    def __repr__(self) -> str:
        return f"Registry({', '.join(map(repr, map(str, self._items)))})"


def runs_in_process(comp: Computation, default_isolation: str = "thread") -> bool:
    """Whether a node with ``--isolation default_isolation`` runs ``comp`` in
    a worker process: sync, not inline, and process-isolated by its own
    registration or by the node's default."""
    if comp.is_async or comp.inline:
        return False
    iso = comp.isolation
    return iso == "process" or (iso is None and default_isolation == "process")


def _dotted(part: str) -> bool:
    return bool(part) and all(p.isidentifier() for p in part.split("."))


def import_failure(spec: str, module_name: str, exc: BaseException) -> str:
    """Why importing ``module_name`` (for ``spec``) failed, in one line: a
    module that is not found is told apart from one that is found but imports
    something missing, and an exception raised while importing names the file
    and line that raised it."""
    if isinstance(exc, ModuleNotFoundError) and exc.name is not None:
        missing = exc.name
        if module_name == missing or module_name.startswith(missing + "."):
            return (f"registry {spec!r}: no module named {missing!r} (looked in the current "
                    f"directory {os.getcwd()} and the installed packages; run from the directory "
                    "that holds it, or put it on PYTHONPATH)")
        return (f"registry {spec!r}: module {module_name!r} imports {missing!r}, which is not "
                f"installed ({_where(exc)}; pip install the package that provides it)")
    if isinstance(exc, SyntaxError):
        return (f"registry {spec!r}: {exc.filename}:{exc.lineno}: {type(exc).__name__}: "
                f"{exc.msg}")
    return (f"registry {spec!r}: importing module {module_name!r} raised "
            f"{type(exc).__name__}: {exc} ({_where(exc)})")


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback outside
    importlib's machinery: where the registry's code raised it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "importlib" not in f.filename and not f.filename.startswith("<frozen")]
    if not frames:
        return "raised while importing"
    last = frames[-1]
    return f"at {last.filename}:{last.lineno}"


def load_registry(spec: str) -> Registry:
    """Import ``"package.module:attr"`` (``attr`` may be dotted) and return the
    Registry it names. Raises ``InvalidArgument`` saying what went wrong."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise InvalidArgument(
            f"registry spec must look like 'package.module:attr', got {spec!r}"
        )
    module_name, attr = (s.strip() for s in spec.split(":"))
    if not _dotted(module_name) or not _dotted(attr):
        raise InvalidArgument(
            f"registry spec {spec!r} is malformed: expected 'package.module:attr' "
            "with dotted Python identifiers on both sides"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise InvalidArgument(import_failure(spec, module_name, exc)) from exc
    walked = module_name
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidArgument(
                f"registry spec {spec!r}: {walked!r} has no attribute {part!r}"
            ) from None
        walked = f"{walked}.{part}" if walked != module_name else f"{module_name}:{part}"
    if not isinstance(obj, Registry):
        raise InvalidArgument(
            f"registry spec {spec!r} names a {type(obj).__name__}, not an rsc Registry; "
            "point it at the object created with Registry()"
        )
    if obj._spec is None:
        obj._spec = f"{module_name}:{attr}"
    return obj
