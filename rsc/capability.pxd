# Declarations that compile capability.py (Cython pure-Python mode; see
# rsc/_compiled.py): a node verifies a token per spawn, so parsing and the
# caveat checks run as C; the source is its own pure twin.

cpdef bytes _take(bytes token, Py_ssize_t pos, Py_ssize_t n)
cpdef tuple parse(token)
cpdef tuple verify(token, dict keys, node, computation, input_bytes, now_ms)
cpdef tuple verify_chain(token, dict keys, node)
cpdef tuple check_caveats(list caveats, node, computation, input_bytes, now_ms)
