# Declarations that make timer.py compile to a typed extension type (Cython
# pure-Python mode; rsc/_compiled.py picks compiled or source). Every batch of
# engine work ends in follow(), so it is a C call from the compiled drivers.

from rsc._engine.deadlines cimport Deadlines

cdef class EngineTimer:
    cdef public object _loop, _clock, _on_due, _handle, at
    cdef public long long _armed_at  # at as a C integer, -1 when none is armed

    cpdef follow(self, Deadlines timers)
