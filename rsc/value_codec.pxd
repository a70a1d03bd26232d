# Declarations that make value_codec.py compile (Cython pure-Python mode;
# rsc/_compiled.py picks compiled or source). pack_value runs for every
# msgpack input an origin sends and every msgpack result a node returns: the
# look for a large leaf must cost a small value next to nothing.

cimport cython

cdef bint _has_large_leaf(object value) except -1
# pack_segmented runs for every msgpack input sent to a node that takes value
# segments and every msgpack result a node returns: its walk is C
cdef object _cut(object value, list segments, list budget)
# Segmented.joined walks the packed value's headers for the references: C ints
@cython.locals(n=Py_ssize_t, pos=Py_ssize_t, pending=Py_ssize_t, c=int, head=Py_ssize_t,
               size=Py_ssize_t, k=Py_ssize_t)
cdef list _ref_spans(bytes packed)
# the splice a segmented value's plain form (joined, fingerprinted) is made of
cdef list _splice(bytes packed, list spans, object segments)
@cython.locals(index=Py_ssize_t)
cdef object _splice_spans(bytes packed, Py_ssize_t n_segments)
