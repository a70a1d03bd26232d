"""The ``rsc`` command: ``rsc node``, ``rsc launch``, ``rsc status``, ``rsc probe``, ``rsc lab``,
``rsc trace``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """The ``rsc`` command: parse ``argv`` (default: the process's arguments), run the
    subcommand, return its exit status."""
    from rsc import __version__

    parser = argparse.ArgumentParser(prog="rsc", description="remote structured concurrency")
    parser.add_argument("--version", action="version", version=f"rsc {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True)

    from rsc.node import main as node_main

    p_node = sub.add_parser("node", help="run one node process")
    node_main.add_arguments(p_node)

    from rsc import launch, status

    p_launch = sub.add_parser("launch", help="start a local cluster of nodes")
    launch.add_arguments(p_launch)

    p_status = sub.add_parser("status", help="ask every node of a cluster for its stats")
    status.add_arguments(p_status)

    from rsc import health

    p_probe = sub.add_parser("probe", help="check that one node is ready (or alive), for an "
                                           "orchestrator's probes")
    health.add_arguments(p_probe)

    from rsc.lab import cli as lab_cli

    p_lab = sub.add_parser("lab", help="simulate a cluster deterministically: run or explore a scenario")
    lab_cli.add_lab_arguments(p_lab)
    p_trace = sub.add_parser("trace", help="merge traces causally, or show one task's story")
    lab_cli.add_trace_arguments(p_trace)

    args = parser.parse_args(argv)
    if args.verb == "node":
        return node_main.run(args)
    if args.verb == "launch":
        return launch.run(args)
    if args.verb == "status":
        return status.run(args)
    if args.verb == "probe":
        return health.run(args)
    if args.verb == "lab":
        return lab_cli.run_lab(args)
    if args.verb == "trace":
        return lab_cli.run_trace(args)
    parser.error(f"unknown verb {args.verb}")  # pragma: no cover
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
