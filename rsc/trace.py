"""Structured trace events as JSON lines.

A ``Trace`` is a callable ``trace(event, fields)`` that the engines, regions
and runtimes call at every protocol-relevant step (drops, handshakes, cancels,
orphans, lease expiries, leaks). Each record carries the process-local
sequence number, the monotonic time and the emitter's name, so traces of
several processes can be merged and replayed in order of (time, name, seq).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import IO, Any, Callable


class Trace:
    """Collects trace records; writes them as JSON lines to ``sink`` if given.

    Keeps the last ``keep`` records in memory (``records``) for tests and
    post-mortems.
    """

    def __init__(self, name: str = "", sink: str | IO[str] | None = None, keep: int = 10_000,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.name = name
        self.records: deque[dict[str, Any]] = deque(maxlen=keep)
        self._clock_ns = clock_ns
        self._seq = 0
        self._lock = threading.Lock()
        self._own_file = isinstance(sink, str)
        self._file: IO[str] | None = open(sink, "a", buffering=1) if isinstance(sink, str) else sink

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            rec = {"seq": self._seq, "t_ns": self._clock_ns(), "who": self.name, "event": event}
            rec.update(fields)
            self.records.append(rec)
            if self._file is not None:
                self._file.write(json.dumps(rec, default=str) + "\n")

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if event is None or r["event"] == event]

    def close(self) -> None:
        if self._own_file and self._file is not None:
            self._file.close()
            self._file = None


def merge(*paths: str) -> list[dict[str, Any]]:
    """Read several JSON-lines traces and order them by (t_ns, who, seq)."""
    out: list[dict[str, Any]] = []
    for p in paths:
        with open(p) as f:
            out.extend(json.loads(line) for line in f if line.strip())
    out.sort(key=lambda r: (r.get("t_ns", 0), r.get("who", ""), r.get("seq", 0)))
    return out
