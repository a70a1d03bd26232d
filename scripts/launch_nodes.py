#!/usr/bin/env python3
"""Start a local rsc cluster: N nodes with one registry, supervised until Ctrl-C.

    python scripts/launch_nodes.py -n 4 --registry examples.demo_registry:registry

Same as ``rsc launch``; see ``--help``.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from rsc import launch  # noqa: E402
from rsc.cli import HelpFormatter  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch_nodes.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    launch.add_arguments(parser)
    return launch.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
