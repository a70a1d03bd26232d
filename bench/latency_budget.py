"""Where a no-op's round trip spends its time: a latency budget, unloaded and
under open-loop load.

Run it as ``python -m bench.latency_budget`` (``--help`` for the options). It
starts one node of its own (the node of ``rsc node``, with the collector set
up the same way) whose connections are wrapped to record the time of every
read and write, and runs from this process (uvloop) the computation
``stamp``, a no-op that returns the time it ran. Every clock is
``time.monotonic_ns()``, which both processes share, so one request's
stages can be put end to end:

``pace``
    due -> the sender handing the request over (its own lateness)
``hand``
    -> ``spawn_remote`` called on the origin's loop (for the process
    sender: the socket, and the origin's loop getting the CPU and reading
    it; for the thread sender: ``call_soon_threadsafe``, the interpreter
    lock, the loop's turn)
``o.queue``
    spawn -> the origin's ``write`` of the frame that carries it
``o->n``
    that write -> the node's read of it (the kernel, and the node getting
    the CPU and reaching its socket)
``n.run``
    the node's read -> the computation running (decoding, admission, the
    loop turn(s) before the computation's first step)
``n.queue``
    the computation -> the node's ``write`` of its result
``n->o``
    that write -> the origin's read of it
``o.done``
    the origin's read -> the caller noticing the result (the harness)

For each stage it prints p50 and p99 across the requests, unloaded (one at a
time) and at each load (open loop, a fraction of the maximum rate measured
first, as in ``bench_latency.py``). The wrappers add a few microseconds to
every read and write, the same in every row. With ``--syscalls`` it also
counts, per request, the system calls the origin's process and the node's
made during each run (``perf stat`` on the kernel's tracepoints, which
costs them next to nothing), the process sender's too. Per run it prints,
for each process, the CPU per request, how long it waited runnable for a
CPU, how often it slept and was woken and how often it was preempted, and
the processes' CPU together as cores.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from typing import Any

from bench.figures import runqueue_wait_ns
from bench.latency_sender import SENDERS
from rsc import Registry, Runtime, spawn_remote

registry = Registry()


@registry.computation("stamp")
async def stamp(cx: Any, data: bytes) -> bytes:
    """The time it ran (monotonic ns)."""
    return struct.pack("<q", time.monotonic_ns())


STAGES = ("pace", "hand", "o.queue", "o->n", "n.run", "n.queue", "n->o", "o.done", "total")


# ------------------------------------------------------------------- stamping wrappers


class StampTransport:
    """A transport that records the time and size of every write it passes on."""

    def __init__(self, transport: Any, writes: array) -> None:
        self._t = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(time.monotonic_ns())
        self._t.write(data)

    def writelines(self, parts: Any) -> None:
        self._writes.append(time.monotonic_ns())
        self._t.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class StampProtocol:
    """A protocol in front of a FramedConnection that records every read."""

    def __init__(self, conn: Any, reads: array, after_read: Any = None) -> None:
        self._conn = conn
        self._reads = reads
        self._after_read = after_read

    def connection_made(self, transport: Any) -> None:
        self._conn.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        t = time.monotonic_ns()
        self._reads.append(t)
        self._conn.data_received(data)
        if self._after_read is not None:
            self._after_read(t)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


# ---------------------------------------------------------------------- the collector


class GcLog:
    """Every pass of this process's collector: start and end (monotonic ns)
    and generation, recorded from ``gc.callbacks`` once ``start`` is called."""

    def __init__(self, count_objects: bool = False) -> None:
        self.starts, self.ends, self.gens = array("q"), array("q"), array("b")
        self.walked = array("q")  # objects in the generations a pass examines (with count_objects)
        self._count = count_objects

    def start(self) -> None:
        gc.callbacks.append(self._on)

    def _on(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            g = info["generation"]
            self.walked.append(sum(len(gc.get_objects(i)) for i in range(g + 1)) if self._count else 0)
            self.starts.append(time.monotonic_ns())
            self.gens.append(g)
        else:
            self.ends.append(time.monotonic_ns())

    def dump(self) -> bytes:
        n = len(self.ends)
        return (struct.pack("<q", n) + self.starts[:n].tobytes() + self.ends[:n].tobytes()
                + self.gens[:n].tobytes() + self.walked[:n].tobytes())

    @classmethod
    def load(cls, f: Any) -> GcLog:
        log = cls()
        (n,) = struct.unpack("<q", f.read(8))
        log.starts.fromfile(f, n)
        log.ends.fromfile(f, n)
        log.gens.fromfile(f, n)
        log.walked.fromfile(f, n)
        log._count = any(log.walked)
        return log

    def overlaps(self, t0: int, t1: int) -> bool:
        """Whether a pass ran during part of ``t0`` to ``t1``."""
        i = bisect.bisect_left(self.starts, t1)  # passes before i started before t1
        return i > 0 and (self.starts[i - 1] >= t0 or self.ends[i - 1] > t0)

    def within(self, t0: int, t1: int) -> str:
        """The passes that started between ``t0`` and ``t1``: how many, per
        generation, the total and the longest pause."""
        took = [(e - s, g) for s, e, g in zip(self.starts, self.ends, self.gens) if t0 <= s <= t1]
        if not took:
            return "no collections"
        per_gen = "/".join(str(sum(1 for _, g in took if g == gen)) for gen in range(3))
        walked = [w for s, w in zip(self.starts, self.walked) if t0 <= s <= t1]
        return (f"{len(took)} collections (gen 0/1/2: {per_gen}), {sum(d for d, _ in took) / 1e6:.1f} ms, "
                f"longest {max(d for d, _ in took) / 1e3:.0f} us"
                + (f", {sum(walked):,} objects examined (most {max(walked):,})" if self._count else ""))


# ----------------------------------------------------------------------------- the node


def node_main(address: str, out: str, collector: str = "on") -> None:
    """A node on ``address`` whose reads and writes are recorded; on SIGTERM it
    shuts down and writes them to ``out`` (two arrays of ns, then its
    collector's passes). ``collector``: ``on`` (as ``rsc node`` sets it up),
    ``off`` (disabled once listening: what the node costs without it) or
    ``count`` (on, counting the objects each pass examines)."""
    from rsc.node.main import new_event_loop, tune_gc
    from rsc.node.server import NodeServer

    reads, writes = array("q"), array("q")
    gcs = GcLog(count_objects=collector == "count")

    class StampingNode(NodeServer):
        def _make_connection(self) -> Any:
            conn = NodeServer._make_connection(self)
            return _NodeSide(conn, reads, writes)

    async def serve() -> None:
        server = StampingNode("budget", address, registry, capacity=200_000)
        await server.start()
        tune_gc()
        gcs.start()
        if collector == "off":
            gc.disable()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, server.request_shutdown)
        print("READY", flush=True)
        await server.serve_until_stopped()

    loop = new_event_loop()
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()
    with open(out, "wb") as f:
        f.write(struct.pack("<qq", len(reads), len(writes)))
        reads.tofile(f)
        writes.tofile(f)
        f.write(gcs.dump())


class _NodeSide(StampProtocol):
    def __init__(self, conn: Any, reads: array, writes: array) -> None:
        super().__init__(conn, reads)
        self._writes = writes

    def connection_made(self, transport: Any) -> None:
        self._conn.connection_made(StampTransport(transport, self._writes))


def stop_node(node: subprocess.Popen, out: str) -> tuple[array, array, GcLog]:
    """SIGTERM the budget node (by pid), wait for it, and read its stamps."""
    node.send_signal(signal.SIGTERM)
    node.wait(30)
    assert node.stdout is not None
    node.stdout.close()
    return read_node_stamps(out)


def read_node_stamps(path: str) -> tuple[array, array, GcLog]:
    with open(path, "rb") as f:
        nr, nw = struct.unpack("<qq", f.read(16))
        reads, writes = array("q"), array("q")
        reads.fromfile(f, nr)
        writes.fromfile(f, nw)
        return reads, writes, GcLog.load(f)


# --------------------------------------------------------------------------- the origin


class Run:
    """One run's requests, as columns of monotonic ns (arrays: nothing here
    for the origin's collector to walk, which would otherwise be the harness's
    own pauses): ``due``, ``handed`` (by the sender), ``spawned``, ``oread``
    (the origin's read of its result), ``noticed`` (by the awaiting
    coroutine) and ``ran`` (the node's stamp). A handle is held only while
    its request is in flight."""

    COLUMNS = ("due", "handed", "spawned", "oread", "noticed", "ran")

    def __init__(self, n: int) -> None:
        for name in self.COLUMNS:
            setattr(self, name, array("q", bytes(8 * n)))
        self.handles: list[Any] = []
        self.unread = 0  # the first request whose result the origin has not read

    def __len__(self) -> int:
        return len(self.handles)

    def done(self, k: int, t: int) -> None:
        """Request ``k``'s result, noticed at ``t``: keep its stamp, drop its handle."""
        self.noticed[k] = t
        self.ran[k] = struct.unpack("<q", self.handles[k].try_join())[0]
        self.handles[k] = None


class Origin:
    """The origin's side of the stamping: its connection to the node wrapped,
    and the requests of the current run."""

    def __init__(self, rt: Runtime, node: str, count_objects: bool = False) -> None:
        self.rt, self.node, self.cx = rt, node, rt.cx()
        self.reads, self.writes = array("q"), array("q")
        self.gcs = GcLog(count_objects=count_objects)
        self.gcs.start()
        self.run = Run(0)

    async def wrap(self) -> None:
        await spawn_remote(self.cx, self.node, "stamp", b"").join()  # connects
        conn = self.rt._net.by_node[self.node].conn
        real = conn.transport
        conn.transport = StampTransport(real, self.writes)
        real.set_protocol(StampProtocol(conn, self.reads, self._after_read))

    def _after_read(self, t: int) -> None:
        run = self.run
        hs, i = run.handles, run.unread
        while i < len(hs) and (hs[i] is None or hs[i].is_finished()):
            run.oread[i] = t
            i += 1
        run.unread = i

    def send(self, due: int) -> int:
        """Spawn a request due at ``due``: its index in the run."""
        run = self.run
        k = len(run.handles)
        run.due[k] = due
        run.handed[k] = run.spawned[k] = time.monotonic_ns()
        run.handles.append(spawn_remote(self.cx, self.node, "stamp", b""))
        return k

    def new_run(self, n: int) -> Run:
        """Start a run of ``n`` requests (the read and write records go on)."""
        self.run = Run(n)
        return self.run


async def unloaded(o: Origin, n: int) -> None:
    for _ in range(n):
        k = o.send(time.monotonic_ns())
        await o.run.handles[k].join()
        o.run.done(k, time.monotonic_ns())


async def max_rate(o: Origin, n: int) -> float:
    t0 = time.perf_counter()
    hs = [spawn_remote(o.cx, o.node, "stamp", b"") for _ in range(n)]
    for h in hs:
        await h.join()
    return n / (time.perf_counter() - t0)


async def open_loop_spin(o: Origin, rate: float, n: int) -> None:
    """The sender of bench_latency.py before: a coroutine on the runtime's loop
    that yields with ``asyncio.sleep(0)`` between passes."""
    interval = int(1e9 / rate)
    t0 = time.monotonic_ns() + 1_000_000
    sent = done = 0
    hs = o.run.handles
    while done < n:
        now = time.monotonic_ns()
        while sent < n and t0 + sent * interval <= now:
            o.send(t0 + sent * interval)
            sent += 1
        while done < sent and hs[done].is_finished():
            o.run.done(done, time.monotonic_ns())
            done += 1
        await asyncio.sleep(0)


async def open_loop(o: Origin, sender: str, rate: float, n: int, cpu: Cpu | None = None,
                    spin_us: int = 0) -> None:
    """An open-loop run with a sender of ``bench.latency_sender`` (``proc``:
    a process writing to a socket the loop reads; ``thread``: a thread of
    this process): the loop spawns each request as it arrives, and one
    coroutine awaits the handles in order. With ``spin_us``, a busy-poll
    window: after each arrival the loop keeps polling its sockets (a
    callback that schedules itself, so each loop turn polls with a zero
    timeout) for up to ``spin_us`` while a result is outstanding, instead of
    sleeping in its poll."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    run = o.run
    idle: list[asyncio.Future[None] | None] = [None]
    t0: list[float] = [0.0]
    spin_ns, spinning = spin_us * 1000, [False]

    def spin(until: int) -> None:
        if run.unread < len(run.handles) and time.monotonic_ns() < until:
            loop.call_soon(spin, until)
        else:
            spinning[0] = False

    def arrive(i: int, j: int) -> None:
        for k in range(i, j):
            o.send(int((t0[0] + k * interval) * 1e9))
        if spin_ns and not spinning[0]:
            spinning[0] = True
            loop.call_soon(spin, time.monotonic_ns() + spin_ns)
        if idle[0] is not None:
            idle[0].set_result(None)
            idle[0] = None

    make = SENDERS[sender]
    s: Any = (make(interval, n, arrive, on_start=cpu.sender_started) if cpu is not None and sender == "proc"
              else make(interval, n, arrive))
    async with s:
        t0[0] = s.t0
        done = 0
        while done < n:
            if done == len(run):
                idle[0] = loop.create_future()
                await idle[0]
                continue
            await run.handles[done].join()
            run.done(done, time.monotonic_ns())
            done += 1
    run.handed[:] = s.sent
    if cpu is not None and sender == "proc":
        cpu.sender = s.stats


# ----------------------------------------------------------------------------- analysis


def budget(run: Run, o_writes: array, n_reads: array, n_writes: array) -> dict[str, list[float]]:
    """Each request's stages in us."""
    ow, nr, nw = sorted(o_writes), sorted(n_reads), sorted(n_writes)
    out: dict[str, list[float]] = {s: [] for s in STAGES}
    for due, handed, spawned, oread, noticed, ran in zip(run.due, run.handed, run.spawned, run.oread,
                                                         run.noticed, run.ran):
        if not oread or not noticed:
            continue
        i = bisect.bisect_left(ow, spawned)
        owrite = ow[i] if i < len(ow) else spawned
        j = bisect.bisect_right(nr, ran) - 1
        nread = nr[j] if j >= 0 else ran
        k = bisect.bisect_left(nw, ran)
        nwrite = nw[k] if k < len(nw) else ran
        for name, a, b in (("pace", due, handed), ("hand", handed, spawned), ("o.queue", spawned, owrite),
                           ("o->n", owrite, nread), ("n.run", nread, ran),
                           ("n.queue", ran, nwrite), ("n->o", nwrite, oread),
                           ("o.done", oread, noticed), ("total", due, noticed)):
            out[name].append((b - a) / 1000)
    return out


def out_of_order(stamps: array) -> int:
    """How many requests have a stamp earlier than an earlier request's."""
    count, latest = 0, 0
    for t in stamps:
        if t < latest:
            count += 1
        latest = max(latest, t)
    return count


def slowest_in_collections(run: Run, logs: dict[str, GcLog]) -> str:
    """Of the slowest 1% of requests (due -> noticed), the share that were in
    flight while each process's collector ran."""
    done = sorted((k for k in range(len(run)) if run.noticed[k]), key=lambda k: run.noticed[k] - run.due[k])
    worst = done[len(done) - max(1, len(done) // 100):]
    return ", ".join(f"{name} {sum(1 for k in worst if log.overlaps(run.due[k], run.noticed[k])) / len(worst):.0%}"
                     for name, log in logs.items())


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))] if s else float("nan")


