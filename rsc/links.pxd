# Declarations that make links.py compile to typed extension types (Cython
# pure-Python mode; see rsc/_engine/node.pxd and rsc/_compiled.py).

cdef class NodeLink:
    cdef public object node, address, conn, connector, failed_since
    cdef public long long connects
    cdef public bint unreachable_logged

cdef class Links:
    cdef public object rt, connect_timeout_s, backoff_max_s
    cdef public dict by_node, by_name

    cpdef get(self, node)
    cpdef ensure(self, NodeLink link)
