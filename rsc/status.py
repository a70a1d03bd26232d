"""``rsc status``: every node of a cluster file, its stats or why it did not answer."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import IO, Any

from rsc.cluster_file import InvalidClusterFile, read_cluster_file
from rsc.errors import InvalidArgument
from rsc.localfs import read_key_file
from rsc.probe import probe
from rsc.transport.tls import TlsConfig
from rsc.transport.uds import dead_socket_error

__all__ = ["add_arguments", "run"]


def _fmt_uptime(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, help="cluster file written by rsc launch")
    p.add_argument("--json", action="store_true")
    p.add_argument("--key-file", default=None, help="cluster key file (mode 600), for a keyed cluster")
    p.add_argument("--tls-cert", default=None, help="PEM client certificate from the cluster's CA "
                                                    "(tcp: nodes with mutual TLS)")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert (mode 600)")
    p.add_argument("--tls-ca", default=None, help="PEM CA that issued the nodes' certificates")
    p.add_argument("--node", default=None, help="only this node of the cluster file")
    p.add_argument("--computations", action="store_true",
                   help="list what the nodes serve: name, codec, kind, isolation, docstring")


def run(args: argparse.Namespace) -> int:
    """``rsc status --cluster FILE [--json]``: every node's stats; exit 1 if any
    node is unreachable, 2 if the cluster file cannot be read."""
    try:
        entries = read_cluster_file(args.cluster)
    except InvalidClusterFile as exc:
        print(f"rsc status: cannot read cluster file {exc.path}: {exc.problem}", file=sys.stderr)
        return 2
    if getattr(args, "node", None) is not None:
        if args.node not in entries:
            print(f"rsc status: no node {args.node!r} in {args.cluster} (it has: "
                  f"{', '.join(entries) or 'none'})", file=sys.stderr)
            return 2
        entries = {args.node: entries[args.node]}
    timeout = float(getattr(args, "timeout", 3.0) or 3.0)
    results: dict[str, dict | BaseException] = {}
    for name, e in entries.items():  # a dead node answers at once, not after the timeout
        why = _refused(e["address"])
        if why is not None:
            results[name] = why
    alive = {n: e["address"] for n, e in entries.items() if n not in results}
    try:
        key = read_key_file(args.key_file) if getattr(args, "key_file", None) else None
        tls = TlsConfig.from_args(getattr(args, "tls_cert", None), getattr(args, "tls_key", None),
                                  getattr(args, "tls_ca", None))
    except InvalidArgument as exc:
        print(f"rsc status: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "computations", False):
        from rsc.catalogue_cli import fetch_computations, print_computations

        served: dict[str, Any] = {**results, **(fetch_computations(alive, timeout, key, tls)
                                                if alive else {})}
        print_computations({n: served[n] for n in entries}, sys.stdout, args.json)
        return 1 if any(isinstance(r, BaseException) for r in served.values()) else 0
    if alive:
        results.update(probe(alive, timeout, key=key, tls=tls))
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
    # WORKERS: alive/size of the node's worker pool ("-" without one); RESTARTS:
    # worker processes it replaced (crashed, killed for a cancel or a time
    # limit, recycled), so a computation that keeps crashing shows here.
    cols = ["NAME", "PID", "RUNNING", "ACCEPTED", "COMPLETED", "FAILED", "CANCELLED", "WORKERS",
            "RESTARTS", "RSS MiB", "UPTIME"]
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
                     f"{r['workers_alive']}/{r['workers']}" if "workers" in r else "-",
                     str(r.get("worker_restarts", "-")),
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
