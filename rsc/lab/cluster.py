"""One lab run: a whole cluster (origins and nodes) in one virtual-time loop.

A :class:`Lab` is made for one seed. Every random choice of the run (the
network's fates, the faults drawn by :meth:`Lab.chaos`, idempotency keys,
handshake nonces, the scenario's own ``lab.random``, and the ready-callback
order when ``shuffle=True``) comes from a stream derived from that seed by
name, so adding a node or a draw in one place does not shift the others.
:meth:`Lab.run` runs a scenario coroutine, lets the cluster settle, checks
the oracles (:mod:`rsc.lab.oracles`) and returns a :class:`rsc.lab.oracles.Report`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import IO, Any

import rsc.cx as rsc_cx
from rsc.lab.disk import SimDisk
from rsc.lab.faults import Faults
from rsc.lab.loop import Stuck, TimeLimit, VirtualLoop
from rsc.lab.net import LinkProfile, SimNetwork
from rsc.lab.processes import LabNode, LabRuntime
from rsc.lab.record import LabTrace
from rsc.lab.threads import LabThreads
from rsc.registry import Registry
from rsc.regions import live_regions

__all__ = ["Lab", "address_of"]


def address_of(node: str) -> str:
    """The address a lab node listens at (a name only: nothing is created)."""
    return f"unix:/rsc-lab/{node}.sock"


class Lab(Faults):
    """A simulated cluster for one seed (see the module docstring).

    ``network``: the default link profile or preset name. ``shuffle``: permute
    each loop turn's ready callbacks by the seed. ``time_limit_s``: virtual
    seconds a run may take in all. ``settle_s``: virtual seconds the cluster
    gets, after the scenario returns, to reach quiescence. ``node_engine`` /
    ``origin_engine``: engine classes to use instead of the production ones,
    for every node and every runtime, a node's nested one included (how the
    suite shows that a broken engine is caught).
    """

    def __init__(self, seed: int, *, network: LinkProfile | str = "local", shuffle: bool = False,
                 time_limit_s: float = 3600.0, settle_s: float = 120.0,
                 trace_sink: IO[str] | None = None, node_engine: type | None = None,
                 origin_engine: type | None = None) -> None:
        self.seed = seed
        self.loop = VirtualLoop(shuffle=self.fork("shuffle") if shuffle else None,
                                time_limit=time_limit_s)
        self.trace = LabTrace(self.loop.now_ns, trace_sink)
        self.threads = LabThreads(self.loop)
        self.net = SimNetwork(self.loop, self.fork("net"), network)
        self.net.on_frame = self._on_frame
        self.net.on_event = lambda event, fields: self.trace.emit("net", event, fields)
        #: the scenario's own random source (derived from the seed)
        self.random = self.fork("scenario")
        self.settle_s = settle_s
        self.node_engine = node_engine
        self.origin_engine = origin_engine
        self.nodes: dict[str, LabNode] = {}  # the current incarnation of each node
        self.all_nodes: list[LabNode] = []  # every incarnation, crashed ones included
        self.origins: dict[str, LabRuntime] = {}
        self.nested: list[LabRuntime] = []  # the nodes' own runtimes (``peers``), every incarnation's
        self._client_lamport: dict[str, Callable[[], int]] = {}  # a node's nested runtime's clock
        self._registries: dict[str, tuple[Registry, dict[str, Any]]] = {}
        self.disks: dict[str, SimDisk] = {}  # the disk of each durable node, by name
        self._origin_tasks: dict[str, list[asyncio.Task[Any]]] = {}
        self._lamport_of: dict[str, Callable[[], int]] = {}
        self.notes: list[str] = []  # things the report should mention that are not violations
        self.failure: BaseException | None = None
        self.regions_before = live_regions()

    # -- randomness -------------------------------------------------------------------
    def fork(self, name: str) -> random.Random:
        """An independent random stream for ``name``, fixed by the seed
        (a str seed is hashed with SHA-512, not with ``hash()``)."""
        return random.Random(f"rsc-lab/{self.seed}/{name}")

    # -- processes --------------------------------------------------------------------
    async def start_node(self, name: str, registry: Registry | None = None, **kwargs: Any) -> LabNode:
        """Start node ``name`` serving ``registry`` (a restart reuses the last
        registry and options when they are not given). ``kwargs`` go to
        ``NodeServer`` (``capacity``, ``ttl_s``, ``grace_s``...), except
        ``durable=True``: the node keeps its idempotency journal on a disk of
        its own that outlives a crash (``rsc.lab.disk``), as ``rsc node
        --state-dir`` does, so a restart keeps its records; and ``peers``, a
        list of node names: its computations get a RemoteCap and spawn remote
        work on them through the lab's network (``rsc node --peers``)."""
        if name in self.nodes and not self.nodes[name].crashed:
            raise ValueError(f"node {name!r} is already running")
        if registry is None:
            registry, kwargs = self._registries[name]
        self._registries[name] = (registry, kwargs)
        peers = kwargs.get("peers")
        if peers is not None and not isinstance(peers, dict):  # names: the lab's addresses
            kwargs = dict(kwargs, peers={p: address_of(p) for p in peers})
        incarnation = sum(1 for n in self.all_nodes if str(n.name) == name) + 1
        node = LabNode(self, name, address_of(name), registry,
                       self.fork(f"node/{name}/{incarnation}"), incarnation, **kwargs)
        if self.node_engine is not None:
            node.engine = _rebuilt_engine(self.node_engine, node.engine)
            node.engine._entropy = _Entropy(self.fork(f"node/{name}/{incarnation}/engine"))
        if node.durable:
            disk = self.disks.get(name)
            if disk is None:
                disk = self.disks[name] = SimDisk(self.fork(f"disk/{name}"))
            node.open_journal(disk)
        self.net.revive(name)
        self.net.contexts[name] = node.context
        self.nodes[name] = node
        self.all_nodes.append(node)
        self._lamport_of[name] = node._lamport
        await self.loop.create_task(node.start(), context=node.context.copy())
        self.trace.emit(name, "node_started", dict(incarnation=incarnation), node._lamport())
        return node

    async def start_origin(self, name: str, nodes: list[str] | None = None, **kwargs: Any) -> LabRuntime:
        """Start an origin runtime ``name`` whose cluster is ``nodes`` (default:
        every node started so far); ``kwargs`` go to ``rsc.Runtime``."""
        names = sorted(self.nodes) if nodes is None else list(nodes)
        rt = LabRuntime(self, name, {n: address_of(n) for n in names}, self.fork(f"origin/{name}"),
                        **kwargs)
        self._use_origin_engine(rt)
        self.origins[name] = rt
        self._lamport_of[name] = rt._lamport
        self.net.contexts[name] = rt.context
        await self.loop.create_task(rt.start(), context=rt.context.copy())
        self.trace.emit(name, "origin_started", None, rt._lamport())
        return rt

    def _start_nested(self, node: LabNode) -> LabRuntime:
        """The runtime a node's computations spawn through (its ``peers``),
        started on first use as ``NodeServer`` does, inside the node's process."""
        name = str(node.name)
        peers: Any = node.peers
        rt = LabRuntime(self, name, dict(peers), self.fork(f"nested/{name}/{node.incarnation}"),
                        tag=node.tag, key=node.engine.key)
        rt.clock = node.clock  # one process, one clock: a skew or pause of the node is its too
        self._use_origin_engine(rt)
        rt.engine.clock = node.engine.clock  # one process, one Lamport clock (as NodeServer does)
        rt.attach()
        self.nested.append(rt)
        self._client_lamport[name] = rt._lamport
        self.trace.emit(name, "nested_runtime_started", dict(incarnation=node.incarnation),
                        rt._lamport())
        return rt

    def _use_origin_engine(self, rt: LabRuntime) -> None:
        """Give ``rt`` an engine of the ``origin_engine`` class, if one was asked for."""
        if self.origin_engine is not None:
            old = rt.engine
            rt.engine = self.origin_engine(old.name, key=old.key, entropy=old._entropy,
                                           trace=old._trace)
            rt.engine.new_rtid = rt._ids.__next__

    def runtimes(self) -> list[LabRuntime]:
        """Every runtime of the run: the origins, then the nodes' nested ones."""
        return [*self.origins.values(), *self.nested]

    def task(self, origin: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as part of origin ``origin``: an origin crash cancels it,
        and pausing the origin freezes it."""
        rt = self.origins.get(origin)
        t = self.loop.create_task(coro, context=None if rt is None else rt.context.copy())
        self._origin_tasks.setdefault(origin, []).append(t)
        return t

    # -- observing ---------------------------------------------------------------------
    def _on_frame(self, conn: int, sender: str, receiver: str, msg: Any, to_client: bool) -> None:
        lamport = (self._client_lamport.get(receiver) if to_client else None) or \
            self._lamport_of.get(receiver)
        self.trace.frame(conn, sender, receiver, msg, lamport() if lamport is not None else 0)

    # -- running -----------------------------------------------------------------------
    def run(self, scenario: Callable[[Lab], Awaitable[Any]]) -> Any:
        """Run ``scenario(lab)`` to the end, settle, check the oracles; the Report."""
        from rsc.lab.oracles import check

        # Region and local task ids are process-wide counters (rsc.cx) that
        # reach the wire (SpawnRequest, cancel reasons naming "region-N"): a
        # run numbers them from 1, as a fresh process would, and gives the
        # process its own counters back afterwards.
        saved = rsc_cx._region_ids, rsc_cx._task_ids
        rsc_cx._region_ids, rsc_cx._task_ids = itertools.count(1), itertools.count(1)
        self.threads.install()
        try:
            self.loop.run_until_complete(self._main(scenario))
        except (Stuck, TimeLimit) as exc:
            self.failure = exc
        finally:
            try:
                self._close_loop()
            finally:
                self.threads.uninstall()
                rsc_cx._region_ids, rsc_cx._task_ids = saved
        return check(self)

    async def _main(self, scenario: Callable[[Lab], Awaitable[Any]]) -> None:
        try:
            await scenario(self)
        except Exception as exc:  # the scenario's own failure is reported, not raised
            self.failure = exc
            self.trace.emit("lab", "scenario_failed", dict(error=f"{type(exc).__name__}: {exc}"))
        await self._settle()

    async def _settle(self) -> None:
        """Let the cluster reach quiescence, snapshot it, then shut it down."""
        loop = self.loop
        deadline = loop.time() + self.settle_s
        self.trace.emit("lab", "settling")
        for tasks in self._origin_tasks.values():  # the scenario's own tasks first
            for t in tasks:
                while not t.done() and loop.time() < deadline:
                    await asyncio.sleep(0.05)
        while loop.time() < deadline and not self._quiet():
            await asyncio.sleep(0.05)
        from rsc.lab.oracles import snapshot

        self.quiescence = snapshot(self)
        self.trace.emit("lab", "settled", dict(quiet=self._quiet()))
        for rt in self.origins.values():
            if not rt.crashed:
                await rt.aclose(cancel_timeout_s=1.0)
        # (a node's shutdown closes its nested runtime)
        for node in self.nodes.values():
            if not node.crashed:
                await node.shutdown(0.0)
        for tasks in self._origin_tasks.values():
            for t in tasks:
                if not t.done():
                    t.cancel()
        await asyncio.sleep(0)

    def _quiet(self) -> bool:
        for rt in self.runtimes():
            if rt.crashed:
                continue
            if any(not r.handle.is_finished() for r in rt.records) or any(rt.debug_counts().values()):
                return False
        for node in self.nodes.values():
            if not node.crashed and (node.engine.running or node.executor.running):
                return False
        return True

    def _close_loop(self) -> None:
        loop = self.loop
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        self.leftover_tasks = sorted(repr(t.get_coro()).split(" at ")[0] for t in left)
        # the run is over: what the cancellations below make happen (in the
        # order of a set) is not part of its trace
        self.trace.closed = True
        for tag in list(loop._paused):
            loop.release(tag)
        self.threads.close()
        for t in left:
            t.cancel()
        try:
            loop.run_until_complete(asyncio.sleep(0))
        except (Stuck, TimeLimit, RuntimeError):
            pass
        loop.close()

    def lamport(self, process: str) -> int:
        """The Lamport time of a process of this run now."""
        return self._lamport_of[process]()


class _Entropy:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def __call__(self, n: int) -> bytes:
        return self._rng.getrandbits(8 * n).to_bytes(n, "big")


def _rebuilt_engine(cls: type, old: Any) -> Any:
    """A node engine of class ``cls`` with the production engine's settings."""
    new = cls(old.name, old.admission, capacity=old.capacity, max_input_bytes=old.max_input_bytes,
              ttl_ns=old.ttl_ns, key=old.key, entropy=old._entropy, stats=old._stats,
              trace=old._trace, max_kept_result_bytes=old.max_kept_result_bytes)
    new.features["instance"] = old.features["instance"]
    return new
