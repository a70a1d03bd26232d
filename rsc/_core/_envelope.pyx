# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, binding=False
"""Wire v1 envelope codec, compiled.

The twin ``rsc._core._envelope_py`` has the same API and behaviour byte for
byte; its docstring states the rules both keep. This module carries its own
MessagePack encoder and decoder (only the types wire v1 uses; ext types are
malformed), producing exactly what ``msgpack.packb(..., use_bin_type=True)``
produces: the smallest encoding of every int and length, floats as float64.

How it is fast, and what that relies on:

- Encoding writes into a buffer on the C stack and grows into a bytes object
  only for large messages, so a typical message costs one allocation.
- Decoding parses the body with a pointer in one pass, checking each field as
  it reads it, and never builds an intermediate list. Elements it drops
  (trailing ones, an unknown kind's) are checked by a walk that builds
  nothing (``r_skip_value``), so a body's cost is its bytes plus the message.
- Message objects are built with ``tp_alloc`` and filled by writing their
  ``__slots__`` directly, and encoding reads the slots the same way. That
  relies on the classes in ``rsc._core.messages`` being plain slot classes
  whose ``__init__`` only stores its arguments. The C tables the encoder and
  decoder run on (``SCHEMA``, ``NFIELDS``, ``OFFSET``) are built when this
  module is imported, from ``rsc._core.schema.MESSAGES`` (the one place a
  message's layout is written) and the slots of the classes built from it;
  the import fails loudly if they do not fit.
"""

from cpython.bool cimport PyBool_Check
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Check, PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.list cimport (PyList_Check, PyList_GET_ITEM, PyList_GET_SIZE, PyList_New,
                          PyList_SET_ITEM)
from cpython.long cimport PyLong_Check
from cpython.memoryview cimport PyMemoryView_Check, PyMemoryView_FromObject
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.tuple cimport (PyTuple_Check, PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New,
                           PyTuple_SET_ITEM)
from cpython.unicode cimport PyUnicode_Check
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy, memmove

import reprlib
import types

from msgpack import Packer as _MsgpackPacker

from rsc._core import messages as _messages
from rsc._core import schema as _schema
from rsc.errors import (
    FrameTooLarge,
    InvalidArgument,
    MalformedFrame,
    ProtocolError,
    UnexpectedMessage,
    VersionMismatch,
)

cdef extern from *:
    """
    #include <stdint.h>
    #include <structmember.h>  /* PyMemberDef (Python.h has it from 3.12 on) */
    static CYTHON_INLINE PyObject* rsc_alloc(PyTypeObject* t) { return t->tp_alloc(t, 0); }
    static CYTHON_INLINE PyObject* rsc_slot(PyObject* o, Py_ssize_t off) {
        return *(PyObject**)((char*)o + off);
    }
    static CYTHON_INLINE void rsc_slot_set(PyObject* o, Py_ssize_t off, PyObject* v) {
        PyObject** p = (PyObject**)((char*)o + off);
        PyObject* old = *p;
        Py_INCREF(v);
        *p = v;
        Py_XDECREF(old);
    }
    static CYTHON_INLINE Py_ssize_t rsc_member_offset(PyObject* d) {
        return ((PyMemberDescrObject*)d)->d_member->offset;
    }
    static CYTHON_INLINE int rsc_member_type(PyObject* d) {
        return ((PyMemberDescrObject*)d)->d_member->type;
    }
    static CYTHON_INLINE int rsc_member_flags(PyObject* d) {
        return ((PyMemberDescrObject*)d)->d_member->flags;
    }
    /* 1 and the value if the int v (exact, or a subclass) is non-negative and
       fits one internal digit, else 0: the common case without a call. */
    static CYTHON_INLINE int rsc_small_nonneg(PyObject* v, uint64_t* out) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject*)v)) {
            Py_ssize_t x = PyUnstable_Long_CompactValue((PyLongObject*)v);
            if (x >= 0) { *out = (uint64_t)x; return 1; }
        }
        return 0;
    #else
        Py_ssize_t size = Py_SIZE(v);
        if (size == 0) { *out = 0; return 1; }
        if (size == 1) { *out = ((PyLongObject*)v)->ob_digit[0]; return 1; }
        return 0;
    #endif
    }
    static CYTHON_INLINE uint16_t rsc_ld16(const unsigned char* p) {
        return (uint16_t)(((uint16_t)p[0] << 8) | p[1]);
    }
    static CYTHON_INLINE uint32_t rsc_ld32(const unsigned char* p) {
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    }
    static CYTHON_INLINE uint64_t rsc_ld64(const unsigned char* p) {
        return ((uint64_t)rsc_ld32(p) << 32) | rsc_ld32(p + 4);
    }
    static CYTHON_INLINE void rsc_st16(unsigned char* p, uint16_t v) {
        p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v;
    }
    static CYTHON_INLINE void rsc_st32(unsigned char* p, uint32_t v) {
        p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
    }
    static CYTHON_INLINE void rsc_st64(unsigned char* p, uint64_t v) {
        rsc_st32(p, (uint32_t)(v >> 32)); rsc_st32(p + 4, (uint32_t)v);
    }
    """
    PyObject* rsc_alloc(PyTypeObject* t) except NULL
    PyObject* rsc_slot(PyObject* o, Py_ssize_t off)
    void rsc_slot_set(PyObject* o, Py_ssize_t off, PyObject* v)
    Py_ssize_t rsc_member_offset(PyObject* d)
    int rsc_member_type(PyObject* d)
    int rsc_member_flags(PyObject* d)
    int rsc_small_nonneg(PyObject* v, uint64_t* out)
    uint16_t rsc_ld16(const unsigned char* p)
    uint32_t rsc_ld32(const unsigned char* p)
    uint64_t rsc_ld64(const unsigned char* p)
    void rsc_st16(unsigned char* p, uint16_t v)
    void rsc_st32(unsigned char* p, uint32_t v)
    void rsc_st64(unsigned char* p, uint64_t v)

cdef extern from "Python.h":
    PyObject* _bytes_new "PyBytes_FromStringAndSize"(const char* s, Py_ssize_t n) except NULL
    char* _bytes_data "PyBytes_AS_STRING"(PyObject* o)
    int _PyBytes_Resize(PyObject** o, Py_ssize_t n) except -1
    object PyBytes_FromStringAndSize(const char* s, Py_ssize_t n)
    void _decref "Py_DECREF"(PyObject* o)
    void _xdecref "Py_XDECREF"(PyObject* o)
    PyObject* _decode_utf8 "PyUnicode_DecodeUTF8"(const char* s, Py_ssize_t n, const char* errors)
    const char* _utf8 "PyUnicode_AsUTF8AndSize"(object o, Py_ssize_t* n)
    long long _as_ll "PyLong_AsLongLongAndOverflow"(object o, int* overflow)
    unsigned long long _as_ull "PyLong_AsUnsignedLongLong"(object o)
    object PyLong_FromUnsignedLongLong(unsigned long long v)
    object PyLong_FromLongLong(long long v)
    object PyFloat_FromDouble(double v)
    double PyFloat_Unpack4(const char* p, int le)
    double PyFloat_Unpack8(const char* p, int le)
    int PyFloat_Pack8(double x, char* p, int le)
    object PyDict_New()
    PyObject* PyErr_Occurred()
    void PyErr_Clear()
    int _get_buffer "PyObject_GetBuffer"(object o, Py_buffer* view, int flags)
    Py_ssize_t _unicode_length "PyUnicode_GET_LENGTH"(PyObject* o)
    void* _unicode_data "PyUnicode_DATA"(PyObject* o)
    bint _unicode_is_ascii "PyUnicode_IS_ASCII"(PyObject* o)
    bint _unicode_is_compact_ascii "PyUnicode_IS_COMPACT_ASCII"(PyObject* o)


# --- constants -----------------------------------------------------------------------

IMPLEMENTATION = "c"
DEFAULT_MAX_FRAME_BYTES = _messages.DEFAULT_MAX_FRAME_BYTES
MAX_NESTING_DEPTH = 64
MAX_CANCEL_KIND = 11
MAX_TASK_STATE = 5
MAX_PRIORITY = 255
NONCE_BYTES = 32
PROOF_BYTES = 32

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "IMPLEMENTATION",
    "MAX_NESTING_DEPTH",
    "FrameDecoder",
    "decode",
    "encode",
    "encode_frame",
    "encode_frame_parts",
    "encode_frames",
    "fields",
    "result_delivery",
    "spawn_ack",
    "spawn_request",
]

cdef enum:
    KIND_SLOTS = 32           # kinds are 0..31 (= schema.MAX_KINDS, checked at import)
    # the kinds the builders make, as C constants (_load_layout checks them)
    K_SPAWN_REQUEST = 10
    K_SPAWN_ACK = 11
    K_RESULT_DELIVERY = 13
    MAX_FIELDS = 12           # fields after the envelope (SPAWN_REQUEST has 12)
    STACK_BYTES = 400         # encode buffer on the C stack before growing into bytes
    # A bin of at least LARGE_BIN bytes is not copied into a frame by
    # encode_frame_parts, and a frame of at least LARGE_BIN bytes that holds one
    # is received straight into the bytes object the message keeps (FrameDecoder).
    LARGE_BIN = 65536
    C_MAX_SEGMENTS = 32       # = schema.MAX_SEGMENTS (checked at import)
    # large values one frame leaves out of its buffer, at most: four, and its segments
    MAX_HOLES = 4 + C_MAX_SEGMENTS
    # A large frame that starts in a short read is looked at again for its
    # payload while fewer than this many of its bytes are held (its header
    # and every field before the payload fit 4 KiB: FRAME_OVERHEAD_BYTES).
    BIG_PROBE = 4 + 4096
    C_MAX_DEPTH = 64          # = MAX_NESTING_DEPTH
    C_MAX_VECTOR = 1024       # = messages.MAX_VECTOR_CLOCK_ENTRIES
    C_MAX_NODE_ID = 255       # = messages.MAX_NODE_ID_BYTES
    C_PROTOCOL_VERSION = 1
    C_MAX_CANCEL_KIND = 11    # = MAX_CANCEL_KIND
    C_MAX_TASK_STATE = 5      # = MAX_TASK_STATE
    C_MAX_PRIORITY = 255      # = MAX_PRIORITY
    C_BIN_SIZE = 32           # = NONCE_BYTES = PROOF_BYTES
    MEMBER_OBJECT_EX = 16     # structmember.h T_OBJECT_EX, what __slots__ make
    MEMBER_READONLY = 1

# Field types of the schema (one per field after the envelope).
cdef enum FieldType:
    F_UINT = 1
    F_STR
    F_BIN
    F_BIN_OR_NIL
    F_BIN32
    F_BIN32_OR_NIL
    F_BUDGET
    F_REASON
    F_PAYLOAD          # by the outcome_kind just before it
    F_STATUS           # uint 0..1
    F_STATE            # uint 0..MAX_TASK_STATE
    F_OUTCOME          # uint 0..3
    F_VERSION          # uint; another than 1 is VersionMismatch
    F_STR_MAP          # map str -> generic
    F_UINT_LIST        # array of uint
    F_FLAG             # bool; optional and trailing (schema.FLAG): absent reads as False
    F_SEGMENTS         # array of bins; optional and trailing (schema.SEGMENTS): absent reads as None

# Field type code of rsc._core.schema -> the C code the codec switches on.
_FIELD_CODES = {
    _schema.UINT: F_UINT, _schema.STR: F_STR, _schema.BIN: F_BIN,
    _schema.BIN_OR_NIL: F_BIN_OR_NIL, _schema.BIN32: F_BIN32,
    _schema.BIN32_OR_NIL: F_BIN32_OR_NIL, _schema.BUDGET: F_BUDGET,
    _schema.REASON: F_REASON, _schema.PAYLOAD: F_PAYLOAD, _schema.STATUS: F_STATUS,
    _schema.STATE: F_STATE, _schema.OUTCOME: F_OUTCOME, _schema.VERSION: F_VERSION,
    _schema.STR_MAP: F_STR_MAP, _schema.UINT_LIST: F_UINT_LIST, _schema.FLAG: F_FLAG,
    _schema.SEGMENTS: F_SEGMENTS,
}