def show(rows: list[tuple[str, dict[str, list[float]]]]) -> None:
    print("stage".ljust(10) + "".join(name.rjust(22) for name, _ in rows))
    for s in STAGES:
        cells = [f"{pct(b[s], 0.5):9.0f} /{pct(b[s], 0.99):9.0f}" for _, b in rows]
        print(s.ljust(10) + "".join(c.rjust(22) for c in cells))
    print("(p50 / p99 in us; " + ", ".join(f"{name}: {len(b['total'])} requests" for name, b in rows) + ")")
    print("the slowest 1% (by total), mean per stage:")
    for s in STAGES:
        print(s.ljust(10) + "".join(f"{slowest_mean(b, s):9.0f}".rjust(22) for _, b in rows))


def slowest_mean(stages: dict[str, list[float]], stage: str) -> float:
    """The mean of ``stage`` over the slowest 1% of requests by total."""
    total = stages["total"]
    order = sorted(range(len(total)), key=total.__getitem__)
    worst = order[len(order) - max(1, len(order) // 100):]
    return sum(stages[stage][i] for i in worst) / len(worst) if worst else float("nan")


# --------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> None:
    from rsc.node.main import new_event_loop
    from rsc.transport import connection

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for policy in args.write:
        connection.WRITE_AT_ONCE = policy == "now"
        tmp = tempfile.mkdtemp(prefix="rsc-budget-")
        address, out = f"unix:{tmp}/node.sock", f"{tmp}/stamps"
        node = subprocess.Popen([sys.executable, "-m", "bench.latency_budget", "--node", address, out,
                                 "--write", policy, "--node-gc", args.node_gc], stdout=subprocess.PIPE, text=True, cwd=root)
        try:
            assert node.stdout is not None
            if node.stdout.readline().strip() != "READY":
                raise RuntimeError("the budget node did not start")
            if args.pin != "none":
                from bench.figures import pin

                pin([0], {0})
                pin([node.pid], {0} if args.pin == "same" else {1})
            loop = new_event_loop()
            try:
                rows, o = loop.run_until_complete(measure(args, address, node.pid))
            finally:
                loop.close()
            n_reads, n_writes, n_gc = stop_node(node, out)
        finally:
            if node.poll() is None:
                node.kill()
                node.wait(30)
            shutil.rmtree(tmp, ignore_errors=True)
        table = [(name, budget(reqs, o.writes, n_reads, n_writes)) for name, reqs, _ in rows]
        print(f"\nwrites: {'at once (now)' if policy == 'now' else 'at the end of the turn (turn)'}"
              f"; load average {os.getloadavg()[0]:.2f}; origin gc {args.origin_gc}, node gc {args.node_gc}"
              f"; switch interval {sys.getswitchinterval() * 1e3:g} ms")
        show(table)
        for name, reqs, cpu in rows:
            n = len(reqs)
            wall = (cpu.wall[0] - cpu.wall[1]) / 1e9
            print(f"  {name}: CPU per request: origin {cpu.origin_s / n * 1e6:.1f} us, node "
                  f"{cpu.node_s / n * 1e6:.1f} us; busy: origin {cpu.origin_s / wall:.0%}, node "
                  f"{cpu.node_s / wall:.0%}; requests per origin read {n / max(1, cpu.io[0]):.1f}, "
                  f"per origin write {n / max(1, cpu.io[1]):.1f}")
            if args.pin != "none":
                print(f"    pinned: origin on CPU 0, node on CPU {0 if args.pin == 'same' else 1}, "
                      "the sender not pinned")
            later = out_of_order(reqs.ran)
            print(f"    requests that ran before an earlier one (whose result the in-order "
                  f"awaiting notices late): {later}")
            span = (max(reqs.noticed) - reqs.due[0]) / 1e9 if n > 1 else wall
            print("\n".join(cpu.accounts(n, span)))
            print(f"    collector: origin {o.gcs.within(cpu.wall[1], cpu.wall[0])}; "
                  f"node {n_gc.within(cpu.wall[1], cpu.wall[0])}; the slowest 1% in flight during "
                  f"one: {slowest_in_collections(reqs, {'origin': o.gcs, 'node': n_gc})}")


SYSCALLS = ("epoll_wait", "epoll_pwait", "epoll_ctl", "read", "recvfrom", "write", "sendto", "writev",
            "sendmsg", "futex", "getpid", "clock_nanosleep")  # the ones counted by name (with --syscalls); the total counts all


class Syscalls:
    """While entered, the system calls a process makes, counted by ``perf stat``
    on the kernel's tracepoints (``raw_syscalls:sys_enter`` for the total, one
    ``syscalls:sys_enter_<name>`` for each of ``SYSCALLS``), which costs the
    process next to nothing, unlike ``strace``. ``counts``: name -> count,
    ``"total"`` for all."""

    def __init__(self, pid: int) -> None:
        self.pid, self.counts = pid, {}

    def __enter__(self) -> Syscalls:
        fd, self._out = tempfile.mkstemp(prefix="rsc-perf-")
        os.close(fd)
        events = ",".join(["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{n}" for n in SYSCALLS])
        self._perf = subprocess.Popen(["perf", "stat", "--no-inherit", "-x,", "-e", events, "-p", str(self.pid),
                                       "-o", self._out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # perf attaching (the run's first request is due 0.5 s after it starts)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._perf.send_signal(signal.SIGINT)
            self._perf.wait(30)
            with open(self._out) as f:
                for line in f:
                    fields = line.strip().split(",")
                    if len(fields) > 2 and fields[0].isdigit():
                        name = fields[2].split(":")[-1].removeprefix("sys_enter_")
                        self.counts["total" if name == "sys_enter" else name] = int(fields[0])
        finally:
            if self._perf.poll() is None:
                self._perf.kill()
                self._perf.wait(30)
            os.unlink(self._out)

    def per_request(self, n: int) -> str:
        """The counts per request, the total first, names with none left out."""
        return ", ".join(f"{name} {c / n:.2f}" for name, c in
                         sorted(self.counts.items(), key=lambda kv: (kv[0] != "total", -kv[1])) if c)


class Cpu:
    """CPU seconds used by this process and the node's during a run, how long
    each waited for a CPU while runnable, how often each was switched out
    (voluntary: it slept, and was woken; involuntary: preempted), and the
    reads and writes this process made; with ``syscalls``, the system calls
    each made (``Syscalls``). The process sender, when one runs, reports the
    same of itself (``sender``; its system calls through ``sender_started``)."""

    def __init__(self, o: Origin, node_pid: int, syscalls: bool = False) -> None:
        import psutil

        self.o, self.node = o, psutil.Process(node_pid)
        self.origin = psutil.Process(os.getpid())
        self.calls: tuple[Syscalls, ...] = (Syscalls(os.getpid()), Syscalls(node_pid)) if syscalls else ()
        self.sender: dict[str, int] = {}
        self.sender_calls: Syscalls | None = None

    def sender_started(self, pid: int) -> None:
        """The process sender ``pid`` started: count its system calls too (with ``syscalls``)."""
        if self.calls:
            self.sender_calls = Syscalls(pid).__enter__()

    def _switches(self) -> tuple[int, int, int, int]:
        o, n = self.origin.num_ctx_switches(), self.node.num_ctx_switches()
        return o.voluntary, o.involuntary, n.voluntary, n.involuntary

    def __enter__(self) -> Cpu:
        for c in self.calls:
            c.__enter__()
        self.c0 = sum(os.times()[:2])
        self.n0 = sum(self.node.cpu_times()[:2])
        self.wall0 = time.monotonic_ns()
        self.io0 = len(self.o.reads), len(self.o.writes)
        self.w0 = runqueue_wait_ns(os.getpid()), runqueue_wait_ns(self.node.pid)
        self.s0 = self._switches()
        return self

    def __exit__(self, *exc: object) -> None:
        self.origin_s = sum(os.times()[:2]) - self.c0
        self.node_s = sum(self.node.cpu_times()[:2]) - self.n0
        self.wall = (time.monotonic_ns(), self.wall0)
        self.io = len(self.o.reads) - self.io0[0], len(self.o.writes) - self.io0[1]
        self.waited_s = ((runqueue_wait_ns(os.getpid()) - self.w0[0]) / 1e9,
                         (runqueue_wait_ns(self.node.pid) - self.w0[1]) / 1e9)
        self.switches = tuple(b - a for a, b in zip(self.s0, self._switches()))
        for c in self.calls:
            c.__exit__()
        if self.sender_calls is not None:
            self.sender_calls.__exit__()

    def accounts(self, n: int, span_s: float) -> list[str]:
        """Per process, per request: CPU, waits for a CPU, wake-ups, preemptions,
        system calls; and the processes' CPU as cores over ``span_s``, the
        seconds from the first request's due time to the last result."""
        wall = span_s
        vo, io, vn, in_ = self.switches
        rows = [("origin", self.origin_s, self.waited_s[0], vo, io, self.calls[0] if self.calls else None),
                ("node", self.node_s, self.waited_s[1], vn, in_, self.calls[1] if self.calls else None)]
        st = self.sender
        if st:
            rows.append(("sender", st["cpu_ns"] / 1e9, st["wait_ns"] / 1e9, st["voluntary"], st["involuntary"],
                         self.sender_calls))
        out = [f"    {'':7}{'CPU us/req':>11}{'waited ms':>10}{'wake-ups/req':>13}{'preempted/req':>14}"
               f"{'us waited/wake-up':>18}  system calls per request"]
        for who, cpu_s, wait_s, vol, inv, calls in rows:
            out.append(f"    {who:7}{cpu_s / n * 1e6:11.1f}{wait_s * 1e3:10.1f}{vol / n:13.2f}{inv / n:14.3f}"
                       f"{wait_s / max(1, vol + inv) * 1e6:18.1f}  {calls.per_request(n) if calls else '-'}")
        cores = sum(r[1] for r in rows) / wall
        out.append(f"    the {len(rows)} processes' CPU: {cores:.2f} cores of 2 over {wall * 1e3:.0f} ms"
                   + (f" (sender: {st['writes'] / n:.2f} writes and {st['sleeps'] / n:.2f} sleeps per request)"
                      if st else ""))
        return out


async def measure(args: argparse.Namespace, address: str, node_pid: int) -> tuple[list[Any], Origin]:
    rows: list[Any] = []
    async with Runtime({"budget": address}) as rt:
        o = Origin(rt, "budget", count_objects=args.node_gc == "count")
        await o.wrap()
        o.new_run(200)
        await unloaded(o, 200)  # warm-up
        reqs = o.new_run(args.unloaded)
        with Cpu(o, node_pid, args.syscalls) as cpu:
            await unloaded(o, args.unloaded)
        rows.append(("unloaded", reqs, cpu))
        await max_rate(o, 10_000)  # warm-up
        rate = max([await max_rate(o, 10_000) for _ in range(3)])
        print(f"maximum rate {rate:,.0f}/s" + (f" (loads are of {args.rate:,.0f}/s)" if args.rate else ""))
        rate = args.rate or rate
        for sender, spin_us in [(s, u) for s in args.sender for u in args.spin_us]:
            for load in args.load:
                r = rate * load / 100
                n = max(200, int(r * args.seconds))
                reqs = o.new_run(n)
                if args.origin_gc != "as-is":
                    gc.collect()
                    gc.freeze()
                if args.origin_gc == "off":
                    gc.disable()
                try:
                    with Cpu(o, node_pid, args.syscalls) as cpu:
                        if sender == "spin":
                            await open_loop_spin(o, r, n)
                        else:
                            await open_loop(o, sender, r, n, cpu, spin_us)
                finally:
                    gc.enable()
                    if args.origin_gc != "as-is":
                        gc.unfreeze()
                spun = f" spin {spin_us}us" if spin_us else ""
                rows.append((f"{sender}{spun} {load}% {r / 1000:.1f}k/s", reqs, cpu))
    return rows, o


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--node", nargs=2, metavar=("ADDRESS", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--load", type=int, nargs="*", default=[50], help="percent of the maximum rate")
    p.add_argument("--rate", type=float, default=0.0,
                   help="the 100%% rate, per second (default: the maximum rate measured)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each open-loop run")
    p.add_argument("--unloaded", type=int, default=2000, help="requests one at a time")
    p.add_argument("--sender", choices=("proc", "thread", "spin"), nargs="*", default=["proc", "thread"],
                   help="proc: a process writing to a socket the origin's loop reads "
                        "(bench_latency.py's sender); thread: a thread of the origin's process "
                        "(call_soon_threadsafe); spin: a coroutine polling on the loop")
    p.add_argument("--node-gc", choices=("on", "off", "count"), default="on",
                   help="the node's collector: on (as rsc node sets it up), off (disabled), or "
                        "count (on, and both processes count the objects each pass examines, "
                        "which lengthens the passes)")
    p.add_argument("--pin", choices=("none", "same", "cross"), default="none",
                   help="same: origin and node on CPU 0; cross: origin on CPU 0, node on CPU 1 "
                        "(the process sender is not pinned)")
    p.add_argument("--switch-interval", type=float, default=0.0,
                   help="the origin's sys.setswitchinterval, in seconds (default: as is, 5 ms)")
    p.add_argument("--write", choices=("now", "turn"), nargs="*", default=["now"],
                   help="now: replies when their read is handled, else the first frame of a "
                        "loop turn at once (rsc's policy); turn: every frame waits for the "
                        "turn's end (rsc's policy before)")
    p.add_argument("--origin-gc", choices=("freeze", "off", "as-is"), default="freeze",
                   help="the origin's collector during each open-loop run: freeze (gc.collect() "
                        "and gc.freeze() before it, as bench_latency.py), off (frozen and disabled: "
                        "what the run costs without it), as-is")
    p.add_argument("--spin-us", type=int, nargs="*", default=[0],
                   help="a busy-poll window on the origin: after each arrival, keep polling the "
                        "sockets for up to this many us while a result is outstanding (0: sleep in "
                        "the poll, as rsc does); several values run one after another")
    p.add_argument("--syscalls", action="store_true",
                   help="count the origin's and the node's system calls per request in each run "
                        "(perf stat on the kernel's tracepoints: needs perf and the right to trace)")
    args = p.parse_args()
    if args.node:
        from rsc.transport import connection

        connection.WRITE_AT_ONCE = args.write == ["now"]
        node_main(*args.node, collector=args.node_gc)
    else:
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        run(args)


if __name__ == "__main__":
    main()
