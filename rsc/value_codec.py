"""How rsc packs and unpacks the MessagePack values computations take and return.

Two things a large value would otherwise pay for twice:

- **Packing.** ``msgpack.packb`` packs into a buffer that starts at 256 KiB
  and grows by ``realloc`` (each growth below the allocator's mmap threshold
  copies everything packed so far), then copies the whole buffer into a new
  ``bytes``. For a value that is or directly holds a bytes-like object of at
  least ``VIEW_MIN_BYTES`` (``{"id": 7, "blob": data}``), :func:`pack_value`
  guesses the packed size first by a walk of at most ``SIZE_WALK_ITEMS``
  items, packs into a buffer of that size, and returns a ``memoryview`` of
  that buffer instead of copying it: rsc's codec writes such a view to the socket
  as it is (``rsc._core.envelope.encode_frame_parts``). A view is returned
  only when the guess held and the buffer is not much larger than the value
  (at most ``VIEW_SLACK`` of it unused), so memory held for a value is its
  size; otherwise the packed bytes are copied into a ``bytes``, as
  ``packb`` does.
- **Unpacking an input twice.** A node checks a msgpack computation's input
  when it admits the spawn (``Computation.check_input``: it must unpack, and
  the validator, if any, sees the value) and the computation gets the
  unpacked value when it starts (``Computation.decode_input``).
  :class:`DecodedInputs` keeps what the check unpacked, for that very input
  object, until the start takes it: a large input is unpacked once.

- **Large leaves out of band** (value segments). Between peers that both
  offered the ``value_segments`` feature, :func:`pack_segmented` takes each
  ``bytes`` leaf of at least ``SEGMENT_MIN_BYTES`` out of the value: the
  packed value holds a MessagePack ext reference (code ``SEGMENT_EXT``, data
  the leaf's index) in its place, and the leaves travel beside it, each as a
  bin of its own (a :class:`Segmented`). The sender writes each leaf to the
  socket as it is and the receiver receives each straight into a ``bytes``
  of its own, so :func:`unpack_value` puts the very objects received where
  their references were: no copy into a packer's buffer, none out of
  ``unpackb``.

:func:`pack_value` writes the bytes ``packb`` makes; :meth:`Segmented.joined`
turns a segmented value back into them, for a peer that does not take
segments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from rsc.errors import SerializationError

__all__ = ["SEGMENT_EXT", "SEGMENT_MIN_BYTES", "DecodedInputs", "Segmented", "from_pipe",
           "pack_input", "pack_input_segmented", "pack_segmented", "pack_value", "packed_size_guess", "to_pipe",
           "unpack_value"]

#: A value holding a bytes-like leaf of at least this many bytes is returned
#: as a view of the packer's buffer. Smaller ones as bytes: below it the copy
#: saved costs less than the sized packer and the view (measured per task on
#: 64 KiB values: 5-10% more CPU on each side with the view).
VIEW_MIN_BYTES = 256 * 1024
#: At most this share of a returned view's buffer may be unused.
VIEW_SLACK = 1 / 16
#: The size guess walks at most this many items (keys, values, elements);
#: a larger value is packed into msgpack's default buffer, grown as needed.
SIZE_WALK_ITEMS = 64
_HEADER = 9  # the most a scalar or a container/str/bin header takes

#: The MessagePack ext type code of a segment reference: its data is the
#: segment's index, a big-endian unsigned int of 1 to 4 bytes. An ext of this
#: code in a value that travels without segments is an ordinary ext value.
SEGMENT_EXT = 82
#: A ``bytes`` leaf of at least this many bytes travels as a segment.
SEGMENT_MIN_BYTES = 256 * 1024
#: At most this many leaves of one value travel as segments (the rest are
#: packed in place); the wire's limit per message.
MAX_SEGMENTS = 32
# the ext references, by index (a value has at most MAX_SEGMENTS)
_REFS = tuple(msgpack.ExtType(SEGMENT_EXT, bytes((i,))) for i in range(MAX_SEGMENTS))
# what a segmented input's fingerprint bytes start with
_FP_HEAD = b"rsc-segmented"


class Segmented:
    """A MessagePack value packed with its large leaves apart.

    ``packed`` is the value packed with an ext reference (``SEGMENT_EXT``,
    data the index) in each leaf's place; ``segments`` lists the leaves, in
    index order, each referred to exactly once. ``len()`` is the bytes both
    take. Immutable by convention: it is sent, kept and resent as it is."""

    __slots__ = ("packed", "segments")

    def __init__(self, packed: Any, segments: list) -> None:
        self.packed = packed
        self.segments = segments

    def __len__(self) -> int:
        n = len(self.packed)
        for seg in self.segments:
            n += len(seg)
        return n

    def fingerprint_parts(self) -> tuple[Any, ...]:
        """What a node fingerprints this input as (with an idempotency key), in
        parts: the plain MessagePack it stands for (:meth:`joined`), as the
        pieces of the splice that makes it (slices of ``packed``, bin headers,
        the segments themselves), so the same value fingerprints alike sent
        with segments or without. The fingerprint functions
        (``rsc._core._idemtable_py.fingerprint``) take the tuple as the bytes
        it stands for and hash it part by part: nothing is joined, no
        segment copied.

        A value whose references do not match its segments stands for no
        plain value (a node rejects it ``invalid_input``): its parts are
        :meth:`framed_fingerprint_parts`, which no plain value's bytes are."""
        packed = self.packed if type(self.packed) is bytes else bytes(self.packed)
        spans = _splice_spans(packed, len(self.segments))
        if spans is None:
            return self.framed_fingerprint_parts()
        return tuple(_splice(packed, spans, self.segments))

    def framed_fingerprint_parts(self) -> tuple[Any, ...]:
        """The framed form: ``b"rsc-segmented"``, then the packed value and
        each segment, each after its length (u64be), so other segments or the
        same bytes cut otherwise give other bytes. What rsc fingerprinted
        every segmented input as before :meth:`fingerprint_parts` gave its
        plain form: records written then hold it (a node checks a mismatch
        against it too, ``rsc._engine.node:input_matches``). It starts with a
        positive fixint followed by more bytes, which no single MessagePack
        value does: it is never a plain value's bytes."""
        parts = [_FP_HEAD + len(self.packed).to_bytes(8, "big"), self.packed]
        for seg in self.segments:
            parts.append(len(seg).to_bytes(8, "big"))
            parts.append(seg)
        return tuple(parts)

    def fingerprint_bytes(self) -> bytes:
        """The bytes :meth:`fingerprint_parts` stands for, joined: for a
        well-formed value its :meth:`joined` bytes."""
        return b"".join(self.fingerprint_parts())

    def joined(self) -> bytes:
        """The value as plain MessagePack (what :func:`pack_value` makes of
        it): for a peer that does not take segments. ``SerializationError``
        when the references and segments do not match.

        A splice, one copy of each segment: the packed value with each
        reference replaced by its segment as a bin (``_ref_spans`` finds
        them), written into one ``bytes``. Unpacking and packing again would
        copy each segment into the packer's growing buffer and out of it."""
        _unpack_segmented(self)  # the checks: well-formed, each segment referred to once
        packed = self.packed if type(self.packed) is bytes else bytes(self.packed)
        return b"".join(_splice(packed, _ref_spans(packed), self.segments))

    def __eq__(self, other: object) -> bool:
        if type(other) is not Segmented:
            return NotImplemented
        return bytes(self.packed) == bytes(other.packed) and self.segments == other.segments

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        sizes = ", ".join(str(len(seg)) for seg in self.segments)
        return f"Segmented({len(self.packed)} bytes packed, segments of {sizes} bytes)"


