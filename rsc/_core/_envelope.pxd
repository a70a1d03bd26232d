# Fields of the compiled envelope codec's stream decoder (see _envelope.pyx).

cdef class FrameDecoder:
    # The limit as given (returned by the max_frame_bytes property) and as the
    # C value the u32 length is compared with (clamped to 2**32; a length
    # field can never exceed it anyway).
    cdef object _max_frame_bytes
    cdef unsigned long long _limit
    # The handshake cap: while _opening, frames are capped at _opening_limit
    # (_limit above is then that cap; _full_limit is the cap after it) until a
    # frame of kind _opening_kind has been decoded. _opening_max is the cap as
    # given (None: no handshake cap).
    cdef object _opening_max
    cdef unsigned long long _full_limit
    cdef int _opening_kind
    cdef bint _opening
    # Bytes of the one frame that is not complete yet, header included:
    # _buf[0:_held], capacity _cap. Never more than 4 + _limit bytes.
    cdef unsigned char* _buf
    cdef Py_ssize_t _held
    cdef Py_ssize_t _cap
    # A large frame in progress whose body holds one large top-level bin (an
    # input or a result payload, at least LARGE_BIN bytes): the bin's bytes go
    # straight into _big, the bytes object the message will hold, while _buf
    # holds the frame's other bytes (the part before the payload, its bin
    # header included, then the part after it). _big_len is 0 when no such
    # frame is in progress.
    cdef object _big
    cdef Py_ssize_t _big_len, _big_filled, _big_at, _big_header, _big_element, _frame_total
    # A large frame in progress whose body's segments array (a SEGMENTS field)
    # is received bin by bin, each straight into a bytes object of its own:
    # _segs lists those received (None when no such frame is in progress),
    # _segs_left counts those not started, _segs_bytes sums the received ones'
    # sizes; the one in progress is _big (_big_len, _big_filled), as above.
    # _seg_hdr collects the next one's bin header (_seg_hdr_n bytes so far).
    # _buf holds the frame's other bytes, an empty array in the segments'
    # place; _frame_seen counts the frame's bytes taken so far (of
    # _frame_total), _big_element is the segments' element index.
    cdef object _segs
    cdef Py_ssize_t _segs_left, _segs_bytes, _frame_seen
    cdef unsigned char _seg_hdr[5]
    cdef int _seg_hdr_n
    # Set by the first error; while set, feed() raises it again.
    cdef object _error_class
    cdef object _error_text

    cdef int _append(self, const unsigned char* data, Py_ssize_t size) except -1
    cdef unsigned long long _frame_length(self, const unsigned char* header) except 0
    cdef int _feed(self, const unsigned char* data, Py_ssize_t size, list out) except -1
    cdef bint _start_big(self, const unsigned char* frame, Py_ssize_t avail, Py_ssize_t length) except -1
    cdef int _start_segs(self, const unsigned char* frame, Py_ssize_t avail, Py_ssize_t length,
                         Py_ssize_t array_at, Py_ssize_t first_at, Py_ssize_t count,
                         Py_ssize_t element) except -1
    cdef Py_ssize_t _feed_segs(self, const unsigned char* data, Py_ssize_t size, list out) except -1
    cdef object _decode_segs(self)
    cdef object _decode_held(self, Py_ssize_t size)
    cdef Py_ssize_t _feed_large(self, const unsigned char* data, Py_ssize_t size, list out) except -1
    cdef Py_ssize_t _finish_large(self, const unsigned char* data, Py_ssize_t size, Py_ssize_t need,
                                  list out) except -1
    cdef bint _held_to_big(self, Py_ssize_t length) except -1
    cdef Py_ssize_t _feed_big(self, const unsigned char* data, Py_ssize_t size, list out) except -1
    cdef object _decode_big(self)
    cdef void _drop_big(self) noexcept
    cdef int _handshake_frame(self, object msg) except -1
    cdef _start(self)
    # what a connection calls as C for every read (rsc.transport.connection)
    cpdef list feed(self, data)
    cpdef object receive_buffer(self)


# What a compiled engine cimports and calls as C (rsc._engine.origin), still
# Python functions for everyone else.
cpdef object spawn_request(sender, sender_time, remote_task_id, computation, input, lease_ms,
                           idempotency_key, budget, origin_node, origin_region, origin_task,
                           capability, drawn=*, segments=*)
cpdef object spawn_ack(sender, sender_time, remote_task_id, status, reject_code, reject_detail,
                       assigned_node)
cpdef object result_delivery(sender, sender_time, remote_task_id, outcome_kind, payload,
                             execution_time_ns, segments=*)
cpdef tuple fields(msg)
cpdef object encode_frame_parts(msg)  # a connection's send calls it as C
cpdef object sender_time(msg)