# kind -> ((field name, C field code), ...), from the schema.
_SCHEMA = {spec.kind: tuple((name, _FIELD_CODES[code]) for name, code in spec.fields)
           for spec in _schema.MESSAGES}

_WIRE_NAMES = {spec.kind: spec.wire_name for spec in _schema.MESSAGES}  # kind -> PROTOCOL.md name

# What a payload field is, by the outcome before it (its C code, filled by
# _load_layout from rsc._core.schema.PAYLOAD_TYPES), and how encode names it.
cdef int PAYLOAD_CODE[4]
_PAYLOAD_EXPECTED = {
    F_BIN: "bytes",
    F_REASON: "a cancel reason 2-tuple (kind 0..11, message str | None)",
    F_STR: "a str",
}

_EXPECTED = {
    F_UINT: "an int in 0..2**64-1",
    F_STR: "a str encodable as UTF-8",
    F_BIN: "bytes",
    F_BIN_OR_NIL: "bytes or None",
    F_BIN32: "32 bytes",
    F_BIN32_OR_NIL: "32 bytes or None",
    F_BUDGET: ("None or a 4-tuple (deadline_ms | None, poll_quota | None, "
               "cost_quota | None, priority 0..255) of ints"),
    F_REASON: "a cancel reason 2-tuple (kind 0..11, message str | None)",
    F_STATUS: "an int in 0..1",
    F_STATE: "an int in 0..5",
    F_OUTCOME: "an int in 0..3",
    F_VERSION: "1 (this codec speaks wire v1 only)",
    F_STR_MAP: ("a dict with str keys and MessagePack values (None, bool, int in "
                "-2**63..2**64-1, float, str, bytes, list/tuple, dict with scalar keys) "
                f"nested at most {MAX_NESTING_DEPTH} levels"),
    F_UINT_LIST: "a list of ints in 0..2**64-1",
    F_FLAG: "a bool",
    F_SEGMENTS: f"None or a list of at most {C_MAX_SEGMENTS} bytes",
}

# A flag left out of a frame (Python's False: a bare False here would be C's 0).
cdef object _FLAG_CLEAR = False

# Filled by _load_layout() at import; the arrays are indexed by kind.
cdef PyTypeObject* CLS[KIND_SLOTS]
cdef int NFIELDS[KIND_SLOTS]
# Fields every frame of the kind holds: NFIELDS less its trailing optional fields.
cdef int NREQUIRED[KIND_SLOTS]
# The index of the kind's SEGMENTS field, or -1 (FrameDecoder receives its bins
# straight into their own bytes objects).
cdef int SEG_FIELD[KIND_SLOTS]
cdef int SCHEMA[KIND_SLOTS][MAX_FIELDS]
# Slot offsets: [0] sender, [1] sender_time, [2 + i] field i.
cdef Py_ssize_t OFFSET[KIND_SLOTS][MAX_FIELDS + 2]
# Kinds in the order encode() tries them (most frequent first).
cdef int ENCODE_ORDER[KIND_SLOTS]
cdef int N_KINDS = 0

_CLASS_NAMES = {}   # kind -> "SpawnRequest"
_FIELD_NAMES = {}   # kind -> ("sender", "sender_time", field...)
_CLASSES = {}       # kind -> class (keeps the classes CLS points at alive)

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40


def _short(value):
    return f"{_repr.repr(value)} ({type(value).__name__})"


def _member_offset(cls, name):
    for base in cls.__mro__:
        descr = base.__dict__.get(name)
        if descr is None:
            continue
        if (type(descr) is not types.MemberDescriptorType
                or rsc_member_type(<PyObject*>descr) != MEMBER_OBJECT_EX
                or rsc_member_flags(<PyObject*>descr) & MEMBER_READONLY):
            break
        return rsc_member_offset(<PyObject*>descr)
    raise ImportError(
        f"rsc._core._envelope: {cls.__name__}.{name} is not a plain __slots__ field; the "
        "compiled codec reads and writes message slots directly (see its docstring)")


def _load_layout():
    global N_KINDS
    cdef int kind, i, j, code
    # The most frequent kinds first; any other kind of the schema after them.
    hot = [_schema.SPAWN_REQUEST, _schema.RESULT_DELIVERY, _schema.SPAWN_ACK,
           _schema.LEASE_RENEWAL, _schema.LEASE_RENEWAL_BATCH, _schema.PING, _schema.PONG,
           _schema.CANCEL_REQUEST, _schema.STATUS_REQUEST, _schema.STATUS_REPLY]
    order = hot + [kind for kind in sorted(_SCHEMA) if kind not in hot]
    if sorted(order) != sorted(_messages.MESSAGE_CLASSES) or sorted(order) != sorted(_SCHEMA):
        raise ImportError("rsc._core._envelope: message kinds differ from rsc._core.schema")
    if _schema.MAX_KINDS != KIND_SLOTS:
        raise ImportError(f"rsc._core._envelope: KIND_SLOTS is {KIND_SLOTS}, rsc._core.schema "
                          f"allows kinds below {_schema.MAX_KINDS}")
    if max(len(fields) for fields in _SCHEMA.values()) > MAX_FIELDS:
        raise ImportError(f"rsc._core._envelope: a message has more than {MAX_FIELDS} fields; "
                          "raise MAX_FIELDS")
    if (K_SPAWN_REQUEST, K_SPAWN_ACK, K_RESULT_DELIVERY) != (
            _messages.SPAWN_REQUEST, _messages.SPAWN_ACK, _messages.RESULT_DELIVERY):
        raise ImportError("rsc._core._envelope: the builders' kinds differ from rsc._core.messages")
    if _schema.MAX_SEGMENTS != C_MAX_SEGMENTS:
        raise ImportError("rsc._core._envelope: C_MAX_SEGMENTS differs from rsc._core.schema")
    if tuple(len(_SCHEMA[k]) for k in (K_SPAWN_REQUEST, K_SPAWN_ACK, K_RESULT_DELIVERY)) != (
            12, 5, 5):
        raise ImportError("rsc._core._envelope: spawn_request, spawn_ack or result_delivery "
                          "sets fewer fields than rsc._core.schema lists; add them there")
    if sorted(_schema.PAYLOAD_TYPES) != [0, 1, 2, 3] or not all(
            _FIELD_CODES[code] in _PAYLOAD_EXPECTED for code in _schema.PAYLOAD_TYPES.values()):
        raise ImportError("rsc._core._envelope: a payload is bin, str or a cancel reason for "
                          "each outcome 0..3")
    for i, type_code in _schema.PAYLOAD_TYPES.items():
        PAYLOAD_CODE[i] = _FIELD_CODES[type_code]
    for i in range(KIND_SLOTS):
        CLS[i] = NULL
        NFIELDS[i] = 0
        NREQUIRED[i] = 0
        SEG_FIELD[i] = -1
    for i, kind in enumerate(order):
        ENCODE_ORDER[i] = kind
        cls = _messages.MESSAGE_CLASSES[kind]
        schema = _SCHEMA[kind]
        names = tuple(name for name, _ in schema)
        if tuple(cls.fields) != names or cls.kind != kind:
            raise ImportError(
                f"rsc._core._envelope: {cls.__name__} fields {cls.fields} differ from the "
                f"wire v1 schema {names} in rsc._core.schema")
        _CLASSES[kind] = cls
        _CLASS_NAMES[kind] = cls.__name__
        _FIELD_NAMES[kind] = ("sender", "sender_time") + names
        CLS[kind] = <PyTypeObject*>cls
        NFIELDS[kind] = len(schema)
        NREQUIRED[kind] = _schema.BY_KIND[kind].required
        OFFSET[kind][0] = _member_offset(cls, "sender")
        OFFSET[kind][1] = _member_offset(cls, "sender_time")
        for j, (name, code) in enumerate(schema):
            SCHEMA[kind][j] = code
            if code == F_SEGMENTS:
                SEG_FIELD[kind] = j
            OFFSET[kind][j + 2] = _member_offset(cls, name)
    N_KINDS = len(order)


_load_layout()


# --- encoding: a growable buffer ------------------------------------------------------

cdef struct Writer:
    unsigned char* buf       # the stack array below, then the bytes object's data
    Py_ssize_t pos
    Py_ssize_t cap
    PyObject* obj            # the bytes object once grown (owned), else NULL
    # encode_frame_parts only (holes is -1 otherwise): large bytes values (and views) left
    # out of buf, each at the offset of buf where its bytes belong (borrowed:
    # the message being encoded holds them); hole_bytes is their total size
    int holes
    Py_ssize_t hole_at[MAX_HOLES]
    PyObject* hole_obj[MAX_HOLES]
    Py_ssize_t hole_bytes
    unsigned char stack[STACK_BYTES]


cdef inline void w_open(Writer* w) noexcept:
    w.buf = w.stack
    w.pos = 0
    w.cap = STACK_BYTES
    w.obj = NULL
    w.holes = -1