def _bin_header(n: int) -> bytes:
    """The MessagePack bin header of ``n`` bytes, as ``packb`` writes it."""
    if n < 0x100:
        return bytes((0xC4, n))
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _splice(packed: bytes, spans: list[tuple[int, int, int]], segments: list[bytes]) -> list[Any]:
    """The pieces of ``packed`` with each reference (``spans``, from
    :func:`_ref_spans`) replaced by its segment as a bin: views of
    ``packed`` between the references, bin headers, the segments."""
    view = memoryview(packed)
    pieces: list[Any] = []
    last = 0
    for start, end, index in spans:
        seg = segments[index]
        pieces.append(view[last:start])
        pieces.append(_bin_header(len(seg)))
        pieces.append(seg)
        last = end
    pieces.append(view[last:])
    return pieces


def _splice_spans(packed: bytes, n_segments: int) -> list[tuple[int, int, int]] | None:
    """``_ref_spans(packed)`` when its references name each of
    ``n_segments`` segments exactly once (the splice stands for a plain
    value), else None. A walk of the headers, no unpacking: what a
    fingerprint needs, cheaper than :func:`_unpack_segmented`."""
    try:
        spans = _ref_spans(packed)
    except SerializationError:
        return None
    if len(spans) != n_segments:
        return None
    seen = [False] * n_segments
    for span in spans:
        index = span[2]
        if index >= n_segments or seen[index]:
            return None
        seen[index] = True
    return spans


