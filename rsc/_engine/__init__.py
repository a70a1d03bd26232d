"""Sans-I/O protocol engines: decoded messages and clock readings in, messages
to send, events and timer deadlines out.

Nothing in this package imports asyncio, socket, selectors, time or uvloop;
``tests/test_engine_sansio.py`` checks that in a fresh interpreter. The asyncio
driver (rsc.transport, rsc.node) and the lab simulator drive the same engines.

``node`` and ``origin`` carry every task, so a normal build compiles them
(Cython, pure-Python mode: the ``.pxd`` beside each ``.py`` types its
classes). The ``.py`` is the pure twin; which one runs follows the core's
rule (``rsc._core``): the compiled module unless ``RSC_NO_EXTENSIONS=1``, and
an ImportError that says how to fix it, never a silent fallback, when the
compiled module is missing or older than its source.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

from rsc._core import USING_EXTENSIONS

COMPILED = ("logical", "node", "origin")

_HERE = os.path.dirname(os.path.abspath(__file__))


def compiled_path(name: str) -> str | None:
    """The built extension module for ``rsc/_engine/<name>.py``, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(_HERE, name + suffix)
        if os.path.exists(path):
            return path
    return None


def check_compiled(name: str, source: str, built: str | None) -> None:
    """Raise ImportError (saying what to do) unless ``built`` is a build of ``source`` as it is."""
    if built is None:
        raise ImportError(
            f"rsc's compiled engine rsc._engine.{name} is not built. Reinstall with a C compiler "
            "available (`pip install .` or `make test`), or set RSC_NO_EXTENSIONS=1 to run on the "
            "pure-Python twins.")
    # A second of slack: an install may write the two files in either order.
    if os.path.getmtime(source) > os.path.getmtime(built) + 1.0:
        raise ImportError(
            f"rsc._engine.{name} ({built}) was compiled before {source} last changed, so it would "
            "run old code. Rebuild it (`make test`, or `python setup.py build_ext --inplace`), or "
            "set RSC_NO_EXTENSIONS=1 to run the source as it is.")


def _load_source(name: str) -> None:
    """Bind rsc._engine.<name> to its .py source, ahead of a built extension module."""
    qualname = f"{__name__}.{name}"
    spec = importlib.util.spec_from_file_location(qualname, os.path.join(_HERE, name + ".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[qualname]
        raise


for _name in COMPILED:
    if USING_EXTENSIONS:
        check_compiled(_name, os.path.join(_HERE, _name + ".py"), compiled_path(_name))
    elif compiled_path(_name) is not None:
        _load_source(_name)
del _name
