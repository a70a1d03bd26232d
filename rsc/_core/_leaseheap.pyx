# cython: language_level=3
"""Lease expiry heap, compiled. Its pure-Python twin is ``rsc._core._leaseheap_py``.

Both twins implement the same contract, documented on ``LeaseHeap``; the test
suite runs every test against both and checks they agree result for result.

How this module works: an indexed 4-ary min-heap of ``{deadline, seq, slot}``
structs in one C array, and an open-addressing table (linear probing,
backward-shift deletion, so no tombstones) mapping each lease id to its heap
position. Every heap move updates the table, every table move updates the
heap, so ``renew`` and ``remove`` are true O(log n) key changes that leave no
garbage behind. Both arrays shrink again when the heap drains.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int64_t, uint64_t

from rsc.errors import InvalidArgument

__all__ = ["LeaseHeap"]


cdef extern from *:
    """
    /* splitmix64's finaliser: lease ids are often sequential or strided, and
       linear probing needs them spread over the table. */
    static inline uint64_t rsc_leaseheap_mix(uint64_t x) {
        x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27; x *= 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }
    """
    uint64_t _mix "rsc_leaseheap_mix"(uint64_t x) noexcept nogil


cdef extern from "Python.h":
    # Declared here without Cython's automatic error check: the callers below
    # turn a conversion failure into InvalidArgument themselves.
    unsigned long long _as_u64 "PyLong_AsUnsignedLongLong"(object x) noexcept
    long long _as_i64 "PyLong_AsLongLong"(object x) noexcept
    void* _err_occurred "PyErr_Occurred"() noexcept
    void _err_clear "PyErr_Clear"() noexcept
    bint PyLong_Check(object x) noexcept
    bint PyLong_CheckExact(object x) noexcept
    bint PyBool_Check(object x) noexcept
    const Py_ssize_t PY_SSIZE_T_MAX


cdef enum:
    ARITY = 4            # half the levels of a binary heap; siblings sit side by side in memory
    MIN_HEAP_CAP = 16
    MIN_TABLE_CAP = 16   # a power of two


# --- argument checks: same rules and messages as the pure twin -----------------

cdef inline bint _is_int(object x) noexcept:
    return PyLong_CheckExact(x) or (PyLong_Check(x) and not PyBool_Check(x))


cdef int _lease_id(object x, uint64_t* out) except -1:
    cdef unsigned long long v
    if _is_int(x):
        v = _as_u64(x)
        if v != <unsigned long long>-1 or _err_occurred() == NULL:
            out[0] = v
            return 0
        _err_clear()
    raise InvalidArgument(f"lease_id must be an int in [0, 2**64), got {x!r}")


cdef int _time(object x, str name, int64_t* out) except -1:
    cdef long long v
    if _is_int(x):
        v = _as_i64(x)
        if v >= 0:
            out[0] = v
            return 0
        if v == -1 and _err_occurred() != NULL:
            _err_clear()
    raise InvalidArgument(f"{name} must be an int in [0, 2**63) nanoseconds, got {x!r}")


cdef Py_ssize_t _limit(object x) except -1:
    cdef long long v
    if x is None:
        return PY_SSIZE_T_MAX
    if _is_int(x):
        v = _as_i64(x)
        if v == -1 and _err_occurred() != NULL:
            _err_clear()
            if x > 0:
                return PY_SSIZE_T_MAX
        elif v >= 0:
            return <Py_ssize_t>v if v < PY_SSIZE_T_MAX else PY_SSIZE_T_MAX
    raise InvalidArgument(f"limit must be None or an int >= 0, got {x!r}")


cdef inline bint _less(HeapEntry a, HeapEntry b) noexcept nogil:
    return a.deadline < b.deadline or (a.deadline == b.deadline and a.seq < b.seq)


cdef class LeaseHeap:
    """Leases keyed by id, each with a deadline; expired ones come out in order.

    Contract (identical in the compiled module and its pure twin):

    - A lease id is an ``int`` in ``[0, 2**64)``; a time (``expires_at``,
      ``now``) is an ``int`` of nanoseconds in ``[0, 2**63)``. Anything else
      (``bool``, ``float``, a negative or too-large int) raises
      ``rsc.errors.InvalidArgument``. Subclasses of ``int`` other than ``bool``
      are accepted and stored as plain ``int``.
    - ``add`` of an id already present raises ``InvalidArgument`` (use
      ``renew``). ``renew`` and ``remove`` of an absent id raise
      ``KeyError(lease_id)``; ``discard`` never raises for an absent id.
    - ``pop_expired(now)`` removes and returns the ids of every lease with
      ``expires_at <= now``, earliest deadline first. Equal deadlines come out
      in the order of the ``add``/``renew`` call that set them (a ``renew``
      counts as a fresh insertion, even to the same deadline), decided by an
      internal counter, never by object identity: the same calls always give
      the same order.
    - ``add``, ``renew``, ``remove``, ``discard`` and each lease popped cost
      O(log n); ``next_deadline``, ``deadline_of``, ``len`` and ``in`` cost
      O(1) (amortised in the pure twin, whose skipped garbage was paid for
      by the renew or remove that left it). A million leases are fine.
    - ``x in heap`` is ``False`` for anything that is not a valid lease id.

    Memory (this module): no Python object per lease; a 24-byte heap entry
    (arrays grow by 1.5x) plus 32-64 bytes of id table (16-byte slots at load
    1/4..1/2): 56-100 bytes per lease, measured 70 at 100,000 and 66 at
    1,000,000. Draining lets that rise to about 4x per remaining lease before
    both arrays shrink back.
    """

    def __cinit__(self):
        self._heap = NULL
        self._table = NULL
        self._len = 0
        self._seq = 0
        self._reset()

    def __dealloc__(self):
        PyMem_Free(self._heap)
        PyMem_Free(self._table)

    # --- public API --------------------------------------------------------------

    cpdef add(self, lease_id, expires_at):
        """Start tracking ``lease_id``, expiring at ``expires_at``."""
        cdef uint64_t lid
        cdef int64_t t
        _lease_id(lease_id, &lid)
        _time(expires_at, "expires_at", &t)
        self.add_raw(lid, t)

    cpdef renew(self, lease_id, expires_at):
        """Move the deadline of ``lease_id`` (earlier or later); ``KeyError`` if absent."""
        cdef uint64_t lid
        cdef int64_t t
        _lease_id(lease_id, &lid)
        _time(expires_at, "expires_at", &t)
        self.renew_raw(lid, t)

    cpdef discard(self, lease_id):
        """Stop tracking ``lease_id`` if present; return whether it was."""
        cdef uint64_t lid
        _lease_id(lease_id, &lid)
        return self.discard_raw(lid)

    # --- the same on C values (a compiled caller that has them: no int objects) ---

    cdef int add_raw(self, uint64_t lid, int64_t t) except -1:
        """``add`` of a lease id and a time already checked (``t >= 0``)."""
        cdef HeapEntry entry
        self._reserve_one()
        cdef TableEntry* table = self._table
        cdef Py_ssize_t mask = self._table_mask
        cdef Py_ssize_t i = <Py_ssize_t>(_mix(lid) & <uint64_t>mask)
        while table[i].pos >= 0:
            if table[i].lease_id == lid:
                raise InvalidArgument(
                    f"lease {lid} is already in the heap; use renew() to move its deadline"
                )
            i = (i + 1) & mask
        table[i].lease_id = lid
        entry.deadline = t
        entry.seq = self._seq
        entry.slot = i
        self._seq += 1
        self._len += 1
        self._sift_up(self._len - 1, entry)  # also sets table[i].pos
        return 0

    cdef int renew_raw(self, uint64_t lid, int64_t t) except -1:
        """``renew`` of a lease id and a time already checked (``t >= 0``)."""
        cdef HeapEntry entry
        cdef Py_ssize_t slot = self._find(lid)
        if slot < 0:
            raise KeyError(lid)
        cdef Py_ssize_t pos = self._table[slot].pos
        entry = self._heap[pos]
        cdef int64_t old = entry.deadline
        entry.deadline = t
        entry.seq = self._seq
        self._seq += 1
        # An equal deadline gets a larger seq, so it can only move down.
        if t < old:
            self._sift_up(pos, entry)
        else:
            self._sift_down(pos, entry)
        return 0

    cdef bint discard_raw(self, uint64_t lid) noexcept:
        """``discard`` of a lease id already checked."""
        cdef Py_ssize_t slot = self._find(lid)
        if slot < 0:
            return False
        cdef Py_ssize_t pos = self._table[slot].pos
        self._table_delete(slot)
        self._heap_delete(pos)
        self._shrink_to_fit()
        return True

    # --- the rest of the public API ------------------------------------------------

    def remove(self, lease_id):
        """Stop tracking ``lease_id``; ``KeyError`` if absent."""
        cdef uint64_t lid
        _lease_id(lease_id, &lid)
        cdef Py_ssize_t slot = self._find(lid)
        if slot < 0:
            raise KeyError(lid)
        cdef Py_ssize_t pos = self._table[slot].pos
        self._table_delete(slot)
        self._heap_delete(pos)
        self._shrink_to_fit()

    def pop_expired(self, now, limit=None):
        """Remove and return the ids of leases with ``expires_at <= now``, in order.

        With ``limit``, return at most that many (the earliest ones); the rest
        stay for the next call.
        """
        cdef int64_t t
        _time(now, "now", &t)
        cdef Py_ssize_t remaining = _limit(limit)
        cdef list expired = []
        cdef Py_ssize_t slot
        while self._len > 0 and remaining > 0 and self._heap[0].deadline <= t:
            slot = self._heap[0].slot
            # Append first: if that fails (MemoryError) nothing has changed.
            # Neither an int nor a list resize is a GC-tracked allocation, so
            # no other Python code can run (and touch this heap) in between.
            expired.append(self._table[slot].lease_id)
            self._table_delete(slot)
            self._heap_delete(0)
            remaining -= 1
        if expired:
            self._shrink_to_fit()
        return expired

    cpdef next_deadline(self):
        """The earliest deadline, or ``None`` when empty."""
        if self._len == 0:
            return None
        return self._heap[0].deadline

    def deadline_of(self, lease_id):
        """The deadline of ``lease_id``, or ``None`` if it is not in the heap."""
        cdef uint64_t lid
        _lease_id(lease_id, &lid)
        cdef Py_ssize_t slot = self._find(lid)
        if slot < 0:
            return None
        return self._heap[self._table[slot].pos].deadline

    def clear(self):
        """Remove every lease."""
        self._reset()

    def __len__(self):
        return self._len

    def __contains__(self, lease_id):
        cdef unsigned long long v
        if not _is_int(lease_id):
            return False
        v = _as_u64(lease_id)
        if v == <unsigned long long>-1 and _err_occurred() != NULL:
            _err_clear()
            return False
        return self._find(v) >= 0

    def __repr__(self):
        return f"LeaseHeap(len={self._len}, next_deadline={self.next_deadline()})"

    # --- id table ----------------------------------------------------------------

    cdef Py_ssize_t _find(self, uint64_t lease_id) noexcept:
        """The table slot of ``lease_id``, or -1."""
        cdef TableEntry* table = self._table
        cdef Py_ssize_t mask = self._table_mask
        cdef Py_ssize_t i = <Py_ssize_t>(_mix(lease_id) & <uint64_t>mask)
        while table[i].pos >= 0:
            if table[i].lease_id == lease_id:
                return i
            i = (i + 1) & mask
        return -1

    cdef void _table_delete(self, Py_ssize_t slot) noexcept:
        # Backward-shift deletion: pull later members of the probe run into the
        # hole when their home slot allows, so lookups never need tombstones.
        cdef TableEntry* table = self._table
        cdef Py_ssize_t mask = self._table_mask
        cdef Py_ssize_t hole = slot
        cdef Py_ssize_t j = (slot + 1) & mask
        cdef Py_ssize_t home
        while table[j].pos >= 0:
            home = <Py_ssize_t>(_mix(table[j].lease_id) & <uint64_t>mask)
            # The entry at j may move to the hole unless its home lies
            # cyclically in (hole, j].
            if ((j - home) & mask) >= ((j - hole) & mask):
                table[hole] = table[j]
                self._heap[table[hole].pos].slot = hole
                hole = j
            j = (j + 1) & mask
        table[hole].pos = -1

    cdef bint _table_rehash(self, Py_ssize_t new_cap) noexcept:
        """Move every entry into a fresh table of ``new_cap`` slots; False if out of memory."""
        cdef TableEntry* new = <TableEntry*>PyMem_Malloc(<size_t>new_cap * sizeof(TableEntry))
        if new == NULL:
            return False
        cdef Py_ssize_t mask = new_cap - 1
        cdef Py_ssize_t i, p
        cdef uint64_t lid
        for i in range(new_cap):
            new[i].pos = -1
        for p in range(self._len):
            lid = self._table[self._heap[p].slot].lease_id
            i = <Py_ssize_t>(_mix(lid) & <uint64_t>mask)
            while new[i].pos >= 0:
                i = (i + 1) & mask
            new[i].lease_id = lid
            new[i].pos = p
            self._heap[p].slot = i
        PyMem_Free(self._table)
        self._table = new
        self._table_mask = mask
        return True

    # --- capacity ----------------------------------------------------------------

    cdef int _reserve_one(self) except -1:
        """Make room for one more lease, before anything is changed."""
        cdef Py_ssize_t new_cap
        cdef HeapEntry* grown
        if self._len == self._heap_cap:
            new_cap = self._heap_cap + (self._heap_cap >> 1)
            if new_cap > PY_SSIZE_T_MAX // <Py_ssize_t>sizeof(HeapEntry):
                raise MemoryError()
            grown = <HeapEntry*>PyMem_Realloc(self._heap, <size_t>new_cap * sizeof(HeapEntry))
            if grown == NULL:
                raise MemoryError()
            self._heap = grown
            self._heap_cap = new_cap
        # Keep the table at most half full.
        if (self._len + 1) * 2 > self._table_mask + 1:
            if self._table_mask + 1 > PY_SSIZE_T_MAX // (2 * <Py_ssize_t>sizeof(TableEntry)):
                raise MemoryError()
            if not self._table_rehash(2 * (self._table_mask + 1)):
                raise MemoryError()
        return 0

    cdef void _shrink_to_fit(self) noexcept:
        # Hysteresis: shrink only when far below the growth points, and to a
        # size far from both, so alternating add/remove never thrashes. A
        # failed shrink just keeps the larger arrays.
        cdef Py_ssize_t n = self._len
        cdef Py_ssize_t cap = self._table_mask + 1
        cdef Py_ssize_t new_cap
        cdef HeapEntry* smaller
        if n * 8 < cap and cap > MIN_TABLE_CAP:
            # Smallest power of two with load <= 3/8 (so load ends in (3/16, 3/8]).
            new_cap = MIN_TABLE_CAP
            while new_cap * 3 < n * 8:
                new_cap *= 2
            if new_cap < cap:
                self._table_rehash(new_cap)
        if n * 4 < self._heap_cap and self._heap_cap > MIN_HEAP_CAP:
            new_cap = max(MIN_HEAP_CAP, 2 * n)
            smaller = <HeapEntry*>PyMem_Realloc(self._heap, <size_t>new_cap * sizeof(HeapEntry))
            if smaller != NULL:
                self._heap = smaller
                self._heap_cap = new_cap

    cdef int _reset(self) except -1:
        """Empty the heap and return to the smallest arrays."""
        cdef HeapEntry* heap = <HeapEntry*>PyMem_Malloc(MIN_HEAP_CAP * sizeof(HeapEntry))
        cdef TableEntry* table = <TableEntry*>PyMem_Malloc(MIN_TABLE_CAP * sizeof(TableEntry))
        cdef Py_ssize_t i
        if heap == NULL or table == NULL:
            PyMem_Free(heap)
            PyMem_Free(table)
            raise MemoryError()
        for i in range(MIN_TABLE_CAP):
            table[i].pos = -1
        PyMem_Free(self._heap)
        PyMem_Free(self._table)
        self._heap = heap
        self._heap_cap = MIN_HEAP_CAP
        self._table = table
        self._table_mask = MIN_TABLE_CAP - 1
        self._len = 0
        return 0

    # --- heap --------------------------------------------------------------------

    cdef void _sift_up(self, Py_ssize_t pos, HeapEntry entry) noexcept:
        """Place ``entry`` at ``pos`` or above, moving larger parents down."""
        cdef HeapEntry* heap = self._heap
        cdef TableEntry* table = self._table
        cdef Py_ssize_t parent
        while pos > 0:
            parent = (pos - 1) // ARITY
            if not _less(entry, heap[parent]):
                break
            heap[pos] = heap[parent]
            table[heap[pos].slot].pos = pos
            pos = parent
        heap[pos] = entry
        table[entry.slot].pos = pos

    cdef void _sift_down(self, Py_ssize_t pos, HeapEntry entry) noexcept:
        """Place ``entry`` at ``pos`` or below, moving smaller children up."""
        cdef HeapEntry* heap = self._heap
        cdef TableEntry* table = self._table
        cdef Py_ssize_t n = self._len
        cdef Py_ssize_t child, best, end, c
        while True:
            child = ARITY * pos + 1
            if child >= n:
                break
            best = child
            end = child + ARITY
            if end > n:
                end = n
            for c in range(child + 1, end):
                if _less(heap[c], heap[best]):
                    best = c
            if not _less(heap[best], entry):
                break
            heap[pos] = heap[best]
            table[heap[pos].slot].pos = pos
            pos = best
        heap[pos] = entry
        table[entry.slot].pos = pos

    cdef void _heap_delete(self, Py_ssize_t pos) noexcept:
        """Drop the heap entry at ``pos`` (its table slot is already gone)."""
        self._len -= 1
        cdef Py_ssize_t n = self._len
        if pos == n:
            return
        cdef HeapEntry last = self._heap[n]
        if pos > 0 and _less(last, self._heap[(pos - 1) // ARITY]):
            self._sift_up(pos, last)
        else:
            self._sift_down(pos, last)
