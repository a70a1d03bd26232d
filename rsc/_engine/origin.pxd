# Declarations that make origin.py compile to typed extension types (see node.pxd
# and rsc/_compiled.py).

cimport cython

from rsc._engine.deadlines cimport Deadlines
from rsc._engine.logical cimport LamportClock
from rsc._engine.renewal cimport LeaseGroup
# the codec's per-task builder, fields() and sender_time(), called as C (origin.py imports the same names)
from rsc._core._envelope cimport fields as _fields, sender_time as _sender_time
from rsc._core._envelope cimport spawn_request as _spawn_request

# private module globals a task reads: C globals, not module-dict lookups
cdef tuple _AFTER
cdef object _SPAWNED, _INIT
cdef int _SEND_SPAWN, _ACK_ACCEPTED, _ACK_REJECTED, _RENEWAL, _RESULT, _SEND_CANCEL
cdef int _LEASE_LAPSED, _NODE_RESTARTED, _REFUSE
cdef long long _MS
cdef int _SEND, _EV_RESULT, _T_LEASE, _T_PING
cdef object _ACK_OK, _ResultDelivery, _SpawnAck, _Segmented

cdef class OriginTask:
    cdef public object rtid, node, computation, input, key, deadline_ns, budget, region, task
    cdef public object capability, state, handle, cancel_reason, policy, input_codec, group
    cdef public long long lease_ms, lease_until, renewals, lapsed_at, group_mark
    cdef public bint reported, sent, accepted, drawn

    cdef _init(self, rtid, node, computation, input, lease_ms, key, budget, deadline_ns, region,
               task, capability, handle)

@cython.locals(t=OriginTask)
cpdef OriginTask new_task(rtid, node, computation, input, lease_ms, key, budget, deadline_ns,
                          region, task, capability, handle)

cdef class _Link:
    cdef public object node, lid, handshake, instance, journal, catalogue, codecs
    cdef public bint ready, confirmed, ever_ready, digests, drawn_keys, segments
    cdef public list first_sends
    cdef public dict tasks, lease_counts, groups
    cdef public LeaseGroup last_group
    # last_sent: set on every frame queued, so a C integer (an object field boxed each time)
    cdef public long long ping_nonce, max_input, ping_at, main_lease, main_count, last_sent

    cdef count_lease(self, long long lease_ms)
    cdef uncount_lease(self, long long lease_ms)
    cpdef long long shortest_lease(self)

cdef class OriginEngine:
    cdef public object name, key, _entropy, _trace, record, new_rtid
    cdef public dict features
    cdef public bint compact_renewals, accept_events
    cdef public Deadlines timers
    cdef public LamportClock clock
    cdef public list actions, events
    cdef public dict _links, _tasks, _escalations
    cdef public list _link_list
    cdef public long long dropped, protocol_errors, connection_errors, escalations, retries

    # the per-task path, called from C inside the module (and still from Python)
    cpdef _link(self, node)
    cpdef input_limit(self, node)
    cpdef _Link link_for(self, node)
    cpdef _send(self, _Link link, msg, long long now)
    @cython.locals(link=_Link, tasks=dict, n=Py_ssize_t)
    cpdef spawn(self, OriginTask task, long long now)
    cpdef _send_spawn_msg(self, _Link link, OriginTask t, long long now)
    cpdef forget(self, rtid)
    cdef _retire(self, _Link link, OriginTask task)
    cpdef _report(self, int ev, OriginTask task, detail)
    cpdef _process(self, OriginTask task, int event)
    cpdef _renew(self, OriginTask task, long long until, long long now)
    @cython.locals(link=_Link)
    cpdef receive(self, node, msg, long long now)
    @cython.locals(link=_Link)
    cpdef receive_all(self, node, list msgs, long long now)
    cpdef _receive(self, _Link link, node, msg, long long now)
    @cython.locals(task=OriginTask)
    cpdef _on_ack(self, _Link link, msg, long long now)
    @cython.locals(task=OriginTask)
    cpdef _on_renewal(self, _Link link, rtid, lease_ns, now)
    cpdef _join_group(self, _Link link, OriginTask task)
    @cython.locals(g=LeaseGroup)
    cpdef _join(self, _Link link, OriginTask task, lease_ms)
    @cython.locals(g=LeaseGroup)
    cpdef _fold(self, OriginTask task)
    @cython.locals(g=LeaseGroup)
    cpdef _leave_group(self, _Link link, OriginTask task)
    @cython.locals(task=OriginTask)
    cpdef _on_result(self, _Link link, msg, long long now)
    cpdef list take_actions(self)
    cpdef list take_events(self)
