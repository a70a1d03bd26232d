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

from typing import Callable, TypeVar

_T = TypeVar("_T", bound=type)


class _Decorators:
    """``cython.cclass`` and ``cython.freelist(n)``: no-ops in Python, typed
    so that a type checker sees each decorated class as itself."""

    compiled = False

    @staticmethod
    def cclass(cls: _T) -> _T:
        return cls

    @staticmethod
    def freelist(size: int) -> Callable[[_T], _T]:
        def keep(cls: _T) -> _T:
            return cls
        return keep


cython = _Decorators()
