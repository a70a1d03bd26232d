# Declarations that make logical.py compile to a typed extension type (see node.pxd).

cimport cython

cdef long long _MAX_MERGED

cdef class LamportClock:
    cdef public long long time

    cpdef long long send(self)
    @cython.locals(t=cython.longlong)
    cpdef long long merge(self, wire_time)
