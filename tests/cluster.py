"""Pytest helpers for end-to-end tests on real node processes.

Register with ``pytest_plugins = ["tests.cluster"]`` in the top-level conftest.
Then::

    def test_round_trip(cluster):
        c = cluster(2)                                   # 2 nodes, tests.registries:basic
        async def main():
            async with Runtime(c.nodes) as rt:
                h = spawn_remote(rt.cx(), "worker-1", "square", 7)
                assert await h.join() == 49
        asyncio.run(main())

``cluster(n, registry=..., **kw)`` takes LocalCluster's keywords (capacity,
threads, grace, env, extra_args, ...). ``module_cluster`` is the same factory
with module scope, for suites that share nodes between tests.

At teardown every node is stopped by pid (SIGTERM, then SIGKILL), and the
test fails if any process started by the test is still a child of the test
process, or a socket file of the cluster is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from rsc.launch import LocalCluster

DEFAULT_REGISTRY = "tests.registries:basic"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ClusterFactory = Callable[..., LocalCluster]


def _child_pids() -> set[int]:
    return {c.pid for c in psutil.Process().children(recursive=True)}


def wait_no_children(pids: set[int], timeout: float = 5.0) -> set[int]:
    """Wait until none of ``pids`` is a (live, non-zombie) descendant of this
    process; the ones still there at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = set()
        for c in psutil.Process().children(recursive=True):
            if c.pid in pids:
                try:
                    if c.status() != psutil.STATUS_ZOMBIE:
                        left.add(c.pid)
                except psutil.NoSuchProcess:
                    pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


class _Clusters:
    """Starts clusters for one fixture scope and stops all of them at its end."""

    def __init__(self) -> None:
        self.started: list[LocalCluster] = []
        self.sockets: list[str] = []
        self.pids: set[int] = set()
        self.before = _child_pids()

    def __call__(self, n: int = 2, registry: str = DEFAULT_REGISTRY, **kw: Any) -> LocalCluster:
        kw.setdefault("cwd", REPO_ROOT)
        kw.setdefault("ready_timeout", 30.0)
        c = LocalCluster(n, registry, **kw)
        self.started.append(c)
        c.start()
        self.track(c)
        return c

    def track(self, c: LocalCluster) -> None:
        """Note the pids and sockets of ``c`` (call again after ``c.restart``)."""
        self.pids.update(c.pids.values())
        self.sockets.extend(c.socket_path(n) for n in c.names)

    def teardown(self) -> None:
        problems = []
        for c in self.started:
            self.pids.update(c.pids.values())
            leftovers = c.stop(timeout=10.0)
            if leftovers:
                problems.append(f"{c!r}: processes alive after SIGKILL: {leftovers}")
        left = wait_no_children(self.pids | (_child_pids() - self.before), timeout=5.0)
        if left:
            problems.append(f"child processes left behind: {sorted(left)}")
        stale = [s for s in self.sockets if os.path.exists(s)]
        if stale:
            problems.append(f"socket files left behind: {stale}")
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def cluster() -> Iterator[ClusterFactory]:
    """Factory: ``cluster(n=2, registry="tests.registries:basic", **LocalCluster kw)``
    starts a ready LocalCluster; every cluster it made is stopped at teardown."""
    clusters = _Clusters()
    try:
        yield clusters
    finally:
        clusters.teardown()


@pytest.fixture(scope="module")
def module_cluster() -> Iterator[ClusterFactory]:
    """Like ``cluster``, but the clusters live until the end of the module."""
    clusters = _Clusters()
    try:
        yield clusters
    finally:
        clusters.teardown()


def terminate(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """Stop a child by pid: SIGTERM, wait up to ``timeout`` seconds, then
    SIGKILL. Returns its exit code; a no-op for one that already exited."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
