"""Shared fixtures.

Every ``rsc._core`` test takes one of the twin fixtures below, parametrized
``c`` / ``py``: the ``c`` side imports the compiled module directly, so a build
that silently failed makes those tests fail instead of skip.
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import Iterator
from types import ModuleType

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the processes the tests start however the suite was
    started. A shell without job control starts a background command with
    SIGINT ignored, and an ignored signal stays ignored across ``exec``: every
    ``rsc`` process a test starts would then ignore the SIGINT a test sends it
    (``rsc status --watch``, ``rsc launch``). A handled signal is reset to its
    default across ``exec``, so the children start as they would from a
    terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Throwaway certificates for mutual TLS (tests/pki.py), one set per run."""
    from tests.pki import make_pki

    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(autouse=True)
def _no_leaked_regions_or_leases() -> Iterator[None]:
    """Every test leaves no open region and leaks no lease (rsc.regions' debug counters)."""
    import rsc.regions

    before = rsc.regions.LEAKED_LEASES
    yield
    assert rsc.regions.live_regions() == 0, "a test left a region open"
    assert rsc.regions.LEAKED_LEASES == before, "a region closed while a lease was still held"
