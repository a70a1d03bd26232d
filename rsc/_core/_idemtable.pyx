# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The idempotency store, compiled (twin of ``rsc._core._idemtable_py``).

Rules this file keeps (docs/PROTOCOL.md section 7, "Rules the node keeps"):

- A record is keyed by its 16-byte idempotency key and remembers the request's
  fingerprint, its owner ``(origin, task_id)``, its aliases, and once finished
  its outcome and expiry.
- ``check_and_record`` decides New / Duplicate / Conflict in one step. A
  duplicate arriving while the task runs becomes an alias; ``complete`` returns
  the aliases to deliver to.
- Every ``(origin, task_id)`` present (owner or alias) names exactly one record
  (``owner_of``); reusing one with a different key is a conflict.
- Running records never expire. A finished record expires ``ttl_ns`` after its
  completion; tombstones (with the reason of the cancel that laid them) and
  redeliveries ``ttl_ns`` after they are laid. Expiry happens only in
  ``evict_expired``, which walks FIFO queues and costs time in proportion to
  what it evicts.
- A redelivery (``add_redelivery``) names the finished record a duplicate
  ``(origin, task_id)`` was answered from, so ``key_of`` finds it for a later
  cancel or resend; it lives while that record does, at most ``ttl_ns``.
- Results for an origin with no live connection are held here too
  (``hold``, ``take_held``), each ``ttl_ns`` from when it was held.
- Kept results have a byte budget (``max_kept_bytes``; each ``complete`` says
  how many bytes its outcome keeps). Over it, the oldest kept results are
  replaced by ``dropped_outcome`` (in the records and in what is held for their
  owner and aliases) until the rest fit; the records stay, so a key is still
  never run twice, and a duplicate is answered with ``dropped_outcome``.

Implementation (layout in ``_idemtable.pxd``): records are C structs in
fixed-size blocks with a free list; a key index and an ``(origin, task_id)``
index are each 256 open-addressing tables (shards) of small C structs; the
expiry FIFO is a queue of fixed-size blocks of C structs. Nothing is copied
as a whole when the table grows or shrinks. The common paths (new, complete, evict) allocate no Python object. An
``IdemRecord`` is built only when one is handed out (a duplicate, ``get``).

Re-entrancy: Python code can run inside this module only where an object is
released (an outcome's finalizer) or a GC-tracked object is allocated (a
collection). Every such point comes after the table is consistent again, and
no C pointer or probe position is kept across one.
"""


from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.list cimport PyList_Append, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_CheckExact
from libc.stdint cimport int64_t, uint32_t, uint64_t, INT64_MAX
from libc.string cimport memcpy

cimport cython

import hashlib

from rsc._core.expiring import ExpiringMap, HeldResults
from rsc.errors import InvalidArgument

cdef extern from "Python.h":
    # Declared here without an exception clause: the callers check and convert
    # the error themselves (to InvalidArgument).
    unsigned long long _as_ull "PyLong_AsUnsignedLongLong"(object)
    long long _as_ll_overflow "PyLong_AsLongLongAndOverflow"(object, int*)
    void _incref "Py_INCREF"(PyObject*)
    void _decref "Py_DECREF"(PyObject*)
    void _xdecref "Py_XDECREF"(PyObject*)
    Py_hash_t _object_hash "PyObject_Hash"(PyObject*)
    int _is_gc "PyObject_IS_GC"(PyObject*)
    int _gc_is_tracked "PyObject_GC_IsTracked"(PyObject*)
    void _gc_untrack "PyObject_GC_UnTrack"(void*)

__all__ = [
    "CONFLICT",
    "DEDUP_CONFLICT",
    "DEDUP_DUPLICATE",
    "DEDUP_NEW",
    "NEW",
    "Decision",
    "IdemRecord",
    "IdemTable",
    "fingerprint",
    "fingerprint_matches",
    "DRAWN_FINGERPRINT",
    "FP_BLAKE2B",
    "FP_DRAWN",
    "FP_SHA256",
    "FP_SHA256_MIN_INPUT",
    "legacy_fingerprint",
    "spawn_fingerprint",
    "spawn_matches",
]

DEDUP_NEW = 0
DEDUP_DUPLICATE = 1
DEDUP_CONFLICT = 2

cdef inline void _untrack_if_atomic(object outcome) noexcept:
    """Take a kept outcome tuple out of the collector's sight when nothing in
    it can ever be part of a reference cycle: CPython's own rule for tuples
    (an item that is not a GC type, or an exact tuple already untracked), which
    the collector applies itself to every tuple in the youngest generation it
    walks. Applied here, at completion, a finished task leaves no object for
    the collector to count and walk while its outcome is kept (for the TTL):
    a node no longer runs a young collection every few thousand tasks only
    to find these tuples and untrack them."""
    cdef Py_ssize_t i
    cdef PyObject* item
    if type(outcome) is not tuple or not _gc_is_tracked(<PyObject*>outcome):
        return
    for i in range(len(<tuple>outcome)):
        item = PyTuple_GET_ITEM(outcome, i)
        if _is_gc(item) and (type(<object>item) is not tuple or _gc_is_tracked(item)):
            return
    _gc_untrack(<PyObject*>outcome)


cdef extern from "Python.h":
    # Declared again with plain C function pointers, to hook the table's
    # tp_traverse (below) without Cython's exception checks.
    ctypedef int (*_visitproc "visitproc")(PyObject*, void*) noexcept
    ctypedef int (*_traverseproc "traverseproc")(PyObject*, _visitproc, void*) noexcept
    ctypedef struct _TypeObject "PyTypeObject":
        _traverseproc tp_traverse

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define RSC_IT_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define RSC_IT_PREFETCH(p) ((void)(p))
    #endif
    #define RSC_IT_ALIAS_BIT 0x80000000u    /* TSlot.ref of an alias entry */
    #define RSC_IT_FREE_END 0xFFFFFFFFu     /* end of the free-slot chain */
    #define RSC_IT_MAX_RECORDS 0x40000000u   /* 2**30: keeps every capacity below 2**32 */
    #define RSC_IT_MAX_SLOTS 0x80000000u     /* longest expiry queue (2**31) */
    #define RSC_IT_MIN_TABLE 16u            /* slots of a shard's first table */
    #define RSC_IT_SHARD_SHIFT 24           /* an index's shard: the hash's top 8 bits */
    #define RSC_IT_SHARD_SLOTS 0x1000000u   /* largest shard (2**24): its mask stays below those bits */
    #define RSC_IT_REC_SHIFT 12             /* records per block: 4096 */
    #define RSC_IT_Q_SHIFT 10               /* expiry entries per block: 1024 */
    #define RSC_IT_REC_MASK ((1u << RSC_IT_REC_SHIFT) - 1)
    #define RSC_IT_Q_MASK ((1u << RSC_IT_Q_SHIFT) - 1)
    #define RSC_IT_SHARDS 256u
    #define RSC_IT_SHRINK_SCAN 2            /* shards of each index one eviction looks at */
    """
    const uint32_t ALIAS_BIT "RSC_IT_ALIAS_BIT"
    const uint32_t FREE_END "RSC_IT_FREE_END"
    const uint32_t MAX_RECORDS "RSC_IT_MAX_RECORDS"
    const uint32_t MIN_TABLE "RSC_IT_MIN_TABLE"
    const uint32_t MAX_SLOTS "RSC_IT_MAX_SLOTS"
    const uint32_t SHARD_SHIFT "RSC_IT_SHARD_SHIFT"
    const uint32_t SHARD_SLOTS "RSC_IT_SHARD_SLOTS"
    const uint32_t REC_SHIFT "RSC_IT_REC_SHIFT"
    const uint32_t Q_SHIFT "RSC_IT_Q_SHIFT"
    const uint32_t REC_MASK "RSC_IT_REC_MASK"
    const uint32_t Q_MASK "RSC_IT_Q_MASK"
    const uint32_t SHARDS "RSC_IT_SHARDS"
    const uint32_t SHRINK_SCAN "RSC_IT_SHRINK_SCAN"
    # A hint to start loading a cache line now. The tables are probed at
    # random, so most probes miss the cache; where two lookups do not depend
    # on each other, prefetching both lets the misses overlap.
    void _prefetch "RSC_IT_PREFETCH"(const void* p) noexcept

cdef object _U64_MAX = (1 << 64) - 1
cdef object _I64_MAX = (1 << 63) - 1
cdef bytes _FP_PERSON = b"rsc/idem-fp/v1"
# The fingerprint's algorithm tags (its first byte) and where SHA-256 takes over
# (the rules are written out in the pure twin, ``_idemtable_py``).
FP_BLAKE2B = 1
FP_SHA256 = 2
FP_SHA256_MIN_INPUT = 2048
FP_DRAWN = 3  # a key the origin drew itself: owner-only, not hashed
DRAWN_FINGERPRINT = b"\x03" + bytes(16)
cdef bytes _DRAWN_FP = DRAWN_FINGERPRINT
cdef Py_ssize_t _SHA_MIN = FP_SHA256_MIN_INPUT
cdef bytes _FP_SHA_PREFIX = b"rsc/idem-fp/v2\x00\x00"
cdef object _sha256 = hashlib.sha256


# --- fingerprint ---------------------------------------------------------------


