"""The trace of one lab run: every event of every process, in the order the
loop made them, with a stable digest.

A record is a JSON object in the format production processes write with
``--trace`` (``rsc.trace.Trace``): ``seq`` (here the position in the whole
run, shared by all processes), ``t_ns`` (virtual time), ``who`` (the process),
``event``, then the event's fields; events about a message or an engine also
carry ``lamport``, the emitter's Lamport time. A delivered frame is one
``recv`` record, made once the receiver has read it (after the records its
reading caused): ``from``, ``kind``, ``rtid`` (when the message names a
task), ``stamp`` (the sender's Lamport stamp on the message) and
``lamport`` (the receiver's clock once it has read it): one causal edge.

The digest is a SHA-256 over the records (see :meth:`LabTrace.digest`). Nothing in a record depends on the process (ids, hash order,
wall time): region ids, process-wide counters in rsc, are renumbered from 1
in the order the run first mentions them, and local task ids are not recorded.
"""

from __future__ import annotations

import hashlib
import json
from typing import IO, Any, Callable

from rsc._core.messages import (CANCEL_REQUEST, ERROR, LEASE_RENEWAL_BATCH, LEASE_RENEWAL_DIGEST,
                                LEASE_RESYNC_REQUEST, MESSAGE_CLASSES,
                                RESULT_DELIVERY, SPAWN_ACK, SPAWN_REQUEST)

__all__ = ["LabTrace", "KIND_NAMES"]

KIND_NAMES = {kind: cls.__name__ for kind, cls in MESSAGE_CLASSES.items()}
_KIND_OF = {cls: kind for kind, cls in MESSAGE_CLASSES.items()}


_SIMPLE = frozenset({int, str, bool, float, type(None)})


def _plain(value: Any) -> Any:
    """A JSON-safe, process-independent form of a field value."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)  # a NodeId or ComputationName is its plain str
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if hasattr(value, "name") and hasattr(value, "value"):  # an Enum member
        return str(value.name)
    return str(value)


class LabTrace:
    """Collects the records of a run (see the module docstring)."""

    def __init__(self, now_ns: Callable[[], int], sink: IO[str] | None = None) -> None:
        self._now_ns = now_ns
        self.records: list[dict[str, Any]] = []
        self._sink = sink
        #: once set, nothing more is recorded (the run is over)
        self.closed = False
        # region ids are process-wide counters: a run's trace numbers them from 1
        self._regions: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.records)

    def emit(self, who: str, event: str, fields: dict[str, Any] | None = None,
             lamport: int | None = None) -> int:
        """Append one record; returns its position (``seq``)."""
        if self.closed:
            return len(self.records)
        rec: dict[str, Any] = {"seq": len(self.records) + 1, "t_ns": self._now_ns(), "who": who,
                               "event": event}
        if lamport is not None:
            rec["lamport"] = lamport
        if fields:
            for k, v in fields.items():
                if k == "region_id" and type(v) is int:
                    v = self._ordinal(v)
                rec[k] = v if type(v) in _SIMPLE else _plain(v)
        self.records.append(rec)
        if self._sink is not None:
            self._sink.write(json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n")
        return rec["seq"]

    def _ordinal(self, region_id: int) -> int:
        n = self._regions.get(region_id)
        if n is None:
            n = self._regions[region_id] = len(self._regions) + 1
        return n

    def for_process(self, who: str, lamport: Callable[[], int]) -> Callable[[str, dict], None]:
        """A ``trace(event, fields)`` callable for one process's engines
        (what ``Runtime(trace=)`` and ``NodeServer(trace=)`` take)."""
        def trace(event: str, fields: dict[str, Any]) -> None:
            self.emit(who, event, fields, lamport())
        return trace

    def frame(self, conn: int, sender: str, receiver: str, msg: Any, recv_lamport: int) -> int:
        """Record one delivered message (a causal edge)."""
        kind = _KIND_OF.get(type(msg), -1)
        fields: dict[str, Any] = {"from": sender, "conn": conn, "kind": KIND_NAMES.get(kind, "?")}
        rtid = getattr(msg, "remote_task_id", None)
        if rtid is not None:
            fields["rtid"] = rtid
        if kind in _DETAIL:
            for f in _DETAIL[kind]:
                fields[f] = getattr(msg, f)
        t = msg.sender_time
        fields["stamp"] = t if type(t) is int else None
        return self.emit(receiver, "recv", fields, recv_lamport)

    def digest(self) -> str:
        """SHA-256 over the records, one ``repr`` a line. A record holds only
        str, int, float, bool, None, lists and dicts, filled in the same order
        every run, so its ``repr`` is as canonical as sorted JSON and much
        cheaper to make for every record of every run."""
        h = hashlib.sha256()
        for rec in self.records:
            h.update(repr(rec).encode())
            h.update(b"\n")
        return h.hexdigest()

    def write(self, path: str) -> None:
        """Write the trace to ``path`` as JSON lines."""
        with open(path, "w") as f:
            for rec in self.records:
                f.write(json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n")


# Fields of a message worth a person's reading, beyond its kind and task id.
_DETAIL: dict[int, tuple[str, ...]] = {
    SPAWN_REQUEST: ("computation", "idempotency_key", "lease_ms"),
    SPAWN_ACK: ("status", "reject_code"),
    CANCEL_REQUEST: ("reason",),
    RESULT_DELIVERY: ("outcome_kind", "execution_time_ns"),
    LEASE_RENEWAL_BATCH: ("remote_task_ids",),
    LEASE_RENEWAL_DIGEST: ("new_lease_ms", "task_count", "digest"),
    LEASE_RESYNC_REQUEST: ("lease_ms",),
    ERROR: ("code", "message"),
}