cdef int w_grow(Writer* w, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap = w.cap * 2
    if cap < w.pos + n + 64:
        cap = w.pos + n + 64
    if w.obj == NULL:
        w.obj = _bytes_new(NULL, cap)
        memcpy(_bytes_data(w.obj), w.buf, w.pos)
    else:
        _PyBytes_Resize(&w.obj, cap)   # on failure it frees the object and sets NULL
    w.buf = <unsigned char*>_bytes_data(w.obj)
    w.cap = cap
    return 0


cdef inline int w_reserve(Writer* w, Py_ssize_t n) except -1:
    if w.cap - w.pos < n:
        return w_grow(w, n)
    return 0


cdef object w_close(Writer* w):
    """The written bytes; the writer is empty afterwards."""
    cdef object result
    if w.obj == NULL:
        return PyBytes_FromStringAndSize(<char*>w.buf, w.pos)
    _PyBytes_Resize(&w.obj, w.pos)
    result = <object>w.obj
    _decref(w.obj)
    w.obj = NULL
    return result


cdef inline void w_discard(Writer* w) noexcept:
    _xdecref(w.obj)
    w.obj = NULL


cdef inline int w_byte(Writer* w, unsigned char b) except -1:
    if w.cap == w.pos:
        w_grow(w, 1)
    w.buf[w.pos] = b
    w.pos += 1
    return 0


cdef inline int w_raw(Writer* w, const void* data, Py_ssize_t n) except -1:
    if n > 0:
        w_reserve(w, n)
        memcpy(w.buf + w.pos, data, n)
        w.pos += n
    return 0


cdef inline int w_uint(Writer* w, uint64_t v) except -1:
    if v < 0x80 and w.pos < w.cap:
        w.buf[w.pos] = <unsigned char>v
        w.pos += 1
        return 0
    return w_uint_wide(w, v)


cdef int w_uint_wide(Writer* w, uint64_t v) except -1:
    cdef unsigned char* p
    w_reserve(w, 9)
    p = w.buf + w.pos
    if v < 0x80:
        p[0] = <unsigned char>v
        w.pos += 1
    elif v <= 0xff:
        p[0] = 0xcc
        p[1] = <unsigned char>v
        w.pos += 2
    elif v <= 0xffff:
        p[0] = 0xcd
        rsc_st16(p + 1, <uint16_t>v)
        w.pos += 3
    elif v <= 0xffffffffUL:
        p[0] = 0xce
        rsc_st32(p + 1, <uint32_t>v)
        w.pos += 5
    else:
        p[0] = 0xcf
        rsc_st64(p + 1, v)
        w.pos += 9
    return 0


cdef int w_negative(Writer* w, int64_t v) except -1:
    cdef unsigned char* p
    w_reserve(w, 9)
    p = w.buf + w.pos
    if v >= -32:
        p[0] = <unsigned char>(v & 0xff)
        w.pos += 1
    elif v >= -128:
        p[0] = 0xd0
        p[1] = <unsigned char>(v & 0xff)
        w.pos += 2
    elif v >= -32768:
        p[0] = 0xd1
        rsc_st16(p + 1, <uint16_t>v)
        w.pos += 3
    elif v >= -2147483648LL:
        p[0] = 0xd2
        rsc_st32(p + 1, <uint32_t>v)
        w.pos += 5
    else:
        p[0] = 0xd3
        rsc_st64(p + 1, <uint64_t>v)
        w.pos += 9
    return 0


cdef int w_length(Writer* w, Py_ssize_t n, unsigned char fix, Py_ssize_t fix_limit,
                  unsigned char m8, unsigned char m16, unsigned char m32) except -1:
    """A str/bin/array/map header: fix (None if 0) below fix_limit, then 8/16/32-bit."""
    cdef unsigned char* p
    w_reserve(w, 5)
    p = w.buf + w.pos
    if n < fix_limit:
        p[0] = fix | <unsigned char>n
        w.pos += 1
    elif m8 and n <= 0xff:
        p[0] = m8
        p[1] = <unsigned char>n
        w.pos += 2
    elif n <= 0xffff:
        p[0] = m16
        rsc_st16(p + 1, <uint16_t>n)
        w.pos += 3
    elif <unsigned long long>n <= 0xffffffffULL:
        p[0] = m32
        rsc_st32(p + 1, <uint32_t>n)
        w.pos += 5
    else:
        raise InvalidArgument(f"a value of {n} elements/bytes is too long for MessagePack")
    return 0


cdef inline int w_str_header(Writer* w, Py_ssize_t n) except -1:
    if n < 32 and w.pos < w.cap:
        w.buf[w.pos] = 0xa0 | <unsigned char>n
        w.pos += 1
        return 0
    return w_length(w, n, 0xa0, 32, 0xd9, 0xda, 0xdb)


cdef inline int w_bin_header(Writer* w, Py_ssize_t n) except -1:
    if n <= 0xff and w.cap - w.pos >= 2:
        w.buf[w.pos] = 0xc4
        w.buf[w.pos + 1] = <unsigned char>n
        w.pos += 2
        return 0
    return w_length(w, n, 0, 0, 0xc4, 0xc5, 0xc6)


cdef inline int w_array_header(Writer* w, Py_ssize_t n) except -1:
    if n < 16 and w.pos < w.cap:
        w.buf[w.pos] = 0x90 | <unsigned char>n
        w.pos += 1
        return 0
    return w_length(w, n, 0x90, 16, 0, 0xdc, 0xdd)


cdef inline int w_map_header(Writer* w, Py_ssize_t n) except -1:
    return w_length(w, n, 0x80, 16, 0, 0xde, 0xdf)


# --- encoding: values (each returns 1, writing nothing, when the value is unfit) ------

cdef int to_u64(object v, uint64_t* out) noexcept:
    """0 and the value if ``v`` is an int (not a bool) in 0..2**64-1, else 1."""
    cdef int overflow = 0
    cdef long long s
    cdef unsigned long long u
    if not PyLong_Check(v) or PyBool_Check(v):
        return 1
    if rsc_small_nonneg(<PyObject*>v, out):
        return 0
    s = _as_ll(v, &overflow)
    if overflow == 0:
        if s < 0:
            return 1
        out[0] = <uint64_t>s
        return 0
    if overflow < 0:
        return 1
    u = _as_ull(v)
    if u == <unsigned long long>-1 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        return 1
    out[0] = u
    return 0


cdef int put_uint(Writer* w, object v) except -1:
    cdef uint64_t u
    if to_u64(v, &u):
        return 1
    w_uint(w, u)
    return 0


cdef int put_uint_max(Writer* w, object v, uint64_t maximum, uint64_t* out) except -1:
    if to_u64(v, out) or out[0] > maximum:
        return 1
    w_uint(w, out[0])
    return 0


cdef int put_str(Writer* w, object v) except -1:
    cdef Py_ssize_t n
    cdef const char* s
    if not PyUnicode_Check(v):
        return 1
    if _unicode_is_compact_ascii(<PyObject*>v):   # its data is its UTF-8
        n = _unicode_length(<PyObject*>v)
        w_str_header(w, n)
        w_raw(w, _unicode_data(<PyObject*>v), n)
        return 0
    s = _utf8(v, &n)
    if s == NULL:                      # lone surrogates: not UTF-8
        PyErr_Clear()
        return 1
    w_str_header(w, n)
    w_raw(w, s, n)
    return 0


cdef int put_node_id(Writer* w, object v) except -1:
    cdef Py_ssize_t n
    cdef const char* s
    if not PyUnicode_Check(v):
        return 1
    s = _utf8(v, &n)
    if s == NULL:
        PyErr_Clear()
        return 1
    if n < 1 or n > C_MAX_NODE_ID:
        return 1
    w_str_header(w, n)
    w_raw(w, s, n)
    return 0


cdef int put_bin(Writer* w, object v, Py_ssize_t size) except -1:
    """bytes, bytearray or a C-contiguous memoryview; of ``size`` bytes unless -1."""
    cdef Py_buffer view
    if PyBytes_Check(v):
        if size >= 0 and PyBytes_GET_SIZE(v) != size:
            return 1
        w_bin_header(w, PyBytes_GET_SIZE(v))
        if PyBytes_GET_SIZE(v) >= LARGE_BIN and 0 <= w.holes < MAX_HOLES and PyBytes_CheckExact(v):
            w.hole_at[w.holes] = w.pos    # not copied: encode_frame_parts returns it as a part
            w.hole_obj[w.holes] = <PyObject*>v
            w.holes += 1
            w.hole_bytes += PyBytes_GET_SIZE(v)
            return 0
        w_raw(w, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
        return 0
    if PyByteArray_Check(v):
        if size >= 0 and PyByteArray_GET_SIZE(v) != size:
            return 1
        w_bin_header(w, PyByteArray_GET_SIZE(v))
        w_raw(w, PyByteArray_AS_STRING(v), PyByteArray_GET_SIZE(v))
        return 0
    if not PyMemoryView_Check(v):
        return 1
    if _get_buffer(v, &view, PyBUF_SIMPLE) < 0:   # not C-contiguous, or released
        PyErr_Clear()
        return 1
    try:
        if view.len == size or size < 0:
            w_bin_header(w, view.len)
            if (view.len >= LARGE_BIN and 0 <= w.holes < MAX_HOLES and view.itemsize == 1
                    and type(v.obj) is _MsgpackPacker):
                # a view of a msgpack Packer's buffer (rsc.value_codec.pack_value's) is a
                # part of its own, as a bytes value is: the packer refuses every change
                # while a view of it exists. Any other view may change after this call
                # (its exporter may be written to): it is copied now
                w.hole_at[w.holes] = w.pos
                w.hole_obj[w.holes] = <PyObject*>v
                w.holes += 1
                w.hole_bytes += view.len
                return 0
            w_raw(w, view.buf, view.len)
            return 0
        return 1
    finally:
        PyBuffer_Release(&view)


cdef inline bint is_bin_like(object v) noexcept:
    return PyBytes_Check(v) or PyByteArray_Check(v) or PyMemoryView_Check(v)


cdef int put_time(Writer* w, object t) except -1:
    cdef uint64_t u
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    if PyLong_Check(t):
        return put_uint(w, t)
    if PyTuple_Check(t) or PyList_Check(t):
        if len(t) != 2:
            return 1
        w_array_header(w, 2)
        if put_uint(w, t[0]) or put_uint(w, t[1]):
            return 1
        return 0
    if PyDict_Check(t):
        if PyDict_Size(t) > C_MAX_VECTOR:
            return 1
        w_map_header(w, PyDict_Size(t))
        while PyDict_Next(t, &pos, &key, &value):
            if put_str(w, <object>key) or put_uint(w, <object>value):
                return 1
        return 0
    return 1


cdef int put_budget(Writer* w, object b) except -1:
    cdef int i
    cdef uint64_t priority
    if b is None:
        return w_byte(w, 0xc0)
    if not (PyTuple_Check(b) or PyList_Check(b)) or len(b) != 4:
        return 1
    w_array_header(w, 4)
    for i in range(3):
        item = b[i]
        if item is None:
            w_byte(w, 0xc0)
        elif put_uint(w, item):
            return 1
    return put_uint_max(w, b[3], C_MAX_PRIORITY, &priority)


cdef int put_reason(Writer* w, object r) except -1:
    cdef uint64_t kind
    if not (PyTuple_Check(r) or PyList_Check(r)) or len(r) != 2:
        return 1
    w_array_header(w, 2)
    if put_uint_max(w, r[0], C_MAX_CANCEL_KIND, &kind):
        return 1
    message = r[1]
    if message is None:
        return w_byte(w, 0xc0)
    return put_str(w, message)


cdef int put_generic(Writer* w, object v, int level) except -1:
    """Any MessagePack value the decoder gives back unchanged (``level``: as a container)."""
    cdef int overflow = 0
    cdef long long s
    cdef uint64_t u
    cdef char* p
    cdef Py_ssize_t i, n, pos = 0
    cdef PyObject* key
    cdef PyObject* value
    if v is None:
        return w_byte(w, 0xc0)
    if PyBool_Check(v):
        return w_byte(w, 0xc3 if v is True else 0xc2)
    if PyLong_Check(v):
        s = _as_ll(v, &overflow)
        if overflow == 0:
            if s >= 0:
                return w_uint(w, <uint64_t>s)
            return w_negative(w, s)
        return put_uint(w, v)
    if PyFloat_Check(v):
        w_reserve(w, 9)
        p = <char*>(w.buf + w.pos)
        p[0] = <char>0xcb
        PyFloat_Pack8(PyFloat_AS_DOUBLE(v), p + 1, 0)
        w.pos += 9
        return 0
    if PyUnicode_Check(v):
        return put_str(w, v)
    if is_bin_like(v):
        return put_bin(w, v, -1)
    if PyDict_Check(v):
        if level > C_MAX_DEPTH:
            return 1
        w_map_header(w, PyDict_Size(v))
        while PyDict_Next(v, &pos, &key, &value):
            if not is_scalar_key(<object>key):
                return 1
            if put_generic(w, <object>key, level + 1) or put_generic(w, <object>value, level + 1):
                return 1
        return 0
    if PyList_Check(v):
        if level > C_MAX_DEPTH:
            return 1
        n = PyList_GET_SIZE(v)
        w_array_header(w, n)
        for i in range(n):
            if put_generic(w, <object>PyList_GET_ITEM(v, i), level + 1):
                return 1
        return 0
    if PyTuple_Check(v):
        if level > C_MAX_DEPTH:
            return 1
        n = PyTuple_GET_SIZE(v)
        w_array_header(w, n)
        for i in range(n):
            if put_generic(w, <object>PyTuple_GET_ITEM(v, i), level + 1):
                return 1
        return 0
    return 1


cdef inline bint is_scalar_key(object k) noexcept:
    return (k is None or PyLong_Check(k) or PyFloat_Check(k) or PyUnicode_Check(k)
            or PyBytes_Check(k))


cdef int put_str_map(Writer* w, object m) except -1:
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    if not PyDict_Check(m):
        return 1
    w_map_header(w, PyDict_Size(m))
    while PyDict_Next(m, &pos, &key, &value):
        if put_str(w, <object>key) or put_generic(w, <object>value, 3):
            return 1
    return 0


cdef int put_segments(Writer* w, object segs) except -1:
    """A list or tuple of at most C_MAX_SEGMENTS bytes-like values, as an array of bins
    (each a part of its own in encode_frame_parts when it is large)."""
    cdef Py_ssize_t i, n
    if not (PyList_Check(segs) or PyTuple_Check(segs)):
        return 1
    n = len(segs)
    if n > C_MAX_SEGMENTS:
        return 1
    w_array_header(w, n)
    for i in range(n):
        if put_bin(w, segs[i], -1):
            return 1
    return 0


cdef int put_uint_list(Writer* w, object ids) except -1:
    cdef Py_ssize_t i, n
    if not (PyList_Check(ids) or PyTuple_Check(ids)):
        return 1
    n = len(ids)
    w_array_header(w, n)
    for i in range(n):
        if put_uint(w, ids[i]):
            return 1
    return 0


# --- encoding: messages ---------------------------------------------------------------

cdef object _field_label(int kind, int index):
    return f"{_CLASS_NAMES[kind]}.{_FIELD_NAMES[kind][index]}"


cdef object _unfit(int kind, int index, str expected, object value):
    return InvalidArgument(f"{_field_label(kind, index)} must be {expected}, got {_short(value)}")


cdef int _kind_of(object msg) except -1:
    cdef PyTypeObject* t = Py_TYPE(msg)
    cdef int i
    for i in range(N_KINDS):
        if CLS[ENCODE_ORDER[i]] == t:
            return ENCODE_ORDER[i]
    # A subclass of a message class: its base's slots are at the same offsets.
    for i in range(N_KINDS):
        if isinstance(msg, <object><PyObject*>CLS[ENCODE_ORDER[i]]):
            return ENCODE_ORDER[i]
    raise InvalidArgument(f"expected a wire message (rsc._core.messages), got {_short(msg)}")


cdef int _raise_unset(int kind, int index) except -1:
    raise InvalidArgument(f"{_field_label(kind, index)} is not set")


cdef inline PyObject* _get_slot(object msg, int kind, int index) except NULL:
    """The field's value (borrowed: ``msg`` keeps it alive)."""
    cdef PyObject* value = rsc_slot(<PyObject*>msg, OFFSET[kind][index])
    if value == NULL:
        _raise_unset(kind, index)
    return value


cdef int _put_message(Writer* w, object msg) except -1:
    cdef int kind = _kind_of(msg)
    cdef int i, code, nfields = NREQUIRED[kind], unfit
    cdef uint64_t small = 0, outcome = 0
    cdef object value
    # trailing optional fields are written up to the last one that is not
    # clear (a flag not False, segments neither None nor empty; a value of
    # another type is refused below, after the fields before it)
    for i in range(nfields, NFIELDS[kind]):
        value = <object>_get_slot(msg, kind, i + 2)
        if SCHEMA[kind][i] == F_SEGMENTS:
            if value is not None and not (PyList_Check(value) and PyList_GET_SIZE(value) == 0):
                nfields = i + 1
        elif value is not False:
            nfields = i + 1
    w_array_header(w, 3 + nfields)
    w_uint(w, kind)
    value = <object>_get_slot(msg, kind, 0)
    if put_node_id(w, value):
        raise _unfit(kind, 0, f"a str of 1..{C_MAX_NODE_ID} UTF-8 bytes", value)
    value = <object>_get_slot(msg, kind, 1)
    if put_time(w, value):
        raise _unfit(kind, 1, "a Lamport int, a hybrid (physical_ns, logical) of ints or a "
                     f"vector dict str -> int of at most {C_MAX_VECTOR} entries "
                     "(ints in 0..2**64-1)", value)
    for i in range(nfields):
        value = <object>_get_slot(msg, kind, i + 2)
        code = SCHEMA[kind][i]
        if code == F_UINT:
            unfit = put_uint(w, value)
        elif code == F_STR:
            unfit = put_str(w, value)
        elif code == F_BIN:
            unfit = put_bin(w, value, -1)
        elif code == F_BIN_OR_NIL:
            unfit = w_byte(w, 0xc0) if value is None else put_bin(w, value, -1)
        elif code == F_BIN32:
            unfit = put_bin(w, value, C_BIN_SIZE)
        elif code == F_BIN32_OR_NIL:
            unfit = w_byte(w, 0xc0) if value is None else put_bin(w, value, C_BIN_SIZE)
        elif code == F_BUDGET:
            unfit = put_budget(w, value)
        elif code == F_REASON:
            unfit = put_reason(w, value)
        elif code == F_STATUS:
            unfit = put_uint_max(w, value, 1, &small)
        elif code == F_STATE:
            unfit = put_uint_max(w, value, C_MAX_TASK_STATE, &small)
        elif code == F_OUTCOME:
            unfit = put_uint_max(w, value, 3, &outcome)
        elif code == F_PAYLOAD:
            code = PAYLOAD_CODE[outcome]
            if code == F_BIN:
                unfit = put_bin(w, value, -1)
            elif code == F_REASON:
                unfit = put_reason(w, value)
            else:
                unfit = put_str(w, value)
            if unfit:
                raise _unfit(kind, i + 2,
                             f"{_PAYLOAD_EXPECTED[code]} (outcome_kind {outcome})", value)
        elif code == F_VERSION:
            unfit = put_uint_max(w, value, C_PROTOCOL_VERSION, &small) or small != 1
        elif code == F_STR_MAP:
            unfit = put_str_map(w, value)
        elif code == F_FLAG:
            if value is True or value is False:
                unfit = w_byte(w, 0xc3 if value is True else 0xc2)
            else:
                unfit = 1
        elif code == F_SEGMENTS:
            unfit = w_array_header(w, 0) if value is None else put_segments(w, value)
        else:  # F_UINT_LIST
            unfit = put_uint_list(w, value)
        if unfit:
            raise _unfit(kind, i + 2, _EXPECTED[code], value)
    return 0


cdef inline int _put_frame(Writer* w, object msg) except -1:
    cdef Py_ssize_t start
    w_reserve(w, 4)
    start = w.pos
    w.pos += 4
    _put_message(w, msg)
    if <unsigned long long>(w.pos - start - 4) > 0xffffffffULL:
        raise InvalidArgument(f"a body of {w.pos - start - 4} bytes does not fit a frame "
                              "(at most 2**32-1)")
    rsc_st32(w.buf + start, <uint32_t>(w.pos - start - 4))
    return 0


def encode(msg):
    """The frame body of ``msg``: one MessagePack array."""
    cdef Writer w
    w_open(&w)
    try:
        _put_message(&w, msg)
        return w_close(&w)
    finally:
        w_discard(&w)


def encode_frame(msg):
    """``msg`` as one frame: a u32 big-endian length, then the body."""
    cdef Writer w
    w_open(&w)
    try:
        _put_frame(&w, msg)
        return w_close(&w)
    finally:
        w_discard(&w)


cpdef object encode_frame_parts(msg):
    """``msg`` as one frame, like ``encode_frame``; but when a ``bytes`` value
    (or a memoryview of a msgpack ``Packer``'s buffer) in it has at least 64 KiB, a
    tuple of parts to write in this order, whose concatenation is the frame:
    the bytes around each such value, and the value itself, not copied (at
    most four a frame and the message's segments; more are copied)."""
    cdef Writer w
    cdef Py_ssize_t body, prev
    cdef int i
    w_open(&w)
    w.holes = 0
    w.hole_bytes = 0
    try:
        w_reserve(&w, 4)
        w.pos = 4
        _put_message(&w, msg)
        body = w.pos - 4 + w.hole_bytes
        if <unsigned long long>body > 0xffffffffULL:
            raise InvalidArgument(f"a body of {body} bytes does not fit a frame (at most 2**32-1)")
        rsc_st32(w.buf, <uint32_t>body)
        if w.holes == 0:
            return w_close(&w)
        parts = []
        prev = 0
        for i in range(w.holes):
            parts.append(PyBytes_FromStringAndSize(<char*>w.buf + prev, w.hole_at[i] - prev))
            parts.append(<object>w.hole_obj[i])
            prev = w.hole_at[i]
        if w.pos > prev:
            parts.append(PyBytes_FromStringAndSize(<char*>w.buf + prev, w.pos - prev))
        return tuple(parts)
    finally:
        w_discard(&w)


def encode_frames(msgs):
    """Several frames back to back, for one coalesced write."""
    cdef Writer w
    w_open(&w)
    try:
        for msg in msgs:
            _put_frame(&w, msg)
        return w_close(&w)
    finally:
        w_discard(&w)


# --- building the per-task messages -------------------------------------------------
#
# A message class's __init__ is a Python call that stores its arguments; these
# build the same object as the decoder does, by writing its slots. An engine
# makes three messages per task (SPAWN_REQUEST, SPAWN_ACK, RESULT_DELIVERY), so
# those three have builders. Like the constructors they check nothing: encode
# does, field by field.

cdef inline object _blank(int kind, sender, sender_time):
    msg = <object>rsc_alloc(CLS[kind])
    _decref(<PyObject*>msg)          # rsc_alloc's reference; msg holds its own
    rsc_slot_set(<PyObject*>msg, OFFSET[kind][0], <PyObject*>sender)
    rsc_slot_set(<PyObject*>msg, OFFSET[kind][1], <PyObject*>sender_time)
    return msg


cdef inline void _set(msg, int kind, int field, value) noexcept:
    rsc_slot_set(<PyObject*>msg, OFFSET[kind][field + 2], <PyObject*>value)


cpdef object spawn_request(sender, sender_time, remote_task_id, computation, input, lease_ms,
                           idempotency_key, budget, origin_node, origin_region, origin_task,
                           capability, drawn=False, segments=None):
    """``SpawnRequest(...)``, the same object, built without its ``__init__``."""
    cdef int k = K_SPAWN_REQUEST
    msg = _blank(k, sender, sender_time)
    _set(msg, k, 0, remote_task_id)
    _set(msg, k, 1, computation)
    _set(msg, k, 2, input)
    _set(msg, k, 3, lease_ms)
    _set(msg, k, 4, idempotency_key)
    _set(msg, k, 5, budget)
    _set(msg, k, 6, origin_node)
    _set(msg, k, 7, origin_region)
    _set(msg, k, 8, origin_task)
    _set(msg, k, 9, capability)
    _set(msg, k, 10, drawn)
    _set(msg, k, 11, segments)
    return msg


cpdef object spawn_ack(sender, sender_time, remote_task_id, status, reject_code, reject_detail,
                       assigned_node):
    """``SpawnAck(...)``, the same object, built without its ``__init__``."""
    cdef int k = K_SPAWN_ACK
    msg = _blank(k, sender, sender_time)
    _set(msg, k, 0, remote_task_id)
    _set(msg, k, 1, status)
    _set(msg, k, 2, reject_code)
    _set(msg, k, 3, reject_detail)
    _set(msg, k, 4, assigned_node)
    return msg


cpdef object result_delivery(sender, sender_time, remote_task_id, outcome_kind, payload,
                             execution_time_ns, segments=None):
    """``ResultDelivery(...)``, the same object, built without its ``__init__``."""
    cdef int k = K_RESULT_DELIVERY
    msg = _blank(k, sender, sender_time)
    _set(msg, k, 0, remote_task_id)
    _set(msg, k, 1, outcome_kind)
    _set(msg, k, 2, payload)
    _set(msg, k, 3, execution_time_ns)
    _set(msg, k, 4, segments)
    return msg


cpdef object sender_time(msg):
    """``msg.sender_time``, its envelope's time: a C call for a compiled
    engine, where reading the attribute is a Python attribute lookup."""
    return <object>_get_slot(msg, _kind_of(msg), 1)


cpdef tuple fields(msg):
    """``msg``'s fields after the envelope, in wire order, as a tuple: one call
    where reading them as attributes costs a Python attribute lookup each."""
    cdef int kind = _kind_of(msg)
    cdef int i, n = NFIELDS[kind]
    cdef PyObject* value
    out = PyTuple_New(n)
    for i in range(n):
        value = _get_slot(msg, kind, i + 2)
        Py_INCREF(<object>value)
        PyTuple_SET_ITEM(out, i, <object>value)
    return out


# --- decoding -------------------------------------------------------------------------

cdef struct Reader:
    const unsigned char* p
    const unsigned char* end


cdef object _where(int kind, int index):
    """What a decode error message names: 'SPAWN_REQUEST lease_ms', 'envelope sender'."""
    if index < 3:
        return ("envelope kind", "envelope sender", "envelope sender_time")[index]
    if 0 <= kind < KIND_SLOTS and CLS[kind] != NULL:
        return f"{_WIRE_NAMES[kind]} {_FIELD_NAMES[kind][index - 1]}"
    return f"element {index}"


cdef str _marker_name(const unsigned char* p, const unsigned char* end):
    cdef unsigned char b
    if p >= end:
        return "end of body"
    b = p[0]
    if b < 0x80 or b >= 0xe0 or 0xcc <= b <= 0xd3:
        return "int"
    if b <= 0x8f or b == 0xde or b == 0xdf:
        return "map"
    if b <= 0x9f or b == 0xdc or b == 0xdd:
        return "array"
    if b <= 0xbf or 0xd9 <= b <= 0xdb:
        return "str"
    if b == 0xc0:
        return "nil"
    if b == 0xc2 or b == 0xc3:
        return "bool"
    if 0xc4 <= b <= 0xc6:
        return "bin"
    if b == 0xca or b == 0xcb:
        return "float"
    if b == 0xc1:
        return "reserved byte 0xc1"
    return "ext"


cdef object _wrong(Reader* r, int kind, int index, str expected):
    return MalformedFrame(f"{_where(kind, index)}: expected {expected}, got "
                          f"{_marker_name(r.p, r.end)}")


cdef object _truncated():
    return MalformedFrame("body ends inside a value (truncated or a length that claims "
                          "more bytes than there are)")


cdef inline int r_has(Reader* r, Py_ssize_t n) except -1:
    if r.end - r.p < n:
        raise _truncated()
    return 0


# Header readers: on success advance past the header, set *n and return 0; return 1
# without moving when the next value is of another type; raise when truncated.

cdef inline int r_u64(Reader* r, uint64_t* out) except -1:
    """A non-negative int of any width (0), or 1 if the next value is not one."""
    if r.p < r.end and r.p[0] < 0x80:
        out[0] = r.p[0]
        r.p += 1
        return 0
    return r_u64_wide(r, out)


cdef int r_u64_wide(Reader* r, uint64_t* out) except -1:
    cdef const unsigned char* p = r.p
    cdef unsigned char b
    cdef int64_t s
    r_has(r, 1)
    b = p[0]
    if b < 0x80:
        out[0] = b
        r.p = p + 1
        return 0
    if b == 0xcc:
        r_has(r, 2)
        out[0] = p[1]
        r.p = p + 2
    elif b == 0xcd:
        r_has(r, 3)
        out[0] = rsc_ld16(p + 1)
        r.p = p + 3
    elif b == 0xce:
        r_has(r, 5)
        out[0] = rsc_ld32(p + 1)
        r.p = p + 5
    elif b == 0xcf:
        r_has(r, 9)
        out[0] = rsc_ld64(p + 1)
        r.p = p + 9
    elif 0xd0 <= b <= 0xd3:
        if b == 0xd0:
            r_has(r, 2)
            s = <int8_t>p[1]
            r.p = p + 2
        elif b == 0xd1:
            r_has(r, 3)
            s = <int16_t>rsc_ld16(p + 1)
            r.p = p + 3
        elif b == 0xd2:
            r_has(r, 5)
            s = <int32_t>rsc_ld32(p + 1)
            r.p = p + 5
        else:
            r_has(r, 9)
            s = <int64_t>rsc_ld64(p + 1)
            r.p = p + 9
        if s < 0:
            r.p = p
            return 1
        out[0] = <uint64_t>s
    else:
        return 1
    return 0


cdef int r_str_len(Reader* r, Py_ssize_t* n) except -1:
    cdef const unsigned char* p = r.p
    cdef unsigned char b
    cdef Py_ssize_t h
    r_has(r, 1)
    b = p[0]
    if 0xa0 <= b <= 0xbf:
        n[0] = b & 0x1f
        h = 1
    elif b == 0xd9:
        r_has(r, 2)
        n[0] = p[1]
        h = 2
    elif b == 0xda:
        r_has(r, 3)
        n[0] = rsc_ld16(p + 1)
        h = 3
    elif b == 0xdb:
        r_has(r, 5)
        n[0] = rsc_ld32(p + 1)
        h = 5
    else:
        return 1
    r.p = p + h
    r_has(r, n[0])
    return 0


cdef int r_bin_len(Reader* r, Py_ssize_t* n) except -1:
    cdef const unsigned char* p = r.p
    cdef unsigned char b
    cdef Py_ssize_t h
    r_has(r, 1)
    b = p[0]
    if b == 0xc4:
        r_has(r, 2)
        n[0] = p[1]
        h = 2
    elif b == 0xc5:
        r_has(r, 3)
        n[0] = rsc_ld16(p + 1)
        h = 3
    elif b == 0xc6:
        r_has(r, 5)
        n[0] = rsc_ld32(p + 1)
        h = 5
    else:
        return 1
    r.p = p + h
    r_has(r, n[0])
    return 0


cdef int r_array_len(Reader* r, Py_ssize_t* n) except -1:
    cdef const unsigned char* p = r.p
    cdef unsigned char b
    r_has(r, 1)
    b = p[0]
    if 0x90 <= b <= 0x9f:
        n[0] = b & 0x0f
        r.p = p + 1
    elif b == 0xdc:
        r_has(r, 3)
        n[0] = rsc_ld16(p + 1)
        r.p = p + 3
    elif b == 0xdd:
        r_has(r, 5)
        n[0] = rsc_ld32(p + 1)
        r.p = p + 5
    else:
        return 1
    r_has(r, n[0])            # every element takes at least one byte
    return 0


cdef int r_map_len(Reader* r, Py_ssize_t* n) except -1:
    cdef const unsigned char* p = r.p
    cdef unsigned char b
    r_has(r, 1)
    b = p[0]
    if 0x80 <= b <= 0x8f:
        n[0] = b & 0x0f
        r.p = p + 1
    elif b == 0xde:
        r_has(r, 3)
        n[0] = rsc_ld16(p + 1)
        r.p = p + 3
    elif b == 0xdf:
        r_has(r, 5)
        n[0] = rsc_ld32(p + 1)
        r.p = p + 5
    else:
        return 1
    r_has(r, 2 * n[0])        # every entry takes at least two bytes
    return 0


cdef inline bint r_nil(Reader* r) noexcept:
    """Consume a nil if it is next."""
    if r.p < r.end and r.p[0] == 0xc0:
        r.p += 1
        return True
    return False


# Short ASCII strings recur on every frame (node ids, computation names, feature
# and stats keys), so decoded ones are kept in a small direct-mapped cache and
# shared: str is immutable, and a hit costs a hash and a memcmp instead of an
# allocation. A miss just replaces the slot, so a peer sending many distinct
# strings costs a little time and no memory.
cdef enum:
    STR_CACHE_SLOTS = 1024    # a power of two
    STR_CACHE_MAX_BYTES = 48

cdef PyObject* STR_CACHE[STR_CACHE_SLOTS]


cdef inline uint32_t _str_slot(const unsigned char* data, Py_ssize_t n) noexcept:
    # Length, first and last 8 bytes, multiplied in: cheap, and a collision only
    # costs a miss (a hit is confirmed with memcmp).
    cdef uint64_t head = 0, tail = 0, h
    if n >= 8:
        memcpy(&head, data, 8)
        memcpy(&tail, data + n - 8, 8)
    else:
        memcpy(&head, data, n)
    h = (head * 0x9E3779B97F4A7C15ULL) ^ (tail * 0xC2B2AE3D27D4EB4FULL) ^ <uint64_t>n
    return <uint32_t>(h >> 40) & (STR_CACHE_SLOTS - 1)


cdef object make_str(const unsigned char* data, Py_ssize_t n):
    cdef uint32_t slot = 0
    cdef PyObject* cached
    cdef PyObject* s
    cdef object result
    if n <= STR_CACHE_MAX_BYTES:
        slot = _str_slot(data, n)
        cached = STR_CACHE[slot]
        # Only ASCII strings are cached, so their length in chars is their length in bytes.
        if (cached != NULL and _unicode_length(cached) == n
                and memcmp(_unicode_data(cached), data, n) == 0):
            return <object>cached
    s = _decode_utf8(<const char*>data, n, NULL)
    if s == NULL:
        PyErr_Clear()
        raise MalformedFrame("a str is not valid UTF-8")
    result = <object>s
    _decref(s)
    if n <= STR_CACHE_MAX_BYTES and _unicode_is_ascii(s):
        _xdecref(STR_CACHE[slot])
        Py_INCREF(result)
        STR_CACHE[slot] = s
    return result


# Typed readers: the value, or MalformedFrame naming (kind, index).

cdef object r_uint(Reader* r, int kind, int index):
    cdef uint64_t v
    if r_u64(r, &v):
        raise _wrong(r, kind, index, "uint")
    return PyLong_FromUnsignedLongLong(v)


cdef object r_uint_max(Reader* r, int kind, int index, uint64_t maximum, uint64_t* out=NULL):
    cdef uint64_t v
    cdef const unsigned char* start = r.p
    if r_u64(r, &v) or v > maximum:
        r.p = start
        raise _wrong(r, kind, index, f"uint 0..{maximum}")
    if out != NULL:
        out[0] = v
    return PyLong_FromUnsignedLongLong(v)


cdef object r_str(Reader* r, int kind, int index):
    cdef Py_ssize_t n
    cdef const unsigned char* data
    if r_str_len(r, &n):
        raise _wrong(r, kind, index, "str")
    data = r.p
    r.p += n
    return make_str(data, n)


cdef object r_str_or_nil(Reader* r, int kind, int index):
    if r_nil(r):
        return None
    if r.p < r.end and not (0xa0 <= r.p[0] <= 0xbf or 0xd9 <= r.p[0] <= 0xdb):
        raise _wrong(r, kind, index, "str or nil")
    return r_str(r, kind, index)


cdef object r_bin(Reader* r, int kind, int index, Py_ssize_t size):
    cdef Py_ssize_t n
    cdef const unsigned char* start = r.p
    if r_bin_len(r, &n) or (size >= 0 and n != size):
        r.p = start
        raise _wrong(r, kind, index, "bin" if size < 0 else f"bin {size}")
    r.p += n
    return PyBytes_FromStringAndSize(<const char*>(r.p - n), n)


cdef object r_flag(Reader* r, int kind, int index):
    if r.p < r.end and (r.p[0] == 0xc2 or r.p[0] == 0xc3):
        r.p += 1
        return r.p[-1] == 0xc3
    raise _wrong(r, kind, index, "bool")


cdef object r_bin_or_nil(Reader* r, int kind, int index, Py_ssize_t size):
    if r_nil(r):
        return None
    return r_bin(r, kind, index, size)


cdef bint utf8_valid(const unsigned char* s, Py_ssize_t n) noexcept:
    """Whether ``s[:n]`` is what Python's strict UTF-8 decoder accepts (no
    overlong forms, no surrogates, nothing above U+10FFFF)."""
    cdef Py_ssize_t i = 0, k, more
    cdef unsigned char c, low, high
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xc2 or c >= 0xf5:
            return False
        # continuation bytes after the lead; the first one's range is narrower
        # after E0 and F0 (overlong forms), ED (surrogates) and F4 (> U+10FFFF)
        more = 1 if c < 0xe0 else (2 if c < 0xf0 else 3)
        low = 0xa0 if c == 0xe0 else (0x90 if c == 0xf0 else 0x80)
        high = 0x9f if c == 0xed else (0x8f if c == 0xf4 else 0xbf)
        if i + more >= n or not low <= s[i + 1] <= high:
            return False
        for k in range(2, more + 1):
            if (s[i + k] & 0xc0) != 0x80:
                return False
        i += more + 1
    return True


cdef int r_skip_value(Reader* r, int level) except -1:
    """Check one value exactly as ``r_any`` would and step over it, building
    nothing: a peer's trailing elements cost a walk, never an allocation per
    element (a frame of millions of empty arrays would otherwise cost ~70x
    its size in list objects). ``level`` as in ``r_any``."""
    cdef const unsigned char* p = r.p
    cdef unsigned char b
    cdef Py_ssize_t n, i
    cdef bint is_map
    r_has(r, 1)
    b = p[0]
    if b < 0x80 or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3:
        r.p = p + 1
        return 0
    if b <= 0x9f or 0xdc <= b <= 0xdf:  # a map or an array
        if level > C_MAX_DEPTH:
            raise MalformedFrame(f"arrays/maps nested deeper than {C_MAX_DEPTH} levels")
        is_map = b <= 0x8f or b >= 0xde
        if is_map:
            r_map_len(r, &n)
            n *= 2            # keys and values alike, keys at even positions
        else:
            r_array_len(r, &n)
        for i in range(n):
            if (is_map and i % 2 == 0 and r.p < r.end
                    and (0x80 <= r.p[0] <= 0x9f or 0xdc <= r.p[0] <= 0xdf)):
                raise MalformedFrame("a map key is an array or a map")
            r_skip_value(r, level + 1)
        return 0
    if b <= 0xbf or 0xd9 <= b <= 0xdb:
        r_str_len(r, &n)
        if not utf8_valid(r.p, n):
            raise MalformedFrame("a str is not valid UTF-8")
        r.p += n
        return 0
    if 0xc4 <= b <= 0xc6:
        r_bin_len(r, &n)
        r.p += n
        return 0
    if b == 0xca or b == 0xd2 or b == 0xce:
        n = 5
    elif b == 0xcb or b == 0xd3 or b == 0xcf:
        n = 9
    elif b == 0xcc or b == 0xd0:
        n = 2
    elif b == 0xcd or b == 0xd1:
        n = 3
    elif b == 0xc1:
        raise MalformedFrame("reserved MessagePack byte 0xc1")
    else:
        raise MalformedFrame("MessagePack ext types are not part of wire v1")
    r_has(r, n)
    r.p = p + n
    return 0


cdef int r_skip(Reader* r, Py_ssize_t count, int level) except -1:
    """Check and drop ``count`` values (trailing elements a v1 receiver does not know)."""
    cdef Py_ssize_t i
    for i in range(count):
        r_skip_value(r, level)
    return 0


cdef int r_end(Reader* r) except -1:
    if r.p != r.end:
        raise MalformedFrame(f"{r.end - r.p} bytes after the message's array")
    return 0


cdef object r_any(Reader* r, int level):
    """Any value but ext; ``level`` is the nesting level it has as a container."""
    cdef const unsigned char* p = r.p
    cdef unsigned char b
    cdef Py_ssize_t n, i
    cdef uint64_t u
    cdef object container, key, item
    r_has(r, 1)
    b = p[0]
    if b < 0x80:
        r.p = p + 1
        return <long>b
    if b >= 0xe0:
        r.p = p + 1
        return <long>(<int8_t>b)
    if b <= 0x8f or b == 0xde or b == 0xdf:
        if level > C_MAX_DEPTH:
            raise MalformedFrame(f"arrays/maps nested deeper than {C_MAX_DEPTH} levels")
        r_map_len(r, &n)
        container = PyDict_New()
        for i in range(n):
            if r.p < r.end and (0x80 <= r.p[0] <= 0x9f or 0xdc <= r.p[0] <= 0xdf):
                raise MalformedFrame("a map key is an array or a map")
            key = r_any(r, level + 1)
            item = r_any(r, level + 1)
            PyDict_SetItem(container, key, item)
        return container
    if b <= 0x9f or b == 0xdc or b == 0xdd:
        if level > C_MAX_DEPTH:
            raise MalformedFrame(f"arrays/maps nested deeper than {C_MAX_DEPTH} levels")
        r_array_len(r, &n)
        container = PyList_New(n)
        for i in range(n):
            item = r_any(r, level + 1)
            Py_INCREF(item)
            PyList_SET_ITEM(container, i, item)
        return container
    if b <= 0xbf or 0xd9 <= b <= 0xdb:
        r_str_len(r, &n)
        r.p += n
        return make_str(r.p - n, n)
    if b == 0xc0:
        r.p = p + 1
        return None
    if b == 0xc2:
        r.p = p + 1
        return False
    if b == 0xc3:
        r.p = p + 1
        return True
    if 0xc4 <= b <= 0xc6:
        r_bin_len(r, &n)
        r.p += n
        return PyBytes_FromStringAndSize(<const char*>(r.p - n), n)
    if b == 0xca:
        r_has(r, 5)
        r.p = p + 5
        return PyFloat_FromDouble(PyFloat_Unpack4(<const char*>(p + 1), 0))
    if b == 0xcb:
        r_has(r, 9)
        r.p = p + 9
        return PyFloat_FromDouble(PyFloat_Unpack8(<const char*>(p + 1), 0))
    if 0xcc <= b <= 0xcf:
        r_u64(r, &u)
        return PyLong_FromUnsignedLongLong(u)
    if 0xd0 <= b <= 0xd3:
        if r_u64(r, &u) == 0:
            return PyLong_FromUnsignedLongLong(u)
        # negative: r_u64 left the position alone
        if b == 0xd0:
            r_has(r, 2)
            r.p = p + 2
            return <long>(<int8_t>p[1])
        if b == 0xd1:
            r_has(r, 3)
            r.p = p + 3
            return <long>(<int16_t>rsc_ld16(p + 1))
        if b == 0xd2:
            r_has(r, 5)
            r.p = p + 5
            return <long>(<int32_t>rsc_ld32(p + 1))
        r_has(r, 9)
        r.p = p + 9
        return PyLong_FromLongLong(<int64_t>rsc_ld64(p + 1))
    if b == 0xc1:
        raise MalformedFrame("reserved MessagePack byte 0xc1")
    raise MalformedFrame("MessagePack ext types are not part of wire v1")


cdef object r_sender(Reader* r):
    cdef Py_ssize_t n
    cdef const unsigned char* start = r.p
    if r_str_len(r, &n) or n < 1 or n > C_MAX_NODE_ID:
        r.p = start
        raise _wrong(r, -1, 1, f"str of 1..{C_MAX_NODE_ID} UTF-8 bytes")
    r.p += n
    return make_str(r.p - n, n)


cdef object r_time(Reader* r):
    cdef Py_ssize_t n, i
    cdef uint64_t physical, logical, counter
    cdef object clock, node
    cdef const unsigned char* start = r.p
    if r_u64(r, &physical) == 0:
        return PyLong_FromUnsignedLongLong(physical)
    if r_array_len(r, &n) == 0:
        if n < 2 or r_u64(r, &physical) or r_u64(r, &logical):
            r.p = start
            raise _wrong(r, -1, 2, "[uint, uint]")
        r_skip(r, n - 2, 3)
        return (PyLong_FromUnsignedLongLong(physical), PyLong_FromUnsignedLongLong(logical))
    if r_map_len(r, &n) == 0:
        clock = PyDict_New()
        for i in range(n):
            node = r_str(r, -1, 2)
            if r_u64(r, &counter):
                raise _wrong(r, -1, 2, "vector time counter uint")
            PyDict_SetItem(clock, node, PyLong_FromUnsignedLongLong(counter))
            if PyDict_Size(clock) > C_MAX_VECTOR:
                raise MalformedFrame(f"envelope sender_time: vector time of more than "
                                     f"{C_MAX_VECTOR} entries")
        return clock
    raise _wrong(r, -1, 2, "uint, [uint, uint] or map str->uint")


cdef object r_budget(Reader* r, int kind, int index):
    cdef Py_ssize_t n
    cdef uint64_t priority
    cdef int i
    cdef object budget
    cdef const unsigned char* start = r.p
    if r_nil(r):
        return None
    if r_array_len(r, &n) or n < 4:
        r.p = start
        raise _wrong(r, kind, index, "nil or [uint|nil, uint|nil, uint|nil, uint 0..255]")
    budget = PyTuple_New(4)
    for i in range(3):
        item = None if r_nil(r) else r_uint(r, kind, index)
        Py_INCREF(item)
        PyTuple_SET_ITEM(budget, i, item)
    if r_u64(r, &priority) or priority > C_MAX_PRIORITY:
        raise MalformedFrame(f"{_where(kind, index)}: priority must be a uint 0..255")
    item = PyLong_FromUnsignedLongLong(priority)
    Py_INCREF(item)
    PyTuple_SET_ITEM(budget, 3, item)
    r_skip(r, n - 4, 3)
    return budget


cdef object r_reason(Reader* r, int kind, int index):
    cdef Py_ssize_t n
    cdef const unsigned char* start = r.p
    if r_array_len(r, &n) or n < 2:
        r.p = start
        raise _wrong(r, kind, index, "cancel reason [uint 0..11, str|nil]")
    reason = (r_uint_max(r, kind, index, C_MAX_CANCEL_KIND), r_str_or_nil(r, kind, index))
    r_skip(r, n - 2, 3)
    return reason


cdef object r_str_map(Reader* r, int kind, int index):
    cdef Py_ssize_t n, i
    cdef object result, key
    if r_map_len(r, &n):
        raise _wrong(r, kind, index, "map with str keys")
    result = PyDict_New()
    for i in range(n):
        key = r_str(r, kind, index)
        PyDict_SetItem(result, key, r_any(r, 3))
    return result


cdef object r_segments(Reader* r, int kind, int index):
    cdef Py_ssize_t n, i
    cdef object result, item
    cdef const unsigned char* start = r.p
    if r_array_len(r, &n) or n > C_MAX_SEGMENTS:
        r.p = start
        raise _wrong(r, kind, index, f"array of at most {C_MAX_SEGMENTS} bins")
    if n == 0:
        return None   # an empty array: no segments, as when it is left out
    result = PyList_New(n)
    for i in range(n):
        item = r_bin(r, kind, index, -1)
        Py_INCREF(item)
        PyList_SET_ITEM(result, i, item)
    return result


cdef object r_uint_list(Reader* r, int kind, int index):
    cdef Py_ssize_t n, i
    cdef object result, item
    if r_array_len(r, &n):
        raise _wrong(r, kind, index, "array of uint")
    result = PyList_New(n)
    for i in range(n):
        item = r_uint(r, kind, index)
        Py_INCREF(item)
        PyList_SET_ITEM(result, i, item)
    return result


cdef object _decode(const unsigned char* data, Py_ssize_t size):
    cdef Reader r
    cdef Py_ssize_t count
    cdef uint64_t wire_kind, outcome = 0, version
    cdef int kind, i, code, nfields
    cdef object sender, sender_time, msg, value
    cdef Py_ssize_t known
    r.p = data
    r.end = data + size
    if size == 0:
        raise MalformedFrame("empty body")
    if r_array_len(&r, &count):
        raise MalformedFrame(f"body: expected array, got {_marker_name(r.p, r.end)}")
    if count < 3:
        raise MalformedFrame(f"envelope needs 3 elements, got {count}")
    if r_u64(&r, &wire_kind):
        raise _wrong(&r, -1, 0, "uint")
    sender = r_sender(&r)
    sender_time = r_time(&r)
    if wire_kind >= KIND_SLOTS or CLS[wire_kind] == NULL:
        r_skip(&r, count - 3, 2)
        r_end(&r)
        raise UnexpectedMessage(f"unknown message kind {wire_kind}")
    kind = <int>wire_kind
    nfields = NFIELDS[kind]
    msg = <object>rsc_alloc(CLS[kind])
    _decref(<PyObject*>msg)          # rsc_alloc's reference; msg holds its own
    rsc_slot_set(<PyObject*>msg, OFFSET[kind][0], <PyObject*>sender)
    rsc_slot_set(<PyObject*>msg, OFFSET[kind][1], <PyObject*>sender_time)
    for i in range(nfields):
        code = SCHEMA[kind][i]
        if i + 3 >= count:
            if i >= NREQUIRED[kind]:   # an optional field left out: False, or None
                rsc_slot_set(<PyObject*>msg, OFFSET[kind][i + 2],
                             <PyObject*>(None if code == F_SEGMENTS else _FLAG_CLEAR))
                continue
            raise MalformedFrame(f"{_WIRE_NAMES[kind]} needs {3 + NREQUIRED[kind]} elements, "
                                 f"got {count}")
        if code == F_UINT:
            value = r_uint(&r, kind, i + 3)
        elif code == F_STR:
            value = r_str(&r, kind, i + 3)
        elif code == F_BIN:
            value = r_bin(&r, kind, i + 3, -1)
        elif code == F_BIN_OR_NIL:
            value = r_bin_or_nil(&r, kind, i + 3, -1)
        elif code == F_BIN32:
            value = r_bin(&r, kind, i + 3, C_BIN_SIZE)
        elif code == F_BIN32_OR_NIL:
            value = r_bin_or_nil(&r, kind, i + 3, C_BIN_SIZE)
        elif code == F_BUDGET:
            value = r_budget(&r, kind, i + 3)
        elif code == F_REASON:
            value = r_reason(&r, kind, i + 3)
        elif code == F_STATUS:
            value = r_uint_max(&r, kind, i + 3, 1)
        elif code == F_STATE:
            value = r_uint_max(&r, kind, i + 3, C_MAX_TASK_STATE)
        elif code == F_OUTCOME:
            value = r_uint_max(&r, kind, i + 3, 3, &outcome)
        elif code == F_PAYLOAD:
            code = PAYLOAD_CODE[outcome]
            if code == F_BIN:
                value = r_bin(&r, kind, i + 3, -1)
            elif code == F_REASON:
                value = r_reason(&r, kind, i + 3)
            else:
                value = r_str(&r, kind, i + 3)
        elif code == F_VERSION:
            if r_u64(&r, &version):
                raise _wrong(&r, kind, i + 3, "uint")
            if version != C_PROTOCOL_VERSION:
                r_skip(&r, count - 4 - i, 2)   # the rest may have any shape
                r_end(&r)
                raise VersionMismatch(f"{_WIRE_NAMES[kind]} speaks protocol version "
                                      f"{version}; this side speaks {C_PROTOCOL_VERSION}")
            value = C_PROTOCOL_VERSION
        elif code == F_STR_MAP:
            value = r_str_map(&r, kind, i + 3)
        elif code == F_FLAG:
            value = r_flag(&r, kind, i + 3)
        elif code == F_SEGMENTS:
            value = r_segments(&r, kind, i + 3)
        else:  # F_UINT_LIST
            value = r_uint_list(&r, kind, i + 3)
        rsc_slot_set(<PyObject*>msg, OFFSET[kind][i + 2], <PyObject*>value)
    known = 3 + nfields
    if count > known:
        r_skip(&r, count - known, 2)
    r_end(&r)
    return msg


def decode(body):
    """The message in one frame body; see the twin's docstring for what is rejected."""
    cdef Py_buffer view
    if PyBytes_CheckExact(body):
        return _decode(<const unsigned char*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        return _decode(<const unsigned char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# --- streams --------------------------------------------------------------------------

def _check_limit(value, str name):
    if not PyLong_Check(value) or PyBool_Check(value) or value < 1:
        raise InvalidArgument(f"{name} must be an int >= 1, got {_short(value)}")
    return int(value)


def _check_kind(value):
    if (not PyLong_Check(value) or PyBool_Check(value) or not 0 <= value < KIND_SLOTS
            or CLS[<int>value] == NULL):
        raise InvalidArgument(f"handshake_last_kind must be a message kind, got {_short(value)}")
    return <int>value


cdef object _put_apart(object msg, Py_ssize_t field, object value, bint segments):
    """``msg`` (a large frame's message) with ``value``, received apart from
    its other bytes, put in field ``field`` where its placeholder decoded:
    the empty array that stood for the segments (``segments``) or the empty
    bin that stood for the one large bin. Left as decoded when that field
    holds anything else (the frame's own decode judged it)."""
    cdef int kind = _kind_of(msg)
    cdef PyObject* slot
    if segments:
        if field != SEG_FIELD[kind]:
            return msg
    elif not 0 <= field < NFIELDS[kind]:
        return msg
    slot = rsc_slot(<PyObject*>msg, OFFSET[kind][field + 2])
    if slot == NULL:
        return msg
    if (<object>slot is None if segments else
            (PyBytes_CheckExact(<object>slot) and PyBytes_GET_SIZE(<object>slot) == 0)):
        rsc_slot_set(<PyObject*>msg, OFFSET[kind][field + 2], <PyObject*>value)
    return msg


cdef class _ReceiveWindow:
    """The writable buffer ``FrameDecoder.receive_buffer`` views: the unfilled
    part of a bytes object the decoder created and nobody else holds yet (the
    payload of the large frame in progress). It keeps that bytes object
    alive, so a view outliving the frame writes into an orphan, never into
    freed memory or a value a message already holds before the decoder
    hands it out."""

    cdef object _owner
    cdef char* _at
    cdef Py_ssize_t _size

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, self._at, self._size, 0, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass


cdef class FrameDecoder:
    """Cuts a byte stream into messages.

    ``feed(data)`` returns the messages of every frame completed so far and
    keeps the bytes of a partial frame (``buffered`` counts them). A frame
    length of zero raises ``MalformedFrame``; one above ``max_frame_bytes``
    raises ``FrameTooLarge`` as soon as its 4-byte header arrives. A body that
    does not decode raises what ``decode`` raises. The error carries, in
    ``messages``, the messages of the frames before the bad one in that call
    (so no frame is lost, however the stream was split). After an error the
    decoder is poisoned: every ``feed`` raises the same error class until
    ``reset()``, which also drops buffered bytes, makes it ready for a new
    connection.

    With ``handshake_max_frame_bytes`` and ``handshake_last_kind``, frames
    are capped at the smaller handshake cap until a frame of that kind has
    been decoded (AUTH on a node, WELCOME on an origin); later frames in the
    same ``feed`` already get the full cap. ``in_handshake`` tells which cap
    applies.
    """

    def __cinit__(self):
        self._buf = NULL
        self._held = 0
        self._cap = 0
        self._big = None
        self._big_len = 0
        self._big_filled = 0
        self._segs = None
        self._segs_bytes = 0

    def __init__(self, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES, handshake_max_frame_bytes=None,
                 handshake_last_kind=None):
        self._max_frame_bytes = _check_limit(max_frame_bytes, "max_frame_bytes")
        self._full_limit = min(self._max_frame_bytes, 0x100000000)
        self._opening_max = None
        self._opening_kind = -1
        if handshake_max_frame_bytes is not None or handshake_last_kind is not None:
            self._opening_max = _check_limit(handshake_max_frame_bytes,
                                             "handshake_max_frame_bytes")
            self._opening_kind = _check_kind(handshake_last_kind)
        self._error_class = None
        self._error_text = None
        self._start()

    def __dealloc__(self):
        free(self._buf)

    cdef _start(self):
        self._opening = self._opening_max is not None
        if self._opening:
            self._limit = min(self._opening_max, self._full_limit)
        else:
            self._limit = self._full_limit

    @property
    def max_frame_bytes(self):
        return self._max_frame_bytes

    @property
    def in_handshake(self):
        """True while the handshake cap applies (never without one)."""
        return self._opening

    @property
    def buffered(self):
        """Bytes held for a frame that is not complete yet."""
        return self._held + self._big_filled + self._segs_bytes

    def reset(self):
        """Forget buffered bytes and any error, ready for a new stream (whose
        frames get the handshake cap again, if there is one)."""
        self._drop_big()
        self._held = 0
        if self._cap > 65536:
            free(self._buf)
            self._buf = NULL
            self._cap = 0
        self._error_class = None
        self._error_text = None
        self._start()

    cpdef list feed(self, data):
        cdef Py_buffer view
        cdef bint has_view = False
        cdef list out = []
        cdef const unsigned char* p
        cdef Py_ssize_t n
        if self._error_class is not None:
            exc = self._error_class(self._error_text)
            exc.messages = []
            raise exc
        if PyBytes_CheckExact(data):
            p = <const unsigned char*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            has_view = True
            p = <const unsigned char*>view.buf
            n = view.len
        try:
            self._feed(p, n, out)
        except ProtocolError as exc:
            self._error_class = type(exc)
            self._error_text = exc.message
            exc.messages = out
            raise
        finally:
            if has_view:
                PyBuffer_Release(&view)
        return out

    cpdef object receive_buffer(self):
        """A writable view of the bytes the stream's next bytes may go straight
        into (the payload of the large frame in progress), or None when no
        such frame is in progress. Write the next bytes of the stream at the
        view's start, then call ``received`` with their count; the view is
        valid until that call (or ``feed``/``reset``)."""
        cdef _ReceiveWindow window
        if self._big_filled == self._big_len or self._error_class is not None:
            return None
        window = _ReceiveWindow.__new__(_ReceiveWindow)
        window._owner = self._big
        window._at = PyBytes_AS_STRING(self._big) + self._big_filled
        window._size = self._big_len - self._big_filled
        return PyMemoryView_FromObject(window)

    def received(self, Py_ssize_t n):
        """``n`` bytes of the stream were written at the start of the view
        ``receive_buffer`` returned: the messages of the frames they
        completed, with the errors ``feed`` raises (and the same poisoning).
        ``InvalidArgument`` if ``n`` is negative or more than the view held."""
        cdef list out = []
        if self._error_class is not None:
            exc = self._error_class(self._error_text)
            exc.messages = out
            raise exc
        if n < 0 or n > self._big_len - self._big_filled:
            raise InvalidArgument(f"received({n}): the receive buffer held "
                                  f"{self._big_len - self._big_filled} bytes; pass the count "
                                  "written into it")
        self._big_filled += n
        if self._segs is not None:
            self._frame_seen += n  # the segment in progress (value segments)
        if n and self._big_filled == self._big_len:
            try:
                # completes the segment (and a frame that ends with it), or a
                # frame that ends with its payload
                self._feed_large(NULL, 0, out)
            except ProtocolError as exc:
                self._error_class = type(exc)
                self._error_text = exc.message
                exc.messages = out
                raise
        return out

    cdef int _append(self, const unsigned char* data, Py_ssize_t size) except -1:
        cdef Py_ssize_t cap
        cdef unsigned char* grown
        if self._cap - self._held < size:
            cap = self._cap * 2
            if cap < self._held + size:
                cap = self._held + size
            if cap < 256:
                cap = 256
            grown = <unsigned char*>realloc(self._buf, cap)
            if grown == NULL:
                raise MemoryError()
            self._buf = grown
            self._cap = cap
        memcpy(self._buf + self._held, data, size)
        self._held += size
        return 0

    cdef unsigned long long _frame_length(self, const unsigned char* header) except 0:
        cdef unsigned long long length = rsc_ld32(header)
        if length == 0:
            raise MalformedFrame("zero-length frame")
        if length > self._limit:
            if self._opening:
                raise FrameTooLarge(f"frame of {length} bytes exceeds the "
                                    f"{self._limit} bytes a peer may send before its "
                                    "handshake completes")
            raise FrameTooLarge(f"frame of {length} bytes exceeds max_frame_bytes "
                                f"{self._max_frame_bytes}")
        return length

    cdef int _handshake_frame(self, object msg) except -1:
        """``msg`` arrived while the handshake cap holds: lift it if ``msg``
        is the last handshake frame."""
        if Py_TYPE(msg) == CLS[self._opening_kind]:
            self._opening = False
            self._limit = self._full_limit
        return 0

    cdef void _drop_big(self) noexcept:
        self._big = None
        self._big_len = 0
        self._big_filled = 0
        self._segs = None
        self._segs_left = 0
        self._segs_bytes = 0
        self._seg_hdr_n = 0

    cdef bint _start_big(self, const unsigned char* frame, Py_ssize_t avail,
                         Py_ssize_t length) except -1:
        """The first ``avail`` bytes of a frame of ``length`` body bytes (more
        than ``avail - 4``) are at ``frame``. If its body's top-level array has
        a bin of at least LARGE_BIN bytes whose header is among them, keep
        them as a large frame in progress (see ``_big`` in the .pxd) and
        return True; else False, and nothing is kept (the frame is then
        buffered whole, as any other). Malformed bytes are not reported here:
        the frame's decode reports them once it is complete."""
        cdef Reader r
        cdef Py_ssize_t count, element, n, h, start, seg_element = -1
        cdef unsigned char b
        cdef unsigned char* big
        cdef const unsigned char* at
        r.p = frame + 4
        r.end = frame + avail
        try:
            if r_array_len(&r, &count):
                return False
            for element in range(count):
                if r.p >= r.end:
                    return False
                b = r.p[0]
                if element == 0 and b < KIND_SLOTS and SEG_FIELD[b] >= 0:
                    seg_element = 3 + SEG_FIELD[b]   # a kind with segments (a fixint kind)
                elif element == seg_element and (0x91 <= b <= 0x9f or b == 0xdc or b == 0xdd):
                    at = r.p
                    if r_array_len(&r, &n) or n > C_MAX_SEGMENTS:
                        return False   # the frame's decode reports it
                    self._start_segs(frame, avail, length, at - frame, r.p - frame, n, element)
                    return True
                if b == 0xc5 or b == 0xc6:
                    h = 3 if b == 0xc5 else 5
                    if r.end - r.p < h:
                        return False
                    n = rsc_ld16(r.p + 1) if b == 0xc5 else rsc_ld32(r.p + 1)
                    if n >= LARGE_BIN:
                        start = (r.p - frame) + h
                        if start + n > 4 + length:
                            return False
                        break
                r_skip_value(&r, 2)
            else:
                return False
        except ProtocolError:
            return False
        self._big = PyBytes_FromStringAndSize(NULL, n)
        self._big_len = n
        self._big_at = start
        self._big_header = h
        self._big_element = element
        self._frame_total = 4 + length
        big = <unsigned char*>PyBytes_AS_STRING(self._big)
        self._append(frame, start)
        self._big_filled = min(n, avail - start)
        memcpy(big, frame + start, self._big_filled)
        if avail > start + n:
            self._append(frame + start + n, avail - start - n)
        return True

    cdef int _start_segs(self, const unsigned char* frame, Py_ssize_t avail, Py_ssize_t length,
                         Py_ssize_t array_at, Py_ssize_t first_at, Py_ssize_t count,
                         Py_ssize_t element) except -1:
        """Keep the first ``avail`` bytes of a frame of ``length`` body bytes
        whose top-level element ``element`` is its segments array of ``count``
        bins (its header at ``array_at``, its first bin at ``first_at``) as a
        frame whose segments are in progress (see ``_segs`` in the .pxd)."""
        cdef unsigned char empty = 0x90
        self._segs = []
        self._segs_left = count
        self._segs_bytes = 0
        self._seg_hdr_n = 0
        self._big_element = element
        self._frame_total = 4 + length
        self._append(frame, array_at)
        self._append(&empty, 1)   # an empty array where the segments were; _decode_segs fills it in
        self._frame_seen = first_at
        self._feed_segs(frame + first_at, avail - first_at, [])  # never the whole frame
        return 0

    cdef Py_ssize_t _feed_segs(self, const unsigned char* data, Py_ssize_t size,
                               list out) except -1:
        """Take what the frame whose segments are in progress still needs from
        ``data``: each segment's bin header (checked, not kept), its bytes
        straight into a bytes object of its own (``_big`` while it is in
        progress), then the frame's bytes after the segments into ``_buf``;
        once it is complete, decode it into ``out``. Returns the bytes taken."""
        cdef Py_ssize_t pos = 0, take, n, h
        cdef unsigned char b
        while True:
            if self._big_len:
                take = min(self._big_len - self._big_filled, size - pos)
                memcpy(<unsigned char*>PyBytes_AS_STRING(self._big) + self._big_filled,
                       data + pos, take)
                self._big_filled += take
                self._frame_seen += take
                pos += take
                if self._big_filled < self._big_len:
                    return pos
                self._segs.append(self._big)
                self._segs_bytes += self._big_len
                self._big = None
                self._big_len = 0
                self._big_filled = 0
            elif self._segs_left:
                if pos == size:
                    return pos
                b = data[pos]
                if self._seg_hdr_n == 0 and b != 0xc4 and b != 0xc5 and b != 0xc6:
                    raise MalformedFrame(
                        f"segments (element {self._big_element}) item: expected bin, "
                        f"got {_marker_name(data + pos, data + size)}")
                self._seg_hdr[self._seg_hdr_n] = b
                self._seg_hdr_n += 1
                self._frame_seen += 1
                pos += 1
                b = self._seg_hdr[0]
                h = 2 if b == 0xc4 else (3 if b == 0xc5 else 5)
                if self._seg_hdr_n < h:
                    continue
                n = (self._seg_hdr[1] if h == 2 else
                     (rsc_ld16(self._seg_hdr + 1) if h == 3 else rsc_ld32(self._seg_hdr + 1)))
                if n > self._frame_total - self._frame_seen:
                    raise _truncated()
                self._seg_hdr_n = 0
                self._segs_left -= 1
                self._big = PyBytes_FromStringAndSize(NULL, n)
                self._big_len = n
                self._big_filled = 0
                if n == 0:
                    self._segs.append(self._big)
                    self._big = None
            else:
                return pos + self._finish_large(data + pos, size - pos,
                                                self._frame_total - self._frame_seen, out)

    cdef Py_ssize_t _finish_large(self, const unsigned char* data, Py_ssize_t size,
                                  Py_ssize_t need, list out) except -1:
        """Take up to ``need`` bytes, the large frame's last ones, into ``_buf``;
        once all are here, decode the frame into ``out``. Returns the bytes taken."""
        cdef Py_ssize_t take = min(need, size)
        cdef object msg
        if take:
            self._append(data, take)
            self._frame_seen += take
        if take < need:
            return take
        msg = self._decode_segs() if self._segs is not None else self._decode_big()
        out.append(msg)
        if self._opening:
            self._handshake_frame(msg)
        return take

    cdef object _decode_segs(self):
        """Decode the completed frame whose segments were received apart: its
        other bytes (an empty array in the segments' place), then the
        segments put in the field that empty array decoded into."""
        cdef Py_ssize_t held = self._held
        cdef Py_ssize_t field = self._big_element - 3
        segs = self._segs
        self._drop_big()
        self._held = 0
        return _put_apart(self._decode_held(held - 4), field, segs, True)

    cdef object _decode_held(self, Py_ssize_t size):
        """The message in ``_buf[4:4 + size]`` (a large frame's bytes, put
        together); ``_buf`` is freed after it if it grew past 64 KiB."""
        try:
            return _decode(self._buf + 4, size)
        finally:
            if self._cap > 65536:
                free(self._buf)
                self._buf = NULL
                self._cap = 0

    cdef Py_ssize_t _feed_large(self, const unsigned char* data, Py_ssize_t size,
                                list out) except -1:
        """``_feed_segs`` or ``_feed_big``, for the large frame in progress."""
        if self._segs is not None:
            return self._feed_segs(data, size, out)
        return self._feed_big(data, size, out)

    cdef bint _held_to_big(self, Py_ssize_t length) except -1:
        """``_start_big`` for the large frame of ``length`` body bytes whose
        first ``_held`` bytes (fewer than BIG_PROBE) are in ``_buf``: True once
        it is a large frame in progress; else False, and ``_buf`` as it was."""
        cdef Py_ssize_t held = self._held
        cdef bytes head = PyBytes_FromStringAndSize(<char*>self._buf, held)
        self._held = 0
        if self._start_big(<const unsigned char*>PyBytes_AS_STRING(head), held, length):
            return True
        self._held = held  # _start_big kept nothing: _buf still holds them
        return False

    cdef Py_ssize_t _feed_big(self, const unsigned char* data, Py_ssize_t size,
                              list out) except -1:
        """Take what the large frame in progress still needs from ``data``
        (the payload's bytes into ``_big``, the rest into ``_buf``); once it
        is complete, decode it into ``out``. Returns the bytes taken."""
        cdef Py_ssize_t pos = 0, take, need
        if self._big_filled < self._big_len:
            take = min(self._big_len - self._big_filled, size)
            memcpy(<unsigned char*>PyBytes_AS_STRING(self._big) + self._big_filled, data, take)
            self._big_filled += take
            pos = take
            if self._big_filled < self._big_len:
                return pos
        need = self._frame_total - self._big_len - self._held
        return pos + self._finish_large(data + pos, size - pos, need, out)

    cdef object _decode_big(self):
        """Decode the completed large frame: its other bytes, with the
        payload's bin header replaced by an empty bin's, then the payload put
        in the field that empty bin decoded into."""
        cdef Py_ssize_t head = self._big_at - self._big_header
        cdef Py_ssize_t tail = self._held - self._big_at
        cdef Py_ssize_t field = self._big_element - 3
        big = self._big
        self._drop_big()
        self._held = 0
        self._buf[head] = 0xc4
        self._buf[head + 1] = 0
        memmove(self._buf + head + 2, self._buf + self._big_at, tail)
        return _put_apart(self._decode_held(head + 2 + tail - 4), field, big, False)

    cdef int _feed(self, const unsigned char* data, Py_ssize_t size, list out) except -1:
        cdef Py_ssize_t pos = 0, take, length
        cdef object msg
        if self._big_len or self._segs is not None:
            pos = self._feed_large(data, size, out)
            if self._big_len or self._segs is not None:
                return 0
        elif self._held:
            # Complete the pending frame first, taking only the bytes it needs.
            if self._held < 4:
                take = min(4 - self._held, size)
                self._append(data, take)
                pos = take
                if self._held < 4:
                    return 0
                length = <Py_ssize_t>self._frame_length(self._buf)
            else:
                length = <Py_ssize_t>rsc_ld32(self._buf)
            if length >= LARGE_BIN and self._held < BIG_PROBE:
                # A large frame whose first bytes came in a short read: once
                # the bytes that hold its payload's bin header are here, it
                # too is received straight into the bytes the message keeps
                # (buffered whole, its payload would be copied three times).
                take = min(BIG_PROBE - self._held, 4 + length - self._held, size - pos)
                self._append(data + pos, take)
                pos += take
                if self._held_to_big(length):
                    pos += self._feed_large(data + pos, size - pos, out)
                    if self._big_len or self._segs is not None:
                        return 0
                    length = -1  # complete: on to the frames after it
            if length >= 0:
                take = min(4 + length - self._held, size - pos)
                self._append(data + pos, take)
                pos += take
                if self._held < 4 + length:
                    return 0
                self._held = 0
                msg = _decode(self._buf + 4, length)
                out.append(msg)
                if self._opening:
                    self._handshake_frame(msg)
                if self._cap > 65536:
                    free(self._buf)
                    self._buf = NULL
                    self._cap = 0
        while size - pos >= 4:
            length = <Py_ssize_t>self._frame_length(data + pos)
            if size - pos - 4 < length:
                if length >= LARGE_BIN and self._start_big(data + pos, size - pos, length):
                    return 0
                break
            msg = _decode(data + pos + 4, length)
            out.append(msg)
            if self._opening:
                self._handshake_frame(msg)
            pos += 4 + length
        if pos < size:
            self._append(data + pos, size - pos)
        return 0