cdef extern from *:
    """
    /* BLAKE2b (RFC 7693), sequential mode, no key: what the fingerprint needs.
       Written out here so a fingerprint costs one C call instead of building
       and feeding a hashlib object (~10x fewer instructions per spawn). */
    #include <string.h>
    typedef struct { uint64_t h[8]; uint64_t t0, t1; uint8_t buf[128]; size_t n; } rsc_b2b;
    static const uint64_t rsc_b2b_iv[8] = {
        0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
        0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
    #define RSC_ROTR64(x, k) (((x) >> (k)) | ((x) << (64 - (k))))
    #define RSC_B2B_G(a, b, c, d, x, y) do { \\
        v[a] = v[a] + v[b] + (x); v[d] = RSC_ROTR64(v[d] ^ v[a], 32); \\
        v[c] = v[c] + v[d];       v[b] = RSC_ROTR64(v[b] ^ v[c], 24); \\
        v[a] = v[a] + v[b] + (y); v[d] = RSC_ROTR64(v[d] ^ v[a], 16); \\
        v[c] = v[c] + v[d];       v[b] = RSC_ROTR64(v[b] ^ v[c], 63); } while (0)
    static uint64_t rsc_b2b_load64(const uint8_t *p) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint64_t w; memcpy(&w, p, 8); return w;  /* one load where the word is already little-endian */
    #else
        uint64_t w = 0; int i;
        for (i = 7; i >= 0; i--) w = (w << 8) | p[i];
        return w;
    #endif
    }
    /* One round with its message schedule as constants: written out, all 12
       rounds keep v in registers and index m directly (the table-driven loop
       cost about twice the instructions). */
    #define RSC_B2B_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) do { \\
        RSC_B2B_G(0, 4,  8, 12, m[s0],  m[s1]);  RSC_B2B_G(1, 5,  9, 13, m[s2],  m[s3]); \\
        RSC_B2B_G(2, 6, 10, 14, m[s4],  m[s5]);  RSC_B2B_G(3, 7, 11, 15, m[s6],  m[s7]); \\
        RSC_B2B_G(0, 5, 10, 15, m[s8],  m[s9]);  RSC_B2B_G(1, 6, 11, 12, m[s10], m[s11]); \\
        RSC_B2B_G(2, 7,  8, 13, m[s12], m[s13]); RSC_B2B_G(3, 4,  9, 14, m[s14], m[s15]); } while (0)
    static void rsc_b2b_compress(rsc_b2b *S, const uint8_t *block, int last) {
        uint64_t v[16], m[16]; int i;
        for (i = 0; i < 16; i++) m[i] = rsc_b2b_load64(block + 8 * i);
        for (i = 0; i < 8; i++) { v[i] = S->h[i]; v[i + 8] = rsc_b2b_iv[i]; }
        v[12] ^= S->t0; v[13] ^= S->t1;
        if (last) v[14] = ~v[14];
        /* BLAKE2b's message schedule (RFC 7693, SIGMA), one row a round; rounds
           10 and 11 repeat rows 0 and 1 */
        RSC_B2B_ROUND( 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,10,11,12,13,14,15);
        RSC_B2B_ROUND(14,10, 4, 8, 9,15,13, 6, 1,12, 0, 2,11, 7, 5, 3);
        RSC_B2B_ROUND(11, 8,12, 0, 5, 2,15,13,10,14, 3, 6, 7, 1, 9, 4);
        RSC_B2B_ROUND( 7, 9, 3, 1,13,12,11,14, 2, 6, 5,10, 4, 0,15, 8);
        RSC_B2B_ROUND( 9, 0, 5, 7, 2, 4,10,15,14, 1,11,12, 6, 8, 3,13);
        RSC_B2B_ROUND( 2,12, 6,10, 0,11, 8, 3, 4,13, 7, 5,15,14, 1, 9);
        RSC_B2B_ROUND(12, 5, 1,15,14,13, 4,10, 0, 7, 6, 3, 9, 2, 8,11);
        RSC_B2B_ROUND(13,11, 7,14,12, 1, 3, 9, 5, 0,15, 4, 8, 6, 2,10);
        RSC_B2B_ROUND( 6,15,14, 9,11, 3, 0, 8,12, 2,13, 7, 1, 4,10, 5);
        RSC_B2B_ROUND(10, 2, 8, 4, 7, 6, 1, 5,15,11, 9,14, 3,12,13, 0);
        RSC_B2B_ROUND( 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,10,11,12,13,14,15);
        RSC_B2B_ROUND(14,10, 4, 8, 9,15,13, 6, 1,12, 0, 2,11, 7, 5, 3);
        for (i = 0; i < 8; i++) S->h[i] ^= v[i] ^ v[i + 8];
    }
    /* personal: 16 bytes (zero padded); outlen <= 64 */
    static void rsc_b2b_init(rsc_b2b *S, size_t outlen, const uint8_t *personal) {
        int i;
        for (i = 0; i < 8; i++) S->h[i] = rsc_b2b_iv[i];
        S->h[0] ^= 0x01010000ULL ^ (uint64_t)outlen;
        S->h[6] ^= rsc_b2b_load64(personal);
        S->h[7] ^= rsc_b2b_load64(personal + 8);
        S->t0 = S->t1 = 0; S->n = 0;
    }
    static void rsc_b2b_update(rsc_b2b *S, const uint8_t *in, size_t len) {
        while (len > 0) {
            size_t take;
            if (S->n == 128) {  /* a full block is compressed only once more data follows */
                S->t0 += 128; if (S->t0 < 128) S->t1++;
                rsc_b2b_compress(S, S->buf, 0);
                S->n = 0;
            }
            take = 128 - S->n; if (take > len) take = len;
            memcpy(S->buf + S->n, in, take);
            S->n += take; in += take; len -= take;
        }
    }
    static void rsc_b2b_final(rsc_b2b *S, uint8_t *out, size_t outlen) {
        size_t i;
        S->t0 += S->n; if (S->t0 < S->n) S->t1++;
        memset(S->buf + S->n, 0, 128 - S->n);
        rsc_b2b_compress(S, S->buf, 1);
        for (i = 0; i < outlen; i++) out[i] = (uint8_t)(S->h[i >> 3] >> (8 * (i & 7)));
    }
    static void rsc_b2b_put_u64be(uint8_t *p, uint64_t x) {
        int i;
        for (i = 7; i >= 0; i--) { p[i] = (uint8_t)x; x >>= 8; }
    }
    """
    ctypedef struct rsc_b2b:
        pass
    void rsc_b2b_init(rsc_b2b *S, size_t outlen, const unsigned char *personal) nogil
    void rsc_b2b_update(rsc_b2b *S, const unsigned char *data, size_t n) nogil
    void rsc_b2b_final(rsc_b2b *S, unsigned char *out, size_t outlen) nogil
    void rsc_b2b_put_u64be(unsigned char *p, uint64_t x) nogil
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL


cdef unsigned char _FP_PERSON16[16]
_FP_PERSON16[:] = [0] * 16
for _i, _b in enumerate(_FP_PERSON):
    _FP_PERSON16[_i] = _b
cdef Py_ssize_t _FP_NOGIL_BYTES = 64 * 1024  # hashing bigger inputs lets other threads run


cdef const char *_fp_name(object computation, object input, Py_ssize_t *name_len) except NULL:
    if not isinstance(computation, str):
        raise InvalidArgument(f"computation must be a str, not {type(computation).__name__}")
    if not isinstance(input, bytes):
        _parts_len(input)  # an input in parts, or InvalidArgument
    try:
        return PyUnicode_AsUTF8AndSize(computation, name_len)
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"computation is not valid UTF-8 text: {exc}") from None


cdef bytes _blake2b_fp(const char *name, Py_ssize_t name_len, bytes input):
    cdef const unsigned char *data = <const unsigned char *>PyBytes_AS_STRING(input)
    cdef Py_ssize_t data_len = PyBytes_GET_SIZE(input)
    cdef unsigned char lenbuf[8]
    cdef unsigned char out[17]
    cdef rsc_b2b S
    out[0] = 1  # FP_BLAKE2B
    rsc_b2b_init(&S, 16, _FP_PERSON16)
    rsc_b2b_put_u64be(lenbuf, <uint64_t>name_len)
    rsc_b2b_update(&S, lenbuf, 8)
    rsc_b2b_update(&S, <const unsigned char *>name, <size_t>name_len)
    rsc_b2b_put_u64be(lenbuf, <uint64_t>data_len)
    rsc_b2b_update(&S, lenbuf, 8)
    if data_len >= _FP_NOGIL_BYTES:
        with nogil:  # ``input`` is held by the caller's reference meanwhile
            rsc_b2b_update(&S, data, <size_t>data_len)
            rsc_b2b_final(&S, out + 1, 16)
    else:
        rsc_b2b_update(&S, data, <size_t>data_len)
        rsc_b2b_final(&S, out + 1, 16)
    return PyBytes_FromStringAndSize(<char *>out, 17)


cdef Py_ssize_t _parts_len(object input) except -1:
    # the bytes an input in parts (a tuple of bytes-like objects) stands for
    cdef Py_ssize_t n = 0
    if type(input) is not tuple:
        raise InvalidArgument(f"input must be bytes or a tuple of bytes-like parts, not {type(input).__name__}")
    for part in <tuple>input:
        if isinstance(part, bytes):
            n += PyBytes_GET_SIZE(part)
            continue
        try:
            view = memoryview(part)
        except TypeError:
            raise InvalidArgument(f"an input part must be bytes-like, not {type(part).__name__}") from None
        if not view.c_contiguous:
            raise InvalidArgument("an input part must be a contiguous buffer")
        n += view.nbytes
    return n


cdef bytes _sha256_fp(const char *name, Py_ssize_t name_len, object input):
    # hashlib's SHA-256 (SHA-NI where the CPU has it) releases the GIL while it
    # hashes a large input; an input in parts is hashed part by part
    cdef unsigned char lenbuf[8]
    cdef bint parts = type(input) is tuple
    rsc_b2b_put_u64be(lenbuf, <uint64_t>name_len)
    head = _FP_SHA_PREFIX + PyBytes_FromStringAndSize(<char *>lenbuf, 8) + PyBytes_FromStringAndSize(name, name_len)
    rsc_b2b_put_u64be(lenbuf, <uint64_t>(_parts_len(input) if parts else PyBytes_GET_SIZE(input)))
    h = _sha256(head + PyBytes_FromStringAndSize(<char *>lenbuf, 8))
    if parts:
        for part in <tuple>input:
            h.update(part)
    else:
        h.update(input)
    return b"\x02" + h.digest()[:16]


