"""The idempotency store, pure-Python twin of ``rsc._core._idemtable``.

Rules this file keeps (docs/PROTOCOL.md section 7, "Rules the node keeps"):

- A record is keyed by its 16-byte idempotency key and remembers the request's
  fingerprint (a tagged hash of computation and input, see ``fingerprint``), its owner
  ``(origin, task_id)``, its aliases, and once finished its outcome and expiry.
- ``check_and_record`` decides New / Duplicate / Conflict in one step. A
  duplicate arriving while the task runs becomes an alias; ``complete`` returns
  the aliases to deliver to.
- Every ``(origin, task_id)`` present (owner or alias) names exactly one record
  (``owner_of``); reusing one with a different key is a conflict.
- A key the origin drew at random itself (a SPAWN_REQUEST that says
  ``drawn``) is recorded with ``DRAWN_FINGERPRINT``, a tag and no hash
  (``spawn_fingerprint``). Such a record matches a later spawn only from the
  origin that owns it and only one that says ``drawn`` too; every other spawn
  under its key is a conflict, since nothing can be compared
  (``spawn_matches``; ``check_and_record`` makes no alias of another origin's
  either). A hashed record is checked by its hash whatever the spawn says.
- Running records never expire. A finished record expires ``ttl_ns`` after its
  completion; tombstones (with the reason of the cancel that laid them) and
  redeliveries ``ttl_ns`` after they are laid. Expiry happens only in
  ``evict_expired``, which walks FIFO queues of expiry times and so costs time in
  proportion to what it evicts, not to the table.
- A redelivery (``add_redelivery``) names the finished record a duplicate
  ``(origin, task_id)`` was answered from, so ``key_of`` finds it for a later
  cancel or resend; it lives while that record does, at most ``ttl_ns``.
- Results for an origin with no live connection are held here too
  (``hold``, ``take_held``), each ``ttl_ns`` from when it was held.
- Records handed out (``IdemRecord``) are immutable snapshots: a record changes
  by being replaced in the table, never in place.
- Kept results have a byte budget (``max_kept_bytes``; each ``complete`` says
  how many bytes its outcome keeps). Over it, the oldest kept results are
  replaced by ``dropped_outcome`` (in the records and in what is held for their
  owner and aliases) until the rest fit; the records stay, so a key is still
  never run twice, and a duplicate is answered with ``dropped_outcome``.

Both twins take the same arguments, raise the same errors and return the same
results; ``tests/test_idemtable.py`` holds them to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Final

from rsc._core.expiring import ExpiringMap, ExpiryFifo, HeldResults
from rsc.errors import InvalidArgument

__all__ = [
    "CONFLICT",
    "DEDUP_CONFLICT",
    "DEDUP_DUPLICATE",
    "DEDUP_NEW",
    "NEW",
    "Decision",
    "IdemRecord",
    "IdemTable",
    "fingerprint",
    "fingerprint_matches",
    "DRAWN_FINGERPRINT",
    "FP_BLAKE2B",
    "FP_DRAWN",
    "FP_SHA256",
    "FP_SHA256_MIN_INPUT",
    "legacy_fingerprint",
    "spawn_fingerprint",
    "spawn_matches",
]

DEDUP_NEW: Final = 0
DEDUP_DUPLICATE: Final = 1
DEDUP_CONFLICT: Final = 2

_U64_MAX: Final = (1 << 64) - 1
_I64_MAX: Final = (1 << 63) - 1
_FP_PERSON: Final = b"rsc/idem-fp/v1"
_FP_SHA_PREFIX: Final = b"rsc/idem-fp/v2\x00\x00"

# A fingerprint's first byte names its algorithm, so one written by an older
# rsc (always BLAKE2b, 16 untagged bytes in its journal) is still checked the
# way it was made. SHA-256 hashes large inputs about twice as fast where the
# CPU has SHA instructions, but costs a hashlib object per call, which small
# inputs (most spawns) do not repay: under FP_SHA256_MIN_INPUT bytes the
# compiled BLAKE2b is cheaper (bench/bench_payload.py, docs/DESIGN.md).
FP_BLAKE2B: Final = 1
FP_SHA256: Final = 2
FP_SHA256_MIN_INPUT: Final = 2048
# The tag of a key the origin drew itself: owner-only, not hashed (no digest
# follows, only zeros). An older rsc reads it as an unknown tag, which
# matches nothing: a resend is refused there, never run twice.
FP_DRAWN: Final = 3
DRAWN_FINGERPRINT: Final = bytes((FP_DRAWN,)) + bytes(16)


# --- fingerprint ---------------------------------------------------------------


def _fp_name(computation: object, input: object) -> bytes:  # noqa: A002
    if not isinstance(computation, str):
        raise InvalidArgument(f"computation must be a str, not {type(computation).__name__}")
    if not isinstance(input, bytes):
        _parts_len(input)
    try:
        return computation.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"computation is not valid UTF-8 text: {exc}") from None


def _parts_len(input: object) -> int:  # noqa: A002
    """The bytes an input in parts (a tuple of bytes-like objects) stands for;
    ``InvalidArgument`` for anything else."""
    if type(input) is not tuple:
        raise InvalidArgument(f"input must be bytes or a tuple of bytes-like parts, not {type(input).__name__}")
    n = 0
    for part in input:
        if isinstance(part, bytes):
            n += len(part)
            continue
        try:
            view = memoryview(part)
        except TypeError:
            raise InvalidArgument(f"an input part must be bytes-like, not {type(part).__name__}") from None
        if not view.c_contiguous:
            raise InvalidArgument("an input part must be a contiguous buffer")
        n += view.nbytes
    return n


def _encoding_head(name: bytes, n: int) -> bytes:
    return len(name).to_bytes(8, "big") + name + n.to_bytes(8, "big")


def _blake2b_fp(name: bytes, input: bytes | tuple[Any, ...]) -> bytes:  # noqa: A002
    # parts under FP_SHA256_MIN_INPUT bytes in all: joining them costs little
    data = b"".join(input) if isinstance(input, tuple) else input
    h = hashlib.blake2b(_encoding_head(name, len(data)), digest_size=16, person=_FP_PERSON)
    h.update(data)
    return bytes((FP_BLAKE2B,)) + h.digest()


def _sha256_fp(name: bytes, input: bytes | tuple[Any, ...]) -> bytes:  # noqa: A002
    parts = input if type(input) is tuple else (input,)
    h = hashlib.sha256(_FP_SHA_PREFIX + _encoding_head(name, _input_len(input)))
    for part in parts:
        h.update(part)
    return bytes((FP_SHA256,)) + h.digest()[:16]


def _input_len(input: bytes | tuple[Any, ...]) -> int:  # noqa: A002
    return _parts_len(input) if type(input) is tuple else len(input)


def fingerprint(computation: str, input: bytes | tuple[Any, ...]) -> bytes:  # noqa: A002 - the wire field's name
    """The 17-byte fingerprint of a request: an algorithm tag, then a 16-byte
    digest of (computation, input).

    Inputs under ``FP_SHA256_MIN_INPUT`` bytes: ``FP_BLAKE2B`` then BLAKE2b-128
    (the encoding rsc has always used, personalised ``rsc/idem-fp/v1``);
    larger ones: ``FP_SHA256`` then the first 16 bytes of SHA-256 (prefixed
    ``rsc/idem-fp/v2`` and two zero bytes). Both hash the same length-prefixed
    encoding (``u64be len(utf8(computation)) | utf8(computation) | u64be
    len(input) | input``), so ``("ab", b"c")`` and ``("a", b"bc")`` differ.
    Stable across processes, runs and both twins.

    ``input`` is ``bytes``, or a tuple of bytes-like parts that stands for
    their concatenation (``Segmented.fingerprint_parts``): it fingerprints as
    the joined bytes would, hashed part by part without joining them.
    """
    name = _fp_name(computation, input)
    if _input_len(input) >= FP_SHA256_MIN_INPUT:
        return _sha256_fp(name, input)
    return _blake2b_fp(name, input)


def fingerprint_matches(fp: bytes, computation: str, input: bytes | tuple[Any, ...]) -> bool:  # noqa: A002
    """Whether ``fp`` (a fingerprint, possibly written by an older rsc) is the
    fingerprint of (computation, input) under the algorithm its tag names.
    An unknown tag matches nothing."""
    name = _fp_name(computation, input)
    fp = _as_fingerprint(fp)
    if fp[0] == FP_SHA256:
        return _sha256_fp(name, input) == fp
    if fp[0] == FP_BLAKE2B:
        return _blake2b_fp(name, input) == fp
    return False


def spawn_fingerprint(computation: str, input: bytes | tuple[Any, ...], drawn: bool) -> bytes:  # noqa: A002
    """The fingerprint a newly admitted spawn is recorded with:
    ``DRAWN_FINGERPRINT`` for a key its origin drew (``drawn``), which hashes
    nothing, else ``fingerprint(computation, input)``."""
    if drawn is True:
        return DRAWN_FINGERPRINT
    if drawn is not False:
        raise InvalidArgument(f"drawn must be a bool, not {type(drawn).__name__}")
    return fingerprint(computation, input)


def spawn_matches(fp: bytes, owner: str, origin: str, drawn: bool, computation: str,
                  input: bytes | tuple[Any, ...]) -> bool:  # noqa: A002
    """Whether a spawn from ``origin`` (saying ``drawn`` or not) of
    (computation, input) is the request a record made with fingerprint ``fp``
    and owned by origin ``owner`` stands for. A drawn-key record
    (``DRAWN_FINGERPRINT``) matches only a drawn spawn from its owner; a
    hashed one matches what ``fingerprint_matches`` says."""
    fp = _as_fingerprint(fp)
    if fp[0] == FP_DRAWN:
        _fp_name(computation, input)  # the same argument checks either way
        return drawn is True and _as_origin(origin) == _as_origin(owner)
    return fingerprint_matches(fp, computation, input)


def legacy_fingerprint(fp: bytes) -> bytes:
    """The fingerprint an older rsc wrote as 16 untagged bytes (always
    BLAKE2b-128), tagged; a 17-byte one is returned as it is."""
    if isinstance(fp, bytes) and len(fp) == 16:
        return bytes((FP_BLAKE2B,)) + fp
    return _as_fingerprint(fp)


# --- argument checks (slow paths; the hot paths test the common case inline) ----


def _as_key(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidArgument(f"{what} must be 16 bytes, not {type(value).__name__}")
    if len(value) != 16:
        raise InvalidArgument(f"{what} must be 16 bytes, not {len(value)}")
    return bytes(memoryview(value))  # a bytes subclass is stored as plain bytes


def _as_fingerprint(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidArgument(f"fingerprint must be 17 bytes, not {type(value).__name__}")
    if len(value) != 17:
        raise InvalidArgument(f"fingerprint must be 17 bytes (an algorithm tag and a 16-byte digest), "
                              f"not {len(value)}")
    return bytes(memoryview(value))


def _as_origin(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"origin must be a str (NodeId), not {type(value).__name__}")
    return str.__str__(value)  # a str subclass is stored as plain str


def _as_int(value: object, what: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an int, not {type(value).__name__}")
    value = int.__index__(value)
    if not 0 <= value <= limit:
        raise InvalidArgument(f"{what} must be in 0..{limit}, not {value}")
    return value


def _as_task_id(value: object) -> int:
    return _as_int(value, "task_id", _U64_MAX)


def _as_time(value: object, what: str = "now") -> int:
    return _as_int(value, what, _I64_MAX)


def _as_limit(value: object) -> int | None:
    """``evict_expired``'s optional bound: None (no bound) or an int >= 1."""
    if value is None:
        return None
    value = _as_int(value, "limit", _I64_MAX)
    if value < 1:
        raise InvalidArgument("limit must be at least 1, or None for no limit")
    return value


