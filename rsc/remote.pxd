# Declarations that make remote.py compile to typed extension types (Cython
# pure-Python mode; see rsc/_engine/node.pxd and rsc/_compiled.py).

cimport cython

from rsc._engine.origin cimport OriginEngine, OriginTask, _Link
from rsc.transport.connection cimport FramedConnection
from rsc.transport.timer cimport EngineTimer
from rsc.clock cimport SystemClock
from rsc.cx cimport Cx, RemoteCap
from rsc.handle cimport RemoteHandle
from rsc.links cimport Links, NodeLink

# private module globals a spawn reads: C globals, not module-dict lookups
cdef object _INFINITE, _MSGPACK, _RAW, _DEFAULT_POLICY
cdef Py_ssize_t _FLUSH_AT
cdef int _SEND, _CLOSE, _EV_RESULT
cdef tuple _STATE_OF_KIND

cdef class Runtime:
    cdef public object cluster, name, key, default_lease_s, connect_timeout_s, backoff_max_s
    cdef public object transport, tls, heap_keep_bytes
    cdef public object trace, _ids, _key_rng, _loop
    cdef public SystemClock clock  # the driver's clock (the lab drives engines on virtual time)
    cdef public EngineTimer _timer
    cdef public OriginEngine engine
    cdef public Links _net
    cdef public dict _links, _status_waiters, _names
    cdef public bytes _key_buf
    cdef public Py_ssize_t _key_pos
    cdef public bint _closed, _pump_due
    cdef public object _lease_seen, _lease_s_seen
    cdef public long long _lease_ms_seen
    cdef public long long _protocol_errors
    cdef object __weakref__

    @cython.locals(cap=RemoteCap, link=NodeLink, task=OriginTask, handle=RemoteHandle, pos=Py_ssize_t,
                   codecs=dict, elink=_Link, kp="const char*", conn=FramedConnection)
    cpdef _spawn(self, Cx cx, node, computation, input, lease, budget, idempotency_key, codec,
                 on_lease_expired)
    cpdef _on_messages(self, FramedConnection conn, list msgs)
    @cython.locals(conn=FramedConnection, link=NodeLink)
    cpdef _pump(self)
    @cython.locals(handle=RemoteHandle, outcome=tuple)
    cpdef _on_event(self, int ev, OriginTask task, detail)

# spawn_remote calls the runtime's _spawn as C (rt is the type-checked runtime)
# and reads the Cx's and the RemoteCap's fields as C
@cython.locals(rt=Runtime, c=Cx, cap=RemoteCap)
cpdef spawn_remote(cx, node, computation, input=*, lease=*, budget=*, idempotency_key=*,
                   codec=*, on_lease_expired=*)
