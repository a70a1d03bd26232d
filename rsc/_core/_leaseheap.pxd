# Field declarations of the compiled lease heap (implementation in _leaseheap.pyx).

cimport cython
from libc.stdint cimport int64_t, uint64_t


cdef struct HeapEntry:
    int64_t deadline
    uint64_t seq          # tie-break: order of the add/renew that set the deadline
    Py_ssize_t slot       # index of this lease's TableEntry


cdef struct TableEntry:
    uint64_t lease_id
    Py_ssize_t pos        # index of this lease's HeapEntry; -1 marks an empty slot


@cython.final
cdef class LeaseHeap:
    # Invariants, kept by every method before it returns (or raises):
    # - _heap[0:_len] is a 4-ary min-heap on (deadline, seq).
    # - _table has _table_mask + 1 slots (a power of two), linear probing,
    #   no tombstones, holding exactly _len live entries, load <= 1/2.
    # - for every live heap position p: _table[_heap[p].slot].pos == p,
    #   and for every live table slot s: _heap[_table[s].pos].slot == s.
    # - every seq in the heap is < _seq, and no two are equal.
    cdef HeapEntry* _heap
    cdef Py_ssize_t _len
    cdef Py_ssize_t _heap_cap
    cdef TableEntry* _table
    cdef Py_ssize_t _table_mask
    cdef uint64_t _seq

    # the per-task operations: C calls from a compiled engine that holds the
    # heap typed (rsc/_engine/{node,origin}.pxd), ordinary methods from Python
    cpdef add(self, lease_id, expires_at)
    cpdef renew(self, lease_id, expires_at)
    cpdef discard(self, lease_id)
    cpdef next_deadline(self)
    # the same on C values, for a compiled caller (rsc._engine.deadlines);
    # the pure twin has them as aliases of add, renew and discard
    cdef int add_raw(self, uint64_t lid, int64_t t) except -1
    cdef int renew_raw(self, uint64_t lid, int64_t t) except -1
    cdef bint discard_raw(self, uint64_t lid) noexcept

    cdef Py_ssize_t _find(self, uint64_t lease_id) noexcept
    cdef void _table_delete(self, Py_ssize_t slot) noexcept
    cdef bint _table_rehash(self, Py_ssize_t new_cap) noexcept
    cdef int _reserve_one(self) except -1
    cdef void _shrink_to_fit(self) noexcept
    cdef void _sift_up(self, Py_ssize_t pos, HeapEntry entry) noexcept
    cdef void _sift_down(self, Py_ssize_t pos, HeapEntry entry) noexcept
    cdef void _heap_delete(self, Py_ssize_t pos) noexcept
    cdef int _reset(self) except -1