cdef bytes _blake2b_of(const char *name, Py_ssize_t name_len, object input):
    # an input in parts under FP_SHA256_MIN_INPUT bytes in all: joining costs little
    return _blake2b_fp(name, name_len, input if type(input) is not tuple else b"".join(<tuple>input))


def fingerprint(computation, input):
    """The 17-byte fingerprint of a request: an algorithm tag (``FP_BLAKE2B``
    under ``FP_SHA256_MIN_INPUT`` bytes of input, else ``FP_SHA256``), then a
    16-byte digest of (computation, input); the encoding is written out in
    ``rsc._core._idemtable_py.fingerprint``, which gives the same bytes.
    ``input`` is ``bytes`` or a tuple of bytes-like parts, fingerprinted as
    their concatenation without joining them.
    """
    return _fingerprint_of(computation, input)


cdef bytes _fingerprint_of(object computation, object input):
    cdef Py_ssize_t name_len
    cdef const char *name = _fp_name(computation, input, &name_len)
    if type(input) is tuple:  # an input in parts
        if _parts_len(input) >= _SHA_MIN:
            return _sha256_fp(name, name_len, input)
        return _blake2b_of(name, name_len, input)
    if PyBytes_GET_SIZE(input) >= _SHA_MIN:
        return _sha256_fp(name, name_len, input)
    return _blake2b_fp(name, name_len, input)


def fingerprint_matches(fp, computation, input):
    """Whether ``fp`` (a fingerprint, possibly written by an older rsc) is the
    fingerprint of (computation, input) under the algorithm its tag names.
    An unknown tag matches nothing."""
    cdef Py_ssize_t name_len
    cdef const char *name = _fp_name(computation, input, &name_len)
    cdef bytes f = _fp_arg(fp)
    cdef unsigned char tag = <unsigned char>PyBytes_AS_STRING(f)[0]
    if tag == 2:  # FP_SHA256
        return _sha256_fp(name, name_len, input) == f
    if tag == 1:  # FP_BLAKE2B
        return _blake2b_of(name, name_len, input) == f
    return False


def spawn_fingerprint(computation, input, drawn):
    """The fingerprint a newly admitted spawn is recorded with:
    ``DRAWN_FINGERPRINT`` for a key its origin drew (``drawn``), which hashes
    nothing, else ``fingerprint(computation, input)``."""
    if drawn is True:
        return _DRAWN_FP
    if drawn is not False:
        raise InvalidArgument(f"drawn must be a bool, not {type(drawn).__name__}")
    return _fingerprint_of(computation, input)


def spawn_matches(fp, owner, origin, drawn, computation, input):
    """Whether a spawn from ``origin`` (saying ``drawn`` or not) of
    (computation, input) is the request a record made with fingerprint ``fp``
    and owned by origin ``owner`` stands for; the rules are in the pure twin's
    ``spawn_matches``."""
    cdef Py_ssize_t name_len
    cdef bytes f = _fp_arg(fp)
    if <unsigned char>PyBytes_AS_STRING(f)[0] == 3:  # FP_DRAWN
        _fp_name(computation, input, &name_len)  # the same argument checks either way
        return drawn is True and _origin_arg(origin) == _origin_arg(owner)
    return fingerprint_matches(f, computation, input)


def legacy_fingerprint(fp):
    """The fingerprint an older rsc wrote as 16 untagged bytes (always
    BLAKE2b-128), tagged; a 17-byte one is returned as it is."""
    if isinstance(fp, bytes) and len(fp) == 16:
        return bytes((FP_BLAKE2B,)) + fp
    return _fp_arg(fp)


# --- argument checks: inline fast path for the exact types, slow path else ------


cdef bytes _key_slow(object value, str what):
    if not isinstance(value, bytes):
        raise InvalidArgument(f"{what} must be 16 bytes, not {type(value).__name__}")
    if len(value) != 16:
        raise InvalidArgument(f"{what} must be 16 bytes, not {len(value)}")
    return bytes(memoryview(value))  # a bytes subclass is stored as plain bytes


cdef inline bytes _key_arg(object value, str what):
    if PyBytes_CheckExact(value) and PyBytes_GET_SIZE(value) == 16:
        return <bytes>value
    return _key_slow(value, what)


cdef bytes _fp_slow(object value):
    if not isinstance(value, bytes):
        raise InvalidArgument(f"fingerprint must be 17 bytes, not {type(value).__name__}")
    if len(value) != 17:
        raise InvalidArgument(f"fingerprint must be 17 bytes (an algorithm tag and a 16-byte digest), "
                              f"not {len(value)}")
    return bytes(memoryview(value))


cdef inline bytes _fp_arg(object value):
    if PyBytes_CheckExact(value) and PyBytes_GET_SIZE(value) == 17:
        return <bytes>value
    return _fp_slow(value)


cdef str _origin_slow(object value):
    if not isinstance(value, str):
        raise InvalidArgument(f"origin must be a str (NodeId), not {type(value).__name__}")
    return str.__str__(value)  # a str subclass is stored as plain str


cdef inline str _origin_arg(object value):
    if PyUnicode_CheckExact(value):
        return <str>value
    return _origin_slow(value)


cdef object _int_slow(object value, str what, object limit):
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an int, not {type(value).__name__}")
    value = int.__index__(value)
    if not 0 <= value <= limit:
        raise InvalidArgument(f"{what} must be in 0..{limit}, not {value}")
    return value


cdef inline uint64_t _task_id_arg(object value) except? 0xFFFFFFFFFFFFFFFF:
    # AsLongLongAndOverflow first, as _time_arg does: AsUnsignedLongLong goes
    # through a byte array for anything >= 2**30, i.e. every task id a Runtime
    # draws (they count up from a random start below 2**52)
    cdef unsigned long long x
    cdef long long y
    cdef int overflow = 0
    if PyLong_CheckExact(value):
        y = _as_ll_overflow(value, &overflow)
        if y >= 0 and not overflow:
            return <uint64_t>y
        x = _as_ull(value)
        if x != <unsigned long long>-1 or PyErr_Occurred() == NULL:
            return x
        PyErr_Clear()
    return <uint64_t>_int_slow(value, "task_id", _U64_MAX)


cdef Py_ssize_t _limit_arg(object limit) except -1:
    # evict_expired's optional bound: None (no bound) or an int >= 1
    if limit is None:
        return PY_SSIZE_T_MAX
    value = _int_slow(limit, "limit", _I64_MAX)
    if value < 1:
        raise InvalidArgument("limit must be at least 1, or None for no limit")
    return min(value, PY_SSIZE_T_MAX)


cdef inline int64_t _time_arg(object value, str what) except -1:
    # AsLongLongAndOverflow reads multi-digit ints directly (AsLongLong goes
    # through a byte array for anything >= 2**30, i.e. every real timestamp)
    cdef long long x
    cdef int overflow = 0
    if PyLong_CheckExact(value):
        x = _as_ll_overflow(value, &overflow)
        if x >= 0 and not overflow:
            return x
    return <int64_t>_int_slow(value, what, _I64_MAX)


# --- hashing -------------------------------------------------------------------


cdef inline uint32_t _fold(uint64_t h) noexcept:
    return <uint32_t>(h ^ (h >> 32))


cdef inline uint32_t _pair_hash(Py_hash_t origin_hash, uint64_t task_id) noexcept:
    # The origin's str hash is cached in the str and randomised per process (so
    # is the key's bytes hash); the task id is mixed in by a bijection
    # (odd multiply, then the splitmix64 finaliser).
    cdef uint64_t x = (<uint64_t>origin_hash) ^ (task_id * <uint64_t>0x9E3779B97F4A7C15)
    x ^= x >> 30
    x *= <uint64_t>0xBF58476D1CE4E5B9
    x ^= x >> 27
    x *= <uint64_t>0x94D049BB133111EB
    x ^= x >> 31
    return _fold(x)


cdef inline Py_hash_t _str_hash(PyObject* s) noexcept:
    # An exact str caches its hash, and hashing a str cannot fail.
    return _object_hash(s)


cdef inline uint32_t _cap_for(uint32_t n) noexcept:
    # smallest power-of-two table holding n entries at load <= 0.4
    cdef uint64_t cap = MIN_TABLE
    while <uint64_t>n * 10 > cap * 4:
        cap <<= 1
    return <uint32_t>cap


# --- decisions and records -----------------------------------------------------


cdef class Decision:
    """The two decisions that carry no record: ``NEW`` and ``CONFLICT``.

    ``check_and_record`` returns one of these module singletons or an
    ``IdemRecord`` (a duplicate), so ``decision is NEW`` / ``decision is
    CONFLICT`` / else-record is the natural branch; ``decision.dedup`` gives the
    ``DEDUP_*`` code of all three.
    """

    def __init__(self, int dedup, str name):
        self.dedup = dedup
        self.name = name

    def __repr__(self):
        return self.name

    def __reduce__(self):
        return self.name  # pickles as the module singleton


NEW = Decision(DEDUP_NEW, "NEW")
CONFLICT = Decision(DEDUP_CONFLICT, "CONFLICT")
cdef Decision _NEW = NEW
cdef Decision _CONFLICT = CONFLICT


