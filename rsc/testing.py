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

- ``rsc_lab``: the same computations in a **simulated** cluster instead
  (``rsc.lab``): nodes, origins, network and faults in one process, in
  virtual time (``await asyncio.sleep(30)`` costs nothing), with every choice
  drawn from a seed. ``rsc_lab(scenario)`` runs ``async def scenario(lab)``
  once per seed, checks rsc's guarantees after each run (one outcome per
  spawn, at most one execution per idempotency key, quiescence, no orphans,
  ...) and fails the test at the first seed that breaks one, or that makes
  the scenario raise, with the report and the seed to replay it with
  (``rsc_lab(scenario, seeds=[N])``). It returns the reports. The marker
  ``rsc_lab`` gives the registry (``rsc_lab.registry``; else the
  ``rsc_registry`` ini option), how many seeds (default 20) and any option of
  ``rsc.lab.Lab`` (``network``, ``shuffle``, ...); ``pytest
  --rsc-lab-seeds=N`` runs N seeds everywhere::

      @pytest.mark.rsc_lab(registry="myservice.compute:registry", seeds=50, network="lossy")
      def test_fan_out_survives_a_partition(rsc_lab):
          async def scenario(lab):
              for n in ("n1", "n2"):
                  await lab.start_node(n, rsc_lab.registry)
              rt = await lab.start_origin("o1")
              lab.at(0.2, lab.partition, ["n1"], ["o1", "n2"])
              lab.at(1.5, lab.heal)
              h = rsc.spawn_remote(rt.cx(seed=lab.seed), "n1", "square", 7, lease=1.0,
                                   on_lease_expired=rsc.lease.retry(2, nodes=["n2"]))
              assert await h.join() == 49
          rsc_lab(scenario)
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
LAB_MARKER = "rsc_lab"
DEFAULT_NODES = 2
DEFAULT_LAB_SEEDS = 20


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``rsc_registry`` ini option: the registry ``rsc_cluster`` nodes serve by
    default."""
    parser.addini("rsc_registry", "the registry rsc_cluster nodes serve, as package.module:attribute")
    parser.addoption("--rsc-lab-seeds", type=int, default=None, metavar="N",
                     help="seeds every rsc_lab run goes through (default: the marker's, else "
                          f"{DEFAULT_LAB_SEEDS})")


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``rsc_cluster`` marker."""
    config.addinivalue_line(
        "markers", f"{MARKER}(registry=None, nodes={DEFAULT_NODES}, **kw): the local cluster the "
                   "rsc_cluster fixture starts (registry as package.module:attribute; kw go to "
                   "rsc.launch.LocalCluster)")
    config.addinivalue_line(
        "markers", f"{LAB_MARKER}(registry=None, seeds={DEFAULT_LAB_SEEDS}, start=0, **options): how "
                   "the rsc_lab fixture runs a scenario (registry as package.module:attribute; "
                   "options go to rsc.lab.Lab: network, shuffle, settle_s, time_limit_s)")


def _marker_settings(request: pytest.FixtureRequest, marker_name: str) -> tuple[str, dict[str, Any]]:
    """The registry (the marker's, else the ini option's) and the marker's other keywords."""
    marker = request.node.get_closest_marker(marker_name)
    kw = dict(marker.kwargs) if marker is not None else {}
    registry = kw.pop("registry", None) or request.config.getini("rsc_registry")
    if not registry:
        raise pytest.UsageError(
            f"{marker_name} needs a registry: @pytest.mark.{marker_name}(registry='pkg.mod:registry') "
            "or `rsc_registry = pkg.mod:registry` in the pytest ini options")
    return str(registry), kw


def _settings(request: pytest.FixtureRequest) -> tuple[str, int, dict[str, Any]]:
    registry, kw = _marker_settings(request, MARKER)
    nodes = kw.pop("nodes", DEFAULT_NODES)
    return registry, int(nodes), kw


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


class LabRunner:
    """What the ``rsc_lab`` fixture gives a test (see the module docstring)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        marker = request.node.get_closest_marker(LAB_MARKER)
        kw = dict(marker.kwargs) if marker is not None else {}
        kw.pop("registry", None)
        marker_seeds = kw.pop("seeds", DEFAULT_LAB_SEEDS)
        self.seeds: int = int(request.config.getoption("--rsc-lab-seeds") or marker_seeds)
        self.start: int = int(kw.pop("start", 0))
        self.options: dict[str, Any] = kw
        self._registry: Any = None

    @property
    def registry(self) -> Any:
        """The marker's (or the ini option's) registry, loaded on first use."""
        if self._registry is None:
            from rsc.registry import load_registry

            self._registry = load_registry(_marker_settings(self._request, LAB_MARKER)[0])
        return self._registry

    def __call__(self, scenario: Callable[[Any], Awaitable[Any]], *,
                 seeds: int | list[int] | range | None = None, **options: Any) -> list[Any]:
        """Run ``scenario`` for each seed (``seeds``: a count from the marker's
        ``start``, or the seeds themselves); fail the test at the first seed
        whose report shows a violation. Returns the reports."""
        from rsc.lab.cluster import Lab

        if seeds is None:
            seeds = self.seeds
        todo = range(self.start, self.start + seeds) if isinstance(seeds, int) else list(seeds)
        opts = {**self.options, **options}
        reports = []
        for seed in todo:
            report = Lab(seed, **opts).run(scenario)
            if not report.ok:
                pytest.fail(f"rsc_lab: seed {seed} broke rsc's guarantees or the scenario's own "
                            f"checks (replay it with rsc_lab(scenario, seeds=[{seed}])):\n"
                            f"{report.format()}", pytrace=False)
            reports.append(report)
        return reports


@pytest.fixture
def rsc_lab(request: pytest.FixtureRequest) -> LabRunner:
    """``rsc_lab(scenario)``: ``async def scenario(lab)`` in a simulated cluster, over seeds."""
    return LabRunner(request)
