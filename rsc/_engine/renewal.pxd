# Declarations that make renewal.py compile to typed extension types (Cython
# pure-Python mode; see rsc/_engine/node.pxd and rsc/_compiled.py).

cimport cython

cdef unsigned long long _GOLDEN, _MIX1, _MIX2, _MASK

@cython.locals(z=cython.ulonglong)
cpdef unsigned long long task_hash(unsigned long long rtid)

cdef class RenewalGroup:
    cdef public object origin
    cdef public long long lease_ms, gid
    cdef public set ids
    cdef public unsigned long long digest

    cpdef add(self, rtid)
    cpdef bint discard(self, rtid)

cdef class LeaseGroup:
    cdef public long long lease_ms, count, until, alive_since, renewals, chain_renewals
    cdef public unsigned long long digest
    cdef public bint resync_asked

    cpdef add(self, unsigned long long rtid)
    cpdef remove(self, unsigned long long rtid)
    cpdef bint matches(self, count, digest)
    cpdef renewed(self, long long now, long long lease_ns)
    cpdef bint covers(self, long long mark, long long own_until)
    cpdef long long renewals_since(self, long long mark, long long own_until)
