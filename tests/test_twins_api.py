"""The compiled hot-path modules and their pure-Python twins offer one API.

A name that only one twin has breaks whoever runs the other one
(``RSC_NO_EXTENSIONS=1``, or a platform without a compiler). The envelope
codec's own test checks its constants further (``test_envelope``).
"""

from __future__ import annotations

import pytest

from tests.conftest import _twin

TWINS = ("envelope", "idemtable", "leaseheap")

# Methods a twin has for a compiled caller only: the compiled heap's are C
# methods (invisible from Python), the pure heap's are aliases of the public
# ones so the same caller runs on either twin.
C_CALLER_ONLY = {("leaseheap", "LeaseHeap"): {"add_raw", "renew_raw", "discard_raw"}}


def public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


@pytest.mark.parametrize("name", TWINS)
def test_twins_export_the_same_names(name: str) -> None:
    c, py = _twin(name, "c"), _twin(name, "py")
    assert not c.__file__.endswith(".py"), c.__file__
    assert c.__all__ == py.__all__
    assert len(set(c.__all__)) == len(c.__all__), "a name listed twice"
    for n in c.__all__:
        assert hasattr(c, n) and hasattr(py, n), n


@pytest.mark.parametrize("name", TWINS)
def test_twins_classes_have_the_same_public_members(name: str) -> None:
    c, py = _twin(name, "c"), _twin(name, "py")
    classes = [n for n in c.__all__ if isinstance(getattr(c, n), type)]
    assert classes, f"{name} exports no class"
    for n in classes:
        a, b = getattr(c, n), getattr(py, n)
        assert isinstance(b, type), n
        only = C_CALLER_ONLY.get((name, n), set())
        assert public(a) == public(b) - only, (n, public(a) ^ (public(b) - only))


@pytest.mark.parametrize("name", TWINS)
def test_twins_constants_are_equal(name: str) -> None:
    c, py = _twin(name, "c"), _twin(name, "py")
    for n in c.__all__:
        a, b = getattr(c, n), getattr(py, n)
        if n == "IMPLEMENTATION":
            assert (a, b) == ("c", "py")
        elif isinstance(a, (int, bytes, str, float)):
            assert type(a) is type(b) and a == b, n
        elif not callable(a) and not isinstance(a, type):
            # sentinels (the idempotency table's NEW and CONFLICT): one per twin,
            # told apart by identity, named alike
            assert repr(a) == repr(b), n
