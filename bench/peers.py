"""The peers rsc is measured against, on the same three jobs.

Each peer runs ``bench.registry.peer_noop`` / ``peer_cpu`` on two worker
processes, the same functions and inputs as rsc's ``noop`` / ``cpu``:

- ``one(n)``: ``n`` no-op calls, one at a time (submit, wait for the result);
- ``bulk(n)``: ``n`` no-op calls submitted at once, then every result collected;
- ``cpu(n, work)``: ``n`` calls of ``burn(work)`` (about 1 ms each) over the two workers;
- ``submit(data)``: one ``peer_noop(data)`` started, as an object with ``done()``
  and ``result()`` (a ``concurrent.futures.Future`` or the like);
  ``submit_then(data, callback)`` the same, calling ``callback()`` (from any
  thread) when the result is back. The payload sweep
  (``windowed``) and the open-loop latency benchmark use these.

=====================  ========================================================
``processpool``        ``concurrent.futures.ProcessPoolExecutor(2)``: ``submit``
                       then ``result()``; bulk and cpu submit all, then wait.
``pool``               ``multiprocessing.Pool(2)``: ``apply`` one at a time;
                       bulk and cpu by ``starmap(..., chunksize=1)``.
``dask``               ``distributed.LocalCluster(n_workers=2,
                       threads_per_worker=1)`` and a ``Client``:
                       ``submit(...).result()``; ``map`` + ``gather``.
``ray``                ``ray.init(num_cpus=2)`` and ``ray.remote`` functions:
                       ``ray.get(f.remote())``; ``ray.get([...])``.
=====================  ========================================================

The stdlib pools use the ``forkserver`` start method: workers are started
from a clean single-threaded server (no fork of a process that holds an event
loop and threads), as Python 3.14 does by default on Linux. All workers are
started and warmed up (every worker has run the job once) before timing.

``start_peer(name)`` raises :class:`PeerUnavailable` with an install hint when
the peer's package is absent; the benchmarks turn that into a skip.
``stop()`` shuts the peer down; the benchmark's process guard then checks by
pid that nothing it started is left.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import multiprocessing.pool
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from typing import Any

from bench.registry import peer_cpu, peer_noop

WORKERS = 2

NAMES = ("processpool", "pool", "dask", "ray")
LABELS = {
    "processpool": "ProcessPoolExecutor(2)",
    "pool": "multiprocessing.Pool(2).starmap",
    "dask": "Dask LocalCluster(2x1)",
    "ray": "Ray(num_cpus=2)",
}


class PeerUnavailable(RuntimeError):
    """The peer's package is not installed (the message says how to install it)."""


class Peer:
    name = ""

    def one(self, n: int) -> None:
        raise NotImplementedError

    def bulk(self, n: int) -> None:
        raise NotImplementedError

    def cpu(self, n: int, work: int) -> list[bytes]:
        """The ``n`` results: each ``peer_cpu``'s busy ns as decimal bytes."""
        raise NotImplementedError

    def submit(self, data: Any) -> Any:
        raise NotImplementedError

    def submit_then(self, data: Any, callback: Callable[[], None]) -> None:
        raise NotImplementedError

    def warm_up(self, work: int) -> None:
        """Every worker has run each job once (imports done, connections open)."""
        self.one(4)
        self.bulk(4 * WORKERS)
        self.cpu(4 * WORKERS, work)

    def stop(self) -> None:
        raise NotImplementedError


def stop_multiprocessing_helpers() -> None:
    """Stop the forkserver and the resource tracker this process started, if any.

    Both would otherwise live until this process exits (they are ours: the
    stdlib pools and Dask's nannies start them)."""
    from multiprocessing import forkserver, resource_tracker

    for helper in (getattr(forkserver, "_forkserver", None),
                   getattr(resource_tracker, "_resource_tracker", None)):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            try:
                stop()
            except Exception:  # best effort; the process guard still checks by pid
                pass


class ProcessPoolPeer(Peer):
    name = "processpool"

    def __init__(self) -> None:
        self.ex = concurrent.futures.ProcessPoolExecutor(
            WORKERS, mp_context=multiprocessing.get_context("forkserver"))

    def one(self, n: int) -> None:
        submit = self.ex.submit
        for _ in range(n):
            submit(peer_noop, b"").result()

    def bulk(self, n: int) -> None:
        submit = self.ex.submit
        futures = [submit(peer_noop, b"") for _ in range(n)]
        for f in futures:
            f.result()

    def cpu(self, n: int, work: int) -> list[bytes]:
        submit = self.ex.submit
        futures = [submit(peer_cpu, work) for _ in range(n)]
        return [f.result() for f in futures]

    def submit(self, data: Any) -> Any:
        return self.ex.submit(peer_noop, data)

    def submit_then(self, data: Any, callback: Callable[[], None]) -> None:
        self.ex.submit(peer_noop, data).add_done_callback(lambda _f: callback())

    def stop(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)


class _AsyncResult:
    """A ``multiprocessing`` AsyncResult with a Future's ``done()`` and ``result()``."""

    def __init__(self, r: multiprocessing.pool.AsyncResult) -> None:
        self.done, self.result = r.ready, r.get