def _ref_spans(packed: bytes) -> list:
    """Where the segment references are in ``packed``: ``(start, end,
    index)`` of each, in order. A walk of the item headers, skipping over
    the contents of strs, bins and exts. ``SerializationError`` when
    ``packed`` is not one MessagePack value (truncated, bytes after it, a
    byte no item starts with) or a reference's data is not 1 to 4 bytes;
    it does not look inside strs (UTF-8) or at what the references name."""
    spans: list = []
    n = len(packed)
    pos = 0
    pending = 1  # items still to walk
    while pending:
        if pos >= n:
            raise SerializationError("cannot unpack msgpack value: truncated")
        pending -= 1
        c = packed[pos]
        if c <= 0x7F or c >= 0xE0:  # fixint
            pos += 1
        elif c <= 0x8F:  # fixmap
            pending += 2 * (c & 0x0F)
            pos += 1
        elif c <= 0x9F:  # fixarray
            pending += c & 0x0F
            pos += 1
        elif c <= 0xBF:  # fixstr
            pos += 1 + (c & 0x1F)
        elif 0xCC <= c <= 0xD3:  # uint 8-64, int 8-64: 1, 2, 4, 8 bytes after the first
            pos += 1 + (1 << ((c - 0xCC) & 3))
        elif c == 0xC0 or c == 0xC2 or c == 0xC3:  # nil, false, true
            pos += 1
        elif c == 0xCA or c == 0xCB:  # float 32, 64
            pos += 5 if c == 0xCA else 9
        elif c == 0xC4 or c == 0xD9:  # bin8, str8
            if pos + 2 > n:
                raise SerializationError("cannot unpack msgpack value: truncated")
            pos += 2 + packed[pos + 1]
        elif c == 0xC5 or c == 0xDA:  # bin16, str16
            pos += 3 + int.from_bytes(packed[pos + 1:pos + 3], "big")
        elif c == 0xC6 or c == 0xDB:  # bin32, str32
            pos += 5 + int.from_bytes(packed[pos + 1:pos + 5], "big")
        elif c == 0xDC:  # array16
            pending += int.from_bytes(packed[pos + 1:pos + 3], "big")
            pos += 3
        elif c == 0xDD:  # array32
            pending += int.from_bytes(packed[pos + 1:pos + 5], "big")
            pos += 5
        elif c == 0xDE:  # map16
            pending += 2 * int.from_bytes(packed[pos + 1:pos + 3], "big")
            pos += 3
        elif c == 0xDF:  # map32
            pending += 2 * int.from_bytes(packed[pos + 1:pos + 5], "big")
            pos += 5
        else:  # an ext: fixext 1-16 (0xd4-0xd8), ext 8/16/32 (0xc7-0xc9)
            if 0xD4 <= c <= 0xD8:
                head, size = 2, 1 << (c - 0xD4)
            elif 0xC7 <= c <= 0xC9:
                k = 1 << (c - 0xC7)  # 1, 2 or 4 length bytes
                head, size = 2 + k, int.from_bytes(packed[pos + 1:pos + 1 + k], "big")
            else:  # 0xc1, never used
                raise SerializationError(f"cannot unpack msgpack value: byte 0x{c:02x} at {pos}")
            if pos + head > n:
                raise SerializationError("cannot unpack msgpack value: truncated")
            if packed[pos + head - 1] == SEGMENT_EXT:
                if not 1 <= size <= 4:
                    raise SerializationError(f"segment reference of {size} bytes (1 to 4: the "
                                             "segment's index)")
                index = int.from_bytes(packed[pos + head:pos + head + size], "big")
                spans.append((pos, pos + head + size, index))
            pos += head + size
    if pos != n:
        raise SerializationError("cannot unpack msgpack value: " + (
            "truncated" if pos > n else f"{n - pos} bytes after the value"))
    return spans


