"""``rsc launch``: start a local cluster, print where it listens, supervise it.

``rsc launch`` / ``scripts/launch_nodes.py`` starts the nodes (a
:class:`~rsc.supervise.LocalCluster`), writes the cluster file, prints where
they listen, supervises them (``--restart`` brings a dead node back under the
same name and address; without it a dead node stays down and the others keep
serving) and stops them all on Ctrl-C or SIGTERM. A launcher locks its
directory while its cluster runs.

The launcher's parts live in modules named for what they hold:
:mod:`rsc.supervise` (``LocalCluster``: node processes), :mod:`rsc.cluster_file`
(the cluster file's one reader and writer), :mod:`rsc.probe` (asking nodes for
their stats) and :mod:`rsc.status` (``rsc status``). Their public names stay
importable from here.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from rsc.cluster_file import (
    InvalidClusterFile,
    default_cluster_file,
    gone_launcher,
    read_cluster_file,
    write_cluster_file,
)
from rsc.errors import InvalidArgument
from rsc.localfs import ensure_private_dir
from rsc.logs import LEVELS
from rsc.probe import LaunchInterrupted, probe
from rsc.status import run as status  # `rsc status`, by the name it always had here
from rsc.supervise import LocalCluster, NodeStartError
from rsc.transport.tls import TlsConfig

__all__ = ["InvalidClusterFile", "LaunchInterrupted", "LocalCluster", "NodeStartError",
           "add_arguments", "probe", "read_cluster_file", "run", "status", "write_cluster_file"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``rsc launch``'s options."""
    p.add_argument("-n", "--nodes", type=int, default=os.cpu_count() or 1,
                   help="how many nodes to start (default: one per core, %(default)s here)")
    p.add_argument("--registry", required=True, help="package.module:attribute of an rsc.Registry")
    p.add_argument("--dir", default=None,
                   help="directory for the sockets, locked while the cluster runs (created 0700 "
                        "and removed on exit when missing; an existing one keeps its mode and must "
                        "be yours and not writable by others; default: a fresh temporary one)")
    p.add_argument("--name-prefix", default="worker", help="nodes are named PREFIX-1..N")
    p.add_argument("--cluster-file", default=None,
                   help="where to write the cluster file (default: with --dir, DIR/cluster.json; "
                        "without, the default cluster file that rsc status reads, "
                        "$RSC_CLUSTER_FILE or $XDG_RUNTIME_DIR/rsc/cluster.json or "
                        "/tmp/rsc-UID/cluster.json, unless another running launcher owns it)")
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
    p.add_argument("--tcp-host", default=None,
                   help="nodes listen on tcp:TCP_HOST:PORT (ports picked by the system, kept across "
                        "restarts) instead of Unix sockets; a host that is not loopback needs "
                        "--tls-* and --key-file")
    p.add_argument("--tls-cert", default=None,
                   help="PEM certificate every node presents (its subjectAltNames must name every "
                        "node, PREFIX-1..N); the launcher's probes present it too")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert (mode 600)")
    p.add_argument("--tls-ca", default=None, help="PEM CA the nodes and the launcher trust")
    p.add_argument("--state-dir", default=None,
                   help="give each node a durable idempotency journal in STATE_DIR/NAME (rsc node "
                        "--state-dir): a node restarted on it keeps its records, so a resent key "
                        "is still answered at most once")
    p.add_argument("--isolation", choices=("thread", "process"), default=None,
                   help="each node's default for plain computations registered without isolation= "
                        "(rsc node --isolation; node default thread)")
    p.add_argument("--workers", type=int, default=None,
                   help="each node's worker processes for process-isolated computations")
    p.add_argument("--time-limit", default=None,
                   help="each node's default time limit (s) for process-isolated computations")
    p.add_argument("--memory-limit", default=None,
                   help="each node's default memory limit for process-isolated computations, "
                        "e.g. 512MiB")
    p.add_argument("--max-tasks-per-worker", default=None,
                   help="each node replaces a worker process after this many tasks")
    p.add_argument("--ready-timeout", type=float, default=30.0,
                   help="seconds each node gets to become ready")
    p.add_argument("--node-log-level", default="WARNING", type=str.upper, choices=LEVELS,
                   help="each node's --log-level: what of its log the launcher echoes (INFO adds "
                        "a line per connection, `rsc status` calls included)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the cluster file path; no progress, and the nodes' stderr is "
                        "not echoed")


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


def _node_isolation_args(args: argparse.Namespace) -> list[str]:
    """The isolation flags given to ``rsc launch``, passed on to every node
    (which checks them and says what to fix)."""
    out: list[str] = []
    for flag, attr in (("--isolation", "isolation"), ("--workers", "workers"),
                       ("--time-limit", "time_limit"), ("--memory-limit", "memory_limit"),
                       ("--max-tasks-per-worker", "max_tasks_per_worker")):
        value = getattr(args, attr, None)
        if value is not None:
            out += [flag, str(value)]
    return out


def _say(msg: str) -> None:
    print(f"rsc launch: {msg}", file=sys.stderr, flush=True)


