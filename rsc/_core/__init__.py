"""Compiled hot paths, each with a pure-Python twin of the same API.

``envelope`` (wire v1 codec), ``idemtable`` (idempotency store) and
``leaseheap`` (lease expiry) are bound here to the compiled modules
``_envelope``, ``_idemtable`` and ``_leaseheap``. With ``RSC_NO_EXTENSIONS=1``
in the environment they are bound to the twins ``_envelope_py``,
``_idemtable_py`` and ``_leaseheap_py`` instead. A missing compiled module in a
normal install is an ImportError that says how to fix it, never a silent
fallback.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see: the compiled modules' stubs (the twins match them)
    from rsc._core import _envelope as envelope, _idemtable as idemtable, _leaseheap as leaseheap

NAMES = ("envelope", "idemtable", "leaseheap")

USING_EXTENSIONS: bool = os.environ.get("RSC_NO_EXTENSIONS", "") in ("", "0")


def load(name: str, compiled: bool | None = None) -> ModuleType:
    """Import one core module: compiled (``True``), twin (``False``) or as configured."""
    if name not in NAMES:
        raise ValueError(f"unknown core module {name!r}; expected one of {NAMES}")
    if compiled is None:
        compiled = USING_EXTENSIONS
    if not compiled:
        return importlib.import_module(f"rsc._core._{name}_py")
    try:
        return importlib.import_module(f"rsc._core._{name}")
    except ImportError as exc:
        raise ImportError(
            f"rsc's compiled module rsc._core._{name} is not built ({exc}). "
            "Reinstall with a C compiler available (`pip install .` or `make test`), "
            "or set RSC_NO_EXTENSIONS=1 to run on the pure-Python twins."
        ) from exc


_loaded: dict[str, ModuleType] = {}


def __getattr__(name: str) -> ModuleType:
    # Bound on first use, so importing one core module (or rsc._core.messages)
    # does not drag in the others.
    if name in NAMES:
        mod = _loaded.get(name)
        if mod is None:
            mod = _loaded[name] = load(name)
        return mod
    raise AttributeError(f"module 'rsc._core' has no attribute {name!r}")

__all__ = ["NAMES", "USING_EXTENSIONS", "envelope", "idemtable", "leaseheap", "load"]
