# Declarations that make value_codec.py compile (Cython pure-Python mode;
# rsc/_compiled.py picks compiled or source). pack_value runs for every
# msgpack input an origin sends and every msgpack result a node returns: the
# look for a large leaf must cost a small value next to nothing.

cdef bint _has_large_leaf(object value) except -1
# pack_segmented runs for every msgpack input sent to a node that takes value
# segments and every msgpack result a node returns: its walk is C
cdef object _cut(object value, list segments, list budget)
