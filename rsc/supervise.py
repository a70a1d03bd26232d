"""Local clusters: start N node processes, supervise them, stop them cleanly.

``LocalCluster`` is the programmatic form (tests, the demo, your own scripts)::

    with LocalCluster(4, "examples.demo_registry:registry") as cluster:
        async with Runtime(cluster.nodes) as rt: ...

A node counts as started only when it has printed its ``READY`` line *and*
answered a real handshake plus STATUS_REQUEST from this process
(:func:`rsc.probe.probe`). Nodes run in their own sessions
(``start_new_session``), so a terminal's Ctrl-C reaches only the launcher,
which then sends each node exactly one SIGTERM. A cluster locks its directory
while it runs and keeps its cluster file (:mod:`rsc.cluster_file`) current.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import psutil

from rsc.logs import get_logger
from rsc.cluster_file import remove_cluster_file, write_cluster_file
from rsc.localfs import DirLock, ensure_private_dir, read_key_file
from rsc.probe import LaunchInterrupted, probe
from rsc.transport.address import MAX_UNIX_PATH_BYTES
from rsc.types import check_node_name
from rsc.transport.tls import TlsConfig
from rsc.transport.uds import dead_socket_error

log = get_logger("rsc.launch")

__all__ = ["LaunchInterrupted", "LocalCluster", "NodeStartError"]

STDERR_TAIL_LINES = 200
_RSC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _NodeOptions(argparse.ArgumentParser):
    """The node's option parser as a launcher reads its nodes' settings: a
    value the node would refuse raises ``ValueError`` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


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
                 state_dir: str | None = None, tcp_host: str | None = None,
                 tls: TlsConfig | None = None) -> None:
        """``tcp_host``: the nodes listen on ``tcp:HOST:PORT`` instead of Unix
        sockets, each on a port the system picks at its first start and keeps
        across restarts. ``tls``: mutual TLS for them (one certificate whose
        subjectAltNames name every node, e.g. ``worker-1``..``worker-N``); the
        launcher's own probes present it too."""
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
        if tls is not None and not isinstance(tls, TlsConfig):
            raise ValueError(f"tls must be an rsc.TlsConfig, got {type(tls).__name__}")
        if tls is not None and tcp_host is None:
            raise ValueError("tls is for TCP nodes: give tcp_host too (e.g. '127.0.0.1')")
        self.tcp_host = tcp_host
        self.tls = tls
        self._tcp_addresses: dict[str, str] = {}  # name -> tcp:HOST:PORT once bound
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
        self.names = [check_node_name(f"{name_prefix}-{i}") for i in range(1, n + 1)]
        #: Called as ``on_progress(ready, waiting)`` (two lists of node names,
        #: the newly ready one last in ``ready``) each time a node prints its
        #: READY line during start(); ``rsc launch`` shows it.
        self.on_progress: Callable[[list[str], list[str]], None] | None = None
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
        """Node name -> pid of its current process."""
        return {name: p.pid for name, p in self._procs.items()}

    @property
    def procs(self) -> dict[str, subprocess.Popen]:
        """Node name -> its current ``subprocess.Popen``."""
        return {name: p.proc for name, p in self._procs.items()}

    @property
    def started(self) -> bool:
        """Whether ``start()`` has run (and ``stop()`` has not)."""
        return self._started

    def socket_path(self, name: str) -> str:
        """The Unix socket path of node ``name``."""
        assert self.directory is not None
        return os.path.join(self.directory, f"{name}.sock")

    def address_of(self, name: str) -> str:
        """The address of node ``name`` as a Runtime takes it (``unix:PATH`` or
        ``tcp:HOST:PORT``)."""
        if self.tcp_host is not None:
            host = f"[{self.tcp_host}]" if ":" in self.tcp_host else self.tcp_host
            return self._tcp_addresses.get(name, f"tcp:{host}:0")
        return f"unix:{self.socket_path(name)}"

    def stderr_of(self, name: str) -> str:
        """The tail of what node ``name`` wrote to stderr (its current process,
        or its last one once the cluster is stopped)."""
        p = self._procs.get(name)
        return p.stderr_text(0.0) if p is not None else self.last_stderr.get(name, "")

    def process(self, name: str) -> _NodeProcess:
        """Node ``name``'s current process: ``pid``, ``started_at`` (monotonic),
        ``stderr_text()``. KeyError if it was never started or is stopped."""
        with self._lock:
            return self._procs[name]

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
                self._wait_all_ready(deadline)
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
        """Write the cluster file (``cluster_file``): every node's name, address and pid."""
        assert self.cluster_file is not None
        write_cluster_file(self.cluster_file, self.nodes, self.pids)

    def status(self, timeout_s: float = 5.0) -> dict[str, dict | BaseException]:
        """Each node's STATUS_REPLY stats (or the error that prevented it)."""
        return probe(self.nodes, timeout_s, key=self.key, tls=self.tls)

    # ------------------------------------------------------- context managers
    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def astart(self) -> LocalCluster:
        """``start()`` from a coroutine, without blocking the event loop."""
        return await asyncio.to_thread(self.start)

    async def astop(self, timeout: float | None = None) -> list[int]:
        """``stop(timeout)`` from a coroutine, without blocking the event loop; the pids
        still alive after SIGKILL."""
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
        """How long a SIGTERMed node gets before SIGKILL: its own shutdown bound,
        plus 2 s. The bound is read from what the nodes are started with, by
        the node's own option parser: ``grace`` or ``--grace`` and
        ``--cancel-grace`` in ``extra_args``, else ``RSC_GRACE`` and
        ``RSC_CANCEL_GRACE`` in their environment, else the node's defaults (a
        launcher that assumed the default cancel grace would SIGKILL a node
        given a longer one while it still waits for its cancelled tasks)."""
        from rsc.node.main import add_arguments
        from rsc.node.server import CANCEL_GRACE_S, shutdown_bound_s

        parser = _NodeOptions(add_help=False)
        try:
            if self.directory is None:  # no node was started
                raise ValueError("no node options")
            add_arguments(parser, self._child_env())
            args, _ = parser.parse_known_args(self._argv(self.names[0])[4:])  # after "-m rsc node"
        except ValueError:  # or a value a node refuses: none started with it
            return shutdown_bound_s(self.grace if self.grace is not None else 5.0, CANCEL_GRACE_S) + 2.0
        return shutdown_bound_s(args.grace, args.cancel_grace) + 2.0

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
        if self.tls is not None:
            argv += ["--tls-cert", self.tls.cert, "--tls-key", self.tls.key, "--tls-ca", self.tls.ca]
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

    def _wait_all_ready(self, deadline: float) -> None:
        """Wait for every node's READY line, in whatever order they come,
        telling ``on_progress`` as each arrives."""
        waiting = list(self.names)
        ready: list[str] = []
        while waiting:
            done = [n for n in waiting if self._procs[n].ready.is_set() or not self._procs[n].alive()]
            if not done:
                if self.interrupt.is_set() or time.monotonic() > deadline:
                    done = waiting[:1]  # _wait_ready_line raises the reason
                else:
                    self._procs[waiting[0]].ready.wait(0.05)
                    continue
            for name in done:
                self._wait_ready_line(name, deadline)
                waiting.remove(name)
                ready.append(name)
                if self.on_progress is not None:
                    self.on_progress(list(ready), list(waiting))

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
        if self.tcp_host is not None and name not in self._tcp_addresses and raddr.startswith("tcp:"):
            self._tcp_addresses[name] = raddr  # the port the system picked, kept for restarts
        if rname != name or rpid != p.pid or raddr != self.address_of(name):
            raise self._fail(name, f"printed an unexpected READY line: READY {rname} {rpid} {raddr} "
                                   f"(expected READY {name} {p.pid} {self.address_of(name)})")

    def _check_handshakes(self, names: Sequence[str], deadline: float) -> None:
        remaining = max(0.5, deadline - time.monotonic())
        results = probe({n: self.address_of(n) for n in names}, remaining, self.interrupt, self.key,
                        self.tls)
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
            remove_cluster_file(self.cluster_file)
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

