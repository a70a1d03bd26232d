"""Type stub for the compiled idempotency table (same API as ``rsc._core._idemtable_py``)."""

from collections.abc import Iterator
from typing import Any, Final, final

from typing_extensions import disjoint_base

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

FP_BLAKE2B: Final = 1
FP_SHA256: Final = 2
FP_SHA256_MIN_INPUT: Final = 2048
FP_DRAWN: Final = 3
DRAWN_FINGERPRINT: Final[bytes]

def fingerprint(computation: str, input: bytes | tuple[Any, ...]) -> bytes:
    """17 bytes: an algorithm tag (FP_BLAKE2B under FP_SHA256_MIN_INPUT bytes
    of input, else FP_SHA256), then a 16-byte digest of the length-prefixed
    (computation, input); stable everywhere."""

def fingerprint_matches(fp: bytes, computation: str, input: bytes | tuple[Any, ...]) -> bool:
    """Whether ``fp`` is (computation, input)'s fingerprint under the algorithm its tag names."""

def spawn_fingerprint(computation: str, input: bytes | tuple[Any, ...], drawn: bool) -> bytes:
    """DRAWN_FINGERPRINT for a drawn key (nothing hashed), else ``fingerprint``."""

def spawn_matches(fp: bytes, owner: str, origin: str, drawn: bool, computation: str,
                  input: bytes | tuple[Any, ...]) -> bool:
    """A drawn-key record matches only a drawn spawn from its owner ``owner``;
    a hashed one what ``fingerprint_matches`` says."""

def legacy_fingerprint(fp: bytes) -> bytes:
    """A 16-byte fingerprint of an older rsc (BLAKE2b), tagged; a 17-byte one as it is."""

@disjoint_base
class Decision:
    """``NEW`` or ``CONFLICT`` (module singletons): a decision without a record."""

    @property
    def dedup(self) -> int: ...
    @property
    def name(self) -> str: ...

NEW: Final[Decision]
CONFLICT: Final[Decision]

@final
class IdemRecord:
    """A snapshot of one record, handed out for a duplicate or by ``get``."""

    @property
    def dedup(self) -> int: ...
    @property
    def key(self) -> bytes: ...
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def origin(self) -> str: ...
    @property
    def task_id(self) -> int: ...
    @property
    def outcome(self) -> Any: ...
    @property
    def finished(self) -> bool: ...
    @property
    def expires_at(self) -> int | None: ...
    @property
    def aliases(self) -> tuple[tuple[str, int], ...]: ...
    @property
    def kept_bytes(self) -> int: ...
    @property
    def result_dropped(self) -> bool: ...

@final
class IdemTable:
    """Idempotency records by 16-byte key, their (origin, task_id) index, tombstones."""

    watch: Any
    """None, or an object whose ``note(at)`` is called with the first expiry
    added after each ``next_expiry()`` (the earliest of those to come)."""
    def __init__(self, ttl_ns: int, max_kept_bytes: int | None = None,
                 dropped_outcome: Any = None) -> None: ...
    @property
    def max_kept_bytes(self) -> int | None: ...
    @property
    def kept_bytes(self) -> int: ...
    @property
    def results_dropped(self) -> int: ...
    @property
    def ttl_ns(self) -> int: ...
    def check_and_record(
        self, key: bytes, fingerprint: bytes, origin: str, task_id: int, now: int
    ) -> Decision | IdemRecord: ...
    def complete(self, key: bytes, task_id: int, outcome: Any, now: int,
                 kept_bytes: int = 0) -> list[tuple[str, int]]: ...
    def get(self, key: bytes) -> IdemRecord | None: ...
    def owner_of(self, origin: str, task_id: int) -> bytes | None: ...
    def key_of(self, origin: str, task_id: int) -> bytes | None: ...
    def add_redelivery(self, origin: str, task_id: int, key: bytes, now: int) -> None: ...
    def discard(self, key: bytes) -> bool: ...
    def add_tombstone(self, origin: str, task_id: int, now: int, reason: Any = None) -> None: ...
    def tombstone_reason(self, origin: str, task_id: int) -> Any: ...
    def has_tombstone(self, origin: str, task_id: int) -> bool: ...
    def take_tombstone(self, origin: str, task_id: int) -> bool: ...
    @property
    def tombstone_count(self) -> int: ...
    def hold(self, origin: str, task_id: int, outcome: Any, now: int) -> None: ...
    def take_held(self, origin: str) -> list[tuple[int, Any]]: ...
    @property
    def held_origins(self) -> int: ...
    def evict_expired(self, now: int, limit: int | None = None) -> int: ...
    def records(self) -> list[IdemRecord]: ...
    def scan_records(self, chunk: int) -> Iterator[list[IdemRecord]]: ...
    def tombstones(self) -> list[tuple[str, int, int]]: ...
    def next_expiry(self) -> int | None: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    def _debug_counters(self) -> dict[str, int]: ...
