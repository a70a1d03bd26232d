"""``rsc lab run`` and ``rsc lab explore``; ``rsc trace merge`` and ``rsc trace show``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any

__all__ = ["add_lab_arguments", "add_trace_arguments", "run_lab", "run_trace"]


def add_lab_arguments(p: argparse.ArgumentParser) -> None:
    """``rsc lab``'s subcommands (``run``, ``explore``) and options."""
    sub = p.add_subparsers(dest="lab_verb", required=True)
    for verb, helptext in (("run", "run a scenario for one seed: oracle report and digest"),
                           ("explore", "run a scenario over many seeds; stop at the first violation")):
        q = sub.add_parser(verb, help=helptext)
        q.add_argument("scenario", help="a scenario file (defines `async def scenario(lab)`)")
        if verb == "run":
            q.add_argument("--seed", type=int, required=True)
            q.add_argument("--trace", default=None, help="write the run's trace (JSON lines) here")
        else:
            q.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
            q.add_argument("--start", type=int, default=0, help="first seed (default 0)")
        q.add_argument("--network", default=None, help="default link preset (overrides the scenario's)")
        q.add_argument("--shuffle", action="store_true", default=None,
                       help="shuffle each loop turn's ready callbacks by the seed")
        q.add_argument("-v", "--verbose", action="store_true",
                       help="show rsc's own warnings (a faulty run logs many: resets, lapses)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return dict(network=args.network, shuffle=args.shuffle)


def _replay_command(args: argparse.Namespace, seed: int) -> str:
    parts = ["rsc", "lab", "run", args.scenario, "--seed", str(seed)]
    if args.network:
        parts += ["--network", args.network]
    if args.shuffle:
        parts.append("--shuffle")
    return " ".join(shlex.quote(p) for p in parts)


def run_lab(args: argparse.Namespace) -> int:
    """``rsc lab run`` / ``explore``; the exit status (1 on a violation)."""
    import logging

    from rsc.lab.scenario import load_scenario, run_seed

    logger = logging.getLogger("rsc")
    level = logger.level
    if not args.verbose:  # the oracles report what matters; a reset or lapse is expected here
        logger.setLevel(logging.ERROR)
    try:
        return _run_lab(args, load_scenario, run_seed)
    finally:
        logger.setLevel(level)


def _run_lab(args: argparse.Namespace, load_scenario: Any, run_seed: Any) -> int:
    scenario = load_scenario(args.scenario)
    if args.lab_verb == "run":
        if args.trace:
            with open(args.trace, "w") as sink:
                report = run_seed(scenario, args.seed, trace_sink=sink, **_overrides(args))
        else:
            report = run_seed(scenario, args.seed, **_overrides(args))
        print(report.format())
        return 0 if report.ok else 1
    t0 = time.perf_counter()
    tty = sys.stderr.isatty()
    for i in range(args.seeds):
        seed = args.start + i
        report = run_seed(scenario, seed, **_overrides(args))
        done = i + 1
        if tty or done == args.seeds or done % 100 == 0:
            width = 30
            filled = width * done // args.seeds
            rate = done / max(1e-9, time.perf_counter() - t0) * 60
            end = "\r" if tty and done < args.seeds else "\n"
            sys.stderr.write(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{args.seeds} seeds "
                             f"({rate:.0f}/min){end}")
            sys.stderr.flush()
        if not report.ok:
            if tty:
                sys.stderr.write("\n")
            print(report.format())
            print(f"replay: {_replay_command(args, seed)}")
            return 1
    print(f"{args.seeds} seeds from {args.start}: every oracle held "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    """``rsc trace``'s subcommands (``merge``, ``show``) and options."""
    sub = p.add_subparsers(dest="trace_verb", required=True)
    m = sub.add_parser("merge", help="order the traces of many processes causally (JSON lines out)")
    m.add_argument("files", nargs="+")
    s = sub.add_parser("show", help="one task's or one region's story across processes")
    s.add_argument("files", nargs="+")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--task", type=int, default=None, help="remote task id")
    g.add_argument("--region", type=int, default=None, help="region id (as the trace numbers it)")
    s.add_argument("--origin", default=None, help="the origin the task id belongs to")


def run_trace(args: argparse.Namespace) -> int:
    """``rsc trace merge`` / ``show``; the exit status."""
    import json

    from rsc.trace import format_record, merge, story

    records = merge(*args.files)
    if args.trace_verb == "merge":
        for rec in records:
            print(json.dumps(rec, sort_keys=True))
        return 0
    if args.task is not None or args.region is not None:
        records = story(records, task=args.task, origin=args.origin, region=args.region)
    for rec in records:
        print(format_record(rec))
    return 0
