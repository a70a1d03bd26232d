cimport cython

# Declarations that make executor.py compile to typed extension types (see
# rsc/_engine/node.pxd and rsc/_compiled.py).

from rsc.cx cimport Cx

# private module globals a task reads: C globals, not module-dict lookups
cdef object _AsyncioTask
cdef int _SUCCESS, _FAILED, _CANCELLED, _PANICKED, _CANCEL_SIGNAL

cdef class _Task:
    cdef public object key, comp, data, on_done, atask, cfuture, thread_ident, grace_timer, job
    cdef public Cx cx
    cdef public long long start_ns
    cdef public bint interrupted, finished, stepped

    cdef _init(self, key, comp, data, Cx cx, on_done, start_ns)

@cython.locals(task=_Task)
cdef _Task _new_task(key, comp, data, Cx cx, on_done, start_ns)
cdef bint _cancelled(Cx cx)

# the codec's raw-bytes shortcut, shared by the async, inline and sync paths
cdef _input_of(comp, data)
cdef _output_of(comp, out)

cdef class Executor:
    cdef public object _max_threads, _clock_ns, _cancel_grace_s, _loop, _pool, _thread_lock
    cdef public object isolation, workers
    cdef public dict _tasks, _task_names, _eager_kwargs
    cdef public bint _closing, _closed, _plain_tasks
    cdef public list _idle_waiters, _ready
    cdef public bint driver_runs_ready, _eager
    cdef public long long live_tasks
    cdef object __weakref__

    cpdef start(self, key, comp, data, cx, on_done)
    cpdef _start_async(self, _Task task)
    cpdef _make_ready(self, _Task task)
    cpdef _step_eagerly(self, _Task task)
    cpdef _start_process(self, _Task task)
    cpdef run_ready(self)
    cpdef _run_inline(self, _Task task)
    cpdef _finish(self, _Task task, int kind, payload)
