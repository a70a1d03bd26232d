# Declarations that make server.py compile to typed extension types (see
# rsc/_engine/node.pxd and rsc/_compiled.py).

cimport cython

from rsc._engine.node cimport Admission, NodeEngine, NodeTask
from rsc.transport.connection cimport FramedConnection
from rsc.transport.timer cimport EngineTimer
from rsc.clock cimport SystemClock
from rsc.node.executor cimport Executor, TaskReporter
from rsc.cx cimport task_cx

cdef int _SEND, _CLOSE, _START, _CANCEL

cdef class RegistryAdmission(Admission):
    cdef public object registry, _plain, _at_once, _later, _executor, _found_name, _found
    cdef public dict _items

    cpdef find(self, computation)
    cpdef check(self, comp, data)
    cpdef bint ends_at_once(self, comp) except -1

cdef class NodeServer(TaskReporter):
    cdef public object name, address, registry, grace_s, peers, _runtime, _started, _proc
    cdef public SystemClock clock  # the driver's clock (the lab drives engines on virtual time)
    cdef public NodeEngine engine
    cdef public Executor executor
    cdef public dict _conns
    cdef public object _conn_ids, _server, _idle, _stopped, _loop, _journal
    cdef public bint _sync_pending, _compacting, _pumping
    cdef public object handshake_timeout_s, frame_timeout_s, _sweep_s, _sweep_handle
    cdef public object _handshake_sweeps, _frame_sweeps
    cdef public EngineTimer _timer
    cdef public object transport, tls, allow_uids
    cdef public bint _check_peer_uid
    cdef public object _socket_id  # (st_dev, st_ino) of the socket file this node created
    cdef public object catalogue, _status_catalogue, _catalogued  # rsc.catalogue (_publish_catalogue)
    cdef object __weakref__

    @cython.locals(engine=NodeEngine, executor=Executor, live=cython.longlong)
    cpdef _on_messages(self, FramedConnection conn, list msgs)
    cpdef _pump(self)
    @cython.locals(conn=FramedConnection, engine=NodeEngine, executor=Executor)
    cpdef bint _carry_out(self)
    cpdef _start(self, NodeTask task)
    cpdef _on_done(self, NodeTask task, int kind, payload, long long exec_ns)