@cython.freelist(16)
@cython.final
cdef class IdemRecord:
    """One idempotency record, as it was when handed out (an immutable snapshot).

    ``outcome`` and ``expires_at`` are None while the task runs; ``finished``
    says which. ``aliases`` are the ``(origin, task_id)`` pairs of duplicates
    that arrived while it ran, in arrival order (the owner is not among them).
    """

    @property
    def dedup(self):
        """Always ``DEDUP_DUPLICATE``: a record returned by ``check_and_record``."""
        return DEDUP_DUPLICATE

    @property
    def key(self):
        return PyBytes_FromStringAndSize(<char*>&self._rec.k0, 16)

    @property
    def fingerprint(self):
        cdef unsigned char out[17]
        out[0] = self._rec.ftag
        memcpy(out + 1, &self._rec.f0, 16)
        return PyBytes_FromStringAndSize(<char*>out, 17)

    @property
    def origin(self):
        return self._origin

    @property
    def task_id(self):
        return self._rec.task_id

    @property
    def outcome(self):
        return self._outcome

    @property
    def finished(self):
        return self._rec.expires_at >= 0

    @property
    def expires_at(self):
        if self._rec.expires_at >= 0:
            return self._rec.expires_at
        return None

    @property
    def aliases(self):
        if self._n_aliases == 0:
            return ()
        return tuple(self._alias_list[:self._n_aliases])

    @property
    def kept_bytes(self):
        """The bytes its outcome counts against the table's budget (0 once dropped)."""
        return self._rec.kept if self._rec.kept > 0 else 0

    @property
    def result_dropped(self):
        """Its outcome was dropped for the kept-result budget (``outcome`` is
        then the table's ``dropped_outcome``)."""
        return self._rec.kept < 0

    def __repr__(self):
        state = f"finished, expires_at={self.expires_at}" if self.finished else "running"
        return (
            f"IdemRecord(key={self.key.hex()}, origin={self._origin!r}, "
            f"task_id={self.task_id}, {state}, aliases={self._n_aliases})"
        )


# --- the table -----------------------------------------------------------------


# Storage. Nothing the table holds is ever copied as a whole: records and
# expiry entries sit in fixed-size blocks that never move, and each index is
# SHARDS independent hash tables, so one resize rehashes one shard (1/256 of
# the index). A node's event loop waits for every table call; these keep the
# slowest call near the cost of one shard's resize at any size.

cdef KSlot _K_EMPTY[1]  # the one (zero) slot every empty key shard shares; never written
cdef TSlot _T_EMPTY[1]


cdef inline bint _full(uint32_t used, uint32_t mask) noexcept:
    # Whether a shard must grow before one more insert: its load stays <= 0.7
    # (an empty shard's one shared slot counts as full).
    return (<uint64_t>used + 1) * 10 > (<uint64_t>mask + 1) * 7


# One shard of either index, by its slot type: the key index's KSlot or the
# task index's TSlot (each has h, the hash, and ref, 0 when empty), given as
# its slots and mask and the static empty slot its index shares.
ctypedef fused Slot:
    KSlot
    TSlot


cdef Py_ssize_t _shard_resize(Slot** slots, uint32_t* mask, uint32_t cap, Slot* empty) noexcept:
    # Rehash the shard into a table of cap slots: the old table's slot count
    # (the work, counted in _moved), or -1 (nothing changed, no exception
    # set) if out of memory.
    cdef Slot* new = <Slot*>PyMem_Malloc(cap * sizeof(Slot))
    cdef Slot* old = slots[0]
    cdef uint32_t old_cap = mask[0] + 1
    cdef uint32_t m = cap - 1
    cdef uint32_t i, j
    if new == NULL:
        return -1
    for i in range(cap):
        new[i].ref = 0  # an empty slot (the rest of it is never read)
    for i in range(old_cap):
        if old[i].ref:
            j = old[i].h & m
            while new[j].ref:
                j = (j + 1) & m
            new[j] = old[i]
    slots[0] = new
    mask[0] = m
    if old != empty:
        PyMem_Free(old)
    return old_cap


cdef Py_ssize_t _shard_grow(Slot** slots, uint32_t* mask, Slot* empty, str index) except -1:
    # The shard is too full for one more insert (_full): double it. The work done.
    cdef uint32_t cap = mask[0] + 1
    cdef Py_ssize_t moved
    if cap >= SHARD_SLOTS:
        raise MemoryError(f"the idempotency table's {index} index is full")
    moved = _shard_resize(slots, mask, MIN_TABLE if cap < MIN_TABLE else cap * 2, empty)
    if moved < 0:
        raise MemoryError()
    return moved


cdef void _shard_release(Slot** slots, uint32_t* mask, Slot* empty) noexcept:
    # Give the shard's table back: it shares the empty slot again.
    if slots[0] != empty:
        PyMem_Free(slots[0])
    slots[0] = empty
    mask[0] = 0


cdef Py_ssize_t _shard_shrink(Slot** slots, uint32_t* mask, uint32_t used, Slot* empty) noexcept:
    # After evictions (IdemTable._shrink): an empty shard gives back its
    # table; one at most 1/8 full is rebuilt at load <= 0.4. The work done
    # (0 when out of memory: the bigger table stays).
    cdef Py_ssize_t moved = 0
    if used == 0:
        _shard_release(slots, mask, empty)
    elif mask[0] + 1 > MIN_TABLE and <uint64_t>used * 8 < mask[0] + 1:
        moved = _shard_resize(slots, mask, _cap_for(used), empty)
    return moved if moved > 0 else 0


cdef inline Rec* _rec_at(Rec** rb, uint32_t idx) noexcept:
    return &rb[idx >> REC_SHIFT][idx & REC_MASK]


cdef inline QEntry* _q_at(QEntry** qb, uint32_t qb_mask, uint64_t p) noexcept:
    return &qb[<uint32_t>(p >> Q_SHIFT) & qb_mask][<uint32_t>p & Q_MASK]


cdef void _free_storage(IdemTable t) noexcept:
    # The C memory of the indexes and the expiry queue (not the records).
    cdef uint32_t i
    cdef uint64_t b, last
    for i in range(SHARDS):
        _shard_release(&t._ks[i].slots, &t._ks[i].mask, &_K_EMPTY[0])
        t._ks[i].used = 0
        _shard_release(&t._ts[i].slots, &t._ts[i].mask, &_T_EMPTY[0])
        t._ts[i].used = 0
    if t._qb != NULL:
        b = t._q_head >> Q_SHIFT
        last = (t._q_head + t._q_len) >> Q_SHIFT
        while b <= last:
            PyMem_Free(t._qb[<uint32_t>b & t._qb_mask])
            b += 1
        PyMem_Free(t._qb)
        t._qb = NULL
    PyMem_Free(t._q_spare)
    t._q_spare = NULL
    t._q_head = 0
    t._q_len = 0


cdef int _new_queue(IdemTable t) except -1:
    # An empty expiry queue: its block table and the block its first entry goes in.
    cdef QEntry** qb = <QEntry**>PyMem_Calloc(MIN_TABLE, sizeof(QEntry*))
    if qb == NULL:
        raise MemoryError()
    qb[0] = <QEntry*>PyMem_Malloc(sizeof(QEntry) << Q_SHIFT)
    if qb[0] == NULL:
        PyMem_Free(qb)
        raise MemoryError()
    t._qb = qb
    t._qb_mask = MIN_TABLE - 1
    t._q_head = 0
    t._q_len = 0
    return 0