class PoolPeer(Peer):
    name = "pool"

    def __init__(self) -> None:
        self.pool: multiprocessing.pool.Pool = multiprocessing.get_context("forkserver").Pool(WORKERS)

    def one(self, n: int) -> None:
        apply = self.pool.apply
        for _ in range(n):
            apply(peer_noop, (b"",))

    def bulk(self, n: int) -> None:
        self.pool.starmap(peer_noop, [(b"",)] * n, chunksize=1)

    def cpu(self, n: int, work: int) -> list[bytes]:
        return self.pool.starmap(peer_cpu, [(work,)] * n, chunksize=1)

    def submit(self, data: Any) -> Any:
        return _AsyncResult(self.pool.apply_async(peer_noop, (data,)))

    def submit_then(self, data: Any, callback: Callable[[], None]) -> None:
        self.pool.apply_async(peer_noop, (data,), callback=lambda _r: callback())

    def stop(self) -> None:
        self.pool.close()
        self.pool.join()


class DaskPeer(Peer):
    name = "dask"

    def __init__(self) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise PeerUnavailable(
                f"Dask distributed is not installed ({exc}); pip install 'dask[distributed]'") from exc
        import dask

        self.scratch = tempfile.mkdtemp(prefix="rsc-bench-dask-")
        # scheduler and workers keep their scratch space here, not in the shared temp dir
        self.config = dask.config.set({"temporary-directory": self.scratch})
        try:
            self.cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                        dashboard_address=":0", silence_logs=logging.ERROR,
                                        local_directory=self.scratch)
            try:
                self.client = Client(self.cluster)
            except BaseException:
                self.cluster.close()
                raise
        except BaseException:
            self.config.__exit__(None, None, None)
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise

    def one(self, n: int) -> None:
        submit = self.client.submit
        for _ in range(n):
            submit(peer_noop, b"", pure=False).result()

    def bulk(self, n: int) -> None:
        self.client.gather(self.client.map(peer_noop, [b""] * n, pure=False))

    def cpu(self, n: int, work: int) -> list[bytes]:
        return self.client.gather(self.client.map(peer_cpu, [work] * n, pure=False))

    def submit(self, data: Any) -> Any:
        return self.client.submit(peer_noop, data, pure=False)

    def submit_then(self, data: Any, callback: Callable[[], None]) -> None:
        self.client.submit(peer_noop, data, pure=False).add_done_callback(lambda _f: callback())

    def stop(self) -> None:
        try:
            self.client.close()
        finally:
            try:
                self.cluster.close()
            finally:
                self.config.__exit__(None, None, None)
                shutil.rmtree(self.scratch, ignore_errors=True)


class RayPeer(Peer):
    name = "ray"

    def __init__(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise PeerUnavailable(f"Ray is not installed ({exc}); pip install ray") from exc
        self.ray = ray
        # Ray keeps its session (logs, sockets) under a directory of its own; ours goes away at stop.
        self.scratch = tempfile.mkdtemp(prefix="rsc-bench-ray-")
        try:
            ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, _temp_dir=self.scratch)
        except BaseException:
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        self.noop = ray.remote(peer_noop)
        self.burn = ray.remote(peer_cpu)

    def one(self, n: int) -> None:
        get, remote = self.ray.get, self.noop.remote
        for _ in range(n):
            get(remote(b""))

    def bulk(self, n: int) -> None:
        remote = self.noop.remote
        self.ray.get([remote(b"") for _ in range(n)])

    def cpu(self, n: int, work: int) -> list[bytes]:
        remote = self.burn.remote
        return self.ray.get([remote(work) for _ in range(n)])

    def submit(self, data: Any) -> Any:
        return self.noop.remote(data).future()

    def submit_then(self, data: Any, callback: Callable[[], None]) -> None:
        self.noop.remote(data).future().add_done_callback(lambda _f: callback())

    def stop(self) -> None:
        try:
            self.ray.shutdown()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


_CLASSES: dict[str, type[Peer]] = {
    "processpool": ProcessPoolPeer,
    "pool": PoolPeer,
    "dask": DaskPeer,
    "ray": RayPeer,
}


def start_peer(name: str, work: int) -> Peer:
    """Start the peer ``name`` and warm it up; PeerUnavailable when not installed."""
    peer = _CLASSES[name]()
    try:
        peer.warm_up(work)
    except BaseException:
        peer.stop()
        raise
    return peer


def windowed(peer: Peer, data: Any, n: int, window: int) -> Any:
    """``n`` calls of ``peer_noop(data)`` with up to ``window`` in flight; the
    last result. Waits for the oldest call, takes every later one already
    done, and starts as many new ones together (as rsc's driver does)."""
    pending = deque(peer.submit(data) for _ in range(min(n, window)))
    sent, out = len(pending), None
    while pending:
        out = pending.popleft().result()
        done = 1
        while pending and pending[0].done():
            out = pending.popleft().result()
            done += 1
        for _ in range(min(done, n - sent)):
            pending.append(peer.submit(data))
        sent += min(done, n - sent)
    return out


def describe(name: str) -> str:
    return LABELS.get(name, name)


__all__ = ["LABELS", "NAMES", "Peer", "PeerUnavailable", "describe", "start_peer",
           "stop_multiprocessing_helpers", "windowed"]
