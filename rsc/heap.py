"""How much freed memory a process keeps for its next allocations (glibc only).

Large payloads make a process allocate and free blocks of a megabyte or more
for every task: the bytes a frame is received into, the buffer a value is
packed into, the bytes a value is unpacked into. With glibc's defaults such a
block comes from a fresh ``mmap`` or from heap memory just returned to the
kernel (the heap is trimmed once 2x the largest recently freed block is free
at its top), so every task touches new pages: a page fault and a cleared
page per 4 KiB, which cost more than copying the payload. Measured on this
project's payload sweep (1 MiB msgpack values, 32 in flight), page faults were
over 40% of an origin's CPU time. A connection reads a large value straight
into the bytes the message keeps, with no short-lived copies of the reads
between (those had kept the heap's top in use): with glibc's defaults each
such bytes object then faults its pages in afresh, inside the kernel's copy
of the socket's data, which at 1 MiB can cost what skipping the copies saved.

:func:`keep_freed_memory` has malloc serve blocks up to 32 MiB from the heap
and keep up to ``keep_bytes`` of freed memory instead of returning it, so the
next task reuses pages already mapped. ``rsc node`` calls it at start
(``--heap-keep-bytes``, 256 MiB by default: the default kept-result budget);
a program that spawns large payloads may call it too, or make its
``Runtime`` with ``heap_keep_bytes`` (0 by default: an origin's process is
its caller's, whose malloc settings rsc leaves alone unless told). It changes the whole
process, and only on glibc (elsewhere it does nothing and returns False).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

from rsc.errors import InvalidArgument

__all__ = ["DEFAULT_KEEP_BYTES", "MAX_KEEP_BYTES", "MMAP_THRESHOLD_BYTES", "keep_freed_memory"]

#: Freed memory ``rsc node`` keeps by default.
DEFAULT_KEEP_BYTES = 256 * 1024 * 1024
#: Blocks up to this size come from the heap, not from their own mmap
#: (glibc's own ceiling for its adaptive threshold).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The most ``keep_bytes`` may be (mallopt takes a C int).
MAX_KEEP_BYTES = 2**31 - 1


def keep_freed_memory(keep_bytes: int = DEFAULT_KEEP_BYTES) -> bool:
    """Keep up to ``keep_bytes`` of freed memory in this process, and serve
    blocks up to ``MMAP_THRESHOLD_BYTES`` from the heap; True once glibc's
    malloc took both settings, False where malloc is not glibc's (nothing
    changes). ``keep_bytes`` 0 leaves glibc's defaults alone (False).
    ``InvalidArgument`` for a negative or non-int ``keep_bytes`` or one over
    2**31-1 (what ``mallopt`` takes)."""
    if isinstance(keep_bytes, bool) or not isinstance(keep_bytes, int) or not 0 <= keep_bytes <= MAX_KEEP_BYTES:
        raise InvalidArgument(f"keep_bytes must be an int in 0..{MAX_KEEP_BYTES} (bytes), got {keep_bytes!r}")
    if keep_bytes == 0 or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # pragma: no cover - every glibc has it
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, keep_bytes))
