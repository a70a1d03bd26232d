"""Package attributes that resolve on first use (PEP 562), for ``rsc`` and
``rsc.lab``: importing the package imports none of the modules it names."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], exports: Mapping[str, Iterable[str]],
                 submodules: Iterable[str] = ()) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: a name of ``exports`` (module ->
    names) is imported from its module on first use and kept in ``namespace``
    (the package's globals); a name of ``submodules`` is that submodule."""
    where = {name: mod for mod, names in exports.items() for name in names}
    subs = frozenset(submodules)

    def __getattr__(name: str) -> object:
        if name in subs:  # e.g. rsc.lease.retry(...) after a bare `import rsc`
            return importlib.import_module(f"{package}.{name}")
        mod = where.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(mod), name)
        namespace[name] = value
        return value

    return __getattr__
