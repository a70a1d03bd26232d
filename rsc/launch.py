"""Local clusters: start N node processes, supervise them, stop them cleanly.

``LocalCluster`` is the programmatic form (tests, the demo, your own scripts)::

    with LocalCluster(4, "examples.demo_registry:registry") as cluster:
        async with Runtime(cluster.nodes) as rt: ...

``rsc launch`` / ``scripts/launch_nodes.py`` is the command-line form: it
starts the nodes, writes the cluster file, prints where they listen, supervises
them (``--restart`` brings a dead node back under the same name and address;
without it a dead node stays down and the others keep serving) and stops them
all on Ctrl-C or SIGTERM. A launcher locks its directory while its cluster
runs. ``rsc status`` asks every node of a cluster file for its stats.

A node counts as started only when it has printed its ``READY`` line *and*
answered a real handshake plus STATUS_REQUEST from this process. Nodes run in
their own sessions (``start_new_session``), so a terminal's Ctrl-C reaches only
the launcher, which then sends each node exactly one SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import psutil

from rsc.errors import InvalidArgument
from rsc.localfs import DirLock, ensure_private_dir, read_key_file
from rsc.transport.uds import dead_socket_error

log = logging.getLogger("rsc.launch")

__all__ = ["LaunchInterrupted", "LocalCluster", "NodeStartError", "add_arguments", "probe",
           "read_cluster_file", "run", "status", "write_cluster_file"]

CLUSTER_FILE_VERSION = 1
STDERR_TAIL_LINES = 200
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS/BSD), NUL included.
MAX_UNIX_PATH_BYTES = 103 if sys.platform == "darwin" else 107
_RSC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NodeStartError(RuntimeError):
    """A node did not start: it exited early, never printed READY, or never
    answered a handshake within the ready timeout. ``stderr`` holds the tail of
    what it wrote to stderr."""

    def __init__(self, name: str, reason: str, *, returncode: int | None = None,
                 stderr: str = "") -> None:
        self.name = name
        self.reason = reason
        self.returncode = returncode
        self.stderr = stderr
        msg = f"node {name!r} failed to start: {reason}"
        if stderr.strip():
            msg += f"\n--- {name} stderr ---\n{stderr.rstrip()}"
        super().__init__(msg)


class LaunchInterrupted(RuntimeError):
    """Starting or restarting nodes was interrupted (see ``LocalCluster.interrupt``)."""


# ------------------------------------------------------------------ node process


class _NodeProcess:
    """One node process and the threads that drain its stdout and stderr.

    The stdout thread watches for the ``READY <name> <pid> <address>`` line;
    the stderr thread keeps a bounded tail (for error reports) and passes each
    line to ``sink`` when one is given. Both end at EOF, i.e. when the node dies.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: str,
                 sink: Callable[[str, str], None] | None) -> None:
        self.name = name
        self.ready = threading.Event()
        self.ready_line: tuple[str, int, str] | None = None
        self.stdout_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._sink = sink
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            # stdin is the node's lifeline (--lifeline-stdin): it closes when we die,
            # so nodes never outlive a launcher killed with SIGKILL.
            argv, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            text=True, encoding="utf-8", errors="replace", bufsize=1)
        self.pid = self.proc.pid
        self._threads = [
            threading.Thread(target=self._read_stdout, name=f"rsc-launch-{name}-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"rsc-launch-{name}-stderr", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout as f:
            for line in f:
                line = line.rstrip("\n")
                parts = line.split()
                if not self.ready.is_set() and len(parts) == 4 and parts[0] == "READY":
                    try:
                        self.ready_line = (parts[1], int(parts[2]), parts[3])
                    except ValueError:
                        self.stdout_tail.append(line)
                        continue
                    self.ready.set()
                else:
                    self.stdout_tail.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr as f:
            for line in f:
                line = line.rstrip("\n")
                self.stderr_tail.append(line)
                if self._sink is not None:
                    try:
                        self._sink(self.name, line)
                    except Exception:  # a broken sink must not stop the draining
                        self._sink = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self, settle_s: float = 1.0) -> str:
        """The stderr tail; waits up to ``settle_s`` for the reader to reach EOF
        when the process has exited (so its last words are included)."""
        if self.proc.poll() is not None:
            self._threads[1].join(settle_s)
        return "\n".join(self.stderr_tail)

    def join_readers(self, timeout: float) -> None:
        """After the process exited: close its lifeline and collect its output."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:  # pragma: no cover - already broken pipe
                pass
        for t in self._threads:
            t.join(timeout)


# ---------------------------------------------------------------- handshake probe


async def _probe_async(nodes: Mapping[str, str], timeout_s: float,
                       abort: threading.Event | None, key: bytes | None = None) -> dict[str, dict | BaseException]:
    """Handshake + STATUS_REQUEST with every node at once; name -> stats or error."""
    from rsc.remote import Runtime

    out: dict[str, dict | BaseException] = {}
    async with Runtime(dict(nodes), connect_timeout_s=min(5.0, timeout_s), key=key) as rt:
        tasks = {asyncio.ensure_future(rt.status(name, timeout_s)): name for name in nodes}
        pending = set(tasks)
        try:
            while pending:
                if abort is not None and abort.is_set():
                    raise LaunchInterrupted("interrupted while waiting for handshakes")
                done, pending = await asyncio.wait(pending, timeout=0.05)
                for t in done:
                    exc = t.exception()
                    out[tasks[t]] = exc if exc is not None else t.result()
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
    return out


def probe(nodes: Mapping[str, str], timeout_s: float = 5.0,
          abort: threading.Event | None = None, key: bytes | None = None) -> dict[str, dict | BaseException]:
    """Ask each node for its stats over a real handshake; name -> stats dict or
    the exception that prevented it. Blocks the calling thread only: the probe
    runs on its own event loop in a helper thread, so it is safe to call from
    inside a running loop (but better via ``asyncio.to_thread``)."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(asyncio.run(_probe_async(nodes, timeout_s, abort, key)))
        except BaseException as exc:  # carried to the caller's thread
            result.append(exc)

    t = threading.Thread(target=target, name="rsc-launch-probe", daemon=True)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


# ------------------------------------------------------------------- cluster file


def write_cluster_file(path: str, nodes: Mapping[str, str], pids: Mapping[str, int],
                       launcher_pid: int | None = None) -> None:
    """Write the cluster file atomically (temporary file in the same directory,
    fsync, rename), mode 0600."""
    data = {
        "version": CLUSTER_FILE_VERSION,
        "launcher_pid": os.getpid() if launcher_pid is None else launcher_pid,
        "nodes": {name: {"address": nodes[name], "pid": pids[name]} for name in nodes},
    }
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".cluster-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_cluster_file(path: str) -> dict[str, dict[str, Any]]:
    """``name -> {"address": ..., "pid": ...}`` from a cluster file (pid may be None)."""
    with open(path) as f:
        data = json.load(f)
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict):
        raise ValueError(f"cluster file {path} has no 'nodes' object")
    out = {}
    for name, entry in nodes.items():
        if isinstance(entry, str):
            out[name] = {"address": entry, "pid": None}
        else:
            out[name] = {"address": entry["address"], "pid": entry.get("pid")}
    return out