def to_pipe(data: Any) -> Any:
    """An input or output as a plain msgpack value, for a pipe to a worker
    process: a ``Segmented`` as ``[packed, segments]`` (a list, which no bytes
    value is), anything else as it is. :func:`from_pipe` undoes it."""
    return [data.packed, data.segments] if type(data) is Segmented else data


def from_pipe(data: Any) -> Any:
    """What :func:`to_pipe` was given, from what it returned (unpacked)."""
    return Segmented(data[0], data[1]) if type(data) is list else data


def _cut(value: Any, segments: list, budget: list) -> Any:
    """``value`` with each ``bytes`` leaf of at least SEGMENT_MIN_BYTES
    appended to ``segments`` and replaced by its reference: the same object
    when nothing in it was replaced, else a copy of the containers on the way
    to what was. Looks at most ``budget[0]`` items in all (each look spends
    one)."""
    t = type(value)
    if t is bytes:
        if len(value) >= SEGMENT_MIN_BYTES and len(segments) < MAX_SEGMENTS:
            segments.append(value)
            return _REFS[len(segments) - 1]
        return value
    if t is dict:
        pairs: Any = value.items()
    elif t is list or t is tuple:
        pairs = enumerate(value)
    else:
        return value
    out: Any = None
    for k, v in pairs:
        budget[0] -= 1
        if budget[0] < 0:
            break
        new = _cut(v, segments, budget)
        if new is not v:
            if out is None:
                out = dict(value) if t is dict else list(value)
            out[k] = new
    return value if out is None else out


def pack_segmented(value: Any) -> bytes | memoryview | Segmented:
    """``value`` packed for a peer that takes value segments: a
    :class:`Segmented` when it holds ``bytes`` leaves of at least
    ``SEGMENT_MIN_BYTES`` (found within ``SIZE_WALK_ITEMS`` items of a walk
    through its dicts, lists and tuples; at most ``MAX_SEGMENTS``), else what
    :func:`pack_value` returns; also that for a value that holds an ext of
    code ``SEGMENT_EXT`` of its own. Only ``bytes`` leaves are taken out: they
    cannot change before they are sent (a ``bytearray`` or a view could).
    Raises as :func:`pack_value` does."""
    t = type(value)
    if t is not dict and t is not list and t is not tuple and t is not bytes:
        return pack_value(value)
    segments: list = []
    cut = _cut(value, segments, [SIZE_WALK_ITEMS])
    if not segments:
        return pack_value(value)
    packed = msgpack.packb(cut, use_bin_type=True)
    if _splice_spans(packed, len(segments)) is None:
        # the value holds an ext of the segment code itself (anywhere, even
        # past the walk): a receiver would take it for a reference, so the
        # value goes plain, where such an ext is an ordinary value
        return pack_value(value)
    return Segmented(packed, segments)


