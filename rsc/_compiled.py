"""Which build of a pure-mode module runs: compiled, or its ``.py`` source.

Besides the core (``rsc._core``: ``.pyx`` files, each with a separate pure
twin), the modules that carry every task are plain Python compiled by Cython
in pure-Python mode: the ``.pxd`` beside ``<name>.py`` makes its classes
typed extension types, so the one source is both the compiled module and its
own pure twin. A package holding such modules calls :func:`bind` from its
``__init__`` with their names, and the core's rule holds
for them too: the compiled module unless ``RSC_NO_EXTENSIONS=1``, and an
ImportError that says how to fix it, never a silent fallback, when the
compiled module is missing or older than its source.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

from rsc._core import USING_EXTENSIONS


def compiled_path(directory: str, name: str) -> str | None:
    """The built extension module for ``<directory>/<name>.py``, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(directory, name + suffix)
        if os.path.exists(path):
            return path
    return None


def check_compiled(module: str, source: str, built: str | None) -> None:
    """Raise ImportError (saying what to do) unless ``built`` is a build of ``source`` as it is."""
    if built is None:
        raise ImportError(
            f"rsc's compiled module {module} is not built. Reinstall with a C compiler available "
            "(`pip install .` or `make test`), or set RSC_NO_EXTENSIONS=1 to run on the "
            "pure-Python twins.")
    # A second of slack: an install may write the two files in either order.
    if os.path.getmtime(source) > os.path.getmtime(built) + 1.0:
        raise ImportError(
            f"{module} ({built}) was compiled before {source} last changed, so it would run old "
            "code. Rebuild it (`make test`, or `python setup.py build_ext --inplace`), or set "
            "RSC_NO_EXTENSIONS=1 to run the source as it is.")


class _SourceFinder:
    """Under RSC_NO_EXTENSIONS=1: finds a bound module's .py source ahead of its build."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


_finder = _SourceFinder()


def bind(package: str, names: tuple[str, ...]) -> None:
    """Check the builds of (compiled), or route imports to the sources of (pure),
    the modules ``package.<name>`` for each name. Called from the package's
    ``__init__`` (``bind(__name__, COMPILED)``); nothing is imported here."""
    directory = os.path.dirname(os.path.abspath(sys.modules[package].__file__ or ""))
    for name in names:
        module, source = f"{package}.{name}", os.path.join(directory, name + ".py")
        if USING_EXTENSIONS:
            check_compiled(module, source, compiled_path(directory, name))
        else:
            if _finder not in sys.meta_path:
                sys.meta_path.insert(0, _finder)
            _finder.sources[module] = source