# ------------------------------------------------------------------ LocalCluster


class LocalCluster:
    """N node processes on this machine, each on a Unix socket in one directory.

    ``start()`` launches every node, waits until each has printed READY and
    answered a handshake (bounded by ``ready_timeout``), then writes the cluster
    file. If any node fails to start, every node started so far is stopped and
    :class:`NodeStartError` is raised with that node's stderr. ``stop()``
    SIGTERMs every node by pid, waits, SIGKILLs stragglers, checks with psutil
    that none of them (nor anything they spawned) is left, and removes the
    sockets, the cluster file and the directory when it created it.

    ``start``/``stop``/``restart`` block the calling thread (subprocess work,
    bounded by the timeouts). From async code use ``async with cluster`` or
    ``await cluster.astart()``/``astop()``, which run them in a worker thread.

    Attributes after start: ``nodes`` (name -> "unix:PATH"), ``pids``
    (name -> pid), ``procs`` (name -> Popen), ``cluster_file``, ``directory``.
    """

    def __init__(self, n: int, registry: str, *, directory: str | None = None,
                 name_prefix: str = "worker", capacity: int | None = None,
                 threads: int | None = None, grace: float | None = None,
                 env: Mapping[str, str] | None = None, extra_args: Sequence[str] = (),
                 cluster_file: str | None = None, ready_timeout: float = 30.0,
                 cwd: str | None = None, stderr_sink: Callable[[str, str], None] | None = None,
                 python: str | None = None, key_file: str | None = None,
                 state_dir: str | None = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"a cluster needs at least one node, got n={n!r}")
        if not isinstance(registry, str) or ":" not in registry:
            raise ValueError(f"registry must look like 'package.module:attr', got {registry!r}")
        if ready_timeout <= 0:
            raise ValueError(f"ready_timeout must be positive, got {ready_timeout!r}")
        self.n = n
        self.registry = registry
        self.name_prefix = name_prefix
        self.capacity = capacity
        self.threads = threads
        self.grace = grace
        self.env = dict(env or {})
        self.extra_args = tuple(extra_args)
        # A keyed cluster: every node gets --key-file, and the handshake probes prove the key.
        self.key_file = key_file
        # durable nodes: each gets --state-dir STATE_DIR/NAME (rsc.node.journal)
        self.state_dir = None if state_dir is None else os.path.abspath(state_dir)
        self.key: bytes | None = None
        if key_file is not None:
            self.key = read_key_file(key_file)
        self.ready_timeout = float(ready_timeout)
        self.cwd = os.path.abspath(cwd or os.getcwd())
        self.stderr_sink = stderr_sink
        self.python = python or sys.executable
        self._requested_dir = directory
        self._requested_cluster_file = cluster_file
        self.directory: str | None = None
        self.cluster_file: str | None = None
        self._owns_dir = False
        self._dir_lock: DirLock | None = None  # held from start() to stop()
        self._procs: dict[str, _NodeProcess] = {}
        self._descendants: list[psutil.Process] = []
        #: name -> stderr tail of each node's last process, kept by stop()
        self.last_stderr: dict[str, str] = {}
        self._lock = threading.RLock()
        self._started = False
        self.names = [f"{name_prefix}-{i}" for i in range(1, n + 1)]
        #: Set (from any thread or a signal handler) to make a start/restart in
        #: progress give up promptly with LaunchInterrupted.
        self.interrupt = threading.Event()

    # ------------------------------------------------------------- accessors
    @property
    def nodes(self) -> dict[str, str]:
        """name -> address ("unix:PATH"), in name order."""
        return {name: self.address_of(name) for name in self.names} if self.directory else {}

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items()}

    @property
    def procs(self) -> dict[str, subprocess.Popen]:
        return {name: p.proc for name, p in self._procs.items()}

    @property
    def started(self) -> bool:
        return self._started

    def socket_path(self, name: str) -> str:
        assert self.directory is not None
        return os.path.join(self.directory, f"{name}.sock")

    def address_of(self, name: str) -> str:
        return f"unix:{self.socket_path(name)}"

    def stderr_of(self, name: str) -> str:
        """The tail of what node ``name`` wrote to stderr (its current process,
        or its last one once the cluster is stopped)."""
        p = self._procs.get(name)
        return p.stderr_text(0.0) if p is not None else self.last_stderr.get(name, "")

    def dead(self) -> dict[str, int]:
        """name -> exit code for every node whose process has exited."""
        with self._lock:
            return {name: p.proc.returncode for name, p in self._procs.items()
                    if p.proc.poll() is not None}

    # ------------------------------------------------------------- lifecycle
    def start(self) -> LocalCluster:
        """Start every node and wait until all are ready; see the class docstring."""
        with self._lock:
            if self._started:
                raise RuntimeError("this LocalCluster is already started")
            self._make_directory()
            try:
                for name in self.names:
                    self._spawn(name)
                deadline = time.monotonic() + self.ready_timeout
                for name in self.names:
                    self._wait_ready_line(name, deadline)
                self._check_handshakes(self.names, deadline)
                self._started = True
                self.write_cluster_file()
            except BaseException:
                self._started = True  # so stop() cleans up what exists
                self.stop()
                raise
        return self

    def stop(self, timeout: float | None = None) -> list[int]:
        """Stop every node: SIGTERM by pid, wait up to ``timeout`` seconds
        (default: the node's shutdown bound plus 2 s, i.e. grace + 12 s), SIGKILL stragglers. Removes the sockets, the
        cluster file and the directory if this cluster created it.

        Returns the pids of any process (node or something a node spawned)
        that psutil still sees alive afterwards: empty unless something is
        badly wrong (it has already been sent SIGKILL). Safe to call twice."""
        with self._lock:
            if timeout is None:
                timeout = self._stop_timeout()
            procs = list(self._procs.values())
            for p in procs:
                self._note_descendants(p.pid)
            for p in procs:
                if p.alive():
                    _signal(p.proc, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for p in procs:
                try:
                    p.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("node %s (pid %d) did not exit within %.1f s of SIGTERM; sending SIGKILL",
                                p.name, p.pid, timeout)
                    _signal(p.proc, signal.SIGKILL)
            for p in procs:
                try:
                    p.proc.wait(5.0)
                except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                    log.error("node %s (pid %d) survived SIGKILL", p.name, p.pid)
                p.join_readers(1.0)
            leftovers = self._reap_leftovers({p.pid for p in procs})
            self.last_stderr.update({p.name: p.stderr_text(0.0) for p in procs})
            self._procs.clear()
            self._started = False
            self._cleanup_files()
            return leftovers

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to node ``name``'s process (by pid)."""
        with self._lock:
            p = self._procs[name]
            self._note_descendants(p.pid)
            _signal(p.proc, sig)

    def restart(self, name: str, timeout: float | None = None) -> int:
        """(Re)start node ``name`` under the same name and address; returns the
        new pid. A still-running process is stopped first (SIGTERM, then
        SIGKILL). Waits for READY and a handshake; updates the cluster file.
        Raises NodeStartError if the new process does not come up."""
        with self._lock:
            if name not in self.names:
                raise KeyError(f"no node {name!r} in this cluster; nodes: {', '.join(self.names)}")
            if not self._started:
                raise RuntimeError("start the cluster before restarting a node")
            old = self._procs.get(name)
            if old is not None:
                self._note_descendants(old.pid)
                if old.alive():
                    _signal(old.proc, signal.SIGTERM)
                    try:
                        old.proc.wait(timeout if timeout is not None else self._stop_timeout())
                    except subprocess.TimeoutExpired:
                        _signal(old.proc, signal.SIGKILL)
                        old.proc.wait(5.0)
                old.join_readers(1.0)
            # a node killed by SIGKILL leaves its socket behind; the new one
            # replaces it (rsc.transport.uds.prepare_socket_path), nothing to do
            self._spawn(name)
            deadline = time.monotonic() + self.ready_timeout
            try:
                self._wait_ready_line(name, deadline)
                self._check_handshakes([name], deadline)
            except BaseException:
                p = self._procs[name]
                if p.alive():
                    _signal(p.proc, signal.SIGKILL)
                    p.proc.wait(5.0)
                p.join_readers(1.0)
                raise
            self.write_cluster_file()
            return self._procs[name].pid

    def write_cluster_file(self) -> None:
        assert self.cluster_file is not None
        write_cluster_file(self.cluster_file, self.nodes, self.pids)

    def status(self, timeout_s: float = 5.0) -> dict[str, dict | BaseException]:
        """Each node's STATUS_REPLY stats (or the error that prevented it)."""
        return probe(self.nodes, timeout_s, key=self.key)

    # ------------------------------------------------------- context managers
    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def astart(self) -> LocalCluster:
        return await asyncio.to_thread(self.start)

    async def astop(self, timeout: float | None = None) -> list[int]:
        return await asyncio.to_thread(self.stop, timeout)

    async def __aenter__(self) -> LocalCluster:
        return await self.astart()

    async def __aexit__(self, *exc: Any) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"LocalCluster({self.n} x {self.registry!r}, {state}, dir={self.directory!r})"

    # -------------------------------------------------------------- internals
    def _make_directory(self) -> None:
        """Create (0700) or check the socket directory, then lock it for this
        cluster's lifetime (PathInUse if another launcher holds it). An
        existing directory keeps its mode (rsc.localfs)."""
        if self._requested_dir is not None:
            d = os.path.abspath(self._requested_dir)
            self._check_path_lengths(d)
            owns = ensure_private_dir(d, "--dir")
        else:
            d = tempfile.mkdtemp(prefix="rsc-")  # created 0700
            owns = True
            try:
                self._check_path_lengths(d)
            except ValueError:
                os.rmdir(d)
                raise
        lock = DirLock(d)
        try:
            lock.acquire()
        except BaseException:
            if owns:
                _rmdir(d)
            raise
        self._dir_lock, self._owns_dir, self.directory = lock, owns, d
        self.cluster_file = os.path.abspath(
            self._requested_cluster_file or os.path.join(d, "cluster.json"))

    def _stop_timeout(self) -> float:
        """How long a SIGTERMed node gets before SIGKILL: its own shutdown bound, plus 2 s."""
        from rsc.node.server import shutdown_bound_s

        return shutdown_bound_s(self.grace if self.grace is not None else 5.0) + 2.0

    def _check_path_lengths(self, directory: str) -> None:
        longest = max(len(os.fsencode(os.path.join(directory, f"{n}.sock"))) for n in self.names)
        if longest > MAX_UNIX_PATH_BYTES:
            raise ValueError(
                f"socket paths under {directory} would be {longest} bytes, over the "
                f"{MAX_UNIX_PATH_BYTES}-byte limit of Unix socket addresses; use a shorter "
                "directory (--dir, or TMPDIR) or a shorter name prefix")

    def _argv(self, name: str) -> list[str]:
        argv = [self.python, "-m", "rsc", "node", "--name", name, "--listen", self.address_of(name),
                "--registry", self.registry, "--lifeline-stdin"]
        if self.capacity is not None:
            argv += ["--capacity", str(self.capacity)]
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        if self.grace is not None:
            argv += ["--grace", str(self.grace)]
        if self.key_file is not None:
            argv += ["--key-file", self.key_file]
        if self.state_dir is not None:
            argv += ["--state-dir", os.path.join(self.state_dir, name)]
        return argv + list(self.extra_args)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        # the node must import rsc and the registry's module exactly as we do:
        # put our cwd and rsc's own root on its path (after anything given)
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        for p in (self.cwd, _RSC_ROOT):
            if p not in paths:
                paths.append(p)
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self, name: str) -> None:
        if self.interrupt.is_set():
            raise LaunchInterrupted(f"interrupted before starting {name}")
        self._procs[name] = _NodeProcess(name, self._argv(name), self._child_env(), self.cwd,
                                         self.stderr_sink)

    def _fail(self, name: str, reason: str) -> NodeStartError:
        p = self._procs[name]
        return NodeStartError(name, reason, returncode=p.proc.poll(), stderr=p.stderr_text())

    def _wait_ready_line(self, name: str, deadline: float) -> None:
        p = self._procs[name]
        while not p.ready.wait(0.02):
            if self.interrupt.is_set():
                raise LaunchInterrupted(f"interrupted while waiting for {name}")
            rc = p.proc.poll()
            if rc is not None:
                # READY may have been printed just before an exit: give the reader a moment
                if p.ready.wait(0.2):
                    break
                raise self._fail(name, f"exited with code {rc} before it was ready")
            if time.monotonic() > deadline:
                raise self._fail(name, f"not ready within {self.ready_timeout:g} s (no READY line)")
        assert p.ready_line is not None
        rname, rpid, raddr = p.ready_line
        if rname != name or rpid != p.pid or raddr != self.address_of(name):
            raise self._fail(name, f"printed an unexpected READY line: READY {rname} {rpid} {raddr} "
                                   f"(expected READY {name} {p.pid} {self.address_of(name)})")

    def _check_handshakes(self, names: Sequence[str], deadline: float) -> None:
        remaining = max(0.5, deadline - time.monotonic())
        results = probe({n: self.address_of(n) for n in names}, remaining, self.interrupt, self.key)
        for name in names:
            res = results.get(name)
            if isinstance(res, BaseException) or res is None:
                p = self._procs[name]
                why = f"{type(res).__name__}: {res}" if res is not None else "no answer"
                if not p.alive():
                    raise self._fail(name, f"exited with code {p.proc.returncode} during the handshake")
                raise self._fail(name, f"printed READY but did not answer a handshake ({why})")
            if res.get("pid") not in (None, self._procs[name].pid):
                raise self._fail(name, f"the process answering at {self.address_of(name)} has pid "
                                       f"{res.get('pid')}, not {self._procs[name].pid}")

    def _note_descendants(self, pid: int) -> None:
        """Remember what node ``pid`` has spawned, so stop() can find it even
        after the node is gone (orphans are re-parented away from us)."""
        try:
            self._descendants.extend(psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            pass

    def _reap_leftovers(self, ours: set[int]) -> list[int]:
        """SIGKILL anything of this cluster still alive after the nodes were
        reaped: a node psutil still lists as our child, or a process a node
        spawned. Returns the pids still alive after that (should be none).

        psutil.Process objects guard against pid reuse (they compare creation
        times), so a recycled pid is never signalled."""
        suspects = [c for c in psutil.Process().children(recursive=True) if c.pid in ours]
        suspects += self._descendants
        self._descendants = []
        alive = []
        for proc in suspects:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
                    alive.append(proc)
            except psutil.Error:
                continue
        if not alive:
            return []
        log.warning("killed %d leftover process(es) of the cluster: %s",
                    len(alive), ", ".join(str(p.pid) for p in alive))
        _gone, still = psutil.wait_procs(alive, timeout=3.0)
        return [p.pid for p in still]

    def _cleanup_files(self) -> None:
        """Remove what this cluster made: the cluster file, its nodes' sockets
        that nobody answers on (a node killed by SIGKILL leaves one; a live one
        is somebody else's), the lock, and the directory if it made it."""
        if self.directory is None:
            return
        if self.cluster_file is not None:
            _unlink(self.cluster_file)
        for name in self.names:
            path = self.socket_path(name)
            if os.path.lexists(path) and dead_socket_error(path) is not None:
                _unlink(path)
        if self._dir_lock is not None:
            self._dir_lock.release()
            self._dir_lock = None
        if self._owns_dir:
            _rmdir(self.directory)
            self.directory = None


def _signal(proc: subprocess.Popen, sig: int) -> None:
    """Signal a child by pid, only while Popen has not reaped it (so a recycled
    pid is never hit)."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:  # exited between poll and kill
            pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rmdir(path: str) -> None:
    """Remove a directory this cluster created, if nothing else was put in it."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("left %s in place: %s", path, exc.strerror)


# -------------------------------------------------------------------- rsc launch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--nodes", type=int, default=os.cpu_count() or 1,
                   help="how many nodes to start (default: one per core, %(default)s here)")
    p.add_argument("--registry", required=True, help="package.module:attribute of an rsc.Registry")
    p.add_argument("--dir", default=None,
                   help="directory for the sockets, locked while the cluster runs (created 0700 "
                        "and removed on exit when missing; an existing one keeps its mode and must "
                        "be yours and not writable by others; default: a fresh temporary one)")
    p.add_argument("--name-prefix", default="worker", help="nodes are named PREFIX-1..N (default worker)")
    p.add_argument("--cluster-file", default=None, help="where to write the cluster file "
                                                        "(default DIR/cluster.json)")
    p.add_argument("--restart", action="store_true",
                   help="restart a node that dies (same name and address, with backoff); without "
                        "it a dead node stays down and the others keep serving")
    p.add_argument("--capacity", type=int, default=None, help="each node's max running tasks")
    p.add_argument("--threads", type=int, default=None, help="each node's thread pool size")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds running tasks get when a node is stopped (node default 5)")
    p.add_argument("--key-file", default=None,
                   help="cluster key file (>= 16 bytes, mode 600) given to every node; handshakes "
                        "then prove it")
    p.add_argument("--state-dir", default=None,
                   help="give each node a durable idempotency journal in STATE_DIR/NAME (rsc node "
                        "--state-dir): a node restarted on it keeps its records, so a resent key "
                        "is still answered at most once")
    p.add_argument("--ready-timeout", type=float, default=30.0,
                   help="seconds each node gets to become ready (default 30)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the cluster file path; do not echo the nodes' stderr")


