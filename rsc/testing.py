"""A pytest plugin for testing code that uses rsc against a real local cluster.

Installed with rsc (entry point ``pytest11: rsc``), so a project that depends
on rsc has these fixtures without any configuration:

- ``rsc_cluster``: a ``LocalCluster`` of real node processes serving your
  registry, started for the test and stopped after it by pid (the test fails
  if a node process is left behind). The registry and the node count come
  from the ``rsc_cluster`` marker, else the ``rsc_registry`` ini option,
  with 2 nodes by default::

      @pytest.mark.rsc_cluster(registry="myservice.compute:registry", nodes=3)
      def test_fan_out(rsc_cluster, rsc_run): ...

- ``rsc_run``: runs ``async def main(rt)`` to completion with a ``Runtime``
  open on that cluster, in a fresh event loop, and returns what it returns
  (no async test plugin needed)::

      def test_square(rsc_run):
          async def main(rt):
              return await rsc.spawn_remote(rt.cx(), "worker-1", "square", 7).join()
          assert rsc_run(main) == 49

Any keyword of ``LocalCluster`` (``capacity``, ``threads``, ``grace``,
``extra_args``, ...) may be given to the marker too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psutil
import pytest

if TYPE_CHECKING:  # imported when a fixture runs: loading the plugin must not build or start anything
    from rsc.launch import LocalCluster

T = TypeVar("T")
MARKER = "rsc_cluster"
DEFAULT_NODES = 2


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``rsc_registry`` ini option: the registry ``rsc_cluster`` nodes serve by
    default."""
    parser.addini("rsc_registry", "the registry rsc_cluster nodes serve, as package.module:attribute")


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``rsc_cluster`` marker."""
    config.addinivalue_line(
        "markers", f"{MARKER}(registry=None, nodes={DEFAULT_NODES}, **kw): the local cluster the "
                   "rsc_cluster fixture starts (registry as package.module:attribute; kw go to "
                   "rsc.launch.LocalCluster)")


def _settings(request: pytest.FixtureRequest) -> tuple[str, int, dict[str, Any]]:
    marker = request.node.get_closest_marker(MARKER)
    kw = dict(marker.kwargs) if marker is not None else {}
    registry = kw.pop("registry", None) or request.config.getini("rsc_registry")
    if not registry:
        raise pytest.UsageError(
            "rsc_cluster needs a registry: @pytest.mark.rsc_cluster(registry='pkg.mod:registry') "
            "or `rsc_registry = pkg.mod:registry` in the pytest ini options")
    nodes = kw.pop("nodes", DEFAULT_NODES)
    return str(registry), int(nodes), kw


@pytest.fixture
def rsc_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Real node processes serving the marker's (or ini's) registry, for one test."""
    from rsc.launch import LocalCluster

    registry, n, kw = _settings(request)
    cluster = LocalCluster(n, registry, **kw)
    cluster.start()
    pids = set(cluster.pids.values())
    try:
        yield cluster
    finally:
        cluster.stop()
        left = [p for p in pids if psutil.pid_exists(p) and _alive(p)]
        if left:
            pytest.fail(f"rsc_cluster: node processes {left} outlived the test's cluster")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def rsc_run(rsc_cluster: LocalCluster) -> Callable[[Callable[[Any], Awaitable[T]]], T]:
    """``rsc_run(main)``: ``await main(rt)`` with a Runtime open on ``rsc_cluster``."""
    from rsc.remote import Runtime

    def run(main: Callable[[Any], Awaitable[T]], **runtime_kw: Any) -> T:
        async def go() -> T:
            async with Runtime(rsc_cluster.nodes, **runtime_kw) as rt:
                return await main(rt)

        return asyncio.run(go())

    return run
