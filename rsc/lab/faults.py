"""Faults a lab run can suffer, at a virtual time, scripted or drawn from the seed.

Each fault is a method of :class:`rsc.lab.Lab` (this mixin) that acts at
once; :meth:`Faults.at` schedules one for a virtual time, and
:meth:`Faults.chaos` draws a schedule of them from the seed. Every fault
leaves a ``fault`` record in the trace.

What each one models:

* ``partition(a, b)`` / ``heal()``: the network between two sets of
  processes is cut (:mod:`rsc.lab.net`: frames wait, connections across the
  cut reset after the link's ``reset_after_s``, connects fail).
* ``crash(node)``: the node process dies. Its connections reset, its
  computations stop and report nothing, and everything it held in memory is
  gone: idempotency records, tombstones, held results. A ``durable`` node's
  disk keeps what its journal had synced (``rsc.lab.disk``). ``restart(node)``
  starts a new process under the same name and address, with empty memory
  and a new instance id (what the origin uses to tell a restart from a
  dropped connection).
* ``pause(process, seconds)``: SIGSTOP, then SIGCONT. The process's clock
  stops, no frame reaches or leaves it, and nothing of it runs: its
  coroutines, timers, network reads and sync computation threads are set
  aside by the loop (``VirtualLoop.hold``). On resume its clock jumps, and
  what came due meanwhile runs at once, in order, then what waited on the
  network is delivered.
* ``crash_origin(origin)``: the origin process dies; its tasks
  (``lab.task``) are cancelled and its handles never settle. Nodes must
  notice its silence and cancel its orphans.
* ``expire_leases(origin)``: the origin's clock jumps past every lease it
  holds and its timer runs now: each live task's lease lapses at once and
  its escalation policy runs.
* ``skew(process, rate)``: from now on the process's clock runs at ``rate``
  times virtual time (0.5: a slow clock).
"""

from __future__ import annotations

import random
from typing import Any, Callable

from rsc.errors import RuntimeClosed
from rsc.transport.timer import EngineTimer
from rsc.types import RemoteTaskState


__all__ = ["Faults"]

NS = 1_000_000_000