class _Backoff:
    """Restart delay per node: 0.25 s doubling to 10 s; reset after 30 s of uptime."""

    FIRST_S = 0.25
    MAX_S = 10.0
    STABLE_S = 30.0

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}

    def delay(self, name: str, uptime_s: float) -> float:
        if uptime_s >= self.STABLE_S:
            self.failures[name] = 0
        k = self.failures[name] = self.failures.get(name, 0) + 1
        return min(self.MAX_S, self.FIRST_S * 2 ** (k - 1))


def _say(msg: str) -> None:
    print(f"rsc launch: {msg}", file=sys.stderr, flush=True)


def _print_table(cluster: LocalCluster, registry: str) -> None:
    nodes, pids = cluster.nodes, cluster.pids
    w = max(4, *(len(n) for n in nodes))
    lines = [f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} ready (registry {registry})",
             f"{'NAME':<{w}}  {'PID':>7}  ADDRESS"]
    lines += [f"{name:<{w}}  {pids[name]:>7}  {addr}" for name, addr in nodes.items()]
    lines.append(f"cluster file: {cluster.cluster_file}")
    lines.append("Ctrl-C or SIGTERM stops every node.")
    print("\n".join(lines), flush=True)


def run(args: argparse.Namespace) -> int:
    """``rsc launch``: start, supervise, stop. A node that dies is restarted
    with --restart (with back-off), else it stays down while the others keep
    serving. Exit 0 after a requested stop, 1 when a node fails to start or
    every node is down, 2 on bad arguments (an unsafe or busy --dir included)."""
    if args.nodes < 1:
        _say(f"--nodes must be at least 1, got {args.nodes}")
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="rsc launch: %(message)s")
    stop = threading.Event()
    got: list[int] = []

    def sink(name: str, line: str) -> None:
        print(f"[{name}] {line}", file=sys.stderr, flush=True)

    try:
        cluster = LocalCluster(
            args.nodes, args.registry, directory=args.dir, name_prefix=args.name_prefix,
            capacity=args.capacity, threads=args.threads, grace=args.grace,
            cluster_file=args.cluster_file, ready_timeout=args.ready_timeout,
            stderr_sink=None if args.quiet else sink, key_file=args.key_file,
            state_dir=args.state_dir)
    except (ValueError, InvalidArgument) as exc:
        _say(str(exc))
        return 2

    def on_signal(signum: int, _frame: Any) -> None:
        got.append(signum)
        stop.set()
        cluster.interrupt.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return _run_cluster(cluster, args, stop, got)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _run_cluster(cluster: LocalCluster, args: argparse.Namespace, stop: threading.Event,
                 got: list[int]) -> int:
    try:
        cluster.start()
    except NodeStartError as exc:
        _say(str(exc))
        _say("stopped the other nodes")
        return 1
    except LaunchInterrupted:
        _say(f"interrupted by {signal.Signals(got[0]).name} while starting; stopped every node")
        return 128 + got[0]
    except ValueError as exc:
        _say(str(exc))
        return 2
    if args.quiet:
        print(cluster.cluster_file, flush=True)
    else:
        _print_table(cluster, args.registry)

    backoff = _Backoff()
    restart_at: dict[str, float] = {}
    down: set[str] = set()  # without --restart, a dead node stays down; the others keep serving
    code = 0
    try:
        while not stop.wait(0.2):
            for name, rc in cluster.dead().items():
                if name in restart_at or name in down:
                    continue
                p = cluster._procs[name]
                how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}"
                if not args.restart:
                    down.add(name)
                    _say(f"node {name} (pid {p.pid}) {how}; it stays down and the other "
                         f"{len(cluster.names) - len(down)} keep serving (--restart brings dead "
                         "nodes back)")
                    tail = p.stderr_text()
                    if tail.strip() and args.quiet:
                        _say(f"--- {name} stderr ---\n{tail}")
                    continue
                delay = backoff.delay(name, time.monotonic() - p.started_at)
                _say(f"node {name} (pid {p.pid}) {how}; restarting in {delay:.2f} s")
                restart_at[name] = time.monotonic() + delay
            now = time.monotonic()
            for name, at in list(restart_at.items()):
                if at > now or stop.is_set():
                    continue
                del restart_at[name]
                try:
                    pid = cluster.restart(name)
                except NodeStartError as exc:
                    _say(f"restart failed: {exc}")
                    continue  # dead again: the next pass schedules it with a longer delay
                except LaunchInterrupted:
                    break
                _say(f"node {name} restarted as pid {pid} at {cluster.address_of(name)}")
            if len(down) == len(cluster.names):
                _say("every node is down; stopping")
                code = 1
                break
    finally:
        n = len(cluster.pids)
        leftovers = cluster.stop()
        if leftovers:
            _say(f"processes still alive after SIGKILL: {leftovers}")
            code = 1
    why = f" on {signal.Signals(got[0]).name}" if got else ""
    _say(f"stopped {n} node{'s' if n != 1 else ''}{why}")
    return code


