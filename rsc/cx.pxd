# Declarations that make cx.py compile to typed extension types (Cython
# pure-Python mode; see rsc/_engine/node.pxd and rsc/_compiled.py).

cimport cython

cdef object _INFINITE

cdef class RemoteCap:
    cdef public object runtime, default_lease_s, budget, token

cdef class CancelState:
    cdef public object reason, _event, _callbacks

    cdef _init(self)

@cython.locals(state=CancelState)
cdef CancelState _new_cancel_state()

cdef class Cx:
    cdef public object region_id, task_id, budget, remote_cap, _entropy, _seed, node, parent
    cdef public object region, trace
    cdef public CancelState _cancel
    cdef object __weakref__

    cdef _init(self, remote_cap, budget, region_id, task_id, entropy, node, seed, parent,
               cancel_state, region, trace)

@cython.locals(cx=Cx)
cpdef Cx task_cx(region_id, task_id, budget, node, remote_cap)
