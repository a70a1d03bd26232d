"""An in-memory link between an OriginEngine and a NodeEngine (h11's style).

Every message crosses through the real envelope codec (encode, then decode),
so the engines are tested on exactly what the wire carries. Delivery is
explicit: ``flush()`` moves everything queued, or tests hold and reorder
messages by hand.
"""

from __future__ import annotations

import itertools
from typing import Any

from rsc._core import envelope
from rsc._engine import node as N
from rsc._engine import origin as O
from rsc._engine.node import Admission, NodeEngine
from rsc._engine.origin import OriginEngine, OriginTask

MS = 1_000_000


class FakeAdmission(Admission):
    def __init__(self, names: set[str], bad_inputs: set[bytes] | None = None) -> None:
        self.names = names
        self.bad = bad_inputs or set()

    def find(self, computation: str) -> str | None:
        return computation if computation in self.names else None

    def check(self, comp: str, data: bytes) -> str | None:
        # (a segmented input is unhashable: only a bytes input can be a bad one)
        return "validator refused the input" if type(data) is bytes and data in self.bad else None


def entropy_from(seed: int):
    counter = itertools.count(seed)

    def entropy(n: int) -> bytes:
        return next(counter).to_bytes(4, "big") * (n // 4)

    return entropy


def wire(msg: Any) -> Any:
    return envelope.decode(envelope.encode(msg))


class Link:
    """One origin, one node, one connection (conn id 1), virtual time."""

    def __init__(self, *, names: set[str] = frozenset({"echo", "slow"}), capacity: int = 8,
                 key_node: bytes | None = None, key_origin: bytes | None = None,
                 max_input_bytes: int = 1024, ttl_ns: int = 60_000 * MS,
                 bad_inputs: set[bytes] | None = None, origin_name: str = "origin-a",
                 compact_node: bool = True, compact_origin: bool = True,
                 **node_kw: Any) -> None:
        """``node_kw``: more of NodeEngine's keywords (``max_kept_result_bytes``, ...)."""
        self.now = 1_000 * MS
        self.traces: list[tuple[str, dict]] = []
        self.node = NodeEngine("node-1", FakeAdmission(set(names), bad_inputs), capacity=capacity,
                               max_input_bytes=max_input_bytes, ttl_ns=ttl_ns, key=key_node,
                               entropy=entropy_from(1), trace=lambda e, f: self.traces.append((e, f)),
                               compact_renewals=compact_node, **node_kw)
        self.origin = OriginEngine(origin_name, key=key_origin, entropy=entropy_from(100),
                                   trace=lambda e, f: self.traces.append((e, f)),
                                   compact_renewals=compact_origin)
        self.conn = 1
        self.to_node: list[Any] = []
        self.to_origin: list[Any] = []
        self.started: list[N.NodeTask] = []
        self.cancels: list[tuple[N.NodeTask, tuple]] = []
        self.events: list[tuple[int, OriginTask, Any]] = []
        self.node_closed: list[Any] = []
        self.origin_closed: list[Any] = []
        self._rtids = itertools.count(1)

    # -- connection ---------------------------------------------------------------
    def connect(self, *, complete: bool = True) -> None:
        self.node.open_connection(self.conn, self.now)
        self.origin.link_up("node-1", self.now)
        if complete:
            self.flush()

    def disconnect(self) -> None:
        self.collect()  # whatever was queued dies with the connection
        self.node.close_connection(self.conn, self.now)
        self.origin.link_down("node-1", self.now)
        self.to_node.clear()
        self.to_origin.clear()
        self.conn += 1

    # -- moving messages ------------------------------------------------------------
    def collect(self) -> None:
        for op, conn, msg in self.node.take_actions():
            if op == N.SEND and conn == self.conn:
                self.to_origin.append(wire(msg))
            elif op == N.CLOSE:
                self.node_closed.append(conn)
            elif op == N.START:
                self.started.append(conn)
            elif op == N.CANCEL:
                self.cancels.append((conn, msg))
        for op, node, msg in self.origin.take_actions():
            if op == O.SEND:
                self.to_node.append(wire(msg))
            elif op == O.CLOSE:
                self.origin_closed.append((node, msg))
        self.events.extend(self.origin.take_events())

    def flush(self, seen: list | None = None) -> None:
        """Deliver everything in both directions until quiet (what the node
        receives also appended to ``seen``, if given)."""
        self.collect()
        while self.to_node or self.to_origin:
            while self.to_node:
                msg = self.to_node.pop(0)
                if seen is not None:
                    seen.append(msg)
                self.node.receive(self.conn, msg, self.now)
            while self.to_origin:
                self.origin.receive("node-1", self.to_origin.pop(0), self.now)
            self.collect()

    def advance(self, ms: int) -> None:
        self.now += ms * MS
        self.node.tick(self.now)
        self.origin.tick(self.now)
        self.collect()

    # -- origin side helpers -----------------------------------------------------------
    def spawn(self, computation: str = "echo", data: bytes = b"in", *, key: bytes | None = None,
              lease_ms: int = 3_000, rtid: int | None = None, budget: tuple | None = None,
              deadline_ns: int | None = None, flush: bool = True,
              capability: bytes | None = None) -> OriginTask:
        rtid = next(self._rtids) if rtid is None else rtid
        key = key if key is not None else rtid.to_bytes(16, "big")
        task = OriginTask(rtid, "node-1", computation, data, lease_ms, key, budget, deadline_ns,
                          7, 8, capability, None)
        self.origin.spawn(task, self.now)
        if flush:
            self.flush()
        return task

    def finish(self, task: N.NodeTask, kind: int = 0, payload: Any = b"out", flush: bool = True) -> None:
        self.node.task_finished(task, kind, payload, 5, self.now)
        if flush:
            self.flush()

    def events_of(self, ev: int) -> list[tuple[int, OriginTask, Any]]:
        return [e for e in self.events if e[0] == ev]