# --- decisions and records -----------------------------------------------------


class Decision:
    """The two decisions that carry no record: ``NEW`` and ``CONFLICT``.

    ``check_and_record`` returns one of these module singletons or an
    ``IdemRecord`` (a duplicate), so ``decision is NEW`` / ``decision is
    CONFLICT`` / else-record is the natural branch; ``decision.dedup`` gives the
    ``DEDUP_*`` code of all three.
    """

    __slots__ = ("_dedup", "_name")

    def __init__(self, dedup: int, name: str) -> None:
        self._dedup = dedup
        self._name = name

    @property
    def dedup(self) -> int:
        """``DEDUP_NEW`` or ``DEDUP_CONFLICT``."""
        return self._dedup

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name  # pickles as the module singleton


NEW: Final = Decision(DEDUP_NEW, "NEW")
CONFLICT: Final = Decision(DEDUP_CONFLICT, "CONFLICT")


class IdemRecord:
    """One idempotency record, as it was when handed out (an immutable snapshot).

    ``outcome`` and ``expires_at`` are None while the task runs; ``finished``
    says which. ``aliases`` are the ``(origin, task_id)`` pairs of duplicates
    that arrived while it ran, in arrival order (the owner is not among them).
    """

    __slots__ = ("_aliases", "_expires_at", "_fingerprint", "_kept", "_key", "_outcome", "_owner")

    def __init__(
        self,
        key: bytes,
        fingerprint: bytes,
        owner: tuple[str, int],
        outcome: Any,
        expires_at: int | None,
        aliases: tuple[tuple[str, int], ...],
        kept: int = 0,
    ) -> None:
        self._key = key
        self._fingerprint = fingerprint
        self._owner = owner
        self._outcome = outcome
        self._expires_at = expires_at
        self._aliases = aliases
        self._kept = kept  # bytes its outcome counts against the budget; -1: dropped

    @property
    def dedup(self) -> int:
        """Always ``DEDUP_DUPLICATE``: a record returned by ``check_and_record``."""
        return DEDUP_DUPLICATE

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def fingerprint(self) -> bytes:
        return self._fingerprint

    @property
    def origin(self) -> str:
        return self._owner[0]

    @property
    def task_id(self) -> int:
        return self._owner[1]

    @property
    def outcome(self) -> Any:
        return self._outcome

    @property
    def finished(self) -> bool:
        return self._expires_at is not None

    @property
    def expires_at(self) -> int | None:
        return self._expires_at

    @property
    def aliases(self) -> tuple[tuple[str, int], ...]:
        return self._aliases

    @property
    def kept_bytes(self) -> int:
        """The bytes its outcome counts against the table's budget (0 once dropped)."""
        return self._kept if self._kept > 0 else 0

    @property
    def result_dropped(self) -> bool:
        """Its outcome was dropped for the kept-result budget (``outcome`` is
        then the table's ``dropped_outcome``)."""
        return self._kept < 0

    def __repr__(self) -> str:
        state = f"finished, expires_at={self._expires_at}" if self._expires_at is not None else "running"
        return (
            f"IdemRecord(key={self._key.hex()}, origin={self._owner[0]!r}, "
            f"task_id={self._owner[1]}, {state}, aliases={len(self._aliases)})"
        )