# -------------------------------------------------------------------- rsc status


def _fmt_uptime(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def status(args: argparse.Namespace) -> int:
    """``rsc status --cluster FILE [--json]``: every node's stats; exit 1 if any
    node is unreachable, 2 if the cluster file cannot be read."""
    try:
        entries = read_cluster_file(args.cluster)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"rsc status: cannot read cluster file {args.cluster}: {exc}", file=sys.stderr)
        return 2
    if not entries:
        print(f"rsc status: cluster file {args.cluster} lists no nodes", file=sys.stderr)
        return 2
    timeout = float(getattr(args, "timeout", 3.0) or 3.0)
    results: dict[str, dict | BaseException] = {}
    for name, e in entries.items():  # a dead node answers at once, not after the timeout
        why = _refused(e["address"])
        if why is not None:
            results[name] = why
    alive = {n: e["address"] for n, e in entries.items() if n not in results}
    key = None
    if getattr(args, "key_file", None):
        try:
            key = read_key_file(args.key_file)
        except InvalidArgument as exc:
            print(f"rsc status: {exc}", file=sys.stderr)
            return 2
    if alive:
        results.update(probe(alive, timeout, key=key))
    unreachable = [n for n, r in results.items() if isinstance(r, BaseException)]
    if args.json:
        out: dict[str, Any] = {"cluster": os.path.abspath(args.cluster), "nodes": {}}
        for name, e in entries.items():
            r = results[name]
            row: dict[str, Any] = {"address": e["address"], "pid": e["pid"],
                                   "reachable": not isinstance(r, BaseException)}
            if isinstance(r, BaseException):
                row["error"] = f"{type(r).__name__}: {r}"
                row["down"] = _is_down(r)
            else:
                row["stats"] = r
            out["nodes"][name] = row
        print(json.dumps(out, indent=2, default=str))
    else:
        _print_status_table(entries, results, sys.stdout)
    return 1 if unreachable else 0


