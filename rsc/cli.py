"""The ``rsc`` command: ``rsc node``, ``rsc launch``, ``rsc status``, ``rsc probe``,
``rsc lab``, ``rsc trace``.

``rsc VERB`` and ``python -m rsc VERB`` behave alike: both import a registry
(``--registry package.module:attr``) from the current directory first, then
from the installed packages. A user error (a bad option, a registry that does
not import, an address nobody can listen on) is one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

__all__ = ["HelpFormatter", "add_verb", "main"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, ``(default: X)``, unless
    the help already says it, or the default is None or False (an unset
    option or an off flag)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or isinstance(default, list)):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def add_verb(sub: argparse._SubParsersAction, verb: str, summary: str,
             add_arguments: Callable[[argparse.ArgumentParser], None],
             details: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose ``rsc --help`` line is ``summary`` and whose own
    ``--help`` starts with it (then ``details``) and shows every default."""
    description = summary if details is None else f"{summary}\n\n{details}"
    p = sub.add_parser(verb, help=summary, description=description, formatter_class=HelpFormatter)
    add_arguments(p)
    return p


def import_from_cwd() -> None:
    """Let registries and scenarios import from the current directory, as
    ``python -m rsc`` does (a console script's ``sys.path[0]`` is its own
    ``bin`` directory instead)."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def main(argv: list[str] | None = None) -> int:
    """The ``rsc`` command: parse ``argv`` (default: the process's arguments), run the
    subcommand, return its exit status."""
    from rsc import __version__, health, launch, status
    from rsc.lab import cli as lab_cli
    from rsc.node import main as node_main

    parser = argparse.ArgumentParser(prog="rsc", description="rsc: remote structured concurrency",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"rsc {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_verb(sub, "node", "run one node process", node_main.add_arguments)
    add_verb(sub, "launch", "start a local cluster of nodes and supervise it", launch.add_arguments)
    add_verb(sub, "status", "show every node of a cluster: its tasks, workers, memory, uptime",
             status.add_arguments, status.DETAILS)
    add_verb(sub, "probe", "check that one node is ready (or alive), for an orchestrator's probes",
             health.add_arguments)
    add_verb(sub, "lab", "simulate a cluster deterministically: run or explore a scenario",
             lab_cli.add_lab_arguments)
    add_verb(sub, "trace", "merge traces causally, or show one task's story",
             lab_cli.add_trace_arguments)
    args = parser.parse_args(argv)
    import_from_cwd()
    run: dict[str, Callable[[argparse.Namespace], int]] = {
        "node": node_main.run, "launch": launch.run, "status": status.run, "probe": health.run,
        "lab": lab_cli.run_lab, "trace": lab_cli.run_trace}
    return run[args.verb](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
