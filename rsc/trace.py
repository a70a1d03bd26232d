"""Structured trace events as JSON lines, and how traces of many processes merge.

A ``Trace`` is a callable ``trace(event, fields)`` that the engines, regions,
sagas and runtimes call at every protocol-relevant step (drops, handshakes,
cancels, orphans, lease expiries, leaks). Each record carries the
process-local sequence number ``seq``, the monotonic time ``t_ns``, the
emitter's name ``who`` and, when the trace is given the emitter's Lamport
clock (``lamport``: a callable, as ``rsc node --trace`` sets it), its Lamport
time ``lamport``. The lab (``rsc.lab``) writes the same format, with virtual
time in ``t_ns``.

:func:`merge` orders the records of several processes causally: by Lamport
time (a record without one takes its process's last one before it), then
by a stable tie-break (``t_ns``, ``who``, ``seq``). If an event caused another in
another process, the cause's Lamport time is the smaller, so it comes first.
:func:`story` picks one task's or one region's records out of a merged trace
and :func:`format_record` prints one for a person.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import IO, Any, Callable, Iterable

from rsc._engine.trace_names import (  # noqa: F401 - the public names of trace events
    CANCEL_RECEIVED,
    CANCEL_SENT,
    CAPABILITY_DENIED,
    DROPPED,
    ESCALATE,
    HANDSHAKE,
    LEASE_EXPIRED,
    LEASE_RENEWAL_RECEIVED,
    LEASE_RENEWAL_SENT,
    LEASE_RESYNC_SENT,
    NODE_RESTARTED,
    ORPHAN_CANCELLED,
    PEER_ERROR,
    PROTOCOL_ERROR,
    REGION_CLOSED,
    REGION_LEAK,
    REMOTE_EVENTS,
    RESULT_DELIVERED,
    RESULT_TOO_LARGE,
    SAGA_PREFIX,
    SPAWN_ACK_RECEIVED,
    SPAWN_ORIGIN_MISMATCH,
    SPAWN_REJECTED,
    SPAWN_REQUEST_CREATED,
    SPAWN_REQUEST_SENT,
    TOMBSTONE,
)

__all__ = ["Trace", "format_record", "load", "merge", "story", "REMOTE_EVENTS",
           "SPAWN_REQUEST_CREATED", "SPAWN_REQUEST_SENT", "SPAWN_ACK_RECEIVED", "SPAWN_REJECTED",
           "CANCEL_SENT", "CANCEL_RECEIVED", "RESULT_DELIVERED", "LEASE_RENEWAL_SENT",
           "LEASE_RENEWAL_RECEIVED", "LEASE_RESYNC_SENT", "LEASE_EXPIRED", "HANDSHAKE", "PROTOCOL_ERROR", "PEER_ERROR",
           "DROPPED", "NODE_RESTARTED", "TOMBSTONE", "ORPHAN_CANCELLED", "RESULT_TOO_LARGE",
           "SPAWN_ORIGIN_MISMATCH", "CAPABILITY_DENIED", "ESCALATE", "REGION_CLOSED",
           "REGION_LEAK", "SAGA_PREFIX"]


class Trace:
    """Collects trace records; writes them as JSON lines to ``sink`` if given.

    Keeps the last ``keep`` records in memory (``records``) for tests and
    post-mortems. ``lamport``: reads the emitter's Lamport clock (None: records
    carry no ``lamport`` field).
    """

    def __init__(self, name: str = "", sink: str | IO[str] | None = None, keep: int = 10_000,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 lamport: Callable[[], int] | None = None) -> None:
        self.name = name
        self.records: deque[dict[str, Any]] = deque(maxlen=keep)
        self.lamport = lamport
        self._clock_ns = clock_ns
        self._seq = 0
        self._lock = threading.Lock()
        self._own_file = isinstance(sink, str)
        self._file: IO[str] | None = open(sink, "a", buffering=1) if isinstance(sink, str) else sink

    def follow_clock(self, clock: Any) -> None:
        """Stamp records with ``clock.time`` (a Lamport clock: an engine's) unless
        the trace already reads one. ``Runtime`` and ``NodeServer`` call it with
        their engine's clock, so their traces merge causally (``rsc trace merge``)."""
        if self.lamport is None:
            self.lamport = lambda: clock.time

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            rec = {"seq": self._seq, "t_ns": self._clock_ns(), "who": self.name, "event": event}
            if self.lamport is not None:
                rec["lamport"] = self.lamport()
            rec.update(fields)
            self.records.append(rec)
            if self._file is not None:
                self._file.write(json.dumps(rec, default=str) + "\n")

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The records kept so far, or only those of ``event``."""
        return [r for r in self.records if event is None or r["event"] == event]

    def close(self) -> None:
        """Close the trace's file, if the trace opened it."""
        if self._own_file and self._file is not None:
            self._file.close()
            self._file = None


def load(path: str) -> list[dict[str, Any]]:
    """The records of one JSON-lines trace file, in file order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def merge(*paths: str) -> list[dict[str, Any]]:
    """Read several JSON-lines traces and order them causally (module
    docstring). One file keeps its own order: a process's, or a lab run's
    (which is already the order things happened in, across its processes)."""
    if len(paths) == 1:
        return load(paths[0])
    return merge_records(load(p) for p in paths)


def merge_records(traces: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    keyed: list[tuple[int, int, str, int, int, dict[str, Any]]] = []
    n = 0
    for records in traces:
        last: dict[str, int] = {}
        for rec in records:
            who = str(rec.get("who", ""))
            lam = rec.get("lamport")
            if not isinstance(lam, int):
                lam = last.get(who, 0)
            last[who] = lam
            n += 1
            keyed.append((lam, int(rec.get("t_ns", 0)), who, int(rec.get("seq", 0)), n, rec))
    keyed.sort(key=lambda k: k[:5])
    return [k[5] for k in keyed]


# a spawn's first record: the origin engine's, and the lab's own
_SPAWNS = (SPAWN_REQUEST_CREATED, "spawn")


def story(records: list[dict[str, Any]], *, task: int | None = None, origin: str | None = None,
          region: int | None = None) -> list[dict[str, Any]]:
    """The records about remote task ``task`` (of ``origin``, if given; its
    later attempts included) or about region ``region``, in the given order."""
    out = []
    rtids: set[int] = {task} if task is not None else set()
    regions: set[int] = {region} if region is not None else set()
    for rec in records:
        if (region is not None and rec.get("event") in _SPAWNS
                and rec.get("region_id") in regions and rec.get("rtid") is not None):
            if origin is None or rec.get("who") == origin:
                rtids.add(rec["rtid"])
        if (rec.get("event") == "reattempt" and rec.get("rtid") in rtids
                and rec.get("new_rtid") is not None):
            rtids.add(rec["new_rtid"])
        about_task = rec.get("rtid") in rtids or rec.get("new_rtid") in rtids
        if about_task and origin is not None:
            about_task = origin in (rec.get("who"), rec.get("from"), rec.get("origin"))
        if about_task or (region is not None and rec.get("region_id") in regions):
            out.append(rec)
    return out


_SKIP = {"seq", "t_ns", "who", "event", "lamport"}


def format_record(rec: dict[str, Any]) -> str:
    """One line a person can read: time, Lamport time, process, event, fields."""
    t = rec.get("t_ns", 0) / 1e9
    lam = rec.get("lamport")
    event = rec.get("event", "?")
    if event == "recv":
        event = f"recv {rec.get('kind', '?')} from {rec.get('from', '?')}"
    rest = " ".join(f"{k}={rec[k]}" for k in rec if k not in _SKIP and k not in ("kind", "from"))
    return (f"t={t:12.6f}  L={'-' if lam is None else lam:>6}  {str(rec.get('who', '')):<10} "
            f"{event}  {rest}").rstrip()
