# Declarations that make handle.py compile to a typed extension type (Cython
# pure-Python mode; see rsc/_engine/node.pxd and rsc/_compiled.py).

cimport cython

from rsc._engine.origin cimport OriginTask

# module globals join reads: C globals, not module-dict lookups
cdef object _settled, _Segmented
cdef long long _SUCCESS

cdef class RemoteHandle:
    cdef public object _rt, _outcome, _error, _codec, _state, _owner_region, _lease_s, _policy
    cdef public OriginTask _task

    cpdef join(self, cx=*)
    cpdef _take(self)
    # what a join that waits calls: C calls from its coroutine, not lookups by name
    cpdef _value(self)
    cpdef _waiter(self)
    cpdef _unwait(self, waiter)
    cdef public object _region, _holder, _earlier, _waiters, _protocol_errors
    cdef public bint _done, _observed
    cdef object __weakref__

    cpdef _settle(self, outcome, error, state)
    cdef _init(self, rt, OriginTask task, codec, owner_region, lease_s, policy, region, holder)

@cython.locals(h=RemoteHandle)
cpdef RemoteHandle new_handle(rt, OriginTask task, codec, owner_region, lease_s, policy, region,
                              holder)
