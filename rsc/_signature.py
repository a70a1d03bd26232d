"""``inspect.signature`` for classes Cython compiles from pure-mode source.

A compiled class's ``__init__`` is a C slot, which ``inspect.signature``
cannot read ("no signature found for builtin type"), and a compiled type
takes no attribute after it is made. So such a class names
``__signature__ = SourceSignature()`` in its body: on first use that reads
``__init__``'s parameters from the module's source file, the text both
builds are made from, so the compiled class and its pure twin report the
same signature. Nothing here runs until something asks for a signature.
"""

from __future__ import annotations

from typing import Any


class SourceSignature:
    """A class attribute whose value is the class's constructor signature,
    read from its ``__init__`` in the module's ``.py`` source (``()`` if the
    class defines none)."""

    __slots__ = ("_by_class",)

    def __init__(self) -> None:
        self._by_class: dict[type, Any] = {}

    def __get__(self, obj: object, cls: type | None = None) -> Any:
        cls = type(obj) if cls is None else cls
        sig = self._by_class.get(cls)
        if sig is None:
            sig = self._by_class[cls] = init_signature(cls)
        return sig


def _source_path(module: Any) -> str:
    import os

    path: str = module.__file__
    if path.endswith(".py"):
        return path
    # a compiled build: name.cpython-311-x86_64-linux-gnu.so beside name.py
    name: str = module.__name__
    return os.path.join(os.path.dirname(path), name.rpartition(".")[2] + ".py")


def init_signature(cls: type) -> Any:
    """``cls(...)``'s signature from the source of ``cls.__init__``: its
    parameters after ``self``, defaults evaluated in the module's namespace,
    annotations kept as the source wrote them."""
    import __future__
    import ast
    import copy
    import inspect
    import sys

    module = sys.modules[cls.__module__]
    path = _source_path(module)
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__), None)
    if node is None:
        raise ValueError(f"no class {cls.__name__} in {path}")
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        return inspect.Signature()
    stub = copy.copy(init)
    stub.body = [ast.Pass()]
    stub.decorator_list = []
    code = compile(ast.fix_missing_locations(ast.Module([stub], [])), path, "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    namespace = dict(vars(module))
    exec(code, namespace)
    sig = inspect.signature(namespace["__init__"])
    return sig.replace(parameters=list(sig.parameters.values())[1:])
