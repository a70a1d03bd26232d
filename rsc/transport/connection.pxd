# Declarations that make connection.py compile to a typed extension type
# (Cython pure-Python mode; rsc/_compiled.py picks compiled or source).

from rsc._core._envelope cimport FrameDecoder, encode_frame_parts as _encode_frame_parts

cdef Py_ssize_t _FLUSH_FRAMES  # read on every send: a C global, not a module-dict lookup

cdef class FramedConnection:
    cdef public object _on_open, _on_messages, _on_protocol_error, _on_close
    cdef public FrameDecoder _decoder  # the compiled codec's: feed() a C call per read
    cdef public list _pending
    cdef public bint _flush_scheduled, _closing, _replying, _write_at_once, _hold
    cdef public bint _wrote_at_once, _receive_direct
    cdef public object transport, closed, tag, _loop
    cdef public bint _pause_reading, _reading_paused
    cdef public long long _sweeps, _progress, _progress_mark, _stalled
    cdef object __weakref__

    cpdef send(self, msg)
    cpdef flush(self)
    cpdef hold_replies(self)
    cpdef hold_until_flush(self)
    cpdef bint writes_at_once(self)
    cpdef _write_pending(self)
    cdef _write_parts(self, tuple parts)
    cdef _read_into(self, view)
    cpdef object _buffer_updated(self, Py_ssize_t nbytes)
    cdef _back_to_data_received(self)
    cdef _protocol_error(self, exc)
    cdef _deliver(self, list msgs)