def packed_size_guess(value: Any) -> int | None:
    """An estimate of the size ``value`` takes packed, if it has at most
    ``SIZE_WALK_ITEMS`` items (None for a larger value): each item counts 9
    bytes (the most a header or a scalar takes) plus its content's length
    for a bytes-like or str item. So it is at least the packed size, by at
    most 9 bytes an item, unless a str holds non-ASCII characters (each
    counted as one byte) or an item is of a type msgpack packs longer (an
    ext type)."""
    budget = SIZE_WALK_ITEMS
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        budget -= 1
        if budget < 0:
            return None
        if isinstance(v, (bytes, bytearray)):
            total += _HEADER + len(v)
        elif isinstance(v, memoryview):
            total += _HEADER + v.nbytes
        elif isinstance(v, str):
            total += _HEADER + len(v)
        elif isinstance(v, (list, tuple)):
            total += _HEADER
            stack.extend(v)
        elif isinstance(v, Mapping):
            total += _HEADER
            for k, item in v.items():
                stack.append(k)
                stack.append(item)
        else:
            total += _HEADER
    return total


def _has_large_leaf(value: Any) -> bool:
    """Whether ``value`` is, or directly holds (as an item of a list or tuple
    or a value of a dict of at most ``SIZE_WALK_ITEMS`` items), a bytes-like
    object of at least ``VIEW_MIN_BYTES``: the values :func:`pack_value`
    packs into a buffer of their own. A look at the top level only, so that
    a small value costs a few type checks more than ``packb``."""
    t = type(value)
    if t is dict:
        if len(value) > SIZE_WALK_ITEMS:
            return False
        value = value.values()
    elif t is not list and t is not tuple:
        return (t is bytes or t is bytearray or t is memoryview) and len(value) >= VIEW_MIN_BYTES
    elif len(value) > SIZE_WALK_ITEMS:
        return False
    for v in value:
        t = type(v)
        if (t is bytes or t is bytearray or t is memoryview) and len(v) >= VIEW_MIN_BYTES:
            return True
    return False


def pack_value(value: Any) -> bytes | memoryview:
    """``value`` packed with MessagePack (``use_bin_type=True``): the same
    bytes as ``msgpack.packb``, as ``bytes`` or, for a value that is or
    directly holds a bytes-like object of at least ``VIEW_MIN_BYTES`` (an
    item of a list or tuple, a value of a dict), a read-only ``memoryview``
    of a buffer of about its size that nothing else refers to. Raises
    ``TypeError``, ``ValueError`` or ``OverflowError`` as ``packb`` does."""
    if not _has_large_leaf(value):
        return msgpack.packb(value, use_bin_type=True)
    guess = packed_size_guess(value)
    if guess is None or guess < VIEW_MIN_BYTES:
        return msgpack.packb(value, use_bin_type=True)
    packer = msgpack.Packer(use_bin_type=True, autoreset=False, buf_size=guess)
    packer.pack(value)
    view = packer.getbuffer()
    n = view.nbytes
    if n < VIEW_MIN_BYTES or n > guess or guess - n > n * VIEW_SLACK:
        # the guess missed (the buffer grew, or is much larger than the value)
        out = bytes(view)
        view.release()
        return out
    return view.toreadonly()


