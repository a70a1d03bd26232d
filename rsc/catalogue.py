"""The computation catalogue: what a node tells origins it serves.

A node publishes, for each computation of its registry, its name, its codec,
how it runs and the first line of its docstring (:class:`ComputationInfo`).
It sends them in its WELCOME ``features`` (as much as fits a handshake frame)
and, when they do not all fit there, in its STATUS_REPLY ``stats`` (the wire
format and its bounds are in PROTOCOL.md section 5, "Computation catalogue").

An origin keeps the catalogue per node (:class:`Catalogue`) and uses it to
refuse, before anything is sent, a spawn the node would refuse or misread:

- a name the node does not serve: :class:`rsc.errors.ComputationNotServed`
  (an ``UnknownComputation``) naming the close matches and what it serves;
- an input that does not fit the computation's codec:
  :class:`rsc.errors.CodecMismatch` (an ``InvalidInput``) saying which codec
  the computation takes.

How ``spawn_remote`` encodes an input does not depend on the catalogue (so a
spawn made before the node's WELCOME arrives is encoded the same way as one
made after; ``rsc.remote:Runtime._spawn`` keeps the rule), and the catalogue
only decides whether the encoded input fits:

=========================================  ===========  ==============================
input (``codec=`` argument)                sent as      fits a computation whose codec is
=========================================  ===========  ==============================
bytes, bytearray, memoryview (``None``)    ``"raw"``    ``"raw"``
``RemoteInput`` (either)                   its bytes    any (pre-encoded by the caller)
any other value, or bytes with             ``"msgpack"`` ``"msgpack"``
``codec="msgpack"``
=========================================  ===========  ==============================

``join`` returns bytes for an input sent raw (or a ``RemoteInput`` with
``codec=None``) and the unpacked value otherwise.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from rsc.errors import CodecMismatch, ComputationNotServed

if TYPE_CHECKING:
    from rsc.registry import Computation, Registry

__all__ = [
    "CATALOGUE_MAX_BYTES_STATUS", "CATALOGUE_MAX_BYTES_WELCOME", "DOC_MAX_BYTES", "MSGPACK", "RAW",
    "Catalogue", "ComputationInfo", "catalogue_features", "describe", "parse", "publish_catalogue",
]

#: The codecs as the catalogue names them (``Registry`` codec None is "raw").
RAW = "raw"
MSGPACK = "msgpack"
#: How a computation runs: on the node's event loop (``async def``), in its
#: thread or worker pool (plain ``def``), or on the loop thread (``inline=True``).
KINDS = ("async", "sync", "inline")
#: Where it runs: the node's event loop, a pool thread, or a worker process.
ISOLATIONS = ("loop", "thread", "process")

#: An entry's docstring line is cut to this many UTF-8 bytes (with "…").
DOC_MAX_BYTES = 240
#: Entries a WELCOME carries at most, in encoded bytes: with the rest of the
#: WELCOME (a few hundred bytes) well under the 64 KiB handshake frame cap.
CATALOGUE_MAX_BYTES_WELCOME = 32 * 1024
#: Entries a STATUS_REPLY carries at most (only when the WELCOME's were partial).
CATALOGUE_MAX_BYTES_STATUS = 8 * 1024 * 1024

# features / stats keys (PROTOCOL.md section 5)
KEY_ENTRIES = "computations"
KEY_TOTAL = "computations_total"

_NAMES_SHOWN = 20  # names a refusal lists before "and N more"


@dataclass(frozen=True, slots=True)
class ComputationInfo:
    """One computation a node serves, as its catalogue describes it.

    - ``name``: the name to spawn it by;
    - ``codec``: ``"raw"`` (it takes and returns bytes) or ``"msgpack"`` (it
      takes and returns plain values); a newer node may name another;
    - ``kind``: ``"async"``, ``"sync"`` or ``"inline"``;
    - ``isolation``: where it runs, ``"loop"`` (the node's event loop: async
      and inline computations), ``"thread"`` or ``"process"`` (a worker
      process; PROTOCOL.md section 7);
    - ``doc``: the first line of its docstring ("" without one), at most
      ``DOC_MAX_BYTES`` bytes of UTF-8.
    """

    name: str
    codec: str
    kind: str
    isolation: str
    doc: str

    def to_wire(self) -> list[str]:
        """The entry as it travels: ``[name, codec, kind, isolation, doc]``."""
        return [self.name, self.codec, self.kind, self.isolation, self.doc]


def _first_line(fn: Any) -> str:
    target = fn
    while hasattr(target, "func") and not inspect.isfunction(target):  # functools.partial
        target = target.func
    doc = inspect.getdoc(target) or ""
    line = doc.strip().split("\n", 1)[0].strip()
    raw = line.encode("utf-8")
    if len(raw) <= DOC_MAX_BYTES:
        return line
    return raw[:DOC_MAX_BYTES - 3].decode("utf-8", "ignore") + "…"


def describe(comp: Computation, default_isolation: str = "thread") -> ComputationInfo:
    """``comp``'s entry on a node whose ``--isolation`` is ``default_isolation``."""
    from rsc.registry import runs_in_process

    if comp.is_async:
        kind, where = "async", "loop"
    elif comp.inline:
        kind, where = "inline", "loop"
    else:
        kind = "sync"
        where = "process" if runs_in_process(comp, default_isolation) else "thread"
    return ComputationInfo(str(comp.name), RAW if comp.codec is None else str(comp.codec), kind,
                           where, _first_line(comp.fn))