def _print_table(cluster: LocalCluster, registry: str) -> None:
    nodes, pids = cluster.nodes, cluster.pids
    w = max(4, *(len(n) for n in nodes))
    lines = [f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} ready (registry {registry})",
             f"{'NAME':<{w}}  {'PID':>7}  ADDRESS"]
    lines += [f"{name:<{w}}  {pids[name]:>7}  {addr}" for name, addr in nodes.items()]
    lines.append(f"cluster file: {cluster.cluster_file}")
    if cluster.cluster_file == default_cluster_file():
        lines.append("`rsc status` shows the nodes; Ctrl-C or SIGTERM stops every node.")
    else:
        lines.append(f"`rsc status --cluster {cluster.cluster_file}` shows the nodes; Ctrl-C or "
                     "SIGTERM stops every node.")
    print("\n".join(lines), flush=True)


class _Progress:
    """Which nodes are ready and which not yet, while a cluster starts: one
    line redrawn in place on a terminal, one line per node otherwise."""

    def __init__(self, total: int, out: Any = None) -> None:
        self.total = total
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty()
        self.t0 = time.monotonic()

    def __call__(self, ready: list[str], waiting: list[str]) -> None:
        elapsed = time.monotonic() - self.t0
        if self.tty:
            rest = f"; waiting for {', '.join(waiting)}" if waiting else ""
            self.out.write(f"\r\033[Krsc launch: {len(ready)}/{self.total} ready "
                           f"({elapsed:.1f} s){rest}")
            if not waiting:
                self.out.write("\n")
        else:
            self.out.write(f"rsc launch: {ready[-1]} ready ({len(ready)}/{self.total}, "
                           f"{elapsed:.1f} s)\n")
        self.out.flush()


def _default_cluster_file() -> str | None:
    """The default cluster file, for a launcher given neither --dir nor
    --cluster-file; None (the cluster file goes in its directory) when
    another launcher that still runs owns it. A stale one is replaced."""
    path = default_cluster_file()
    ensure_private_dir(os.path.dirname(path), "the default cluster file's directory")
    if os.path.lexists(path):
        try:
            stale = gone_launcher(path) is not None
        except InvalidClusterFile:
            stale = True  # not a cluster file any more: ours to replace
        if not stale:
            _say(f"another launcher's cluster uses the default cluster file {path}; this "
                 "cluster's file goes in its own directory")
            return None
    return path


def run(args: argparse.Namespace) -> int:
    """``rsc launch``: start, supervise, stop. A node that dies is restarted
    with --restart (with back-off), else it stays down while the others keep
    serving. Exit 0 after a requested stop, 1 when a node fails to start or
    every node is down, 2 on bad arguments (an unsafe or busy --dir included)."""
    if args.nodes < 1:
        _say(f"--nodes must be at least 1, got {args.nodes}")
        return 2
    from rsc.logs import configure

    # the launcher's own events; its probes' connections (rsc.origin) only when they fail
    configure("WARNING", fmt="rsc launch: %(message)s")
    logging.getLogger("rsc.launch").setLevel(logging.INFO)
    stop = threading.Event()
    got: list[int] = []
    # A node's stderr is echoed once the cluster is up. While it starts, the
    # tail is only kept: a node that fails to start is reported with it
    # (once, not once per node that failed the same way).
    echo = threading.Event()

    def sink(name: str, line: str) -> None:
        if echo.is_set():
            print(f"[{name}] {line}", file=sys.stderr, flush=True)

    try:
        cluster_file = args.cluster_file
        if cluster_file is None and args.dir is None:
            cluster_file = _default_cluster_file()
        tls = TlsConfig.from_args(args.tls_cert, args.tls_key, args.tls_ca)
        cluster = LocalCluster(
            args.nodes, args.registry, directory=args.dir, name_prefix=args.name_prefix,
            capacity=args.capacity, threads=args.threads, grace=args.grace,
            cluster_file=cluster_file, ready_timeout=args.ready_timeout,
            stderr_sink=None if args.quiet else sink, key_file=args.key_file,
            state_dir=args.state_dir, extra_args=[*_node_isolation_args(args), "--log-level", args.node_log_level],
            tcp_host=args.tcp_host, tls=tls)
    except (ValueError, InvalidArgument) as exc:
        _say(str(exc))
        return 2
    if not args.quiet:
        cluster.on_progress = _Progress(args.nodes)

    def on_signal(signum: int, _frame: Any) -> None:
        got.append(signum)
        stop.set()
        cluster.interrupt.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return _run_cluster(cluster, args, stop, got, echo)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _run_cluster(cluster: LocalCluster, args: argparse.Namespace, stop: threading.Event,
                 got: list[int], echo: threading.Event) -> int:
    if not args.quiet:
        _say(f"starting {cluster.n} node{'s' if cluster.n != 1 else ''} "
             f"({', '.join(cluster.names) if cluster.n <= 4 else cluster.names[0] + '..' + cluster.names[-1]}) "
             f"with registry {args.registry}")
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
    echo.set()
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
                p = cluster.process(name)
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
                except NodeStartError as exc:  # its stderr was echoed already unless --quiet
                    _say(f"restart failed: {exc if args.quiet else exc.reason}")
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

