"""``rsc node``: run one node process until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import threading

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

from rsc.errors import InvalidArgument
from rsc.heap import DEFAULT_KEEP_BYTES, MAX_KEEP_BYTES, keep_freed_memory
from rsc.localfs import read_key_file
from rsc.logs import LEVELS, configure as configure_logging
from rsc.transport.tls import TlsConfig
from rsc.types import check_node_name

if TYPE_CHECKING:  # pragma: no cover
    from rsc.node.server import NodeServer
from rsc.registry import load_registry


GC_GEN0_THRESHOLD = 20_000


ENV_PREFIX = "RSC_"


def add_arguments(p: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """``rsc node``'s options. Every option may also come from the environment
    as ``RSC_`` + its name in capitals with ``_`` for ``-`` (``--tls-cert`` is
    ``RSC_TLS_CERT``; a flag is on when its variable is ``1``/``true``/``yes``/``on``,
    off when it is ``0``/``false``/``no``/``off`` or empty, and any other value
    is a usage error); the command line wins. A container or unit file can then
    configure a node from its environment (see docs/DEPLOY.md). ``environ``:
    the variables to read (default ``os.environ``; a launcher reads its
    nodes' own)."""
    opt = EnvOptions(p, environ)
    opt("--name", required=True, type=node_name,
        help="this node's NodeId, e.g. worker-1: 1 to 255 bytes, no whitespace, control "
             "characters or path separators (in a container, the pod's hostname)")
    opt("--listen", required=True,
        help="where to serve: unix:PATH, or tcp:HOST:PORT (tcp:[::1]:PORT for IPv6; a host that is "
             "not loopback needs --tls-* and --key-file, or --insecure)")
    opt("--registry", required=True, help="package.module:attribute of an rsc.Registry")
    opt("--capacity", type=int, default=16384, help="max tasks running at once")
    opt("--max-input-bytes", type=int, default=16 * 1024 * 1024,
        help="largest input accepted, in bytes")
    opt("--threads", type=int, default=None,
        help="thread pool size for sync computations (default: twice the CPU count, at least 4)")
    opt("--grace", type=float, default=5.0,
        help="seconds running tasks get on shutdown. A node is gone within grace + "
             "max(5 s, 3 x --cancel-grace) + 4 s of SIGTERM whatever its computations do "
             "(grace + 10 s with --cancel-grace 2); a second SIGTERM/SIGINT makes "
             "it leave at once")
    opt("--ttl", type=float, default=300.0, help="seconds results stay for duplicates")
    opt("--max-kept-result-bytes", type=int, default=256 * 1024 * 1024,
        help="bytes of finished results kept for duplicates; past it the oldest are dropped and "
             "a duplicate of one gets ResultNotKept (0 keeps none)")
    opt("--heap-keep-bytes", type=heap_keep_bytes, default=DEFAULT_KEEP_BYTES,
        help="freed memory the node keeps for its next allocations instead of returning it to "
             "the system, e.g. 256MiB (glibc only; rsc.heap): large payloads then reuse mapped "
             "pages instead of faulting in new ones for every task. 0 leaves malloc as it is")
    opt("--peers", default=None,
        help="cluster file of nodes this node's computations may spawn on (nested work)")
    opt("--key-file", default=None,
        help="file holding the cluster key (>= 16 bytes, mode 600): the handshake then "
             "proves it both ways")
    opt("--tls-cert", default=None,
        help="PEM certificate of this node for a tcp: listener; its subjectAltName must name "
             "the node (--name) as a DNS name")
    opt("--tls-key", default=None, help="PEM private key of --tls-cert (mode 600)")
    opt("--tls-ca", default=None,
        help="PEM CA certificate(s): clients must present a certificate it issued")
    opt("--insecure", action="store_true",
        help="allow a non-loopback tcp: listener without TLS and a cluster key (a trusted "
             "network only)")
    opt("--allow-uid", type=int, action="append", default=None, metavar="UID",
        help="on a Unix socket, also accept connections from this user id (repeatable; "
             "checked with SO_PEERCRED; by default only this process's own user)")
    opt("--lifeline-stdin", action="store_true",
        help="shut down gracefully when stdin closes (the launcher died)")
    opt("--trace", default=None, help="append trace events as JSON lines to this file")
    opt("--state-dir", default=None,
        help="directory of this node's durable idempotency journal (created 0700; one node "
             "per directory): records, results and tombstones survive a restart")
    opt("--handshake-timeout", type=float, default=10.0,
        help="seconds a connection may take to finish its handshake, a TLS one included")
    opt("--frame-timeout", type=float, default=30.0,
        help="seconds a started frame may stay incomplete")
    opt("--isolation", choices=("thread", "process"), default="thread",
        help="where sync computations registered without isolation= run: thread, the "
             "node's threads (fast, but a cancel cannot interrupt a blocking call), or process, "
             "worker processes (a cancel always wins, a crash is one task's outcome)")
    opt("--workers", type=int, default=None,
        help="worker processes for process-isolated computations (default: the CPU "
             "count, at least 2)")
    opt("--time-limit", type=float, default=None,
        help="seconds a process-isolated computation may run before its worker is "
             "killed (TimeLimitExceeded), unless it sets time_limit= (default: none)")
    opt("--memory-limit", type=parse_bytes, default=None,
        help="address space a process-isolated computation may add, e.g. 512MiB or 2G "
             "(MemoryLimitExceeded), unless it sets memory_limit= (default: none)")
    opt("--max-tasks-per-worker", type=int, default=None,
        help="replace a worker process after it ran this many tasks (default: never)")
    opt("--cancel-grace", type=float, default=2.0,
        help="seconds a cancelled sync computation gets to stop by itself before its "
             "thread is interrupted or its worker process killed")
    opt("--no-catalogue", action="store_true",
        help="do not tell origins what this node serves (WELCOME's computation catalogue); "
             "origins then learn of an unknown computation or a wrong codec only from the "
             "node's rejection")
    opt("--require-capability", action="store_true",
        help="run nothing without a capability token that allows it (rsc.capability); "
             "needs --root-key-file or --node-key-file")
    opt("--root-key-file", action="append", default=None, metavar="[KEY_ID=]PATH",
        help="the cluster's capability root key (mode 600); this node derives its own "
             "key from it. Repeat with other key ids to accept several (rotation). "
             "KEY_ID defaults to 'default'")
    opt("--node-key-file", action="append", default=None, metavar="[KEY_ID=]PATH",
        help="this node's derived capability key (rsc.capability.node_key), instead "
             "of the root key: a node that holds only it cannot mint for others")
    opt("--log-level", default="INFO", type=str.upper, choices=LEVELS,
        help="rsc's log records at this level and above go to stderr, one line each: INFO is "
             "one line per event that matters (start, stop, connections, refusals), never one "
             "per task")
    opt("--metrics-port", type=int, default=None, metavar="PORT",
        help="serve Prometheus metrics at http://METRICS_HOST:PORT/metrics (needs the "
             "prometheus-client package: pip install 'rsc[metrics]'); 0 picks a free port, "
             "printed as METRICS <url> on stdout")
    opt("--metrics-host", default="127.0.0.1",
        help="the address --metrics-port listens on (0.0.0.0: every interface)")


_KIND_NAMES = {int: "an integer", float: "a number of seconds"}
_SWITCH_ON = ("1", "true", "yes", "on")  # what turns a flag's RSC_ variable on
_SWITCH_OFF = ("0", "false", "no", "off")


def node_name(text: str) -> str:
    """``--name``: a valid NodeId (``rsc.types.check_node_name``), else a usage error."""
    try:
        return check_node_name(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class EnvOptions:
    """``add_argument`` with the default taken from ``RSC_<NAME>`` when set.
    A value that does not convert is a usage error naming the variable."""

    def __init__(self, parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
        self.parser = parser
        self.environ = os.environ if environ is None else environ

    def __call__(self, flag: str, **kw: Any) -> None:
        var = ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")
        raw = self.environ.get(var)
        if raw is not None and raw != "":
            kw["required"] = False
            if kw.get("action") == "store_true":
                word = raw.strip().lower()
                if word not in _SWITCH_ON and word not in _SWITCH_OFF:
                    # a typo must not leave a safety switch (--require-capability) silently off
                    self.parser.error(f"{var}={raw!r}: {flag} is a switch: set it to 1, true, yes or on, "
                                      "or to 0, false, no, off or empty to leave it off")
                kw["default"] = word in _SWITCH_ON
            elif kw.get("action") == "append":
                kind = kw.get("type", str)
                try:
                    kw["default"] = [kind(v) for v in raw.replace(",", " ").split()]
                except ValueError:
                    self.parser.error(f"{var}={raw!r}: {flag} takes numbers separated by commas")
            else:
                kind = kw.get("type", str)
                try:
                    kw["default"] = kind(raw)
                except argparse.ArgumentTypeError as exc:
                    self.parser.error(f"{var}={raw!r}: {exc}")
                except ValueError:
                    self.parser.error(f"{var}={raw!r}: {flag} takes {_KIND_NAMES.get(kind, 'a value')}")
        kw["help"] = f"{kw.get('help', '')} [env {var}]".strip()
        self.parser.add_argument(flag, **kw)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30}


def heap_keep_bytes(text: str) -> int:
    """``--heap-keep-bytes``: a size as ``parse_bytes`` reads it, or 0, at most
    2**31-1 (what malloc takes), else a usage error."""
    value = 0 if text.strip() == "0" else parse_bytes(text)
    if value > MAX_KEEP_BYTES:
        raise argparse.ArgumentTypeError(f"{text!r} is over the most malloc can keep "
                                         f"({MAX_KEEP_BYTES} bytes, just under 2GiB)")
    return value


def parse_bytes(text: str) -> int:
    """``"512MiB"``, ``"2G"``, ``"1048576"`` -> bytes (K/M/G are binary, KB/MB/GB decimal)."""
    t = text.strip().lower().replace(" ", "")
    num = t.rstrip("kmgib")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; write bytes, or a number with K, M, G (binary) or KB, MB, GB")
    return int(value * _UNITS[unit])


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed, else stock asyncio (same behaviour)."""
    if os.environ.get("RSC_NO_UVLOOP", "") in ("", "0"):
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def _serve(args: argparse.Namespace) -> int:
    from rsc.node.server import NodeServer

    registry = load_registry(args.registry)
    for flag, v in (("--capacity", args.capacity), ("--max-input-bytes", args.max_input_bytes)):
        if v < 1:
            raise InvalidArgument(f"{flag} must be at least 1, got {v}")
    if args.max_kept_result_bytes < 0:
        raise InvalidArgument(f"--max-kept-result-bytes must be bytes >= 0, got {args.max_kept_result_bytes}")
    if not args.cancel_grace >= 0:
        raise InvalidArgument(f"--cancel-grace must be seconds >= 0, got {args.cancel_grace}")
    from rsc.trace import Trace

    key = read_key_file(args.key_file) if args.key_file else None
    from rsc.node.tokens import gate_from_files

    gate = gate_from_files(args.name, args.require_capability, args.root_key_file or [],
                           args.node_key_file or [])
    tls = TlsConfig.from_args(args.tls_cert, args.tls_key, args.tls_ca)
    trace = Trace(args.name, args.trace) if args.trace else None
    server = NodeServer(args.name, args.listen, registry, capacity=args.capacity,
                        max_input_bytes=args.max_input_bytes, max_threads=args.threads,
                        ttl_s=args.ttl, grace_s=args.grace, peers=args.peers, trace=trace,
                        max_kept_result_bytes=args.max_kept_result_bytes,
                        key=key, state_dir=args.state_dir,
                        handshake_timeout_s=args.handshake_timeout,
                        frame_timeout_s=args.frame_timeout, capabilities=gate,
                        cancel_grace_s=args.cancel_grace,
                        isolation=args.isolation, workers=args.workers,
                        time_limit=args.time_limit, memory_limit=args.memory_limit,
                        max_tasks_per_worker=args.max_tasks_per_worker,
                        tls=tls, insecure=args.insecure, allow_uids=tuple(args.allow_uid or ()),
                        catalogue=not args.no_catalogue)
    metrics = None
    if args.metrics_port is not None:
        from rsc.metrics import serve_node_metrics

        metrics = serve_node_metrics(server, args.metrics_port, args.metrics_host)
    try:
        await server.start()
        tune_gc()
        stopper = _Stopper(server, asyncio.get_running_loop())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stopper.on_signal)
        if args.lifeline_stdin:
            await _watch_lifeline(stopper.begin)
        if metrics is not None:
            print(f"METRICS {metrics.url}", flush=True)
        print(f"READY {server.name} {os.getpid()} {server.address}", flush=True)
        await server.serve_until_stopped()
    finally:
        if metrics is not None:
            metrics.close()
    return 0


def tune_gc() -> None:
    """Set up the collector for a long-running server process.

    Everything alive once the node is listening (modules, the registry, the
    engine) is moved out of the collector's sight with ``gc.freeze()``, so no
    collection walks it again; and the youngest generation collects every
    GC_GEN0_THRESHOLD allocations instead of 700, so a burst of spawns is not
    interrupted by a young collection every few dozen tasks. Per-task garbage
    has no reference cycles on the happy path (it is freed by reference
    counting), so collections find little and mostly cost their traversal.
    """
    gc.collect()
    gc.freeze()
    _g0, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)


class _Stopper:
    """How a node process leaves, within ``NodeServer.shutdown_bound_s`` of
    being asked whatever its computations do.

    The first SIGTERM/SIGINT (or the lifeline closing) arms a watchdog thread
    and starts the graceful shutdown on the loop. If the shutdown has not
    finished when the bound is over (the loop is held by a computation, or a
    step hangs), the watchdog removes the socket and leaves with
    ``os._exit(1)``. A second signal does the same at once, with exit code
    128 + the signal.

    The signal handler is a plain ``signal.signal`` one, not the loop's: Python
    runs it in the main thread between bytecodes even while a computation holds
    the loop thread, so the watchdog is armed and a second signal obeyed
    whatever the loop is doing (a call blocked in C delays it until it returns).
    """

    def __init__(self, server: "NodeServer", loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self._watchdog: threading.Timer | None = None

    def begin(self) -> None:
        """Arm the watchdog (once) and start the graceful shutdown (on the loop thread)."""
        self._arm()
        self.server.request_shutdown()

    def on_signal(self, sig: int, _frame: Any = None) -> None:
        if self._watchdog is None:
            self._arm()
            self.loop.call_soon_threadsafe(self.server.request_shutdown)
        else:
            self.leave_now(128 + sig, f"second {signal.Signals(sig).name} during shutdown")

    def _arm(self) -> None:
        if self._watchdog is None:
            bound = self.server.shutdown_bound_s
            self._watchdog = threading.Timer(
                bound, self.leave_now, (1, f"shutdown still running after {bound:.1f} s"))
            self._watchdog.daemon = True
            self._watchdog.start()

    def leave_now(self, code: int, why: str) -> None:
        """Leave the process now: remove our socket, flush, ``os._exit``."""
        self.server.remove_socket()
        logging.getLogger("rsc.node").warning("node %s: %s; exiting now", self.server.name, why)
        _exit(code)


class _Lifeline(asyncio.Protocol):
    def __init__(self, on_close: "Callable[[], None]") -> None:
        self._on_close = on_close

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_close()


async def _watch_lifeline(on_close: "Callable[[], None]") -> None:
    """Whoever started us holds our stdin open; EOF means it is gone."""
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: _Lifeline(on_close), sys.stdin)


def _stuck_threads() -> list[threading.Thread]:
    """Threads that would keep the interpreter from exiting (a computation
    blocked in C holds a pool thread, and the pool joins its threads at exit)."""
    return [t for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and not t.daemon]


def _exit(code: int) -> None:
    """``os._exit`` after flushing what Python would have flushed (best effort:
    this may run in a signal handler that interrupted a write)."""
    try:
        logging.shutdown()
    except Exception:  # pragma: no cover - a handler broken mid-write
        pass
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # pragma: no cover - closed, or re-entered from a signal handler
            pass
    os._exit(code)


def run(args: argparse.Namespace) -> int:
    """``rsc node``: serve until SIGTERM/SIGINT. Exit 0 after a graceful stop,
    1 when the node cannot listen, 2 on bad arguments (a registry that does
    not import included); the reason is one line on stderr."""
    configure_logging(args.log_level)
    log = logging.getLogger("rsc.node")
    keep_freed_memory(args.heap_keep_bytes)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            code = runner.run(_serve(args))
    except InvalidArgument as exc:
        print(f"rsc node {args.name}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rsc node {args.name}: cannot listen on {args.listen}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    log.info("node %s stopped", args.name)
    stuck = _stuck_threads()
    if stuck:  # the shutdown already reported their tasks abandoned; do not wait for them
        log.warning("node %s: %d thread(s) still blocked (%s); leaving without them", args.name,
                    len(stuck), ", ".join(t.name for t in stuck))
        _exit(code)
    return code
