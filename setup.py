"""Build the compiled core (rsc/_core/*.pyx) and the compiled engines.

A normal build compiles every extension, and a failed compile fails the
install: rsc never silently falls back to the pure twins (msgpack #481 is the
cautionary tale). ``RSC_NO_EXTENSIONS=1`` builds nothing, and rsc then runs
on the pure-Python twins.

The engines (``rsc/_engine/node.py``, ``origin.py``) are plain Python
modules compiled in Cython's pure-Python mode: the ``.pxd`` beside each one
makes its classes typed extension types, so the one source is both the
compiled module and its own pure twin (``rsc/_engine/__init__.py`` picks).
"""

import glob
import os

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("RSC_NO_EXTENSIONS", "") not in ("", "0")
ENGINES = ("logical", "node", "origin")  # rsc/_engine/<name>.py with a <name>.pxd beside it
DIRECTIVES = {
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize  # pinned in pyproject's build requires

    def ext(name, src):
        return Extension(name, [src], extra_compile_args=["-O3"])

    core = [ext("rsc._core." + os.path.splitext(os.path.basename(src))[0], src)
            for src in sorted(glob.glob(os.path.join("rsc", "_core", "_*.pyx")))]
    engines = [ext("rsc._engine." + name, os.path.join("rsc", "_engine", name + ".py")) for name in ENGINES]
    return (cythonize(core, language_level=3, compiler_directives=DIRECTIVES, quiet=True)
            # The engines' annotations are documentation, not C types: only the
            # .pxd types them, so the compiled module accepts what the pure one does.
            # cdivision stays off there: // and % keep Python's semantics.
            + cythonize(engines, language_level=3, quiet=True,
                        compiler_directives={"embedsignature": True, "annotation_typing": False}))


setup(ext_modules=extensions())