def _packed_size(entry: list[str]) -> int:
    return len(msgpack.packb(entry, use_bin_type=True))


def catalogue_features(registry: Registry, default_isolation: str = "thread", *,
                       max_bytes: int = CATALOGUE_MAX_BYTES_WELCOME) -> dict[str, Any]:
    """The catalogue keys a node adds to a map it sends (WELCOME ``features``
    or STATUS_REPLY ``stats``): ``computations``, its entries in registration
    order, as many as fit ``max_bytes`` encoded, and ``computations_total``,
    how many the registry holds. Fewer entries than the total: the catalogue
    is partial."""
    entries: list[list[str]] = []
    used = 0
    for name in registry:
        comp = registry.get(name)
        if comp is None:  # pragma: no cover - a registry never lists a name it lacks
            continue
        entry = describe(comp, default_isolation).to_wire()
        size = _packed_size(entry)
        if used + size > max_bytes:
            break
        entries.append(entry)
        used += size
    return {KEY_ENTRIES: entries, KEY_TOTAL: len(registry)}


def publish_catalogue(features: dict[str, Any], registry: Registry,
                      default_isolation: str = "thread") -> dict[str, Any] | None:
    """Add ``registry``'s catalogue to a node's WELCOME ``features``; return
    the keys its STATUS_REPLY adds (the fuller list) when the WELCOME's part
    is partial, else None (STATUS_REPLY then carries none)."""
    welcome = catalogue_features(registry, default_isolation)
    features.update(welcome)
    if len(welcome[KEY_ENTRIES]) == welcome[KEY_TOTAL]:
        return None
    return catalogue_features(registry, default_isolation, max_bytes=CATALOGUE_MAX_BYTES_STATUS)


@dataclass(frozen=True)
class Catalogue:
    """What an origin knows of one node's computations.

    ``computations`` holds the entries received, in the node's order;
    ``total`` is how many the node serves. ``complete`` is True when every
    one is known: only then is a name missing from it refused at the origin.
    ``codecs`` maps each known name to its codec (what a spawn is checked
    against, one dict lookup per spawn).
    """

    node: str
    computations: tuple[ComputationInfo, ...]
    total: int
    codecs: dict[str, str] = field(repr=False, compare=False)

    @property
    def complete(self) -> bool:
        """True when every computation the node serves is listed."""
        return len(self.computations) >= self.total

    def get(self, name: str) -> ComputationInfo | None:
        """The entry for ``name``, or None if it is not among those known."""
        if name not in self.codecs:
            return None
        return next(c for c in self.computations if c.name == name)

    def refusal(self, name: str, sent: str | None, value_type: str = "") -> Exception | None:
        """The error a spawn of ``name`` with an input sent as ``sent``
        ("raw", "msgpack", or None for a ``RemoteInput``) and of type
        ``value_type`` is refused with at the origin, or None if it may go.

        Refused: a name the node does not serve, when the catalogue is
        complete; an input that does not fit the computation's codec (a
        codec this origin does not know, or ``sent`` None, fits any)."""
        codec = self.codecs.get(name)
        if codec is None:
            if not self.complete:
                return None  # it may be among those not received
            served = tuple(c.name for c in self.computations)
            close = tuple(difflib.get_close_matches(name, served, n=3, cutoff=0.6))
            return ComputationNotServed(self.node, name, served, close, _NAMES_SHOWN)
        if sent is None or codec == sent or codec not in (RAW, MSGPACK):
            return None
        return CodecMismatch(self.node, name, codec, sent, value_type)

    def merged(self, other: Catalogue) -> Catalogue:
        """This catalogue with ``other``'s entries (a later, fuller list of the
        same node) added after its own."""
        seen = set(self.codecs)
        extra = tuple(c for c in other.computations if c.name not in seen)
        return _make(self.node, self.computations + extra, max(self.total, other.total))


def _make(node: str, entries: tuple[ComputationInfo, ...], total: int) -> Catalogue:
    codecs = {c.name: _intern_codec(c.codec) for c in entries}
    return Catalogue(node, entries, max(total, len(entries)), codecs)


def _intern_codec(codec: str) -> str:
    # The known codecs as this module's constants, so a spawn's check can
    # compare by identity first.
    return RAW if codec == RAW else MSGPACK if codec == MSGPACK else codec


def _entry(item: Any) -> ComputationInfo | None:
    if not isinstance(item, (list, tuple)) or len(item) < 5:
        return None
    name, codec, kind, where, doc = item[:5]  # later versions may add trailing elements
    if not all(type(v) is str for v in (name, codec, kind, where, doc)):
        return None
    if not name or len(name.encode("utf-8")) > 255:
        return None
    return ComputationInfo(name, codec, kind, where, doc)


def parse(node: str, source: Any) -> Catalogue | None:
    """The catalogue in a node's WELCOME ``features`` or STATUS_REPLY
    ``stats`` map, or None when the map has none (an older node) or it is
    malformed (then the origin behaves as with an older node)."""
    if not isinstance(source, Mapping):
        return None
    items = source.get(KEY_ENTRIES)
    if not isinstance(items, (list, tuple)):
        return None
    total = source.get(KEY_TOTAL, len(items))
    if type(total) is not int or total < 0:
        return None
    entries: list[ComputationInfo] = []
    seen: set[str] = set()
    for item in items:
        info = _entry(item)
        if info is None:
            return None
        if info.name not in seen:
            seen.add(info.name)
            entries.append(info)
    return _make(str(node), tuple(entries), total)
