cimport cython

# Declarations that make executor.py compile to typed extension types (see
# rsc/_engine/node.pxd and rsc/_compiled.py).

from rsc.cx cimport Cx
from rsc._engine.node cimport NodeTask

# private module globals a task reads: C globals, not module-dict lookups
cdef object _AsyncioTask, _task_body
cdef int _SUCCESS, _FAILED, _CANCELLED, _PANICKED, _CANCEL_SIGNAL

cdef class TaskReporter:
    cpdef _on_done(self, NodeTask task, int kind, payload, long long exec_ns)

cdef class _Task(NodeTask):
    pass

cdef class _Plan:
    cdef public object comp, fn, name, task_kwargs
    cdef public bint raw, is_async, inline

cdef _exec_init(NodeTask task, key, comp, _Plan plan, data, Cx cx, on_done, long long start_ns)
cdef _key(NodeTask task)
cdef bint _cancelled(Cx cx)

# the codec's raw-bytes shortcut, shared by the async, inline and sync paths
cdef _input_of(_Plan plan, data)
cdef _output_of(_Plan plan, out)

cdef class Executor:
    cdef public object _max_threads, _clock_ns, _cancel_grace_s, _loop, _pool, _thread_lock
    cdef public object isolation, workers, _ended_cb
    cdef public dict _tasks, _plans
    cdef public _Plan _last_plan
    cdef public bint _closing, _closed, _plain_tasks
    cdef public list _idle_waiters, _ready
    cdef public bint driver_runs_ready, _eager
    cdef public long long live_tasks
    cdef object __weakref__

    @cython.locals(task=NodeTask, plan=_Plan, tasks=dict, n=Py_ssize_t, start_ns=cython.longlong)
    cpdef start(self, key, comp, data, cx, on_done)
    @cython.locals(plan=_Plan)
    cpdef _Plan _plan_of(self, comp)
    cpdef _start_async(self, NodeTask task)
    cpdef _make_ready(self, NodeTask task)
    @cython.locals(plan=_Plan)
    cpdef _step_eagerly(self, NodeTask task)
    cpdef _start_process(self, NodeTask task)
    @cython.locals(task=NodeTask, ready=list, plan=_Plan)
    cpdef run_ready(self)
    @cython.locals(plan=_Plan)
    cpdef _first_call(self, NodeTask task)
    cpdef _ended(self, NodeTask task, out, exc)
    @cython.locals(plan=_Plan)
    cpdef _run_inline(self, NodeTask task)
    @cython.locals(end_ns=cython.longlong, elapsed=cython.longlong, reporter=TaskReporter, tasks=dict)
    cpdef _finish(self, NodeTask task, int kind, payload)
