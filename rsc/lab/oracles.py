"""The oracles checked after every lab run, and the report they make.

Each oracle reads what the run recorded (the trace, the spawn records of
each origin, the executions of each node incarnation, the quiescence
snapshot) and yields :class:`Violation` s naming the oracle, the seed, the
virtual time and the trace position where the rule broke:

``exactly_one_outcome``
    Every spawn of an origin that did not crash reaches exactly one terminal
    outcome (a result, a rejection, or a lease lapse settled by its policy):
    none by the end of settling is a violation, and so is a second one; and
    the origin engine reports at most one outcome (result, rejection, lapse,
    node restart) per attempt. A result that arrives after the escalation
    policy has settled the handle (``fail()`` after a lapse: the node was
    only cut off) is dropped by the runtime as documented; it is counted in
    the report (``late_results_dropped``), not a violation.
``at_most_once``
    No node incarnation starts one idempotency key twice (it holds the
    record for its TTL, longer than any lab run). A ``durable`` node (its
    journal on a disk that outlives a crash) does not start a key again
    after a restart either, within the TTL. A key started again by a *new*
    incarnation of a node without a journal, after a crash lost the record,
    is allowed and counted in the report (``reexecuted_after_crash``):
    visible, not hidden.
``quiescence``
    After settling, on every live node nothing runs (engine and executor),
    every execution started has finished, and accepted <= completed + failed
    + cancelled + panicked; every live origin holds no handle, task or
    lease; no asyncio task is left when the run ends.
``no_orphans``
    Work of a crashed origin is cancelled by the nodes: none of what ran at
    the crash runs more than its lease after it (a crash drops what the
    origin's connections carried, so a node last heard it at the crash at the
    latest, and cancels its tasks a lease after it last heard it).
``closed_region``
    When a region closes, no remote task spawned in it still runs on a node
    past the task's lease (a node can only learn of a lost origin by its
    silence, so a task may outlive its region by at most one lease).
    For both: a node measures a lease on its own clock and acts only while
    it runs, so a node whose clock was slowed (``skew``) gets the lease
    divided by its slowest rate, and one that was paused gets its paused time.
``lamport``
    Along every message delivered until the cluster settled, the receiver's
    Lamport time after reading it is greater than the sender's stamp on it.
``saga_compensation``
    A saga's compensations run last step first, each at most once, and only
    for steps that completed.
``run``
    The run itself finished: no deadlock (nothing ready, no timer), no
    virtual time limit hit, no exception out of the scenario, none left
    unhandled on the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rsc._engine.trace_names import REGION_CLOSED
from rsc.regions import live_regions


__all__ = ["Report", "Violation", "check", "snapshot"]

NS = 1_000_000_000


@dataclass(frozen=True)
class Violation:
    oracle: str
    seed: int
    t_ns: int
    position: int  # trace record ``seq`` (0: after the trace's end)
    message: str

    def __str__(self) -> str:
        return (f"VIOLATION {self.oracle} (seed {self.seed}, t={self.t_ns / NS:.6f} s, "
                f"trace #{self.position}): {self.message}")


@dataclass
class Report:
    """What one lab run showed: its violations, digest and figures."""

    seed: int
    digest: str
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every oracle held."""
        return not self.violations

    def format(self) -> str:
        """The report as text: the verdict, the figures, each violation."""
        lines = [f"seed {self.seed}: " + ("all oracles hold" if self.ok else
                                          f"{len(self.violations)} violation(s)")]
        for k in sorted(self.figures):
            lines.append(f"  {k}: {self.figures[k]}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        for v in self.violations:
            lines.append(str(v))
        lines.append(f"digest: {self.digest}")
        return "\n".join(lines)


def snapshot(lab: Any) -> dict[str, Any]:
    """The cluster's state once settled, before it is shut down."""
    nodes = {}
    for node in lab.nodes.values():
        if node.crashed:
            continue
        nodes[str(node.name)] = dict(
            running=node.engine.running, executor_running=node.executor.running,
            counters=dict(node.engine.counters), incarnation=node.incarnation,
            running_tasks=[(str(t.origin), t.rtid) for t in node.engine.running_tasks()])
    origins = {}
    unsettled: set[tuple[str, int]] = set()  # (origin, first rtid) of spawns with no outcome yet
    for rt in lab.runtimes():
        name = str(rt.name)
        if not rt.crashed:
            origins[name] = rt.debug_counts()
            unsettled.update((name, rec.rtids[0]) for rec in rt.records
                             if not rec.handle.is_finished())
    return dict(t_ns=lab.loop.now_ns(), end_seq=len(lab.trace), nodes=nodes, origins=origins,
                live_regions=live_regions(), unsettled=unsettled)


def check(lab: Any) -> Report:
    """Run every oracle over the finished ``lab``'s trace; the report."""
    trace = lab.trace.records
    report = Report(lab.seed, lab.trace.digest())
    v = report.violations
    end_t = trace[-1]["t_ns"] if trace else 0

    def add(oracle: str, t_ns: int, pos: int, message: str) -> None:
        v.append(Violation(oracle, lab.seed, t_ns, pos, message))

    # -- run ------------------------------------------------------------------------------
    if lab.failure is not None:
        add("run", end_t, len(trace), f"{type(lab.failure).__name__}: {lab.failure}")
    for ctx in lab.loop.unhandled:
        add("run", end_t, len(trace), f"unhandled on the loop: {ctx.get('message')} "
            f"{ctx.get('exception')!r}")
    q = getattr(lab, "quiescence", None)

    # -- exactly one outcome ------------------------------------------------------------------
    spawns = late = 0
    for rt in lab.runtimes():
        name = str(rt.name)
        for rec in rt.records:
            spawns += 1
            if rt.crashed:
                continue
            late += len(rec.late)
            for rtid, reps in rec.reported.items():
                if len(reps) > 1:
                    how, seq, t = reps[1]
                    add("exactly_one_outcome", t, seq, f"the engine of {name} reported a second "
                        f"outcome ({how}) for rtid {rtid} after {reps[0][0]} (trace #{reps[0][1]})")
            if len(rec.outcomes) > 1:
                how, seq, t = rec.outcomes[1]
                add("exactly_one_outcome", t, seq, f"spawn of {name} rtid {rec.rtids[0]} "
                    f"(attempts {rec.rtids}) got a second outcome ({how}) after "
                    f"{rec.outcomes[0][0]}")
            elif (q is not None and (name, rec.rtids[0]) in q["unsettled"]) or (
                    not rec.outcomes and not rec.handle.is_finished()):
                at = q["end_seq"] if q else len(trace)
                add("exactly_one_outcome", q["t_ns"] if q else end_t, at,
                    f"spawn of {name} rtid {rec.rtids[0]} (trace #{rec.seq}) has no outcome "
                    f"when the run settled ({rec.handle!r})")

    # -- at most once per held key ----------------------------------------------------------
    reexecuted = 0
    first_by_key: dict[bytes, tuple[str, int, int]] = {}  # key -> (node, incarnation, seq)
    for node in lab.all_nodes:
        ttl_ns = node.engine.ttl_ns
        for key, seqs in node.started_keys.items():
            if len(seqs) > 1:
                rec = trace[seqs[1] - 1]
                add("at_most_once", rec["t_ns"], seqs[1],
                    f"node {node.name} (incarnation {node.incarnation}) started key {key.hex()} "
                    f"again (first at trace #{seqs[0]})")
            prev = first_by_key.get(key)
            if prev is not None and prev[0] == str(node.name):
                first, again = trace[prev[2] - 1], trace[seqs[0] - 1]
                if node.durable and again["t_ns"] - first["t_ns"] <= ttl_ns:
                    # its journal held the record across the crash: running it again breaks
                    # at most once (a record lives at least the TTL after the task started)
                    add("at_most_once", again["t_ns"], seqs[0],
                        f"durable node {node.name} (incarnation {node.incarnation}) started key "
                        f"{key.hex()} again after a restart (first by incarnation {prev[1]} at "
                        f"trace #{prev[2]}): its journal should have kept the record")
                else:
                    reexecuted += 1
            else:
                first_by_key[key] = (str(node.name), node.incarnation, seqs[0])

    # -- quiescence and orphans -----------------------------------------------------------------
    if q is not None:
        t, pos = q["t_ns"], q["end_seq"]
        for name, s in q["nodes"].items():
            c = s["counters"]
            if s["running"] or s["executor_running"]:
                crashed = sorted({str(r.name) for r in lab.runtimes() if r.crashed})
                orphans = [x for x in s["running_tasks"] if x[0] in crashed]
                what = "no_orphans" if orphans else "quiescence"
                add(what, t, pos, f"node {name} still runs {s['running']} task(s) "
                    f"(executor {s['executor_running']}) after settling: {s['running_tasks'][:5]}")
            if c["accepted"] > c["completed"] + c["failed"] + c["cancelled"] + c["panicked"]:
                add("quiescence", t, pos, f"node {name}: accepted {c['accepted']} > completed + "
                    f"failed + cancelled + panicked ({c})")
        for node in lab.all_nodes:
            if node.crashed:
                continue
            started = sum(len(s) for s in node.started_keys.values())
            finished = node.finished_count
            if started != finished:
                add("quiescence", t, pos, f"node {node.name}: {started} executions started, "
                    f"{finished} finished")
        for name, counts in q["origins"].items():
            if any(counts.values()):
                add("quiescence", t, pos, f"origin {name} still holds {counts} after settling")
    left = getattr(lab, "leftover_tasks", [])
    if left:
        add("quiescence", end_t, len(trace), f"{len(left)} asyncio task(s) left at the end: {left[:5]}")
    if q is not None and q["live_regions"] != lab.regions_before:
        add("quiescence", q["t_ns"], q["end_seq"],
            f"{q['live_regions'] - lab.regions_before} region(s) still open after settling")

    # -- closed region: no live remote descendant --------------------------------------------
    _check_regions(lab, trace, add)

    # -- Lamport order along causal edges ----------------------------------------------------------
    # (up to settling: what arrives while the lab then closes the processes, a
    # closed runtime drops unread, so its clock does not move)
    for rec in trace[:q["end_seq"] if q is not None else len(trace)]:
        if (rec["event"] == "recv" and rec.get("stamp") is not None
                and rec["lamport"] <= rec["stamp"]):
            add("lamport", rec["t_ns"], rec["seq"], f"{rec['who']} read {rec['kind']} from "
                f"{rec['from']} stamped {rec['stamp']} but its clock is {rec['lamport']}")
            break

    # -- saga compensations -------------------------------------------------------------------------
    _check_sagas(trace, add)

    report.figures = dict(
        spawns=spawns, virtual_s=round(lab.loop.now_ns() / NS, 6), trace_records=len(trace),
        frames=lab.net.counts["frames"], resets=lab.net.counts["resets"],
        lost=lab.net.counts["lost"], duplicated=lab.net.counts["duplicated"],
        faults=sum(1 for r in trace if r["event"] == "fault"),
        reexecuted_after_crash=reexecuted, late_results_dropped=late,
        records_restored=sum(n.restored for n in lab.all_nodes))
    report.notes = list(lab.notes)
    return report


#: what the closed-region and orphan bounds allow beyond their leases: the
#: nanoseconds lost converting a lease between a node's clock and virtual time
ROUNDING_NS = 1_000


def _check_regions(lab: Any, trace: list[dict[str, Any]], add: Any) -> None:
    # (origin, rtid) -> (region ordinal, lease ns, node) from the spawn records,
    # and the node task whose computation spawned it (a nested runtime's spawns)
    spawned: dict[tuple[str, int], tuple[Any, int, str]] = {}
    children: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for rec in trace:
        if rec["event"] == "spawn":
            key = (rec["who"], rec["rtid"])
            spawned[key] = (rec.get("region_id"), rec["lease_ms"] * 1_000_000, rec["node"])
            if "parent" in rec:
                children.setdefault((rec["parent"][0], rec["parent"][1]), []).append(key)
        elif rec["event"] == "reattempt":
            prev = spawned.get((rec["who"], rec["rtid"]))
            if prev is not None:
                spawned[(rec["who"], rec["new_rtid"])] = (prev[0], prev[1], rec["node"])
    # per (origin, rtid): the executions [node, start, end) in trace order
    running: dict[tuple[str, int], list[list[Any]]] = {}
    closes: list[tuple[str, int, int, int]] = []  # (origin, region, t_ns, seq)
    origin_crashes: list[tuple[str, int, int]] = []  # (origin, t_ns, seq)
    # A node can only act on its own clock and while it runs: per node, the
    # slowest rate its clock ran at and the stretches it was paused.
    slowest: dict[str, float] = {}
    paused: dict[str, list[list[int | None]]] = {}
    for rec in trace:
        ev = rec["event"]
        if ev == "fault" and rec.get("fault") == "skew":
            slowest[rec["process"]] = min(slowest.get(rec["process"], 1.0), rec["rate"])
        elif ev == "fault" and rec.get("fault") == "pause":
            paused.setdefault(rec["process"], []).append([rec["t_ns"], None])
        elif ev == "fault" and rec.get("fault") == "resume":
            for stretch in paused.get(rec["process"], ()):
                if stretch[1] is None:
                    stretch[1] = rec["t_ns"]
        elif ev == "execute":
            running.setdefault((rec["origin"], rec["rtid"]), []).append(
                [rec["who"], rec["t_ns"], None])
        elif ev == "finished":
            for span in running.get((rec["origin"], rec["rtid"]), ()):
                if span[0] == rec["who"] and span[2] is None:
                    span[2] = rec["t_ns"]
                    break
        elif ev == "fault" and rec.get("fault") == "crash":
            for spans in running.values():
                for span in spans:
                    if span[0] == rec["node"] and span[2] is None:
                        span[2] = rec["t_ns"]  # a crash ends what ran there
        elif ev == "fault" and rec.get("fault") == "crash_origin":
            origin_crashes.append((rec["origin"], rec["t_ns"], rec["seq"]))
        elif ev == REGION_CLOSED:
            closes.append((rec["who"], rec["region_id"], rec["t_ns"], rec["seq"]))
    end = lab.loop.now_ns()

    def allowance(path: list[tuple[str, int]], since: int) -> int:
        """How long after ``since`` a task may run at the end of ``path`` (the
        (node, lease) of each task from the region's own down to it): each
        level's node notices on its own clock, and only while it runs."""
        allowed = 0
        for node, lease_ns in path:
            rate = slowest.get(node, 1.0)
            allowed += int(lease_ns / rate) if rate > 0 else end
        for node in {n for n, _ in path}:
            for a, b in paused.get(node, ()):
                assert a is not None  # a stretch's start is always set
                b = end if b is None else b
                allowed += max(0, min(b, end) - max(a, since))
        return allowed + ROUNDING_NS * len(path)

    def descendants(roots: list[tuple[str, int]]) -> list[tuple[tuple[str, int], list[tuple[str, int]]]]:
        """Each task below ``roots`` (themselves included) with its path of (node, lease)."""
        out, todo = [], [(r, [(spawned[r][2], spawned[r][1])]) for r in roots]
        while todo:
            task, path = todo.pop()
            out.append((task, path))
            for child in children.get(task, ()):
                todo.append((child, path + [(spawned[child][2], spawned[child][1])]))
        return out

    for origin, region, t_close, seq in closes:
        roots = sorted(k for k, v in spawned.items() if k[0] == origin and v[0] == region)
        for (o, rtid), path in descendants(roots):
            for node, _start, stop in running.get((o, rtid), ()):
                stop = end if stop is None else stop
                if stop > t_close + allowance(path, t_close):
                    depth = f" (a descendant {len(path) - 1} level(s) down)" if len(path) > 1 else ""
                    add("closed_region", t_close, seq,
                        f"region {region} of {origin} closed while rtid {rtid} of {o}{depth} ran on "
                        f"{node} until {stop / NS:.6f} s (more than its leases later)")
    for origin, t_crash, seq in origin_crashes:
        # A crash resets the origin's connections and drops what they carried:
        # nothing of it reaches a node afterwards, so a node last heard it at
        # the crash at the latest, and its silence check cancels each task of
        # it a lease later (descendants: the leases below, as for a region)
        roots = sorted(k for k in running if k[0] == origin and k in spawned)
        for (o, rtid), path in descendants(roots):
            for node, _start, stop in running.get((o, rtid), ()):
                stop = end if stop is None else stop
                if _start <= t_crash and stop > t_crash + allowance(path, t_crash):
                    add("no_orphans", t_crash, seq,
                        f"origin {origin} crashed, yet rtid {rtid} of {o} ran on {node} until "
                        f"{stop / NS:.6f} s (a node cancels an orphan a lease after it last heard "
                        f"its origin)")


def _check_sagas(trace: list[dict[str, Any]], add: Any) -> None:
    sagas: dict[str, dict[str, Any]] = {}
    for rec in trace:
        ev = rec["event"]
        if not ev.startswith("saga::"):
            continue
        s = sagas.setdefault(rec["saga_id"], dict(completed=set(), compensated=[]))
        if ev == "saga::step_completed":
            s["completed"].add(rec["step"])
        elif ev == "saga::compensation_started":
            step = rec["step"]
            done = s["compensated"]
            if step in done:
                add("saga_compensation", rec["t_ns"], rec["seq"],
                    f"saga {rec['saga']}: step {step} compensated twice")
            elif done and step > done[-1]:
                add("saga_compensation", rec["t_ns"], rec["seq"],
                    f"saga {rec['saga']}: step {step} compensated after step {done[-1]} "
                    f"(not last-to-first)")
            elif step not in s["completed"]:
                add("saga_compensation", rec["t_ns"], rec["seq"],
                    f"saga {rec['saga']}: step {step} compensated but never completed")
            done.append(step)
