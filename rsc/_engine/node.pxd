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
# the codec's per-task builders, fields() and sender_time(), called as C (node.py imports the same names)
from rsc._core._envelope cimport fields as _fields, sender_time as _sender_time
from rsc._core._envelope cimport result_delivery as _result_delivery, spawn_ack as _spawn_ack

cdef Py_ssize_t _RTID, _COMPUTATION, _INPUT, _LEASE_MS, _KEY, _ORIGIN_NODE, _CAPABILITY, _DRAWN
cdef Py_ssize_t _SEGMENTS
# private module globals a task reads: C globals, not module-dict lookups
cdef tuple _AFTER
cdef long long _MS, _MIN_LEASE_MS, _MAX_DEADLINE_MS
cdef int _KEY_BYTES, _T_SILENCE, _T_BUDGET, _T_RENEW, _E_SEND_ACK_ACCEPTED, _E_SEND_RESULT
cdef int _OUTCOME_SUCCESS, _OUTCOME_CANCELLED, _MAX_FAILURE_MESSAGE_CHARS, _SEND, _START
cpdef Py_ssize_t kept_result_bytes(tuple outcome) except -1  # a C call per finished task
cpdef tuple with_segments(tuple f)  # keeps _on_spawn's fields a C tuple
cdef inline object fingerprinted(object data, object drawn=*)  # inlined: once per admitted spawn
cpdef bint input_matches(object rec, object origin, tuple f) except -1
cdef object _MAX_LEASE, _SpawnRequest, _Segmented
cdef object _spawn_fingerprint, _spawn_matches, _RECEIVED, _INIT, _COMPLETED, _TOMBSTONED

cdef class Admission:
    cpdef find(self, computation)
    cpdef check(self, comp, data)
    cpdef bint ends_at_once(self, comp) except -1

cdef class TaskRecord:
    cdef public object origin, rtid, state

cdef class NodeTask(TaskRecord):
    cdef public object key, computation, input, budget, cancel_reason
    cdef public object deadline_ns, origin_region, origin_task, capability, comp
    cdef public long long lease_ms, serial
    # the executor's fields (rsc.node.executor): one record per task for both
    cdef public object cx, on_done, atask, cfuture, thread_ident, grace_timer, job, ekey, plan
    cdef public object ack_conn  # the connection its SPAWN_ACK is still due on, or None
    cdef public long long start_ns
    cdef public bint interrupted, finished, stepped

    cdef _init(self, origin, rtid, key, computation, input, lease_ms, budget, origin_region,
               origin_task, capability, serial, comp)

@cython.locals(task=NodeTask)
cpdef NodeTask new_node_task(origin, rtid, key, computation, input, lease_ms, budget,
                             origin_region, origin_task, capability, serial, comp)

cdef class _Conn:
    cdef public object id, handshake, origin, resync
    cdef public bint digests, ack_by_result, segments, open

cdef class NodeEngine:
    cdef public Admission admission
    cdef public object name, key, capacity, max_input_bytes, ttl_ns
    cdef public object max_result_bytes, max_kept_result_bytes, capabilities, dropped_outcome
    cdef public LamportClock clock
    cdef public object _entropy, _stats, _trace
    cdef public list actions
    cdef public bint draining, compact_renewals, ack_by_result, value_segments
    cdef public list _acks_due
    cdef public dict _conns, _origin_conns, _last_heard, _running, _by_serial
    cdef public dict _renew, _renew_group
    cdef public RenewalGroup _last_renew
    cdef public long long _n_accepted, _n_rejected, _n_duplicates, _n_dropped
    cdef public list _n_outcomes
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
    @cython.locals(c=_Conn)
    cpdef receive(self, conn, msg, now)
    @cython.locals(c=_Conn, clock=LamportClock)
    cpdef receive_all(self, conn, list msgs, now)
    cpdef _dispatch(self, _Conn c, msg, now)
    cpdef process(self, TaskRecord task, int event)
    @cython.locals(f=tuple)
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
    @cython.locals(grouped=cython.bint)
    cpdef task_finished(self, NodeTask task, int kind, payload, exec_ns, now)
    cpdef _deliver(self, origin, rtid, tuple outcome, now)
    @cython.locals(group=RenewalGroup)
    cpdef RenewalGroup _renew_find(self, origin, long long lease_ms)
    @cython.locals(group=RenewalGroup)
    cpdef _renew_add(self, origin, lease_ms, rtid, now)
    @cython.locals(group=RenewalGroup)
    cpdef _renew_remove(self, origin, lease_ms, rtid)
    cpdef list take_actions(self, bint due_acks=*)
    @cython.locals(task=NodeTask, due=list, conns=dict)
    cpdef flush_acks(self)
