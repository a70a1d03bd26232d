# Declarations that make clock.py compile to typed extension types (Cython
# pure-Python mode; rsc/_compiled.py picks compiled or source). The drivers
# read the clock on every batch of engine work.

cdef object _monotonic_ns

cdef class SystemClock:
    cpdef now_ns(self)

cdef class SimClock:
    cdef public object _now

    cpdef now_ns(self)