@cython.no_gc_clear  # the C arrays are needed until __dealloc__; a cycle breaks on the outcome's side
@cython.final
cdef class IdemTable:
    """Idempotency records, their ``(origin, task_id)`` index, and tombstones.

    Times are ints in nanoseconds from one monotonic clock. Keys are
    ``bytes`` of length 16, fingerprints of length 17 (``fingerprint``), origins ``str``, task ids uint64
    ints; anything else raises ``InvalidArgument``, as do a negative time and
    the refusals of ``complete``.

    An expiry is ``now + ttl_ns``, raised if need be to the latest expiry
    already queued (of its kind), so a caller whose ``now`` steps back never
    shortens a life below the TTL and the expiry queues stay sorted.

    Memory: 176 bytes per finished record at 100,000 records, 163 at a
    million (tracemalloc, ``bench/bench_idemtable.py``), all of it C memory: a
    96-byte record, an 8-byte key slot and a 16-byte task slot at load
    0.35..0.7, a 16-byte expiry entry. Keys and fingerprints are copied, so
    the caller's objects are not kept; origins are shared strs; outcomes are
    not counted.

    Growth never stalls the caller for long: nothing is copied as a whole.
    Records sit in blocks of 4,096 and expiry entries in blocks of 1,024,
    added as needed and never moved; each index is 256 shards (by the top
    bits of the hash) that double, one at a time, when their own load passes
    0.7, so one call rehashes at most one shard of each index (1/256 of it).
    After evictions each ``evict_expired`` call looks at the next 2 shards of
    each index and rebuilds one left 1/8 full at load <= 0.4 (an emptied shard
    gives back all its memory); expiry blocks are freed as the queue's head
    leaves them; record blocks stay (their slots are reused); ``clear()``
    releases all. ``bench/idem_pauses.py`` finds the slowest single calls.
    At most 2**30 records.
    """

    def __cinit__(self, *args, **kwargs):
        cdef uint32_t i
        self._rb = NULL
        self._rb_len = 0
        self._rb_cap = 0
        self._rec_hw = 0
        self._free_head = FREE_END
        self._count = 0
        for i in range(SHARDS):
            self._ks[i].slots = &_K_EMPTY[0]
            self._ks[i].mask = 0
            self._ks[i].used = 0
            self._ts[i].slots = &_T_EMPTY[0]
            self._ts[i].mask = 0
            self._ts[i].used = 0
        self._shrink_next = 0
        self._qb = NULL
        self._q_spare = NULL
        self._moved = 0
        self._last_expiry = 0
        self._evict_examined = 0
        self._max_kept = -1
        self._kept_total = 0
        self._results_dropped = 0
        self._q_passed = 0
        _new_queue(self)

    def __init__(self, ttl_ns, max_kept_bytes=None, dropped_outcome=None):
        """``max_kept_bytes``: the budget of kept results' bytes (None: no
        budget); ``dropped_outcome``: what a record whose result was dropped
        for it holds instead."""
        self._ttl = _time_arg(ttl_ns, "ttl_ns")
        self._max_kept = -1 if max_kept_bytes is None else _time_arg(max_kept_bytes, "max_kept_bytes")
        self._dropped_outcome = dropped_outcome
        self._side_structures()

    def _side_structures(self):
        """Tombstones (-> the cancel's reason), redeliveries (-> the record's
        key) and held results, each expiring ttl_ns after it is laid
        (rsc._core.expiring: the same classes serve both twins; none is on a
        per-task path)."""
        self._tombstones = ExpiringMap(self._ttl)
        self._redeliveries = ExpiringMap(self._ttl)
        self._held = HeldResults(self._ttl)
        # their dicts, so the per-spawn "is there any?" costs no Python call
        self._tombstone_entries = self._tombstones._entries
        self._redelivery_entries = self._redeliveries._entries

    def __dealloc__(self):
        cdef uint32_t i
        cdef Rec* r
        for i in range(self._rec_hw):
            r = _rec_at(self._rb, i)
            if r.origin != NULL:
                _decref(r.origin)
                _xdecref(r.aliases)
                _xdecref(r.outcome)
        for i in range(self._rb_len):
            PyMem_Free(self._rb[i])
        PyMem_Free(self._rb)
        _free_storage(self)

    @property
    def ttl_ns(self):
        return self._ttl

    @property
    def max_kept_bytes(self):
        return None if self._max_kept < 0 else self._max_kept

    @property
    def kept_bytes(self):
        """Bytes of the results the table keeps now (what the budget counts)."""
        return self._kept_total

    @property
    def results_dropped(self):
        """How many results were dropped for the budget since the table was made."""
        return self._results_dropped

    def __len__(self):
        return self._count

    def __contains__(self, key):
        cdef bytes k = _key_arg(key, "key")
        cdef uint64_t kk[2]
        cdef bint found
        cdef uint32_t kh = _fold(<uint64_t>hash(k))
        memcpy(kk, PyBytes_AS_STRING(k), 16)
        self._kt_find(&self._ks[kh >> SHARD_SHIFT], kk[0], kk[1], kh, &found)
        return found

    def __repr__(self):
        return (
            f"<IdemTable records={self._count} tombstones={len(self._tombstones)} "
            f"ttl_ns={self._ttl}>"
        )

    # -- storage primitives ---------------------------------------------------

    cdef int _reserve_slot(self) except -1:
        # Make sure a free record slot exists: the free list's head, or else the
        # next slot never used, set up now and put on the list (a block is
        # allocated when the last one is used up; it is not touched until its
        # slots are handed out). Runs no Python code, so a caller may probe
        # after it and rely on the slot.
        cdef uint32_t idx = self._rec_hw
        cdef uint32_t cap
        cdef Rec** rb
        cdef Rec* r
        if self._free_head != FREE_END:
            return 0
        if idx >= MAX_RECORDS:
            raise MemoryError("the idempotency table is full (2**30 records)")
        if idx == self._rb_len << REC_SHIFT:
            if self._rb_len == self._rb_cap:
                # one pointer per block: doubling it copies little (2 KiB at a million records)
                cap = 16 if self._rb_cap == 0 else self._rb_cap * 2
                rb = <Rec**>PyMem_Realloc(self._rb, cap * sizeof(Rec*))
                if rb == NULL:
                    raise MemoryError()
                self._rb = rb
                self._rb_cap = cap
                self._moved += self._rb_len
            r = <Rec*>PyMem_Malloc(sizeof(Rec) << REC_SHIFT)
            if r == NULL:
                raise MemoryError()
            self._rb[self._rb_len] = r
            self._rb_len += 1
        r = _rec_at(self._rb, idx)
        r.origin = NULL
        r.aliases = NULL
        r.outcome = NULL
        r.expires_at = -1
        r.gen = 0
        r.task_id = FREE_END
        self._free_head = idx
        self._rec_hw = idx + 1
        return 0

    cdef int _q_tail_block(self) except -1:
        # The entry about to be added is the last of its block: allocate the
        # block the next one goes in (the spare, if a drained block was kept),
        # first doubling the table of block pointers if it is full (one
        # pointer per block: it copies little).
        cdef uint64_t first = self._q_head >> Q_SHIFT
        cdef uint64_t nb = (self._q_head + self._q_len + 1) >> Q_SHIFT
        cdef uint32_t cap = self._qb_mask + 1
        cdef uint64_t b
        cdef QEntry** qb
        cdef QEntry* blk
        if self._q_len >= MAX_SLOTS - 1:
            raise MemoryError("the idempotency table's expiry queue is full")
        if nb - first >= cap:
            qb = <QEntry**>PyMem_Calloc(<size_t>cap * 2, sizeof(QEntry*))
            if qb == NULL:
                raise MemoryError()
            b = first
            while b < nb:
                qb[<uint32_t>b & (cap * 2 - 1)] = self._qb[<uint32_t>b & self._qb_mask]
                b += 1
            PyMem_Free(self._qb)
            self._qb = qb
            self._qb_mask = cap * 2 - 1
            self._moved += nb - first
        blk = self._q_spare
        if blk == NULL:
            blk = <QEntry*>PyMem_Malloc(sizeof(QEntry) << Q_SHIFT)
            if blk == NULL:
                raise MemoryError()
        self._q_spare = NULL
        self._qb[<uint32_t>nb & self._qb_mask] = blk
        return 0

    cdef Py_ssize_t _kt_find(self, KShard* sh, uint64_t k0, uint64_t k1, uint32_t h, bint* found) noexcept:
        # Position in its shard of the key's slot (found) or of the empty slot where it goes.
        cdef KSlot* kt = sh.slots
        cdef uint32_t mask = sh.mask
        cdef uint32_t i = h & mask
        cdef Rec* r
        while kt[i].ref:
            if kt[i].h == h:
                r = _rec_at(self._rb, kt[i].ref - 1)
                if r.k0 == k0 and r.k1 == k1:
                    found[0] = True
                    return i
            i = (i + 1) & mask
        found[0] = False
        return i

    cdef Py_ssize_t _tt_find(self, TShard* sh, str origin, uint64_t task_id, uint32_t h, bint* found) noexcept:
        # Position in its shard of the pair's slot (found) or of the empty slot
        # where it goes. Comparing exact strs and ints runs no Python code.
        cdef TSlot* tt = sh.slots
        cdef uint32_t mask = sh.mask
        cdef uint32_t i = h & mask
        cdef uint32_t ref
        cdef Rec* r
        cdef PyObject* item
        cdef Py_ssize_t n, a
        while tt[i].ref:
            if tt[i].h == h and tt[i].task_id == task_id:
                ref = tt[i].ref
                r = _rec_at(self._rb, (ref & ~ALIAS_BIT) - 1)
                if not (ref & ALIAS_BIT):
                    if origin == <str>r.origin:
                        found[0] = True
                        return i
                else:
                    n = PyList_GET_SIZE(<list>r.aliases)
                    for a in range(n):
                        item = PyList_GET_ITEM(<list>r.aliases, a)
                        if (
                            _as_ull(<object>PyTuple_GET_ITEM(<object>item, 1)) == task_id
                            and origin == <str>PyTuple_GET_ITEM(<object>item, 0)
                        ):
                            found[0] = True
                            return i
            i = (i + 1) & mask
        found[0] = False
        return i

    cdef void _kt_delete_at(self, KShard* sh, Py_ssize_t pos) noexcept:
        # Backward-shift deletion: pull later entries of the probe run into the
        # hole unless that would put them before their home slot.
        cdef KSlot* kt = sh.slots
        cdef uint32_t mask = sh.mask
        cdef uint32_t i = <uint32_t>pos
        cdef uint32_t j = i
        cdef uint32_t home
        while True:
            j = (j + 1) & mask
            if kt[j].ref == 0:
                break
            home = kt[j].h & mask
            if ((j - home) & mask) >= ((j - i) & mask):
                kt[i] = kt[j]
                i = j
        kt[i].ref = 0
        sh.used -= 1

    cdef void _tt_delete_at(self, TShard* sh, Py_ssize_t pos) noexcept:
        cdef TSlot* tt = sh.slots
        cdef uint32_t mask = sh.mask
        cdef uint32_t i = <uint32_t>pos
        cdef uint32_t j = i
        cdef uint32_t home
        while True:
            j = (j + 1) & mask
            if tt[j].ref == 0:
                break
            home = tt[j].h & mask
            if ((j - home) & mask) >= ((j - i) & mask):
                tt[i] = tt[j]
                i = j
        tt[i].ref = 0
        sh.used -= 1

    cdef void _tt_delete_ref(self, uint64_t task_id, uint32_t h, uint32_t ref) noexcept:
        # Delete one index entry of a record being removed. Entries of the same
        # record that agree on (hash, task id, ref) are interchangeable here:
        # they all go in the same removal.
        cdef TShard* sh = &self._ts[h >> SHARD_SHIFT]
        cdef TSlot* tt = sh.slots
        cdef uint32_t mask = sh.mask
        cdef uint32_t i = h & mask
        while tt[i].ref:
            if tt[i].ref == ref and tt[i].h == h and tt[i].task_id == task_id:
                self._tt_delete_at(sh, i)
                return
            i = (i + 1) & mask

    cdef object _remove(self, uint32_t idx):
        # Unlink record idx from both indexes and free its slot. Returns its
        # outcome, for the caller to release once nothing else is pending
        # (the release may run a finalizer).
        cdef Rec* r = _rec_at(self._rb, idx)
        cdef PyObject* origin = r.origin
        cdef PyObject* aliases = r.aliases
        cdef uint64_t task_id = r.task_id
        cdef bint found
        cdef Py_ssize_t pos, a, n
        cdef PyObject* item
        cdef uint64_t atid
        cdef uint32_t th = _pair_hash(hash(<str>origin), task_id)
        cdef KShard* ks = &self._ks[r.khash >> SHARD_SHIFT]
        cdef TShard* ts = &self._ts[th >> SHARD_SHIFT]
        _prefetch(&ks.slots[r.khash & ks.mask])
        _prefetch(&ts.slots[th & ts.mask])
        pos = self._kt_find(ks, r.k0, r.k1, r.khash, &found)
        self._kt_delete_at(ks, pos)
        self._tt_delete_ref(task_id, th, idx + 1)
        if aliases != NULL:
            n = PyList_GET_SIZE(<list>aliases)
            for a in range(n):
                item = PyList_GET_ITEM(<list>aliases, a)
                atid = _as_ull(<object>PyTuple_GET_ITEM(<object>item, 1))
                self._tt_delete_ref(
                    atid,
                    _pair_hash(hash(<str>PyTuple_GET_ITEM(<object>item, 0)), atid),
                    (idx + 1) | ALIAS_BIT,
                )
        if r.kept > 0:
            self._kept_total -= r.kept
        r.kept = 0
        outcome = <object>r.outcome if r.outcome != NULL else None
        _xdecref(r.outcome)  # the reference moves to `outcome`
        r.outcome = NULL
        r.origin = NULL
        r.aliases = NULL
        r.expires_at = -1
        r.gen += 1
        r.task_id = self._free_head
        self._free_head = idx
        self._count -= 1
        _decref(origin)      # an exact str
        _xdecref(aliases)    # a list of (str, int) tuples
        return outcome

    cdef IdemRecord _view(self, uint32_t idx):
        # Take the references first: allocating the view may run a collection,
        # and with it Python code that changes the table. The alias list is
        # append-only, so its length now pins the snapshot.
        cdef Rec* r = _rec_at(self._rb, idx)
        cdef object origin = <object>r.origin
        cdef list aliases = <list>r.aliases if r.aliases != NULL else None
        cdef object outcome = <object>r.outcome if r.outcome != NULL else None
        cdef Rec copy = r[0]
        cdef IdemRecord v = IdemRecord.__new__(IdemRecord)
        v._rec = copy
        v._origin = origin
        v._outcome = outcome
        v._alias_list = aliases
        v._n_aliases = PyList_GET_SIZE(aliases) if aliases is not None else 0
        return v

    cdef void _prefetch_ahead(self) noexcept:
        # Evicting walks records in completion order, which is random in memory.
        # A two-stage pipeline hides most of the misses: the record four entries
        # ahead is requested, and for the one two ahead (requested two steps
        # ago) the index slots it will delete. Stale entries prefetch harmlessly.
        cdef Rec* r
        cdef KShard* ks
        cdef TShard* ts
        cdef uint32_t th
        if self._q_len > 4:
            r = _rec_at(self._rb, _q_at(self._qb, self._qb_mask, self._q_head + 4).idx)
            _prefetch(r)
            _prefetch(<char*>r + sizeof(Rec) - 1)
        if self._q_len > 2:
            r = _rec_at(self._rb, _q_at(self._qb, self._qb_mask, self._q_head + 2).idx)
            if r.origin != NULL:
                ks = &self._ks[r.khash >> SHARD_SHIFT]
                _prefetch(&ks.slots[r.khash & ks.mask])
                th = _pair_hash(_str_hash(r.origin), r.task_id)
                ts = &self._ts[th >> SHARD_SHIFT]
                _prefetch(&ts.slots[th & ts.mask])

    cdef void _drop_stale_heads(self) noexcept:
        # Expiry entries of records discarded before they expired.
        cdef QEntry* e
        while self._q_len:
            e = _q_at(self._qb, self._qb_mask, self._q_head)
            if _rec_at(self._rb, e.idx).gen == e.gen:
                return
            self._pop_queue_head()

    cdef void _pop_queue_head(self) noexcept:
        cdef QEntry** slot
        self._q_head += 1
        self._q_len -= 1
        if self._q_passed:
            self._q_passed -= 1  # the budget's cursor stays on its entry
        if (<uint32_t>self._q_head & Q_MASK) == 0:
            # The head left a block: keep it for the tail's next block, or free it.
            slot = &self._qb[<uint32_t>((self._q_head - 1) >> Q_SHIFT) & self._qb_mask]
            if self._q_spare == NULL:
                self._q_spare = slot[0]
            else:
                PyMem_Free(slot[0])
            slot[0] = NULL

    cdef void _shrink(self) noexcept:
        # After evictions: give memory back. Each call looks at SHRINK_SCAN
        # shards of each index (the next ones, round the 256): a shard left
        # empty gives back its table; one at most 1/8 full is rebuilt at load
        # <= 0.4, so a refill grows it again only after inserting as much as
        # was evicted from it (amortised O(1)). So a call rebuilds at most
        # 2 * SHRINK_SCAN shards, each 1/256 of its index. Out of memory: the
        # bigger table stays.
        cdef uint32_t n, i
        for n in range(SHRINK_SCAN):
            i = self._shrink_next
            self._shrink_next = (i + 1) & (SHARDS - 1)
            self._moved += _shard_shrink(&self._ks[i].slots, &self._ks[i].mask, self._ks[i].used, &_K_EMPTY[0])
            self._moved += _shard_shrink(&self._ts[i].slots, &self._ts[i].mask, self._ts[i].used, &_T_EMPTY[0])

    # -- records --------------------------------------------------------------

    cpdef check_and_record(self, key, fingerprint, origin, task_id, now):
        """Decide a SPAWN_REQUEST and record it, in one step.

        - key unknown: a running record owned by ``(origin, task_id)`` is made;
          returns ``NEW``.
        - key known, same fingerprint: returns the record (a duplicate). If it
          still runs and ``(origin, task_id)`` is neither its owner nor an alias
          yet, the pair becomes an alias (the snapshot returned includes it).
        - key known with another fingerprint, a drawn-key record
          (``DRAWN_FINGERPRINT``) of another origin, or ``(origin, task_id)``
          already present under another key: returns ``CONFLICT`` and changes
          nothing.

        ``now`` is checked like every time argument; a record's life is counted
        from ``complete``.
        """
        cdef bytes k = _key_arg(key, "key")
        cdef uint32_t kh = _fold(<uint64_t>hash(k))
        cdef KShard* ks = &self._ks[kh >> SHARD_SHIFT]
        # Start loading the key's slot now; the remaining checks overlap it.
        _prefetch(&ks.slots[kh & ks.mask])
        cdef bytes f = _fp_arg(fingerprint)
        cdef str o = _origin_arg(origin)
        cdef uint64_t tid = _task_id_arg(task_id)
        _time_arg(now, "now")
        cdef uint32_t th = _pair_hash(hash(o), tid)
        cdef TShard* ts = &self._ts[th >> SHARD_SHIFT]
        _prefetch(&ts.slots[th & ts.mask])
        cdef uint64_t kk[2]
        cdef uint64_t ff[2]
        memcpy(kk, PyBytes_AS_STRING(k), 16)
        memcpy(ff, PyBytes_AS_STRING(f) + 1, 16)
        cdef unsigned char ftag = <unsigned char>PyBytes_AS_STRING(f)[0]
        cdef bint kfound, tfound
        cdef Py_ssize_t kpos, tpos
        cdef uint32_t idx
        cdef Rec* r
        cdef object pair = None
        cdef object spare = None
        while True:
            # Everything that may allocate happens before the probes.
            if self._free_head == FREE_END:
                self._reserve_slot()
            if _full(ks.used, ks.mask):
                self._moved += _shard_grow(&ks.slots, &ks.mask, &_K_EMPTY[0], "key")
            if _full(ts.used, ts.mask):
                self._moved += _shard_grow(&ts.slots, &ts.mask, &_T_EMPTY[0], "task")
            kpos = self._kt_find(ks, kk[0], kk[1], kh, &kfound)
            if not kfound:
                tpos = self._tt_find(ts, o, tid, th, &tfound)
                if tfound:
                    return _CONFLICT  # a live (origin, task_id) reused with another key
                idx = self._free_head
                r = _rec_at(self._rb, idx)
                self._free_head = <uint32_t>r.task_id
                r.k0 = kk[0]
                r.k1 = kk[1]
                r.f0 = ff[0]
                r.f1 = ff[1]
                r.ftag = ftag
                r.task_id = tid
                r.expires_at = -1
                r.kept = 0
                _incref(<PyObject*>o)
                r.origin = <PyObject*>o
                r.aliases = NULL
                r.outcome = NULL
                r.khash = kh
                ks.slots[kpos].h = kh
                ks.slots[kpos].ref = idx + 1
                ks.used += 1
                ts.slots[tpos].task_id = tid
                ts.slots[tpos].h = th
                ts.slots[tpos].ref = idx + 1
                ts.used += 1
                self._count += 1
                return _NEW
            idx = ks.slots[kpos].ref - 1
            r = _rec_at(self._rb, idx)
            if r.f0 != ff[0] or r.f1 != ff[1] or r.ftag != ftag:
                return _CONFLICT
            if ftag == 3 and not (o == <str>r.origin):  # FP_DRAWN: its owner's alone
                return _CONFLICT
            if r.task_id == tid and o == <str>r.origin:
                return self._view(idx)  # a resend by the owner (the common duplicate)
            tpos = self._tt_find(ts, o, tid, th, &tfound)
            if tfound:
                if (ts.slots[tpos].ref & ~ALIAS_BIT) == idx + 1:
                    return self._view(idx)  # a resend, or an alias again
                return _CONFLICT
            if r.expires_at >= 0:
                return self._view(idx)  # finished: the caller redelivers its outcome
            if pair is None:
                # These allocations may run a collection: build them, then look again.
                pair = (o, tid)
                spare = []
                continue
            if r.aliases == NULL:
                _incref(<PyObject*>spare)
                r.aliases = <PyObject*>spare
            PyList_Append(<object>r.aliases, pair)  # no GC-tracked allocation
            ts.slots[tpos].task_id = tid
            ts.slots[tpos].h = th
            ts.slots[tpos].ref = (idx + 1) | ALIAS_BIT
            ts.used += 1
            return self._view(idx)

    cpdef complete(self, key, task_id, outcome, now, kept_bytes=0):
        """Store the outcome of the record's task; it expires at ``now + ttl_ns``.

        ``kept_bytes`` is what keeping ``outcome`` counts against the budget;
        over it, the oldest kept results (this one included) are dropped. The
        table's own ``dropped_outcome`` counts nothing, whatever ``kept_bytes``
        says (a record restored with its result already dropped).
        Returns the aliases to deliver the outcome to, in arrival order (the
        owner is not among them). Raises ``InvalidArgument`` for an unknown key,
        a record already finished, or a ``task_id`` other than the owner's.
        """
        cdef bytes k = _key_arg(key, "key")
        cdef uint32_t kh = _fold(<uint64_t>hash(k))
        cdef KShard* ks = &self._ks[kh >> SHARD_SHIFT]
        _prefetch(&ks.slots[kh & ks.mask])
        cdef uint64_t tid = _task_id_arg(task_id)
        cdef int64_t t = _time_arg(now, "now")
        cdef int64_t kept = _time_arg(kept_bytes, "kept_bytes")
        if outcome is self._dropped_outcome:
            kept = 0
        cdef uint64_t kk[2]
        cdef bint found
        cdef Py_ssize_t pos
        cdef uint32_t idx
        cdef Rec* r
        cdef int64_t expires_at
        cdef uint64_t p
        cdef QEntry* e
        memcpy(kk, PyBytes_AS_STRING(k), 16)
        pos = self._kt_find(ks, kk[0], kk[1], kh, &found)
        if not found:
            raise InvalidArgument(f"no idempotency record for key {k.hex()}")
        idx = ks.slots[pos].ref - 1
        r = _rec_at(self._rb, idx)
        if r.expires_at >= 0:
            raise InvalidArgument(f"the record for key {k.hex()} is already complete")
        if r.task_id != tid:
            raise InvalidArgument(
                f"task {tid} does not own the record for key {k.hex()} "
                f"(its owner is task {r.task_id})"
            )
        if t > INT64_MAX - self._ttl:
            raise InvalidArgument(f"now + ttl_ns overflows int64 (now={t})")
        expires_at = t + self._ttl
        if expires_at < self._last_expiry:
            expires_at = self._last_expiry
        p = self._q_head + self._q_len
        if (<uint32_t>p & Q_MASK) == Q_MASK:
            self._q_tail_block()  # this entry fills its block: the next one's first
        e = _q_at(self._qb, self._qb_mask, p)
        e.expires_at = expires_at
        e.idx = idx
        e.gen = r.gen
        self._q_len += 1
        self._last_expiry = expires_at
        if not self._noted:
            self._expiry_added(expires_at)
        r.expires_at = expires_at
        _incref(<PyObject*>outcome)
        r.outcome = <PyObject*>outcome  # was NULL (running)
        _untrack_if_atomic(outcome)
        r.kept = kept
        aliases = [] if r.aliases == NULL else (<list>r.aliases)[:]
        if kept:
            self._kept_total += kept
            if self._max_kept >= 0 and self._kept_total > self._max_kept:
                self._drop_oldest_results()
        return aliases

    cdef int _drop_oldest_results(self) except -1:
        """Drop kept results, oldest first, until the rest fit the budget.

        The expiry queue is in completion order, so it is the order to drop
        in; ``_q_passed`` counts the entries at its head already walked past
        (none of them keeps a result), so each entry is looked at once."""
        cdef QEntry e
        cdef Rec* r
        cdef object old
        cdef object stand_in = self._dropped_outcome
        cdef list pairs
        while self._kept_total > self._max_kept and self._q_passed < self._q_len:
            e = _q_at(self._qb, self._qb_mask, self._q_head + self._q_passed)[0]
            self._q_passed += 1
            r = _rec_at(self._rb, e.idx)
            if r.gen != e.gen or r.kept <= 0:
                continue
            self._kept_total -= r.kept
            self._results_dropped += 1
            r.kept = -1
            old = <object>r.outcome
            _decref(r.outcome)  # `old` holds it now
            _incref(<PyObject*>stand_in)
            r.outcome = <PyObject*>stand_in
            if self._held:
                pairs = [(<object>r.origin, r.task_id)]
                if r.aliases != NULL:
                    pairs.extend(<list>r.aliases)
                for origin, task_id in pairs:
                    self._held.replace(origin, task_id, stand_in)
            old = None  # may run a finalizer; the table is consistent here
        return 0

    cpdef get(self, key):
        """The record for ``key`` (expired but not yet evicted included), or None."""
        cdef bytes k = _key_arg(key, "key")
        cdef uint64_t kk[2]
        cdef bint found
        cdef Py_ssize_t pos
        cdef uint32_t kh = _fold(<uint64_t>hash(k))
        cdef KShard* ks = &self._ks[kh >> SHARD_SHIFT]
        memcpy(kk, PyBytes_AS_STRING(k), 16)
        pos = self._kt_find(ks, kk[0], kk[1], kh, &found)
        if not found:
            return None
        return self._view(ks.slots[pos].ref - 1)

    cpdef owner_of(self, origin, task_id):
        """The key of the record that ``(origin, task_id)`` owns or is an alias of."""
        cdef str o = _origin_arg(origin)
        cdef uint64_t tid = _task_id_arg(task_id)
        cdef bint found
        cdef uint32_t th = _pair_hash(hash(o), tid)
        cdef TShard* ts = &self._ts[th >> SHARD_SHIFT]
        cdef Py_ssize_t pos = self._tt_find(ts, o, tid, th, &found)
        cdef Rec* r
        if not found:
            return None
        r = _rec_at(self._rb, (ts.slots[pos].ref & ~ALIAS_BIT) - 1)
        return PyBytes_FromStringAndSize(<char*>&r.k0, 16)

    cpdef key_of(self, origin, task_id):
        """The key ``(origin, task_id)`` is held under: as owner or alias
        (``owner_of``), or as a redelivery of a record still present."""
        key = self.owner_of(origin, task_id)
        if key is None and self._redelivery_entries:
            pair = (_origin_arg(origin), _task_id_arg(task_id))
            key = self._redeliveries.get(pair)
            if key is not None and key not in self:  # the record was evicted or discarded
                self._redeliveries.pop(pair)
                key = None
        return key

    def add_redelivery(self, origin, task_id, key, now):
        """Remember that ``(origin, task_id)`` was answered from the finished
        record ``key`` (a duplicate of a task that had already ended), until
        ``now + ttl_ns`` or until that record goes, whichever is first."""
        cdef str o = _origin_arg(origin)
        cdef uint64_t tid = _task_id_arg(task_id)
        cdef bytes k = _key_arg(key, "key")
        cdef int64_t t = _time_arg(now, "now")
        self._redeliveries.set((o, tid), k, t)
        self._expiry_added(t + self._ttl)

    def discard(self, key):
        """Remove a record (running or finished) at once; returns whether it was there.

        For a node that recorded a request and then could not admit it, so a
        retry is not mistaken for a duplicate of work that never ran.
        """
        cdef bytes k = _key_arg(key, "key")
        cdef uint64_t kk[2]
        cdef bint found
        cdef Py_ssize_t pos
        cdef uint32_t kh = _fold(<uint64_t>hash(k))
        cdef KShard* ks = &self._ks[kh >> SHARD_SHIFT]
        memcpy(kk, PyBytes_AS_STRING(k), 16)
        pos = self._kt_find(ks, kk[0], kk[1], kh, &found)
        if not found:
            return False
        outcome = self._remove(ks.slots[pos].ref - 1)  # its expiry entry, if any, is now stale
        outcome = None
        return True

    # -- tombstones -----------------------------------------------------------

    def add_tombstone(self, origin, task_id, now, reason=None):
        """Remember a cancel for an unseen ``(origin, task_id)`` until ``now + ttl_ns``,
        with the cancel's ``reason`` (``tombstone_reason``) when one is given.

        Laying one again renews it (and replaces its reason if one is given).
        """
        cdef str o = _origin_arg(origin)
        cdef uint64_t tid = _task_id_arg(task_id)
        cdef int64_t t = _time_arg(now, "now")
        pair = (o, tid)
        if reason is None:
            reason = self._tombstones.get(pair)
        self._tombstones.set(pair, reason, t)
        self._expiry_added(t + self._ttl)

    cpdef has_tombstone(self, origin, task_id):
        cdef str o = _origin_arg(origin)
        cdef uint64_t tid = _task_id_arg(task_id)
        if not self._tombstone_entries:  # none at all, the common case: no pair is built
            return False
        return (o, tid) in self._tombstone_entries

    def take_tombstone(self, origin, task_id):
        """Remove the tombstone of ``(origin, task_id)``; returns whether there was one."""
        return self._tombstones.pop((_origin_arg(origin), _task_id_arg(task_id)))

    def tombstone_reason(self, origin, task_id):
        """The reason the tombstone of ``(origin, task_id)`` was laid with, or
        None (no tombstone, or one laid without a reason)."""
        return self._tombstones.get((_origin_arg(origin), _task_id_arg(task_id)))

    @property
    def tombstone_count(self):
        return len(self._tombstones)

    # -- held results ---------------------------------------------------------

    def hold(self, origin, task_id, outcome, now):
        """Keep ``outcome`` of ``(origin, task_id)`` for an origin with no live
        connection, until ``now + ttl_ns`` (``take_held`` hands it over)."""
        cdef str o = _origin_arg(origin)
        cdef uint64_t tid = _task_id_arg(task_id)
        cdef int64_t t = _time_arg(now, "now")
        cdef bint found
        cdef uint32_t th = _pair_hash(hash(o), tid)
        cdef TShard* ts = &self._ts[th >> SHARD_SHIFT]
        cdef Py_ssize_t pos = self._tt_find(ts, o, tid, th, &found)
        if found and _rec_at(self._rb, (ts.slots[pos].ref & ~ALIAS_BIT) - 1).kept < 0:
            outcome = self._dropped_outcome  # its result is no longer kept: hold what stands in
        self._held.hold(o, tid, outcome, t)
        self._expiry_added(t + self._ttl)

    def take_held(self, origin):
        """Remove and return ``(task_id, outcome)`` of every result held for
        ``origin`` (oldest first; empty if none)."""
        return self._held.take(_origin_arg(origin))

    @property
    def held_origins(self):
        """How many origins have results held for them."""
        return len(self._held)

    # -- expiry ---------------------------------------------------------------

    def evict_expired(self, now, limit=None):
        """Remove finished records, tombstones, redeliveries and held results whose expiry is ``<= now``.

        Returns how many were removed. Costs O(1) plus time in proportion to
        the entries it removes (and stale queue entries it drops); running
        records never expire. With ``limit`` (an int >= 1) it removes at most
        that many and leaves the rest due (``next_expiry()`` stays ``<= now``),
        so a caller can spread a pile-up over several loop turns.
        """
        cdef int64_t t = _time_arg(now, "now")
        cdef Py_ssize_t cap = _limit_arg(limit)
        cdef Py_ssize_t removed = 0
        cdef QEntry e
        cdef object outcome
        while self._q_len and removed < cap:
            e = _q_at(self._qb, self._qb_mask, self._q_head)[0]
            if e.expires_at > t:
                break
            self._prefetch_ahead()
            self._pop_queue_head()
            self._evict_examined += 1
            if _rec_at(self._rb, e.idx).gen != e.gen:
                continue  # stale: the record was discarded
            outcome = self._remove(e.idx)
            removed += 1
            outcome = None  # may run a finalizer; the table is consistent here
        for side in (self._tombstones, self._redeliveries, self._held):
            removed += side.evict(t, cap - removed)
        self._shrink()
        return removed

    # -- export (what a durable journal writes when it compacts) ---------------

    def records(self):
        """Snapshots of every record present, running and finished (expired
        but not yet evicted included), in no particular order."""
        cdef uint32_t i
        cdef list out = []
        for i in range(self._rec_hw):
            if _rec_at(self._rb, i).origin != NULL:
                out.append(self._view(i))
        return out

    def scan_records(self, chunk):
        """Snapshots of the records, a step at a time: each step yields those
        in the next ``chunk`` record slots (a list, possibly empty), so no step
        costs more than ``chunk`` slots whatever the table holds. The table may
        change between steps: a record present from the call to the last step
        is yielded exactly once (records never move); one added or removed
        meanwhile may be yielded or not. The scan covers the slots in use at
        the call, so it ends however fast records are added."""
        n = _int_slow(chunk, "chunk", _I64_MAX)
        if n < 1:
            raise InvalidArgument("chunk must be at least 1")
        return self._scan(min(n, 1 << 30), self._rec_hw)

    def _scan(self, Py_ssize_t n, uint32_t end):
        cdef uint32_t i = 0
        cdef uint32_t stop
        cdef list out
        while i < end:
            stop = <uint32_t>min(<Py_ssize_t>end, <Py_ssize_t>i + n)
            out = []
            while i < stop and i < self._rec_hw:  # a view's allocation may run code that clears the table
                if _rec_at(self._rb, i).origin != NULL:
                    out.append(self._view(i))
                i += 1
            yield out

    def tombstones(self):
        """``(origin, task_id, expires_at)`` of every tombstone present."""
        return [(pair[0], pair[1], exp) for pair, exp, _reason in self._tombstones.items()]

    cdef int _expiry_added(self, int64_t at) except -1:
        """Tell ``watch`` of the first expiry added since ``next_expiry()`` was
        last called: every expiry is ``now + ttl_ns``, so that one is the
        earliest of them (what a timer following the table must see)."""
        if not self._noted and self.watch is not None:
            self._noted = True
            self.watch.note(at)
        return 0

    def next_expiry(self):
        """The earliest expiry among finished records, tombstones, redeliveries
        and held results, or None. Re-arms ``watch`` for the next expiry added."""
        self._noted = False
        self._drop_stale_heads()
        heads = [_q_at(self._qb, self._qb_mask, self._q_head).expires_at] if self._q_len else []
        for side in (self._tombstones, self._redeliveries, self._held):
            head = side.next_expiry()
            if head is not None:
                heads.append(head)
        return min(heads) if heads else None

    def clear(self):
        """Forget every record, tombstone, redelivery and held result (the TTL stays)."""
        cdef Rec** rb = self._rb
        cdef uint32_t hw = self._rec_hw
        cdef uint32_t nblocks = self._rb_len
        cdef uint32_t i
        cdef Rec* r
        cdef QEntry** new_qb = <QEntry**>PyMem_Calloc(MIN_TABLE, sizeof(QEntry*))
        cdef QEntry* new_block = <QEntry*>PyMem_Malloc(sizeof(QEntry) << Q_SHIFT)
        if new_qb == NULL or new_block == NULL:
            PyMem_Free(new_qb)
            PyMem_Free(new_block)
            raise MemoryError()
        # Detach everything first: what the releases below run sees an empty table.
        _free_storage(self)
        new_qb[0] = new_block
        self._qb = new_qb
        self._qb_mask = MIN_TABLE - 1
        self._q_passed = 0
        self._evict_examined = 0  # as the twin, whose new queue has examined nothing
        self._kept_total = 0
        self._rb = NULL
        self._rb_len = 0
        self._rb_cap = 0
        self._rec_hw = 0
        self._free_head = FREE_END
        self._count = 0
        self._last_expiry = 0
        sides = (self._tombstones, self._redeliveries, self._held)
        self._side_structures()
        for i in range(hw):
            r = _rec_at(rb, i)
            if r.origin != NULL:
                _decref(r.origin)
                _xdecref(r.aliases)
                _xdecref(r.outcome)  # may run a finalizer: the table is empty
        for i in range(nblocks):
            PyMem_Free(rb[i])
        PyMem_Free(rb)
        del sides  # may run finalizers (held outcomes, reasons): the table is empty

    def _debug_counters(self):
        """Sizes of the internal structures, for tests (not a stable API)."""
        return {
            "records": self._count,
            "task_index": sum(self._ts[i].used for i in range(SHARDS)),
            "expiry_queue": self._q_len,
            "tombstones": len(self._tombstones),
            "tombstone_queue": len(self._tombstones.fifo.queue),
            "redeliveries": len(self._redeliveries),
            "held_origins": len(self._held),
            "kept_bytes": self._kept_total,
            "results_dropped": self._results_dropped,
            "evict_examined": self._evict_examined + sum(
                side.fifo.examined for side in (self._tombstones, self._redeliveries, self._held)),
        }

    def _moved_slots(self):
        """``_growth_counters()["moved"]``, cheaply (for tests; not a stable API)."""
        return self._moved

    def _growth_counters(self):
        """How the compiled storage stands, for tests (not a stable API):
        ``moved`` counts the index slots rehashed and the block pointers
        copied so far (all the copying growth and shrink do); the rest are
        the shards' sizes and the blocks allocated."""
        return {
            "moved": self._moved,
            "key_index": sum(self._ks[i].used for i in range(SHARDS)),
            "task_index": sum(self._ts[i].used for i in range(SHARDS)),
            "key_slots": sum(self._ks[i].mask + 1 for i in range(SHARDS)),
            "task_slots": sum(self._ts[i].mask + 1 for i in range(SHARDS)),
            "largest_shard": max(max(self._ks[i].mask, self._ts[i].mask) for i in range(SHARDS)) + 1,
            "shards": SHARDS,
            "record_blocks": self._rb_len,
            "queue_blocks": ((self._q_head + self._q_len) >> Q_SHIFT) - (self._q_head >> Q_SHIFT) + 1,
        }

    def _memory_bytes(self):
        """Bytes of C memory the table holds now (not a stable API; for the benchmark)."""
        cdef size_t n = (
            (<size_t>self._rb_len << REC_SHIFT) * sizeof(Rec) + <size_t>self._rb_cap * sizeof(Rec*)
            + (<size_t>self._qb_mask + 1) * sizeof(QEntry*)
        )
        cdef uint32_t i
        for i in range(SHARDS):
            if self._ks[i].slots != &_K_EMPTY[0]:
                n += (<size_t>self._ks[i].mask + 1) * sizeof(KSlot)
            if self._ts[i].slots != &_T_EMPTY[0]:
                n += (<size_t>self._ts[i].mask + 1) * sizeof(TSlot)
        blocks = ((self._q_head + self._q_len) >> Q_SHIFT) - (self._q_head >> Q_SHIFT) + 1
        blocks += self._q_spare != NULL
        return n + blocks * (sizeof(QEntry) << Q_SHIFT)


