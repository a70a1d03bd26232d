# Declarations that make node.py compile to typed extension types (setup.py
# builds it with Cython in pure-Python mode). Without a build, or with
# RSC_NO_EXTENSIONS=1, node.py runs as plain Python: the same source is its
# own pure twin (see rsc/_compiled.py). A new attribute of these classes must
# be declared here too: a compiled class has no __dict__.

cimport cython

from rsc._core._idemtable cimport IdemTable
from rsc._engine.deadlines cimport Deadlines
from rsc._engine.logical cimport LamportClock
from rsc._engine.renewal cimport RenewalGroup

cdef Py_ssize_t _RTID, _COMPUTATION, _INPUT, _LEASE_MS, _KEY, _ORIGIN_NODE, _CAPABILITY
# private module globals a task reads: C globals, not module-dict lookups
cdef tuple _AFTER, _OUTCOME_COUNTERS
cdef object _fields, _fingerprint, _fingerprint_matches, _spawn_ack, _result_delivery, _RECEIVED, _INIT, _COMPLETED, _TOMBSTONED

cdef class Admission:
    cpdef find(self, computation)
    cpdef check(self, comp, data)

cdef class TaskRecord:
    cdef public object origin, rtid, state

cdef class NodeTask(TaskRecord):
    cdef public object key, computation, input, budget, cancel_reason
    cdef public object deadline_ns, origin_region, origin_task, capability, comp
    cdef public long long lease_ms, serial

cdef class _Conn:
    cdef public object id, handshake, origin, resync
    cdef public bint digests

cdef class NodeEngine:
    cdef public Admission admission
    cdef public object name, key, capacity, max_input_bytes, ttl_ns
    cdef public object max_result_bytes, max_kept_result_bytes, capabilities
    cdef public LamportClock clock
    cdef public object _entropy, _stats, _trace
    cdef public list actions
    cdef public bint draining, compact_renewals
    cdef public dict _conns, _origin_conns, _last_heard, _running, _by_serial
    cdef public dict _renew, _renew_group, counters
    cdef public object _journal
    cdef public dict features
    cdef public IdemTable _idem
    cdef public Deadlines timers
    cdef public long long _serial, _next_gid

    # the per-task path, called from C inside the module (and still from Python)
    cpdef _send(self, conn, msg)
    cpdef _stamp(self)
    cpdef _ack(self, conn, rtid, code=*, detail=*)
    cpdef _send_result(self, conn, rtid, tuple outcome)
    cpdef receive(self, conn, msg, now)
    cpdef process(self, TaskRecord task, int event)
    cpdef _on_spawn(self, _Conn c, msg, now)
    cpdef admission_verdict(self, origin, tuple f, comp)
    cpdef _rule_origin_matches(self, origin, tuple f, comp)
    cpdef _rule_key_length(self, origin, tuple f, comp)
    cpdef _rule_lease_positive(self, origin, tuple f, comp)
    cpdef _rule_lease_trackable(self, origin, tuple f, comp)
    cpdef _rule_input_size(self, origin, tuple f, comp)
    cpdef _rule_capability(self, origin, tuple f, comp)
    cpdef _rule_task_id_held(self, origin, tuple f, comp)
    cpdef _rule_tombstoned(self, origin, tuple f, comp)
    cpdef _rule_key_known(self, origin, tuple f, comp)
    cpdef _rule_not_draining(self, origin, tuple f, comp)
    cpdef _rule_computation_known(self, origin, tuple f, comp)
    cpdef _rule_capacity(self, origin, tuple f, comp)
    cpdef _rule_input_valid(self, origin, tuple f, comp)
    cpdef _rule_capability_uses(self, origin, tuple f, comp)
    cpdef task_finished(self, NodeTask task, int kind, payload, exec_ns, now)
    cpdef _deliver(self, origin, rtid, tuple outcome, now)
    @cython.locals(group=RenewalGroup)
    cpdef _renew_add(self, origin, lease_ms, rtid, now)
    @cython.locals(group=RenewalGroup)
    cpdef _renew_remove(self, origin, lease_ms, rtid)
    cpdef list take_actions(self)
