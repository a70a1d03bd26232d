"""Fixtures for the end-to-end benchmarks (bench_e2e.py).

The core micro-benchmarks (bench_envelope/idemtable/leaseheap) use none of
these. Every process a fixture starts is stopped by pid at its teardown, and
``no_strays`` checks at the end of the module that nothing started during it
is still a live descendant of this process (killing by pid whatever is).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `bench.registry`, `bench.peers` import as a namespace package
    sys.path.insert(0, REPO_ROOT)

ECHO_SCRIPT = os.path.join(REPO_ROOT, "bench", "echo_peer.py")
READY_TIMEOUT_S = 30.0


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop, as rsc nodes use (stock asyncio only where uvloop is absent)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an rsc dependency on POSIX
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One uvloop event loop for every async benchmark of the module (the origin side)."""
    lp = new_loop()
    try:
        yield lp
    finally:
        lp.run_until_complete(lp.shutdown_asyncgens())
        lp.close()


@pytest.fixture(scope="session")
def burn_work() -> int:
    """The ``burn`` argument that takes about 1 ms here (see bench.registry)."""
    from bench.registry import calibrate_burn

    return calibrate_burn(0.001)


# ---------------------------------------------------------------------------- processes


def _descendants() -> dict[int, str]:
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = " ".join(p.cmdline())[:120]
        except psutil.Error:
            pass
    return out


def stop_pid(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM by pid, wait, SIGKILL if it is still there; reaps it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()


@pytest.fixture(scope="module")
def no_strays(request: pytest.FixtureRequest) -> Iterator[None]:
    """At the end of the module: every process started during it has exited.

    Waits a few seconds for processes on their way out, then SIGTERMs (and
    SIGKILLs) each one still alive by pid, and says so on the terminal."""
    before = set(_descendants())
    yield
    from bench.peers import stop_multiprocessing_helpers

    stop_multiprocessing_helpers()
    deadline = time.monotonic() + 5.0
    while (left := {p: c for p, c in _descendants().items() if p not in before}) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(1.0)
    for pid in left:
        if psutil.pid_exists(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for pid, cmd in sorted(left.items()):
            reporter.write_line(f"bench: stopped stray process {pid} by pid: {cmd}")


@pytest.fixture(scope="class")
def echo_server() -> Iterator[str]:
    """The raw echo server (bench/echo_peer.py) in its own process; its socket path."""
    yield from start_echo_server()


@pytest.fixture(scope="class")
def stream_echo_server() -> Iterator[str]:
    """The byte-stream echo server (``echo_peer.py --stream``); its socket path."""
    yield from start_echo_server(stream=True)


ECHO_PIDS: dict[str, int] = {}  # socket path -> echo server pid, while it runs


def start_echo_server(stream: bool = False) -> Iterator[str]:
    """An echo server process, stopped by pid afterwards (a fixture's body:
    ``yield from``); its pid is in ``ECHO_PIDS`` under its socket path meanwhile."""
    directory = tempfile.mkdtemp(prefix="rsc-echo-")
    path = os.path.join(directory, "echo.sock")
    proc = subprocess.Popen([sys.executable, ECHO_SCRIPT, path] + (["--stream"] if stream else []),
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT, close_fds=True)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(READY_TIMEOUT_S)
        if not line or not line[0].startswith("READY"):
            stop_pid(proc)
            raise RuntimeError(f"echo server did not start: stdout {line!r}, "
                               f"stderr {proc.stderr.read() if proc.stderr else ''!r}")
        ECHO_PIDS[path] = proc.pid
        yield path
    finally:
        ECHO_PIDS.pop(path, None)
        stop_pid(proc)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.rmdir(directory)


def bench_cluster(n: int, registry: str, **kw: Any) -> Iterator[Any]:
    """``n`` started rsc nodes on ``registry``, room for 200,000 tasks each,
    stopped by pid afterwards (a fixture's body: ``yield from``)."""
    from rsc.launch import LocalCluster

    cluster = LocalCluster(n, registry, cwd=REPO_ROOT, capacity=200_000,
                           ready_timeout=READY_TIMEOUT_S, **kw)
    cluster.start()
    try:
        yield cluster
    finally:
        left = cluster.stop()
        if left:
            raise RuntimeError(f"rsc nodes still alive after stop (SIGKILLed): {left}")


@pytest.fixture(scope="class")
def rsc_cluster() -> Iterator[object]:
    """Two rsc nodes on bench.registry:registry, room for 200,000 tasks each."""
    yield from bench_cluster(2, "bench.registry:registry")


@pytest.fixture(scope="class")
def peer(request: pytest.FixtureRequest, burn_work: int) -> Iterator[Any]:
    """The peer ``request.param`` (bench.peers), started and warmed up; skipped
    with a message when its package is not installed."""
    from bench.peers import PeerUnavailable, describe, start_peer, stop_multiprocessing_helpers

    name = request.param
    try:
        p = start_peer(name, burn_work)
    except PeerUnavailable as exc:
        pytest.skip(f"peer {describe(name)} not measured: {exc}")
    try:
        yield p
    finally:
        try:
            p.stop()
        finally:
            stop_multiprocessing_helpers()


async def open_runtime(nodes: dict[str, str], **kw: Any) -> Any:
    """A started Runtime that has connected to every node and run 50 no-ops on each."""
    from rsc import Runtime, spawn_remote

    rt = Runtime(nodes, **kw)
    await rt.start()
    cx = rt.cx()
    for node in nodes:  # connect and handshake with every node before timing anything
        for _ in range(50):
            assert await spawn_remote(cx, node, "noop", b"warm").join() == b"warm"
    return rt


def runtime_on(loop: asyncio.AbstractEventLoop, nodes: dict[str, str]) -> Iterator[Any]:
    """``open_runtime(nodes)`` on ``loop``, closed afterwards (a fixture's body: ``yield from``)."""
    runtime = loop.run_until_complete(open_runtime(nodes))
    try:
        yield runtime
    finally:
        loop.run_until_complete(runtime.aclose())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """After the benchmark tables: bench_isolation's figures and ratios (same run)."""
    for name, mod in list(sys.modules.items()):
        if name.endswith("bench_isolation") and (getattr(mod, "RESULTS", None) or getattr(mod, "RESULTS_RATIO", None)):
            for line in mod.report_lines(mod.RESULTS):
                terminalreporter.write_line(line)
