# Declarations that make logical.py compile to a typed extension type (see node.pxd).

cdef object _MAX_MERGED

cdef class LamportClock:
    cdef public long long time

    cpdef long long send(self)
    cpdef long long merge(self, wire_time)
