"""Shared fixtures.

Every ``rsc._core`` test takes one of the twin fixtures below, parametrized
``c`` / ``py``: the ``c`` side imports the compiled module directly, so a build
that silently failed makes those tests fail instead of skip.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def _twin(name: str, side: str) -> ModuleType:
    return importlib.import_module(f"rsc._core._{name}" if side == "c" else f"rsc._core._{name}_py")


@pytest.fixture(params=["c", "py"])
def envelope_mod(request: pytest.FixtureRequest) -> ModuleType:
    return _twin("envelope", request.param)


@pytest.fixture(params=["c", "py"])
def idemtable_mod(request: pytest.FixtureRequest) -> ModuleType:
    return _twin("idemtable", request.param)


@pytest.fixture(params=["c", "py"])
def leaseheap_mod(request: pytest.FixtureRequest) -> ModuleType:
    return _twin("leaseheap", request.param)


@pytest.fixture
def both_envelopes() -> tuple[ModuleType, ModuleType]:
    return _twin("envelope", "c"), _twin("envelope", "py")


@pytest.fixture
def both_idemtables() -> tuple[ModuleType, ModuleType]:
    return _twin("idemtable", "c"), _twin("idemtable", "py")


@pytest.fixture
def both_leaseheaps() -> tuple[ModuleType, ModuleType]:
    return _twin("leaseheap", "c"), _twin("leaseheap", "py")


pytest_plugins = ["tests.cluster"]