def _refused(address: str) -> OSError | None:
    """The error of a plain connect to a Unix-socket address when nobody can
    be listening there (no socket file, connection refused): the node is down."""
    if not address.startswith("unix:"):
        return None
    return dead_socket_error(address[len("unix:"):])


def _is_down(r: BaseException) -> bool:
    """Nobody listens at the node's address (as opposed to a node that does not answer)."""
    return isinstance(r, (FileNotFoundError, ConnectionRefusedError))


def _print_status_table(entries: Mapping[str, Mapping[str, Any]],
                        results: Mapping[str, dict | BaseException], out: IO[str]) -> None:
    cols = ["NAME", "PID", "RUNNING", "ACCEPTED", "COMPLETED", "FAILED", "CANCELLED", "RSS MiB",
            "UPTIME"]
    rows: list[list[str]] = []
    for name, e in entries.items():
        r = results[name]
        if isinstance(r, BaseException):
            state = "down" if _is_down(r) else "unreachable"
            rows.append([name, str(e.get("pid") or "-"), f"{state} ({type(r).__name__}: {r})"])
            continue
        rows.append([name, str(r.get("pid", e.get("pid"))), str(r.get("running", "?")),
                     str(r.get("accepted", "?")), str(r.get("completed", "?")),
                     str(r.get("failed", "?")), str(r.get("cancelled", "?")),
                     f"{r.get('rss_bytes', 0) / 2**20:.1f}", _fmt_uptime(r.get("uptime_s", 0))])
    full = [cols] + [row for row in rows if len(row) == len(cols)]
    widths = [max(len(row[i]) for row in full) for i in range(len(cols))]
    for row in rows:  # unreachable rows still line up their name and pid
        widths[0], widths[1] = max(widths[0], len(row[0])), max(widths[1], len(row[1]))

    def fmt(row: list[str]) -> str:
        if len(row) != len(cols):  # unreachable: name, pid, then the message
            return f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]}"
        return "  ".join(f"{v:<{widths[i]}}" if i == 0 else f"{v:>{widths[i]}}" for i, v in enumerate(row))

    print(fmt(cols), file=out)
    for row in rows:
        print(fmt(row), file=out)
    out.flush()
