"""Build the compiled core (rsc/_core/*.pyx).

A normal build compiles every extension, and a failed compile fails the
install: rsc never silently falls back to the pure twins (msgpack #481 is the
cautionary tale). ``RSC_NO_EXTENSIONS=1`` builds nothing, and ``rsc._core``
then loads the pure-Python twins.
"""

import glob
import os

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("RSC_NO_EXTENSIONS", "") not in ("", "0")


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize  # pinned in pyproject's build requires

    sources = sorted(glob.glob(os.path.join("rsc", "_core", "_*.pyx")))
    exts = [
        Extension(
            "rsc._core." + os.path.splitext(os.path.basename(src))[0],
            [src],
            extra_compile_args=["-O3"],
        )
        for src in sources
    ]
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
        quiet=True,
    )


setup(ext_modules=extensions())
