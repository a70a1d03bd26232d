# Declarations that make deadlines.py compile to a typed extension type (Cython
# pure-Python mode; see rsc/_engine/node.pxd and rsc/_compiled.py).

from rsc._core._leaseheap cimport LeaseHeap

cdef long long _id(int kind, long long key) except -1
cdef long long _check_time(long long at) except -1

cdef class Deadlines:
    cdef public LeaseHeap _heap
    cdef public long long hint
    cdef public list _sources
    cdef long long _counts[8]

    # the per-task path: C calls from the compiled engines
    cpdef add(self, int kind, long long key, long long at)
    cpdef move(self, int kind, long long key, long long at)
    cpdef put(self, int kind, long long key, long long at)
    cpdef bint discard(self, int kind, long long key)
    cpdef note(self, long long at)
    cpdef next_deadline(self)
