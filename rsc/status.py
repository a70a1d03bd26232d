"""``rsc status``: every node of a cluster, its figures or why it did not answer."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from rsc.cluster_file import InvalidClusterFile, default_cluster_file, gone_launcher, read_cluster_file
from rsc.errors import InvalidArgument
from rsc.localfs import read_key_file
from rsc.probe import probe
from rsc.transport.tls import TlsConfig
from rsc.transport.uds import dead_socket_error

__all__ = ["DETAILS", "add_arguments", "collect", "run"]

#: ``rsc status --help`` after its one-line summary.
DETAILS = """\
Without --cluster it reads the default cluster file, the one `rsc launch` writes
when given neither --dir nor --cluster-file ($RSC_CLUSTER_FILE, else
$XDG_RUNTIME_DIR/rsc/cluster.json, else /tmp/rsc-UID/cluster.json).

Columns: RUNNING tasks now; ACCEPTED, COMPLETED, FAILED, CANCELLED, REJECTED
since the node started; WORKERS alive/size of its worker pool ("-" without
one); RESTARTS of worker processes; RSS MiB; UPTIME.

--json prints one object:
  {"cluster": PATH, "stale": null or {"launcher_pid": PID},
   "nodes": {NAME: {"address": ADDR, "pid": PID or null, "reachable": true,
                    "stats": {...the node's STATUS_REPLY figures...}}
             NAME: {"address": ADDR, "pid": PID or null, "reachable": false,
                    "down": true when nothing listens there, "error": "Type: why"}}}
With --watch, one such object per line at each refresh.

Exit status: 0 when every node answered, 1 when one did not or the cluster file
is stale (its launcher is gone), 2 when the cluster file cannot be read."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``rsc status``'s options."""
    p.add_argument("--cluster", default=None, metavar="FILE",
                   help="cluster file written by rsc launch (default: the default cluster file, "
                        "see above)")
    p.add_argument("--node", action="append", default=None, metavar="NAME",
                   help="show only this node (repeatable)")
    p.add_argument("--json", action="store_true",
                   help="print the figures as JSON (format above) instead of a table")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (2 when not given) in place, like top; Ctrl-C "
                        "quits")
    p.add_argument("--timeout", type=float, default=3.0,
                   help="seconds each node has to answer")
    p.add_argument("--key-file", default=None, help="cluster key file (mode 600), for a keyed cluster")
    p.add_argument("--tls-cert", default=None, help="PEM client certificate from the cluster's CA "
                                                    "(tcp: nodes with mutual TLS)")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert (mode 600)")
    p.add_argument("--tls-ca", default=None, help="PEM CA that issued the nodes' certificates")
    p.add_argument("--computations", action="store_true",
                   help="list what the nodes serve: name, codec, kind, isolation, docstring")


def run(args: argparse.Namespace) -> int:
    """``rsc status``: see :data:`DETAILS` for the output and exit status."""
    path = os.path.abspath(getattr(args, "cluster", None) or default_cluster_file())
    try:
        key = read_key_file(args.key_file) if getattr(args, "key_file", None) else None
        tls = TlsConfig.from_args(getattr(args, "tls_cert", None), getattr(args, "tls_key", None),
                                  getattr(args, "tls_ca", None))
    except InvalidArgument as exc:
        print(f"rsc status: {exc}", file=sys.stderr)
        return 2
    timeout = float(getattr(args, "timeout", 3.0) or 3.0)
    only = getattr(args, "node", None)
    if getattr(args, "computations", False):
        return _show_computations(path, args.json, timeout, key, tls, only)
    watch = getattr(args, "watch", None)
    if watch is None:
        return _show(path, args.json, timeout, key, tls, only, sys.stdout)
    if not watch > 0:
        print(f"rsc status: --watch takes a number of seconds > 0, got {watch:g}", file=sys.stderr)
        return 2
    try:
        while True:
            if args.json:
                code = _show(path, True, timeout, key, tls, only, sys.stdout, compact=True)
            else:
                sys.stdout.write("\033[H\033[2J")  # home, clear screen
                print(f"rsc status  {path}  {time.strftime('%H:%M:%S')}  (every {watch:g} s; "
                      "Ctrl-C quits)\n")
                code = _show(path, False, timeout, key, tls, only, sys.stdout)
            sys.stdout.flush()
            time.sleep(watch)
    except KeyboardInterrupt:
        return 0
    return code  # pragma: no cover - the loop ends by Ctrl-C


def _show_computations(path: str, as_json: bool, timeout: float, key: bytes | None,
                       tls: TlsConfig | None, only: list[str] | None) -> int:
    """``rsc status --computations``: what each node serves; exit 1 if a node did not answer."""
    from rsc.catalogue_cli import fetch_computations, print_computations

    try:
        entries = _entries(path, only)
    except InvalidClusterFile as exc:
        print(f"rsc status: cannot read cluster file {path}: {exc.problem}", file=sys.stderr)
        return 2
    except InvalidArgument as exc:
        print(f"rsc status: {exc}", file=sys.stderr)
        return 2
    served, alive = _split_dead(entries)
    if alive:
        served.update(fetch_computations(alive, timeout, key, tls))
    print_computations({n: served[n] for n in entries}, sys.stdout, as_json)
    return 1 if any(isinstance(r, BaseException) for r in served.values()) else 0


def _show(path: str, as_json: bool, timeout: float, key: bytes | None, tls: TlsConfig | None,
          only: list[str] | None, out: IO[str], compact: bool = False) -> int:
    try:
        report = collect(path, timeout, key=key, tls=tls, only=only)
    except InvalidClusterFile as exc:
        hint = ""
        if not os.path.exists(path) and path == default_cluster_file():
            hint = (" (rsc launch writes it there when started without --dir or --cluster-file; "
                    "or give --cluster FILE)")
        print(f"rsc status: cannot read cluster file {path}: {exc.problem}{hint}", file=sys.stderr)
        return 2
    except InvalidArgument as exc:
        print(f"rsc status: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report, indent=None if compact else 2, default=str), file=out)
    elif report["stale"] is not None:
        print(f"cluster file {path} is stale: its launcher (pid {report['stale']['launcher_pid']}) "
              "is gone, and its nodes with it; start the cluster again (rsc launch)", file=out)
    else:
        _print_status_table(report["nodes"], out)
    out.flush()
    stale = report["stale"] is not None
    return 1 if stale or any(not r["reachable"] for r in report["nodes"].values()) else 0


def collect(path: str, timeout_s: float = 3.0, *, key: bytes | None = None,
            tls: TlsConfig | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """What ``rsc status --json`` prints for the cluster file at ``path``
    (see :data:`DETAILS`). A stale file (its launcher is gone) has
    ``stale`` set and its nodes are not asked. ``only``: these nodes
    (``InvalidArgument`` naming the others for a name the file lacks).
    Raises :class:`InvalidClusterFile` when the file cannot be read."""
    entries = _entries(path, only)
    report: dict[str, Any] = {"cluster": os.path.abspath(path), "stale": None, "nodes": {}}
    pid = gone_launcher(path)
    if pid is not None:
        report["stale"] = {"launcher_pid": pid}
        return report
    results, alive = _split_dead(entries)
    if alive:
        results.update(probe(alive, timeout_s, key=key, tls=tls))
    for name, e in entries.items():
        r = results[name]
        row: dict[str, Any] = {"address": e["address"], "pid": e["pid"],
                               "reachable": not isinstance(r, BaseException)}
        if isinstance(r, BaseException):
            row["error"] = f"{type(r).__name__}: {r}"
            row["down"] = isinstance(r, (FileNotFoundError, ConnectionRefusedError))
        else:
            row["stats"] = r
        report["nodes"][name] = row
    return report


def _entries(path: str, only: list[str] | None) -> dict[str, Any]:
    """The cluster file's entries, only those named in ``only`` when given
    (``InvalidArgument`` naming the file's nodes for a name it lacks)."""
    entries = read_cluster_file(path)
    if only:
        unknown = [n for n in only if n not in entries]
        if unknown:
            raise InvalidArgument(f"no node {', '.join(map(repr, unknown))} in {path}; its nodes: "
                                  f"{', '.join(entries)}")
        entries = {n: e for n, e in entries.items() if n in only}
    return entries


def _split_dead(entries: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the error of each node that is certainly down, the addresses of the
    others): a dead node answers at once, not after the timeout."""
    dead: dict[str, Any] = {}
    for name, e in entries.items():
        why = _refused(e["address"])
        if why is not None:
            dead[name] = why
    return dead, {n: e["address"] for n, e in entries.items() if n not in dead}


def _refused(address: str) -> OSError | None:
    """The error of a plain connect to a Unix-socket address when nobody can
    be listening there (no socket file, connection refused): the node is down."""
    if not address.startswith("unix:"):
        return None
    return dead_socket_error(address[len("unix:"):])


def _fmt_uptime(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


_COLUMNS = ["NAME", "PID", "RUNNING", "ACCEPTED", "COMPLETED", "FAILED", "CANCELLED", "REJECTED",
            "WORKERS", "RESTARTS", "RSS MiB", "UPTIME"]


def _row(name: str, pid: Any, r: Mapping[str, Any]) -> list[str]:
    return [name, str(r.get("pid", pid)), str(r.get("running", "?")),
            str(r.get("accepted", "?")), str(r.get("completed", "?")), str(r.get("failed", "?")),
            str(r.get("cancelled", "?")), str(r.get("rejected", "?")),
            f"{r['workers_alive']}/{r['workers']}" if "workers" in r else "-",
            str(r.get("worker_restarts", "-")),
            f"{r.get('rss_bytes', 0) / 2**20:.1f}", _fmt_uptime(r.get("uptime_s", 0))]


def _print_status_table(nodes: Mapping[str, Mapping[str, Any]], out: IO[str]) -> None:
    # WORKERS: alive/size of the node's worker pool ("-" without one); RESTARTS:
    # worker processes it replaced (crashed, killed for a cancel or a time
    # limit, recycled), so a computation that keeps crashing shows here.
    rows: list[list[str]] = []
    for name, n in nodes.items():
        if not n["reachable"]:
            state = "down" if n["down"] else "unreachable"
            rows.append([name, str(n.get("pid") or "-"), f"{state} ({n['error']})"])
        else:
            rows.append(_row(name, n.get("pid"), n["stats"]))
    cols = _COLUMNS
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
