"""Compact lease renewals: what a node's renewal group and an origin's view of
it keep, and the digest both compute (PROTOCOL.md section 4, "Compact renewals").

A node renews the tasks it runs for an origin in groups, one per ``(origin,
lease_ms)``, every third of that lease. To a connection whose HELLO offered
the extension (``features["renewal_digest"]``, ``offers_digests``) it sends
each period one LEASE_RENEWAL_DIGEST per group instead of a
LEASE_RENEWAL_BATCH listing every task id: the group's lease, its task count
and its digest, the XOR of ``task_hash(id)`` over its task ids. The origin
keeps the same count and digest over the tasks it expects in that group; when
both agree the message renews the whole group at once, and when they do not
the origin asks for the list (LEASE_RESYNC_REQUEST) and the node answers with
the group's LEASE_RENEWAL_BATCH.

Both sides keep count and digest as tasks join and leave (O(1) per task: XOR
is its own inverse and does not depend on order), never by walking a group.

Compiled in Cython pure-Python mode through ``renewal.pxd`` (rsc/_compiled.py):
``RenewalGroup.add``/``discard`` and ``LeaseGroup.add``/``remove`` are C calls
from the compiled engines, and ``task_hash`` is C arithmetic on uint64.
"""

from __future__ import annotations

#: The key of HELLO's and WELCOME's ``features`` that offers compact renewals,
#: and the version of the extension rsc speaks (a peer offering a higher one
#: speaks this one too).
FEATURE = "renewal_digest"
VERSION = 1

# SplitMix64's constants and the uint64 mask: typed as C uint64 in the
# compiled build (renewal.pxd), where the arithmetic wraps by itself and the
# mask changes nothing; the pure twin needs the mask.
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK = 0xFFFFFFFFFFFFFFFF


def task_hash(rtid: int) -> int:
    """The 64-bit hash of one remote task id that a group's digest XORs:
    SplitMix64's finaliser of ``rtid + 0x9E3779B97F4A7C15`` (mod 2**64).

    A bijection on uint64, so two different ids never hash alike, and it
    mixes every bit of the id into every bit of the hash, so that sets of
    consecutive ids (what an origin allocates) do not cancel out under XOR
    the way the plain ids would ({1, 2} and {0, 3} XOR alike).
    """
    z = (rtid + _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK
    return z ^ (z >> 31)


def offers_digests(features: object) -> bool:
    """True if a HELLO's or WELCOME's ``features`` offer compact renewals
    (an int version of at least ``VERSION``; a bool is no version)."""
    if not isinstance(features, dict):
        return False
    v = features.get(FEATURE)
    return type(v) is int and v >= VERSION


def digest_of(rtids: object) -> int:
    """The digest of a set of task ids, computed from scratch (what a group
    keeps incrementally; for tests and for peers written from the spec)."""
    d = 0
    for rtid in rtids:  # type: ignore[attr-defined]
        d ^= task_hash(rtid)
    return d


class RenewalGroup:
    """The node's tasks of one ``(origin, lease_ms)`` renewal group: their
    ids (aliases included), count and digest, and the group's id (its key in
    the node's timers). Empty groups are dropped by the node."""

    __slots__ = ("origin", "lease_ms", "gid", "ids", "digest")

    def __init__(self, origin: str, lease_ms: int, gid: int) -> None:
        self.origin = origin
        self.lease_ms = lease_ms
        self.gid = gid
        self.ids: set[int] = set()
        self.digest = 0

    def add(self, rtid: int) -> None:
        """Put ``rtid`` in the group (a second add changes nothing)."""
        ids = self.ids
        n = len(ids)
        ids.add(rtid)
        if len(ids) != n:
            self.digest ^= task_hash(rtid)

    def discard(self, rtid: int) -> bool:
        """Take ``rtid`` out of the group if it is there; True if the group is now empty."""
        ids = self.ids
        n = len(ids)
        ids.discard(rtid)
        if len(ids) != n:
            self.digest ^= task_hash(rtid)
        return not ids


class LeaseGroup:
    """An origin's view of one of a node's renewal groups (one per link and
    ``lease_ms``): how many of its tasks it expects there and their digest,
    and the group's lease as the node's compact renewals have kept it.

    The lease of a task in the group is the later of its own deadline
    (``OriginTask.lease_until``) and ``until``, if the group's renewals have
    held without a gap since before that own deadline (``covers``): one
    compact renewal moves ``until`` and so renews every task of the group at
    once, with no per-task work.
    """

    __slots__ = ("lease_ms", "count", "digest", "until", "alive_since", "renewals",
                 "chain_renewals", "resync_asked")

    def __init__(self, lease_ms: int) -> None:
        self.lease_ms = lease_ms
        self.count = 0
        self.digest = 0
        # [alive_since, until]: the span the group's renewals have covered
        # without a gap (each renewal at r covers [r, r + lease]); 0, 0: none yet
        self.until = 0
        self.alive_since = 0
        self.renewals = 0  # compact renewals applied
        self.chain_renewals = 0  # ``renewals`` when the current gap-free span began
        self.resync_asked = False  # a LEASE_RESYNC_REQUEST is out and unanswered

    def add(self, rtid: int) -> None:
        self.count += 1
        self.digest ^= task_hash(rtid)

    def remove(self, rtid: int) -> None:
        self.count -= 1
        self.digest ^= task_hash(rtid)

    def matches(self, count: int, digest: int) -> bool:
        return self.count == count and self.digest == digest

    def renewed(self, now: int, lease_ns: int) -> None:
        """A compact renewal that matched arrived at ``now``. One that comes
        after ``until`` starts a new span: it does not revive a lease that
        ran out in the gap (PROTOCOL.md section 8, late renewals)."""
        if now > self.until:
            self.alive_since = now
            self.chain_renewals = self.renewals
        self.renewals += 1
        self.until = now + lease_ns

    def covers(self, mark: int, own_until: int) -> bool:
        """True if a renewal of the group reached a task in time: one came
        since the task joined (when ``renewals`` was ``mark``), and the
        group's gap-free span runs past the task's own deadline ``own_until``
        from at or before it."""
        return self.renewals != mark and self.alive_since <= own_until < self.until

    def renewals_since(self, mark: int, own_until: int) -> int:
        """The group's renewals applied to a task that joined when ``renewals``
        was ``mark`` and whose own deadline is ``own_until``. If the span that
        covered it ended and a new one began after that deadline, the new
        span's renewals came too late for the task and are not counted."""
        n = (self.renewals if self.alive_since <= own_until else self.chain_renewals) - mark
        return n if n > 0 else 0