class Faults:
    """The fault methods of :class:`rsc.lab.Lab` (see the module docstring)."""

    def at(self: Any, t_s: float, fault: Callable[..., Any], *args: Any) -> None:
        """Call ``fault(*args)`` at virtual time ``t_s`` (seconds since the run began)."""
        delay = max(0.0, t_s - self.loop.time())
        self.loop.call_later(delay, _run_fault, self, fault, args)

    def _fault(self: Any, what: str, **fields: Any) -> None:
        self.trace.emit("lab", "fault", dict(fault=what, **fields))

    def partition(self: Any, side_a: list[str] | str, side_b: list[str] | str) -> None:
        """Cut every link between ``side_a`` and ``side_b`` (process names) until
        ``heal``."""
        a = [side_a] if isinstance(side_a, str) else list(side_a)
        b = [side_b] if isinstance(side_b, str) else list(side_b)
        self._fault("partition", a=sorted(a), b=sorted(b))
        self.net.partition(a, b)

    def heal(self: Any) -> None:
        """Restore every cut link."""
        self._fault("heal")
        self.net.heal()

    def crash(self: Any, node: str) -> None:
        """Crash ``node``: its connections drop, its tasks and records die with it
        (nothing if it is down)."""
        srv = self.nodes.get(node)
        if srv is None or srv.crashed:
            return
        self._fault("crash", node=node, incarnation=srv.incarnation, running=srv.engine.running,
                    records=srv.engine.idempotency_records)
        srv.crashed = True
        self.net.crash(node)
        if srv._runtime is not None and not srv._runtime.crashed:  # its nested runtime dies too
            self._fault("crash_origin", origin=node, live=srv._runtime.live_handles, nested=True)
            self._kill_runtime(srv._runtime)
        srv._timer.cancel()
        srv._timer = DeadTimer(self.loop, srv.clock, _nothing)
        if srv._sweep_handle is not None:
            srv._sweep_handle.cancel()
        for task in list(srv.executor._tasks.values()):
            if task.atask is not None:
                task.atask.cancel()
            elif task.cfuture is not None:
                task.cfuture.cancel()
        srv._stopped.set()
        if node in self.disks:
            self.disks[node].crash()
        self.loop.release(srv.tag)  # a dead process is not paused: its coroutines unwind
        srv.executor._pool.kill()

    def restart(self: Any, node: str) -> None:
        """Start ``node`` again (after a crash) under the same name and address;
        nothing if it is running (two drawn crashes overlapped)."""
        srv = self.nodes.get(node)
        if srv is not None and not srv.crashed:
            return
        self._fault("restart", node=node)
        self.loop.create_task(self.start_node(node))

    def pause(self: Any, process: str, seconds: float) -> None:
        """Freeze ``process`` for ``seconds`` (a GC pause, a stopped VM): no delivery,
        its clock stands still."""
        self._fault("pause", process=process, seconds=seconds)
        proc = self._process(process)
        self.net.pause(process)
        proc.clock.freeze()
        self.loop.hold(proc.tag)
        self.loop.call_later(seconds, self._resume, process, proc)

    def _resume(self: Any, process: str, proc: Any = None) -> None:
        self._fault("resume", process=process)
        proc = proc or self._process(process)
        proc.clock.thaw()
        self.loop.release(proc.tag)
        self.net.resume(process)

    def crash_origin(self: Any, origin: str) -> None:
        """Crash ``origin``: its tasks end and its connections drop; its handles are
        settled RuntimeClosed."""
        rt = self.origins.get(origin)
        if rt is None or rt.crashed:
            return
        self._fault("crash_origin", origin=origin, live=rt.live_handles)
        self.net.crash(origin)
        self._kill_runtime(rt)
        for t in self._origin_tasks.get(origin, ()):
            t.cancel()

    def _kill_runtime(self: Any, rt: Any) -> None:
        """A runtime whose process died: nothing it does reaches the network or
        re-arms its timer, and its handles are settled so that its cancelled
        code can end (the oracles do not judge a dead runtime's outcomes)."""
        rt.crashed = True
        rt._closed = True  # nothing reconnects
        if rt._timer is not None:
            rt._timer.cancel()
        # what its cancelled tasks still do to its engine (a region's exit
        # aborts its handles) must not re-arm the timer of a dead process
        rt._timer = DeadTimer(self.loop, rt.clock, _nothing)
        for link in rt._links.values():
            if link.connector is not None:
                link.connector.cancel()
        # Its handles will never hear anything again. Settle them, so that the
        # cancelled code's own exit (a region waits for its handles) ends
        # instead of waiting forever on a process that no longer exists.
        for h in rt._unsettled_handles():
            h._settle(None, RuntimeClosed(f"{rt.name} crashed (the lab)"), RemoteTaskState.FAILED)

    def expire_leases(self: Any, origin: str) -> None:
        """Make every lease ``origin`` holds lapse now, as if no renewal had come in
        time."""
        rt = self.origins.get(origin)
        if rt is None or rt.crashed:
            return
        longest = max((t.lease_ms for t in rt.engine._tasks.values()), default=0)
        self._fault("expire_leases", origin=origin, jump_ms=longest + 1)
        rt.clock.jump((longest + 1) * 1_000_000)
        rt._timer.cancel()
        rt.context.run(rt._on_timer)

    def skew(self: Any, process: str, rate: float) -> None:
        """Run ``process``'s clock at ``rate`` against virtual time from now on."""
        self._fault("skew", process=process, rate=rate)
        self._clock_of(process).set_rate(rate)

    def _clock_of(self: Any, process: str) -> Any:
        return self._process(process).clock

    def _process(self: Any, name: str) -> Any:
        """The current incarnation of node ``name``, or origin ``name``."""
        if name in self.nodes:
            return self.nodes[name]
        if name in self.origins:
            return self.origins[name]
        raise ValueError(f"no process {name!r} in this lab (nodes: {sorted(self.nodes)}, "
                         f"origins: {sorted(self.origins)})")

    # -- drawn from the seed -------------------------------------------------------------
    def chaos(self: Any, *, nodes: list[str], origins: list[str] = (), start_s: float = 0.05,  # type: ignore[assignment]
              end_s: float = 5.0, faults: int = 3,
              kinds: tuple[str, ...] = ("partition", "crash", "pause", "skew"),
              down_s: tuple[float, float] = (0.2, 2.0)) -> list[tuple[float, str, tuple[Any, ...]]]:
        """Draw ``faults`` faults of the given ``kinds`` at times in
        ``[start_s, end_s]`` from the seed and schedule them; each disruptive
        one is undone (heal, restart, resume, rate 1) after a stretch drawn
        from ``down_s``. Returns the schedule (time, fault, args)."""
        rng: random.Random = self.fork("chaos")
        plan: list[tuple[float, str, tuple[Any, ...]]] = []
        for _ in range(faults):
            kind = rng.choice(sorted(kinds))
            t = round(rng.uniform(start_s, end_s), 6)
            down = round(rng.uniform(*down_s), 6)
            node = rng.choice(sorted(nodes))
            if kind == "partition":
                others = sorted(set(nodes) - {node}) + sorted(origins)
                plan += [(t, "partition", ([node], others)), (t + down, "heal", ())]
            elif kind == "crash":
                plan += [(t, "crash", (node,)), (t + down, "restart", (node,))]
            elif kind == "pause":
                plan.append((t, "pause", (node, down)))
            elif kind == "skew":
                plan += [(t, "skew", (node, round(rng.uniform(0.5, 1.5), 3))),
                         (t + down, "skew", (node, 1.0))]
            elif kind == "crash_origin" and origins:
                plan.append((t, "crash_origin", (rng.choice(sorted(origins)),)))
            elif kind == "expire_leases" and origins:
                plan.append((t, "expire_leases", (rng.choice(sorted(origins)),)))
        plan.sort(key=lambda p: p[0])
        for t, name, args in plan:
            self.at(t, getattr(self, name), *args)
        return plan


class DeadTimer(EngineTimer):
    """The engine timer of a crashed process: it never arms again."""

    def follow(self, engine: Any) -> None:
        pass


def _nothing() -> None:
    pass


def _run_fault(lab: Any, fault: Callable[..., Any], args: tuple[Any, ...]) -> None:
    fault(*args)