# --- the table -----------------------------------------------------------------


class IdemTable:
    """Idempotency records, their ``(origin, task_id)`` index, and tombstones.

    Times are ints in nanoseconds from one monotonic clock. Keys are
    ``bytes`` of length 16, fingerprints of length 17 (``fingerprint``), origins ``str``, task ids uint64
    ints; anything else raises ``InvalidArgument``, as do a negative time and
    the refusals of ``complete``.

    An expiry is ``now + ttl_ns``, raised if need be to the latest expiry
    already queued (of its kind), so a caller whose ``now`` steps back never
    shortens a life below the TTL and the expiry queues stay sorted.

    Memory: 471 bytes per finished record at 100,000 records (tracemalloc,
    CPython 3.11, ``bench/bench_idemtable.py``): the record object, its owner
    tuple, the key and fingerprint bytes it keeps, task id and expiry ints, the
    expiry-queue tuple and the two dict entries; origins are shared strs and
    outcomes are not counted. The compiled module needs about 190.
    """

    __slots__ = (
        "_by_task",
        "_dropped",
        "_dropped_outcome",
        "_held",
        "_expiry",
        "_kept",
        "_max_kept",
        "_records",
        "_redeliveries",
        "_tombstones",
        "_ttl",
        "_noted",
        "watch",
    )

    def __init__(self, ttl_ns: int, max_kept_bytes: int | None = None,
                 dropped_outcome: Any = None) -> None:
        """``max_kept_bytes``: the budget of kept results' bytes (None: no
        budget); ``dropped_outcome``: what a record whose result was dropped
        for it holds instead."""
        self._ttl = _as_time(ttl_ns, "ttl_ns")
        self._max_kept = None if max_kept_bytes is None else _as_time(max_kept_bytes, "max_kept_bytes")
        self._dropped_outcome = dropped_outcome
        self._kept = 0  # bytes of the results kept now
        self._dropped = 0  # results dropped for the budget, ever
        self._records: dict[bytes, IdemRecord] = {}
        # (origin, task_id) of every owner and alias present -> the record's key.
        self._by_task: dict[tuple[str, int], bytes] = {}
        # (expires_at, key) per finished record, in completion order (the same
        # queue the side structures use). An entry is stale when its key's
        # record is gone or is another one, with another expiry (_record_live).
        self._expiry = ExpiryFifo(self._ttl)
        self.watch: Any = None
        self._noted = False
        self._side_structures()

    def _side_structures(self) -> None:
        """Tombstones (-> the cancel's reason), redeliveries (-> the record's
        key) and held results, each expiring ttl_ns after it is laid
        (rsc._core.expiring: the same classes serve both twins)."""
        self._tombstones = ExpiringMap(self._ttl)
        self._redeliveries = ExpiringMap(self._ttl)
        self._held = HeldResults(self._ttl)

    @property
    def ttl_ns(self) -> int:
        return self._ttl

    @property
    def max_kept_bytes(self) -> int | None:
        return self._max_kept

    @property
    def kept_bytes(self) -> int:
        """Bytes of the results the table keeps now (what the budget counts)."""
        return self._kept

    @property
    def results_dropped(self) -> int:
        """How many results were dropped for the budget since the table was made."""
        return self._dropped

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        if type(key) is not bytes or len(key) != 16:
            key = _as_key(key, "key")
        return key in self._records

    def __repr__(self) -> str:
        return (
            f"<IdemTable records={len(self._records)} tombstones={len(self._tombstones)} "
            f"ttl_ns={self._ttl}>"
        )

    # -- records --------------------------------------------------------------

    def check_and_record(
        self, key: bytes, fingerprint: bytes, origin: str, task_id: int, now: int
    ) -> Decision | IdemRecord:
        """Decide a SPAWN_REQUEST and record it, in one step.

        - key unknown: a running record owned by ``(origin, task_id)`` is made;
          returns ``NEW``.
        - key known, same fingerprint: returns the record (a duplicate). If it
          still runs and ``(origin, task_id)`` is neither its owner nor an alias
          yet, the pair becomes an alias (the snapshot returned includes it).
        - key known with another fingerprint, a drawn-key record
          (``DRAWN_FINGERPRINT``) of another origin, or ``(origin, task_id)``
          already present under another key: returns ``CONFLICT`` and changes
          nothing.

        ``now`` is checked like every time argument; a record's life is counted
        from ``complete``.
        """
        if type(key) is not bytes or len(key) != 16:
            key = _as_key(key, "key")
        if type(fingerprint) is not bytes or len(fingerprint) != 17:
            fingerprint = _as_fingerprint(fingerprint)
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        if type(now) is not int or not 0 <= now <= _I64_MAX:
            _as_time(now)
        pair = (origin, task_id)
        bound = self._by_task.get(pair)
        rec = self._records.get(key)
        if rec is None:
            if bound is not None:
                return CONFLICT
            self._records[key] = IdemRecord(key, fingerprint, pair, None, None, ())
            self._by_task[pair] = key
            return NEW
        if rec._fingerprint != fingerprint:
            return CONFLICT
        if fingerprint[0] == FP_DRAWN and origin != rec._owner[0]:
            return CONFLICT  # a drawn key is its owner's alone
        if bound is not None:
            return rec if bound == key else CONFLICT
        if rec._expires_at is None:
            rec = IdemRecord(key, rec._fingerprint, rec._owner, None, None, (*rec._aliases, pair))
            self._records[key] = rec
            self._by_task[pair] = key
        return rec

    def complete(self, key: bytes, task_id: int, outcome: Any, now: int,
                 kept_bytes: int = 0) -> list[tuple[str, int]]:
        """Store the outcome of the record's task; it expires at ``now + ttl_ns``.

        ``kept_bytes`` is what keeping ``outcome`` counts against the budget;
        over it, the oldest kept results (this one included) are dropped. The
        table's own ``dropped_outcome`` counts nothing, whatever ``kept_bytes``
        says (a record restored with its result already dropped).
        Returns the aliases to deliver the outcome to, in arrival order (the
        owner is not among them). Raises ``InvalidArgument`` for an unknown key,
        a record already finished, or a ``task_id`` other than the owner's.
        """
        if type(kept_bytes) is not int or not 0 <= kept_bytes <= _I64_MAX:
            kept_bytes = _as_time(kept_bytes, "kept_bytes")
        if type(key) is not bytes or len(key) != 16:
            key = _as_key(key, "key")
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        if type(now) is not int or not 0 <= now <= _I64_MAX:
            now = _as_time(now)
        if outcome is self._dropped_outcome:
            kept_bytes = 0
        rec = self._records.get(key)
        if rec is None:
            raise InvalidArgument(f"no idempotency record for key {key.hex()}")
        if rec._expires_at is not None:
            raise InvalidArgument(f"the record for key {key.hex()} is already complete")
        if rec._owner[1] != task_id:
            raise InvalidArgument(
                f"task {task_id} does not own the record for key {key.hex()} "
                f"(its owner is task {rec._owner[1]})"
            )
        expires_at = self._expiry.push(key, now)  # raises, changing nothing, on overflow
        if not self._noted:
            self._expiry_added(expires_at)
        aliases = rec._aliases
        rec = IdemRecord(key, rec._fingerprint, rec._owner, outcome, expires_at, aliases, kept_bytes)
        self._records[key] = rec
        if kept_bytes:
            self._kept += kept_bytes
            if self._max_kept is not None and self._kept > self._max_kept:
                self._drop_oldest_results()
        return list(aliases)

    def _drop_oldest_results(self) -> None:
        """Drop kept results, oldest first, until the rest fit the budget.

        The expiry queue is in completion order, so it is the order to drop
        in; ``passed`` counts the entries at its head already walked past
        (none of them keeps a result), so each entry is looked at once."""
        fifo, records = self._expiry, self._records
        queue, limit = fifo.queue, self._max_kept
        assert limit is not None  # called only under a budget
        while self._kept > limit and fifo.passed < len(queue):
            expires_at, key = queue[fifo.passed]
            fifo.passed += 1
            rec = records.get(key)
            if rec is None or rec._expires_at != expires_at or rec._kept <= 0:
                continue
            self._kept -= rec._kept
            self._dropped += 1
            outcome = self._dropped_outcome
            records[key] = IdemRecord(key, rec._fingerprint, rec._owner, outcome, expires_at,
                                      rec._aliases, -1)
            if self._held:
                for origin, task_id in (rec._owner, *rec._aliases):
                    self._held.replace(origin, task_id, outcome)

    def get(self, key: bytes) -> IdemRecord | None:
        """The record for ``key`` (expired but not yet evicted included), or None."""
        if type(key) is not bytes or len(key) != 16:
            key = _as_key(key, "key")
        return self._records.get(key)

    def owner_of(self, origin: str, task_id: int) -> bytes | None:
        """The key of the record that ``(origin, task_id)`` owns or is an alias of."""
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        return self._by_task.get((origin, task_id))

    def key_of(self, origin: str, task_id: int) -> bytes | None:
        """The key ``(origin, task_id)`` is held under: as owner or alias
        (``owner_of``), or as a redelivery of a record still present."""
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        pair = (origin, task_id)
        key = self._by_task.get(pair)
        if key is None and self._redeliveries:
            key = self._redeliveries.get(pair)
            if key is not None and key not in self._records:  # the record was evicted or discarded
                self._redeliveries.pop(pair)
                key = None
        return key

    def add_redelivery(self, origin: str, task_id: int, key: bytes, now: int) -> None:
        """Remember that ``(origin, task_id)`` was answered from the finished
        record ``key`` (a duplicate of a task that had already ended), until
        ``now + ttl_ns`` or until that record goes, whichever is first."""
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        if type(key) is not bytes or len(key) != 16:
            key = _as_key(key, "key")
        if type(now) is not int or not 0 <= now <= _I64_MAX:
            now = _as_time(now)
        self._redeliveries.set((origin, task_id), key, now)
        self._expiry_added(now + self._ttl)

    def discard(self, key: bytes) -> bool:
        """Remove a record (running or finished) at once; returns whether it was there.

        For a node that recorded a request and then could not admit it, so a
        retry is not mistaken for a duplicate of work that never ran.
        """
        if type(key) is not bytes or len(key) != 16:
            key = _as_key(key, "key")
        rec = self._records.pop(key, None)
        if rec is None:
            return False
        self._unindex(rec)
        return True  # its expiry entry, if any, is now stale

    def _unindex(self, rec: IdemRecord) -> None:
        if rec._kept > 0:
            self._kept -= rec._kept
        by_task = self._by_task
        del by_task[rec._owner]
        for pair in rec._aliases:
            del by_task[pair]

    # -- tombstones -----------------------------------------------------------

    def add_tombstone(self, origin: str, task_id: int, now: int, reason: Any = None) -> None:
        """Remember a cancel for an unseen ``(origin, task_id)`` until ``now + ttl_ns``,
        with the cancel's ``reason`` (``tombstone_reason``) when one is given.

        Laying one again renews it (and replaces its reason if one is given).
        """
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        if type(now) is not int or not 0 <= now <= _I64_MAX:
            now = _as_time(now)
        pair = (origin, task_id)
        if reason is None:
            reason = self._tombstones.get(pair)
        self._tombstones.set(pair, reason, now)
        self._expiry_added(now + self._ttl)

    def has_tombstone(self, origin: str, task_id: int) -> bool:
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        return (origin, task_id) in self._tombstones

    def take_tombstone(self, origin: str, task_id: int) -> bool:
        """Remove the tombstone of ``(origin, task_id)``; returns whether there was one."""
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        return self._tombstones.pop((origin, task_id))

    def tombstone_reason(self, origin: str, task_id: int) -> Any:
        """The reason the tombstone of ``(origin, task_id)`` was laid with, or
        None (no tombstone, or one laid without a reason)."""
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        return self._tombstones.get((origin, task_id))

    @property
    def tombstone_count(self) -> int:
        return len(self._tombstones)

    # -- held results ---------------------------------------------------------

    def hold(self, origin: str, task_id: int, outcome: Any, now: int) -> None:
        """Keep ``outcome`` of ``(origin, task_id)`` for an origin with no live
        connection, until ``now + ttl_ns`` (``take_held`` hands it over)."""
        if type(origin) is not str:
            origin = _as_origin(origin)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _as_task_id(task_id)
        if type(now) is not int or not 0 <= now <= _I64_MAX:
            now = _as_time(now)
        key = self._by_task.get((origin, task_id))
        if key is not None and self._records[key]._kept < 0:
            outcome = self._dropped_outcome  # its result is no longer kept: hold what stands in
        self._held.hold(origin, task_id, outcome, now)
        self._expiry_added(now + self._ttl)

    def take_held(self, origin: str) -> list[tuple[int, Any]]:
        """Remove and return ``(task_id, outcome)`` of every result held for
        ``origin`` (oldest first; empty if none)."""
        if type(origin) is not str:
            origin = _as_origin(origin)
        return self._held.take(origin)

    @property
    def held_origins(self) -> int:
        """How many origins have results held for them."""
        return len(self._held)

    # -- expiry ---------------------------------------------------------------

    def evict_expired(self, now: int, limit: int | None = None) -> int:
        """Remove finished records, tombstones, redeliveries and held results whose expiry is ``<= now``.

        Returns how many were removed. Costs O(1) plus time in proportion to
        the entries it removes (and stale queue entries it drops); running
        records never expire. With ``limit`` (an int >= 1) it removes at most
        that many and leaves the rest due (``next_expiry()`` stays ``<= now``),
        so a caller can spread a pile-up over several loop turns.
        """
        if type(now) is not int or not 0 <= now <= _I64_MAX:
            now = _as_time(now)
        cap = _as_limit(limit)
        if cap is None:
            cap = _I64_MAX
        removed = self._expiry.evict(now, cap, self._evict_record)
        for side in (self._tombstones, self._redeliveries, self._held):
            removed += side.evict(now, cap - removed)
        return removed

    # -- export (what a durable journal writes when it compacts) ---------------

    def records(self) -> list[IdemRecord]:
        """Snapshots of every record present, running and finished (expired
        but not yet evicted included), in no particular order."""
        return list(self._records.values())

    def scan_records(self, chunk: int) -> Iterator[list[IdemRecord]]:
        """Snapshots of the records, a step at a time, at most ``chunk`` a
        step. The table may change between steps: a record present from the
        call to the last step is yielded exactly once; one added or removed
        meanwhile may be yielded or not. (This twin yields the records as
        they were at the call.)"""
        n = _as_int(chunk, "chunk", _I64_MAX)
        if n < 1:
            raise InvalidArgument("chunk must be at least 1")
        return self._scan(list(self._records.values()), n)

    @staticmethod
    def _scan(records: list[IdemRecord], n: int) -> Iterator[list[IdemRecord]]:
        for i in range(0, len(records), n):
            yield records[i:i + n]

    def tombstones(self) -> list[tuple[str, int, int]]:
        """``(origin, task_id, expires_at)`` of every tombstone present."""
        return [(pair[0], pair[1], exp) for pair, exp, _reason in self._tombstones.items()]

    def _expiry_added(self, at: int) -> None:
        """Tell ``watch`` of the first expiry added since ``next_expiry()`` was
        last called: every expiry is ``now + ttl_ns``, so that one is the
        earliest of them (what a timer following the table must see)."""
        if not self._noted and self.watch is not None:
            self._noted = True
            self.watch.note(at)

    def _record_live(self, expires_at: int, key: bytes) -> bool:
        rec = self._records.get(key)
        return rec is not None and rec._expires_at == expires_at

    def _evict_record(self, expires_at: int, key: bytes) -> bool:
        if not self._record_live(expires_at, key):
            return False  # stale: the record was discarded (and maybe made again)
        self._unindex(self._records.pop(key))
        return True

    def next_expiry(self) -> int | None:
        """The earliest expiry among finished records, tombstones, redeliveries
        and held results, or None. Re-arms ``watch`` for the next expiry added."""
        self._noted = False
        head = self._expiry.next_expiry(self._record_live)
        heads = [] if head is None else [head]
        for side in (self._tombstones, self._redeliveries, self._held):
            head = side.next_expiry()
            if head is not None:
                heads.append(head)
        return min(heads) if heads else None

    def clear(self) -> None:
        """Forget every record, tombstone, redelivery and held result (the TTL stays)."""
        old = self._records  # outcomes' finalizers may use the table: they run
        self._records = {}  # once it is consistent (empty), when ``old`` goes
        self._by_task = {}
        self._expiry = ExpiryFifo(self._ttl)
        self._kept = 0
        self._side_structures()
        del old

    def _debug_counters(self) -> dict[str, int]:
        """Sizes of the internal structures, for tests (not a stable API)."""
        return {
            "records": len(self._records),
            "task_index": len(self._by_task),
            "expiry_queue": len(self._expiry.queue),
            "tombstones": len(self._tombstones),
            "tombstone_queue": len(self._tombstones.fifo.queue),
            "redeliveries": len(self._redeliveries),
            "held_origins": len(self._held),
            "kept_bytes": self._kept,
            "results_dropped": self._dropped,
            "evict_examined": self._expiry.examined + sum(
                side.fifo.examined for side in (self._tombstones, self._redeliveries, self._held)),
        }
