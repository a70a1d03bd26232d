"""Which build of a pure-mode module runs: compiled, or its ``.py`` source.

Besides the core (``rsc._core``: ``.pyx`` files, each with a separate pure
twin), the modules that carry every task are plain Python compiled by Cython
in pure-Python mode: the ``.pxd`` beside ``<name>.py`` makes its classes
typed extension types, so the one source is both the compiled module and its
own pure twin. A package holding such modules calls :func:`bind` from its
``__init__`` with their names (dependencies first), and the core's rule holds
for them too: the compiled module unless ``RSC_NO_EXTENSIONS=1``, and an
ImportError that says how to fix it, never a silent fallback, when the
compiled module is missing or older than its source.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

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


def _load_source(package: str, name: str, source: str) -> None:
    """Bind ``package.name`` to its .py source, ahead of a built extension module."""
    module = f"{package}.{name}"
    spec = importlib.util.spec_from_file_location(module, source)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[module]
        raise
    setattr(sys.modules[package], name, mod)  # as an import statement would


def bind(package: str, directory: str, names: tuple[str, ...]) -> None:
    """Check (compiled) or load the sources of (pure) ``package.<name>`` for each name."""
    for name in names:
        module, source = f"{package}.{name}", os.path.join(directory, name + ".py")
        built = compiled_path(directory, name)
        if USING_EXTENSIONS:
            check_compiled(module, source, built)
        elif built is not None and module not in sys.modules:
            _load_source(package, name, source)
