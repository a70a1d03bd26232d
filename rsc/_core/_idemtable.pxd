# Layout of the compiled idempotency table (rsc/_core/_idemtable.pyx).
#
# Records live in one growable C array (Rec) reused through a free list. Two
# open-addressing hash tables with linear probing and backward-shift deletion
# (no tombstone slots) index them: KSlot by the 128-bit key, TSlot by every
# (origin, task_id) present, owner or alias. A ring buffer of QEntry holds the
# expiry of each finished record in completion order (sorted by construction).

from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef struct Rec:
    uint64_t k0             # key bytes 0..7 (raw memcpy, not a number)
    uint64_t k1             # key bytes 8..15
    uint64_t f0             # fingerprint bytes 0..7
    uint64_t f1             # fingerprint bytes 8..15
    uint64_t task_id        # owner's task id; in a free slot: the next free slot
    int64_t expires_at      # -1 while running
    int64_t kept            # bytes its outcome counts against the budget; -1 once dropped
    PyObject* origin        # owned ref to an exact str; NULL marks a free slot
    PyObject* outcome       # owned ref once finished; NULL while running
    PyObject* aliases       # owned ref to a list of (str, int) tuples, or NULL
    uint32_t khash          # low 32 bits of the key's hash (probe start, quick compare)
    uint32_t gen            # bumped when the slot is freed; expiry entries carry it
    unsigned char ftag      # the fingerprint's algorithm tag (its first byte)


cdef struct KSlot:
    uint32_t h              # Rec.khash
    uint32_t ref            # record index + 1; 0 = empty


cdef struct TSlot:
    uint64_t task_id
    uint32_t h              # hash of (origin, task_id)
    uint32_t ref            # (record index + 1) | ALIAS_BIT for an alias; 0 = empty


cdef struct QEntry:
    int64_t expires_at
    uint32_t idx
    uint32_t gen            # Rec.gen when queued; a mismatch means the entry is stale


cdef class Decision:
    cdef readonly int dedup
    cdef readonly str name


cdef class IdemRecord:
    # A snapshot: a copy of the record's struct (its PyObject* fields unused)
    # plus owned references; bytes and ints are made when read.
    cdef Rec _rec
    cdef object _origin
    cdef object _outcome
    cdef list _alias_list       # the record's alias list (append-only), or None
    cdef Py_ssize_t _n_aliases  # how many of them existed at the snapshot


cdef class IdemTable:
    cdef int64_t _ttl
    # records: slots [0, _rec_cap); free ones chained through Rec.task_id
    cdef Rec* _recs
    cdef uint32_t _rec_cap
    cdef uint32_t _free_head
    cdef uint32_t _count
    # key index
    cdef KSlot* _kt
    cdef uint32_t _kt_mask
    cdef uint32_t _kt_used
    # (origin, task_id) index
    cdef TSlot* _tt
    cdef uint32_t _tt_mask
    cdef uint32_t _tt_used
    # expiry FIFO (ring buffer, capacity a power of two)
    cdef QEntry* _q
    cdef uint32_t _q_mask
    cdef uint32_t _q_head
    cdef uint32_t _q_len
    cdef int64_t _last_expiry
    # kept-result budget: entries [head, head + _q_passed) of the expiry queue
    # keep no result (already dropped, or walked past by the budget)
    cdef int64_t _max_kept      # -1: no budget
    cdef int64_t _kept_total
    cdef uint64_t _results_dropped
    cdef uint32_t _q_passed
    cdef object _dropped_outcome
    # tombstones are rare (a cancel that overtook its spawn): plain Python
    # tombstones, redeliveries and held results (rsc._core.expiring, shared with the twin)
    cdef object _tombstones, _redeliveries, _held
    cdef dict _tombstone_entries, _redelivery_entries  # the dicts inside the first two
    cdef public object watch    # told (note(at)) of the first expiry added after next_expiry()
    cdef bint _noted
    cdef uint64_t _evict_examined

    # the per-task operations: C calls from a compiled engine that holds the
    # table typed (rsc/_engine/node.pxd), ordinary methods from Python
    cpdef check_and_record(self, key, fingerprint, origin, task_id, now)
    cpdef complete(self, key, task_id, outcome, now, kept_bytes=*)
    cpdef get(self, key)
    cpdef owner_of(self, origin, task_id)
    cpdef key_of(self, origin, task_id)
    cpdef has_tombstone(self, origin, task_id)
    cdef int _expiry_added(self, int64_t at) except -1
    cdef int _drop_oldest_results(self) except -1
    cdef void _pop_queue_head(self) noexcept

    cdef int _reserve_slot(self) except -1
    cdef int _kt_room(self) except -1
    cdef int _tt_room(self) except -1
    cdef int _kt_resize(self, uint32_t cap) except -1
    cdef int _tt_resize(self, uint32_t cap) except -1
    cdef int _q_resize(self, uint32_t cap) except -1
    cdef int _kt_resize_noexc(self, uint32_t cap) noexcept
    cdef int _tt_resize_noexc(self, uint32_t cap) noexcept
    cdef int _q_resize_noexc(self, uint32_t cap) noexcept
    cdef Py_ssize_t _kt_find(self, uint64_t k0, uint64_t k1, uint32_t h, bint* found) noexcept
    cdef Py_ssize_t _tt_find(self, str origin, uint64_t task_id, uint32_t h, bint* found) noexcept
    cdef void _kt_delete_at(self, Py_ssize_t pos) noexcept
    cdef void _tt_delete_at(self, Py_ssize_t pos) noexcept
    cdef void _tt_delete_ref(self, uint64_t task_id, uint32_t h, uint32_t ref) noexcept
    cdef object _remove(self, uint32_t idx)
    cdef IdemRecord _view(self, uint32_t idx)
    cdef void _prefetch_ahead(self) noexcept
    cdef void _drop_stale_heads(self) noexcept
    cdef void _shrink(self) noexcept
