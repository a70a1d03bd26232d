"""rsc's loggers, and how its commands set up logging.

rsc logs through :mod:`logging`, one logger per layer, all under ``rsc``:

==================  =============================================================
``rsc.node``        a node process: start, listening, stop, connections opened
                    and closed, handshakes refused, shutdown steps, its journal
``rsc.node.executor``  a node's threads: a computation that ignored its
                    cancel and had its thread interrupted, or was abandoned
``rsc.node.workers``  a node's worker processes (process isolation): crashes,
                    kills for an ignored cancel or a time limit, replacements
``rsc.origin``      an origin's ``Runtime``: connections to nodes up and down,
                    nodes unreachable, lease escalations and retries,
                    protocol errors
``rsc.transport``   sockets: a stale Unix socket replaced
``rsc.launch``      ``rsc launch`` and ``LocalCluster``: nodes killed at stop,
                    leftovers
``rsc.regions``     regions: a child's failure that could not be delivered
``rsc.metrics``     the Prometheus endpoint of a node
==================  =============================================================

A library is quiet by default: ``rsc`` has a :class:`logging.NullHandler`, so
nothing is printed unless the application configures logging. INFO is one
line per event that matters (never one per task); DEBUG adds detail such as
each failed connection attempt. ``rsc node`` and ``rsc launch`` configure
INFO to stderr (``rsc node --log-level``).
"""

from __future__ import annotations

import logging
import sys
from typing import IO

__all__ = ["LAYERS", "configure", "get_logger"]

#: The loggers rsc writes to (see the module docstring).
LAYERS = ("rsc.node", "rsc.node.executor", "rsc.node.workers", "rsc.origin", "rsc.transport",
          "rsc.launch", "rsc.regions", "rsc.metrics")

# A library is quiet unless its application configures logging. Every module
# that logs takes its logger from get_logger, so this runs before any record
# can be made (and importing rsc alone imports no logging, nor its threading).
logging.getLogger("rsc").addHandler(logging.NullHandler())


def get_logger(layer: str) -> logging.Logger:
    """The logger of one of rsc's layers (:data:`LAYERS`)."""
    if layer not in LAYERS:
        raise ValueError(f"{layer!r} is not one of rsc's loggers: {', '.join(LAYERS)}")
    return logging.getLogger(layer)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "INFO", stream: IO[str] | None = None,
              fmt: str = DEFAULT_FORMAT) -> None:
    """What ``rsc node`` and ``rsc launch`` do: ``rsc``'s records at ``level``
    and above go to ``stream`` (stderr) as one line each. Only the ``rsc``
    logger is touched, so a computation's own logging is left as it is."""
    if level.upper() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    logger = logging.getLogger("rsc")
    for h in list(logger.handlers):
        if getattr(h, "_rsc_configured", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler._rsc_configured = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
