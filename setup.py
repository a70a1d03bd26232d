"""Build the compiled core (rsc/_core/*.pyx) and the pure-mode modules.

A normal build compiles every extension, and a failed compile fails the
install: rsc never silently falls back to the pure twins (msgpack #481 is the
cautionary tale). ``RSC_NO_EXTENSIONS=1`` builds nothing, and rsc then runs
on the pure-Python twins.

A pure-mode module is a plain ``rsc/<package>/<name>.py`` with a ``.pxd``
beside it that types its classes: Cython compiles the source as it is, so it
is both the compiled module and its own pure twin (rsc/_compiled.py picks
which one runs; the package's ``COMPILED`` lists it).
"""

import glob
import os

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("RSC_NO_EXTENSIONS", "") not in ("", "0")
# every rsc/[<package>/]<name>.py with a <name>.pxd beside it (the core's .pxd go with its .pyx)
PURE_MODE = sorted(p[:-4] + ".py" for p in glob.glob(os.path.join("rsc", "**", "*.pxd"), recursive=True)
                   if os.path.basename(os.path.dirname(p)) != "_core")
DIRECTIVES = {
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
    # Argument Clinic form: a function's signature becomes its __text_signature__
    # (what inspect.signature reads) instead of a first line of its docstring,
    # so compiled docstrings read like the pure twins'. (The default form also
    # wrote a wrong constructor signature, keyword-only marker misplaced, into
    # compiled classes' docstrings.)
    "embedsignature.format": "clinic",
}


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize  # pinned in pyproject's build requires

    def ext(name, src):
        return Extension(name, [src], extra_compile_args=["-O3"])

    core = [ext("rsc._core." + os.path.splitext(os.path.basename(src))[0], src)
            for src in sorted(glob.glob(os.path.join("rsc", "_core", "_*.pyx")))]
    pure_mode = [ext(os.path.splitext(src)[0].replace(os.sep, "."), src) for src in PURE_MODE]
    jobs = os.cpu_count() or 1
    return (cythonize(core, language_level=3, compiler_directives=DIRECTIVES, quiet=True, nthreads=jobs)
            # Annotations in pure-mode sources are documentation, not C types:
            # only the .pxd types them, so the compiled module accepts what the
            # pure one does. cdivision stays off: // and % keep Python's meaning.
            + cythonize(pure_mode, language_level=3, quiet=True, nthreads=jobs,
                        # binding: functions and methods are cyfunctions, which
                        # inspect.signature reads like Python functions (a compiled
                        # class's own signature: rsc._signature)
                        compiler_directives={"embedsignature": True, "embedsignature.format": "clinic",
                                             "binding": True, "annotation_typing": False}))


# Both steps run on every core: the .c generation (nthreads above) and the C
# compiles (build_ext's parallel option).
setup(ext_modules=extensions(), options={"build_ext": {"parallel": os.cpu_count() or 1}})
