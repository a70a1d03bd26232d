"""What the pure twin reads for the few Cython class decorators in the
pure-mode modules, when Cython itself is not installed (it is a build
requirement only). Compiled, the decorators are Cython's own and this module
is not imported; run as Python, each leaves its class as it is.

    try:
        import cython
    except ImportError:
        from rsc._pure_cython import cython
"""

from __future__ import annotations

from typing import Any, Callable


class _Decorators:
    """``cython.cclass`` and ``cython.freelist(n)``: no-ops in Python."""

    @staticmethod
    def cclass(cls: type) -> type:
        return cls

    @staticmethod
    def freelist(size: int) -> Callable[[type], type]:
        def keep(cls: type) -> type:
            return cls
        return keep

    compiled = False


cython: Any = _Decorators()