def pack_input(value: Any) -> bytes | memoryview:
    """:func:`pack_value` for a spawn's input: ``SerializationError`` saying
    what could not be packed, for anything MessagePack cannot carry."""
    try:
        return pack_value(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _unpackable(value, exc) from exc


def pack_input_segmented(value: Any) -> bytes | memoryview | Segmented:
    """:func:`pack_segmented` for a spawn's input to a node that takes value
    segments: ``SerializationError`` as :func:`pack_input` raises it."""
    try:
        return pack_segmented(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _unpackable(value, exc) from exc


def _unpackable(value: Any, exc: Exception) -> SerializationError:
    return SerializationError(f"cannot pack {type(value).__name__} with msgpack: {exc}")


def unpack_value(data: Any) -> Any:
    """Unpack one msgpack value from bytes-like ``data`` (never executes or
    imports anything); ``SerializationError`` when it is not exactly one.

    For a :class:`Segmented` ``data``, each segment reference is replaced by
    its segment, the very object (no copy); ``SerializationError`` also when a
    reference names no segment or is malformed, or a segment is referred to
    other than exactly once."""
    if type(data) is Segmented:
        return _unpack_segmented(data)
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise SerializationError(f"cannot unpack msgpack value: {exc}") from exc


class _Resolver:
    """The ext hook of one segmented unpack: each reference to its segment."""

    __slots__ = ("segments", "used")

    def __init__(self, segments: list) -> None:
        self.segments = segments
        self.used = [False] * len(segments)

    def __call__(self, code: int, data: bytes) -> Any:
        if code != SEGMENT_EXT:
            return msgpack.ExtType(code, data)
        if not 1 <= len(data) <= 4:
            raise SerializationError(f"segment reference of {len(data)} bytes (1 to 4: the "
                                     "segment's index)")
        index = int.from_bytes(data, "big")
        if index >= len(self.segments):
            raise SerializationError(f"segment reference {index}, but the value has "
                                     f"{len(self.segments)} segments")
        if self.used[index]:
            raise SerializationError(f"segment {index} is referred to twice")
        self.used[index] = True
        return self.segments[index]


def _unpack_segmented(data: Segmented) -> Any:
    resolve = _Resolver(data.segments)
    try:
        value = msgpack.unpackb(data.packed, raw=False, strict_map_key=False, ext_hook=resolve)
    except SerializationError as exc:
        raise SerializationError(f"cannot unpack msgpack value: {exc}") from None
    except Exception as exc:  # msgpack raises several unrelated types
        raise SerializationError(f"cannot unpack msgpack value: {exc}") from exc
    if not all(resolve.used):
        unused = [i for i, used in enumerate(resolve.used) if not used]
        raise SerializationError(f"cannot unpack msgpack value: segments {unused} are not "
                                 "referred to by the value")
    return value


class DecodedInputs:
    """Values unpacked from inputs, each kept for the input object it came
    from until it is taken.

    ``keep(data, value)`` after unpacking ``data``; ``take(data)`` returns
    ``(True, value)`` for that same object (not an equal one) once, then
    forgets it. Only inputs of at least ``MIN_BYTES`` are kept (a small one
    costs less to unpack again): the one place that rule is kept, ``keep``
    and ``take`` both apply it, so a caller hands every input to them. Bounded: at most ``max_entries`` values,
    for inputs of at most ``max_bytes`` in all; the oldest go first, and an
    input whose value went is simply unpacked again. Safe to call from
    several threads."""

    MIN_BYTES = 256 * 1024

    __slots__ = ("_by_id", "_bytes", "_lock", "max_bytes", "max_entries")

    def __init__(self, max_entries: int = 64, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # id(data) -> (data, value); holding data keeps its id from being reused
        self._by_id: dict[int, tuple[Any, Any]] = {}
        self._bytes = 0
        # imported here, not with the module: the engines import this module
        # (for Segmented) and do no I/O, threads included
        import threading

        self._lock = threading.Lock()

    def keep(self, data: Any, value: Any) -> None:
        """Keep ``value``, unpacked from ``data``, for ``take(data)``."""
        size = len(data)
        if size < self.MIN_BYTES or size > self.max_bytes:
            return
        with self._lock:
            old = self._by_id.pop(id(data), None)
            if old is not None:
                self._bytes -= len(old[0])
            self._by_id[id(data)] = (data, value)
            self._bytes += size
            while len(self._by_id) > self.max_entries or self._bytes > self.max_bytes:
                oldest = next(iter(self._by_id))
                self._bytes -= len(self._by_id.pop(oldest)[0])

    def take(self, data: Any) -> tuple[bool, Any]:
        """``(True, value)`` if a value unpacked from this very ``data`` is
        kept (it is forgotten now), else ``(False, None)``."""
        if not self._by_id or len(data) < self.MIN_BYTES:
            return False, None
        with self._lock:
            entry = self._by_id.get(id(data))
            if entry is None or entry[0] is not data:
                return False, None
            del self._by_id[id(data)]
            self._bytes -= len(data)
            return True, entry[1]

    def __len__(self) -> int:
        return len(self._by_id)