# --- cyclic GC -----------------------------------------------------------------
#
# Outcomes are arbitrary objects held through C pointers, which Cython's
# generated tp_traverse cannot see. Without them the collector could never free
# a cycle running through an outcome (say, an outcome that refers back to the
# table). This hook visits them after the generated fields. Alias lists hold
# only (str, int) tuples and origins are strs: neither can be part of a cycle.
# The table itself is no_gc_clear: a cycle is broken by clearing the outcome's
# side, after which the table is freed by reference counting.

cdef _traverseproc _generated_traverse = (<_TypeObject*><void*>IdemTable).tp_traverse


cdef int _traverse_table(PyObject* o, _visitproc visit, void* arg) noexcept:
    cdef int rc
    cdef uint32_t i
    cdef IdemTable table = <IdemTable>o
    cdef Rec* r
    if _generated_traverse != NULL:
        rc = _generated_traverse(o, visit, arg)
        if rc:
            return rc
    for i in range(table._rec_hw):
        r = _rec_at(table._rb, i)
        if r.outcome != NULL:
            rc = visit(r.outcome, arg)
            if rc:
                return rc
    return 0


if _generated_traverse == NULL:  # pragma: no cover - Cython always emits one here
    raise ImportError("rsc._core._idemtable: IdemTable is not a GC type; cannot hook tp_traverse")
(<_TypeObject*><void*>IdemTable).tp_traverse = _traverse_table
