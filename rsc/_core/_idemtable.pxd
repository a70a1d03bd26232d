# Layout of the compiled idempotency table (rsc/_core/_idemtable.pyx).
#
# Records live in fixed-size blocks of C structs (Rec) found through a block
# table, reused through a free list; a block is never moved or copied. Two
# indexes find them: KSlot by the 128-bit key, TSlot by every (origin, task_id)
# present, owner or alias. Each index is 256 shards chosen by the top 8 bits of
# the hash, each shard an open-addressing table with linear probing and
# backward-shift deletion (no tombstone slots) that grows and shrinks on its
# own, so a resize moves 1/256 of the index. The expiry of each finished record
# is a QEntry in a FIFO of fixed-size blocks, in completion order (sorted by
# construction); blocks are added at the tail and freed at the head, never
# copied.

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


cdef struct KShard:
    KSlot* slots            # mask + 1 slots; an empty shard shares one static empty slot
    uint32_t mask
    uint32_t used


cdef struct TShard:
    TSlot* slots
    uint32_t mask
    uint32_t used


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
    # records: slots [0, _rec_hw) have been handed out (the rest of the last
    # block is untouched); free ones chained through Rec.task_id
    cdef Rec** _rb              # record blocks of REC_BLOCK slots each
    cdef uint32_t _rb_len       # blocks allocated
    cdef uint32_t _rb_cap       # entries of _rb
    cdef uint32_t _rec_hw
    cdef uint32_t _free_head
    cdef uint32_t _count
    # key index and (origin, task_id) index: SHARDS shards each
    cdef KShard _ks[256]
    cdef TShard _ts[256]
    cdef uint32_t _shrink_next  # the next shard evict_expired looks at for shrinking
    # expiry FIFO: entry p (absolute position) is in block p >> Q_SHIFT, kept
    # in _qb[(p >> Q_SHIFT) & _qb_mask]; blocks from the head's to the one the
    # next entry goes in are allocated
    cdef QEntry** _qb
    cdef uint32_t _qb_mask
    cdef uint64_t _q_head
    cdef uint32_t _q_len
    cdef QEntry* _q_spare       # one drained block kept for the tail's next
    cdef uint64_t _moved        # slots and entries moved or set up by growth and shrink (for tests)
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
    cdef int _q_tail_block(self) except -1
    cdef Py_ssize_t _kt_find(self, KShard* sh, uint64_t k0, uint64_t k1, uint32_t h, bint* found) noexcept
    cdef Py_ssize_t _tt_find(self, TShard* sh, str origin, uint64_t task_id, uint32_t h, bint* found) noexcept
    cdef void _kt_delete_at(self, KShard* sh, Py_ssize_t pos) noexcept
    cdef void _tt_delete_at(self, TShard* sh, Py_ssize_t pos) noexcept
    cdef void _tt_delete_ref(self, uint64_t task_id, uint32_t h, uint32_t ref) noexcept
    cdef object _remove(self, uint32_t idx)
    cdef IdemRecord _view(self, uint32_t idx)
    cdef void _prefetch_ahead(self) noexcept
    cdef void _drop_stale_heads(self) noexcept
    cdef void _shrink(self) noexcept
