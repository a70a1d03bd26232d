"""Print the benchmark table: rsc against the raw limit and its peers, and the targets.

Usage: ``python bench/report.py [RESULT.json | DIRECTORY] [--instructions COUNTS.json]``. Without an
argument it reads the newest JSON that ``pytest --benchmark-autosave`` wrote
under ``.benchmarks/`` (in the repository root); a directory means the newest
JSON under it.

The table has one row per figure of bench_e2e.py, found by the ``figure`` key
in each benchmark's ``extra_info``. Speed figures come from the median round:
``us/call`` for one-in-flight work, ``/s`` for bulk and CPU work. A ratio
column ``xX`` is the row's speed divided by X's speed on the same job, so above
1 means faster than X (for latency that is X's time divided by the row's). The
targets of issue 5 follow with what was measured and PASS/FAIL, then the core
micro-benchmarks (compiled vs its twin and the stdlib approach) when the file
has them, and the instruction counts ``bench/instructions.py --json`` saved
(``.benchmarks/instructions.json`` unless ``--instructions`` names another
file) beside the raw echo's. Anything missing from the file shows as "-" / "not measured": the
report never fails for a missing group.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ("processpool", "pool", "dask", "ray")
PEER_LABELS = {
    "processpool": "ProcessPoolExecutor(2)",
    "pool": "multiprocessing.Pool(2)",
    "dask": "Dask LocalCluster(2 workers x 1 thread)",
    "ray": "Ray (num_cpus=2)",
}
PEER_SHORT = {"processpool": "ProcPool", "pool": "Pool", "dask": "Dask", "ray": "Ray"}
PEER_INSTALL = {"dask": "pip install 'dask[distributed]'", "ray": "pip install ray"}

# Core micro-benchmark targets (issue 2): group -> (min twin/compiled ratio, max compiled ns or None)
CORE_TARGETS: dict[str, tuple[float, float | None]] = {
    "envelope-spawn-roundtrip": (2.0, 1000.0),
    "leaseheap-mixed-100k": (4.0, None),
    "leaseheap-mixed-1m": (4.0, None),
}


# ---------------------------------------------------------------------------------- input


def newest_json(where: str) -> str | None:
    files = [f for f in glob.glob(os.path.join(where, "**", "*.json"), recursive=True)
             if os.path.basename(f) != "instructions.json"]
    return max(files, key=os.path.getmtime) if files else None


def load(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


@dataclass
class Figure:
    key: str
    name: str
    ops: int
    median_s: float
    min_s: float
    rounds: int
    extra: dict[str, Any]

    @property
    def us_per_op(self) -> float:
        return self.median_s / self.ops * 1e6

    @property
    def per_s(self) -> float:
        return self.ops / self.median_s if self.median_s > 0 else float("inf")


def figures_of(data: dict[str, Any]) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    for b in data.get("benchmarks", []):
        extra = b.get("extra_info") or {}
        key = extra.get("figure")
        stats = b.get("stats") or {}
        if not key or "median" not in stats:
            continue
        out[key] = Figure(key, b.get("name", key), int(extra.get("ops", 1) or 1),
                          float(stats["median"]), float(stats.get("min", stats["median"])),
                          int(stats.get("rounds", 0)), extra)
    return out


# ------------------------------------------------------------------------------- formatting


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    if x >= 0.1:
        return f"{x:.2f}x"
    return f"{x:.3f}x"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f} /s"


def fmt_us(x: float) -> str:
    return f"{x:,.1f} us" if x < 1_000 else f"{x / 1000:,.2f} ms"


def fmt_bytes(x: float) -> str:
    return f"{x:,.0f} B" if x < 10_000 else f"{x / 1024:,.1f} KiB"


class Table:
    def __init__(self, headers: list[str], right: set[int]) -> None:
        self.headers = headers
        self.right = right
        self.rows: list[list[str] | str] = []

    def section(self, title: str) -> None:
        self.rows.append(title)

    def row(self, cells: list[str]) -> None:
        self.rows.append(cells + [""] * (len(self.headers) - len(cells)))

    def render(self) -> str:
        widths = [len(h) for h in self.headers]
        for r in self.rows:
            if isinstance(r, list):
                widths = [max(w, len(c)) for w, c in zip(widths, r)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if i in self.right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        total = sum(widths) + 2 * (len(widths) - 1)
        out = [line(self.headers), "-" * total]
        for r in self.rows:
            out.append(r if isinstance(r, str) else line(r))
        return "\n".join(out)


# ---------------------------------------------------------------------------------- report


@dataclass
class Target:
    text: str
    measured: str
    ok: bool | None  # None: not measured


def speed_ratio(a: Figure | None, b: Figure | None) -> float | None:
    """How many times faster ``a`` ran the job than ``b`` (per operation)."""
    if a is None or b is None or a.median_s <= 0:
        return None
    return b.us_per_op / a.us_per_op


def build(figs: dict[str, Figure], data: dict[str, Any]) -> tuple[Table, list[Target], list[str]]:
    """The one table: figures, their ratios, each target beside the figure it is about."""
    headers = ["figure", "value", "x raw"] + [f"x {PEER_SHORT[p]}" for p in PEERS] + ["target", "result"]
    n_ratio = 1 + len(PEERS)
    table = Table(headers, right=set(range(1, 2 + n_ratio)))
    targets: list[Target] = []
    notes: list[str] = []
    get = figs.get

    def busy(f: Figure) -> str:
        """For CPU figures: cores kept busy and how long one burn took (machine speed)."""
        if "cores_busy" not in f.extra:
            return ""
        return f" [{f.extra['cores_busy']:.2f} cores busy, {f.extra['burn_ms']:.2f} ms/task]"

    def attach(tg: Target) -> None:
        """Put the target on the last row, or on a row of its own below it if that one has one."""
        targets.append(tg)
        cells = [f"{tg.text}: {tg.measured}", "n/a" if tg.ok is None else ("PASS" if tg.ok else "FAIL")]
        last = table.rows[-1] if table.rows else None
        if isinstance(last, list) and not last[-2]:
            last[-2:] = cells
        else:
            table.row([""] * (2 + n_ratio) + cells)

    def add(key: str, label: str, value: Callable[[Figure], str], raw: str | None,
            peer_job: str | None) -> Figure | None:
        f = get(key)
        if f is None:
            table.row([label, "not measured"])
            return None
        cells = [label + busy(f), value(f), fmt_ratio(speed_ratio(f, get(raw))) if raw else ""]
        for p in PEERS:
            cells.append(fmt_ratio(speed_ratio(f, get(f"{p}.{peer_job}"))) if peer_job else "")
        table.row(cells)
        return f

    def peer_rows(job: str, raw: str | None, value: Callable[[Figure], str]) -> None:
        bulk = get("rsc.bulk1")
        for p in PEERS:
            f = get(f"{p}.{job}")
            if f is None:
                hint = PEER_INSTALL.get(p)
                table.row([f"  {PEER_LABELS[p]}", "not run"] + [""] * n_ratio
                          + ["not in this run" + (f" ({hint})" if hint else ""), ""])
                continue
            n = f" [{f.ops:,} a round]" if job == "bulk" and bulk is not None and f.ops != bulk.ops else ""
            table.row([f"  {PEER_LABELS[p]}{n}{busy(f)}", value(f),
                       fmt_ratio(speed_ratio(f, get(raw))) if raw else ""])

    def ratio_target(text: str, ratio: float | None, at_least: float, percent: bool = False) -> None:
        if ratio is None:
            attach(Target(text, "not measured", None))
        else:
            attach(Target(text, f"{ratio:.1%}" if percent else fmt_ratio(ratio), ratio >= at_least))

    us = lambda f: fmt_us(f.us_per_op)  # noqa: E731
    rate = lambda f: fmt_rate(f.per_s)  # noqa: E731

    table.section("no-op, one in flight (latency per call, median round)")
    raw_one = add("raw.one", "  raw echo, 64-byte frame", us, "raw.one", None)
    for key, label in (("rsc.one", "rsc noop -> 1 node"),
                       ("rsc.one_inline", "rsc noop, inline=True -> 1 node")):
        one = add(key, "  " + label, us, "raw.one", "one")
        if one is not None and raw_one is not None:
            r = one.us_per_op / raw_one.us_per_op
            attach(Target("RTT <= 1.5x raw RTT", fmt_ratio(r), r <= 1.5))
            notes.append(f"{label}: rsc adds {one.us_per_op - raw_one.us_per_op:,.0f} us per "
                         "one-in-flight call to the raw echo round trip")
        else:
            attach(Target("RTT <= 1.5x raw RTT", "not measured", None))
    peer_rows("one", "raw.one", us)

    table.section("no-op in bulk (10,000 submitted at once, then every result collected; median round)")
    add("raw.bulk", "  raw echo, 256 in flight", rate, "raw.bulk", None)
    for key, label in (("rsc.bulk1", "  rsc noop -> 1 node"),
                       ("rsc.bulk1_inline", "  rsc noop, inline=True -> 1 node")):
        bulk1 = add(key, label, rate, "raw.bulk", "bulk")
        ratio_target(">= 30% of raw", speed_ratio(bulk1, get("raw.bulk")), 0.30, percent=True)
        for p, k in (("processpool", 10), ("pool", 2), ("dask", 100), ("ray", 50)):
            ratio_target(f">= {k}x {PEER_SHORT[p]}", speed_ratio(bulk1, get(f"{p}.bulk")), k)
    add("rsc.bulk2", "  rsc noop -> 2 nodes", rate, "raw.bulk", "bulk")
    peer_rows("bulk", "raw.bulk", rate)

    table.section("CPU-bound, ~1 ms of pure Python per task (1,000 a round; median round; "
                  "[busy time / wall time, mean time of one task's work])")
    add("rsc.cpu1", "  rsc cpu -> 1 node", rate, None, "cpu")
    add("rsc.cpu2", "  rsc cpu -> 2 nodes", rate, None, "cpu")
    ratio_target(">= 1.8x 1 node", speed_ratio(get("rsc.cpu2"), get("rsc.cpu1")), 1.8)
    c1, c2 = get("rsc.cpu1"), get("rsc.cpu2")
    if c1 is not None and c2 is not None and c1.extra.get("cores_busy") and c2.extra.get("cores_busy"):
        notes.append(f"CPU scaling by cores kept busy (holds still when the machine's speed drifts): "
                     f"2 nodes {c2.extra['cores_busy']:.2f} / 1 node {c1.extra['cores_busy']:.2f} = "
                     f"{c2.extra['cores_busy'] / c1.extra['cores_busy']:.2f}x; one burn took "
                     f"{c1.extra['burn_ms']:.2f} ms then {c2.extra['burn_ms']:.2f} ms")
    peer_rows("cpu", None, rate)

    table.section("origin memory per outstanding task; lease renewals (heartbeats) from one node")
    mem = get("rsc.memory")
    if mem is None:
        table.row(["  rsc, 100,000 outstanding", "not measured"])
        attach(Target("< 1 KiB per task", "not measured", None))
    else:
        b = mem.extra["bytes_per_task"]
        table.row([f"  rsc, {mem.extra.get('outstanding', mem.ops):,} outstanding (tracemalloc)", fmt_bytes(b)])
        attach(Target("< 1 KiB per task", fmt_bytes(b), b < 1024))
        table.row(["    process RSS growth per task, for comparison",
                   fmt_bytes(mem.extra.get("rss_bytes_per_task", float("nan")))])
    hb = {n: get(f"rsc.heartbeat{n}") for n in (10, 10_000)}
    for n, f in hb.items():
        label = f"  rsc, node running {n:,} tasks"
        if f is None:
            table.row([label, "not measured"])
        else:
            table.row([label, f"{f.extra['frames_per_s']:.2f} frames/s, {fmt_bytes(f.extra['bytes_per_s'])}/s"])
    lo, hi = hb[10], hb[10_000]
    if lo is not None and hi is not None and lo.extra["frames_per_s"] > 0 and lo.extra["bytes_per_s"] > 0:
        fr = hi.extra["frames_per_s"] / lo.extra["frames_per_s"]
        br = hi.extra["bytes_per_s"] / lo.extra["bytes_per_s"]
        attach(Target("frames/s independent of tasks (10k/10 <= 1.25x)", f"{fr:.2f}x", fr <= 1.25))
        attach(Target("bytes/s independent of tasks (10k/10 <= 1.25x)", fmt_ratio(br), br <= 1.25))
    else:
        attach(Target("heartbeats independent of tasks", "not measured", None))

    payload_section(table, figs, attach)
    latency_section(table, figs, attach)
    placement_section(table, figs, attach, notes)
    core_section(table, data, attach)
    interleaved_section(table, data, attach)
    lab_section(table, data, attach)
    return table, targets, notes


PAYLOAD_SIZES = (64, 4096, 65536, 1 << 20, 16 << 20)
PAYLOAD_KINDS = ("bytes", "msgpack")
PAYLOAD_RAW_SHARE = 0.5  # rsc's MB/s over the raw socket's, from 1 MiB up
LATENCY_P99_OVER_P50 = 5.0  # rsc's p99 at 50% load over its unloaded p50


def fmt_size(n: int) -> str:
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def mb_ratio(a: Figure | None, b: Figure | None) -> float | None:
    if a is None or b is None or not b.extra.get("mb_per_s"):
        return None
    return a.extra["mb_per_s"] / b.extra["mb_per_s"]


def payload_section(table: Table, figs: dict[str, Figure], attach: Callable[[Target], None]) -> None:
    """The payload sweep (bench_payload.py): MB/s of payload both ways, against the
    raw socket and the peers at the same size."""
    if not any(k.startswith("payload.") for k in figs):
        table.section("payload sweep: not in this file (bench/bench_payload.py)")
        return
    table.section("payload sweep: input and output of each size, MB/s of payload both ways "
                  "(tasks/s); x = MB/s over the other's at the same size")
    for size in PAYLOAD_SIZES:
        raw = figs.get(f"payload.raw.{size}")
        table.row([f"  {fmt_size(size)}: raw socket echo",
                   f"{raw.extra['mb_per_s']:,.1f} MB/s ({raw.extra['tasks_per_s']:,.0f}/s)" if raw else "not measured"])
        for kind in PAYLOAD_KINDS:
            f = figs.get(f"payload.rsc.{kind}.{size}")
            if f is None:
                table.row([f"    rsc, {kind}", "not measured"])
                continue
            peers = [figs.get(f"payload.{p}.{kind}.{size}") for p in PEERS]
            table.row([f"    rsc, {kind}", f"{f.extra['mb_per_s']:,.1f} MB/s ({f.extra['tasks_per_s']:,.0f}/s)",
                       fmt_ratio(mb_ratio(f, raw))] + [fmt_ratio(mb_ratio(f, pf)) for pf in peers])
            if size >= 1 << 20:
                r = mb_ratio(f, raw)
                attach(Target(f">= {PAYLOAD_RAW_SHARE:.0%} of raw MB/s", "not measured" if r is None else f"{r:.1%}",
                              None if r is None else r >= PAYLOAD_RAW_SHARE))
            ahead = [mb_ratio(f, pf) for pf in peers if pf is not None]
            if ahead:
                attach(Target("ahead of every peer", f"worst {fmt_ratio(min(ahead))}", min(ahead) > 1.0))
            for p, pf in zip(PEERS, peers):
                if pf is not None:
                    table.row([f"      {PEER_LABELS[p]}, {kind}",
                               f"{pf.extra['mb_per_s']:,.1f} MB/s ({pf.extra['tasks_per_s']:,.0f}/s)",
                               fmt_ratio(mb_ratio(pf, raw))])


def fmt_tail(f: Figure) -> str:
    return f"{f.extra['p50_us']:,.0f} / {f.extra['p99_us']:,.0f} / {f.extra['p999_us']:,.0f} us"


def latency_section(table: Table, figs: dict[str, Figure], attach: Callable[[Target], None]) -> None:
    """Open-loop tail latency (bench_latency.py): p50 / p99 / p99.9 from the due time."""
    if not any(".lat." in k for k in figs):
        table.section("tail latency: not in this file (bench/bench_latency.py)")
        return
    table.section("tail latency, open loop (latency from each request's due time): "
                  "p50 / p99 / p99.9 round trip")
    # raw: the echo of a 64-byte frame under the same sender and search (the yardstick)
    for who in ("raw", "rsc") + PEERS:
        unloaded = figs.get(f"{who}.lat.unloaded")
        top = figs.get(f"{who}.lat.max")
        label = {"rsc": "rsc noop -> 1 node", "raw": "raw echo, 64-byte frame (same sender)"}.get(
            who) or PEER_LABELS[who]
        if unloaded is None and top is None:
            if who not in ("rsc", "raw"):
                table.row([f"  {label}", "not run"])
            continue
        table.row([f"  {label}: unloaded (one at a time)", fmt_tail(unloaded) if unloaded else "not measured"])
        table.row(["    maximum rate, closed loop (a burst: an upper bound no open loop reaches)",
                   fmt_rate(top.per_s) if top else "not measured"])
        top_open = figs.get(f"{who}.lat.max.open")
        if top_open is None:
            table.row(["    maximum rate, open loop (sustained)", "not measured"])
        else:
            e = top_open.extra
            # floor_assumed: no probe kept up, so the search's floor is an upper bound, not a finding
            table.row([f"    maximum rate, open loop (sustained: >= 99% delivered, latency level; "
                       f"{len(e.get('probes', []))} probes; load avg {e.get('loadavg_1m', 0):.1f})",
                       ("< " if e.get("floor_assumed") else "") + fmt_rate(e["rate"])])
        # rsc.lat.50.thread / .spin: the same 50% with the earlier senders (a thread of the
        # origin's process; a coroutine spinning on its loop); .closed: 50% of the closed-loop maximum
        # raw.lat.50.rsc_rate: the raw echo at the rate rsc.lat.50 offered (the same absolute rate)
        for load, suffix, how in ((10, "", ""), (25, "", ""), (50, "", ""), (50, ".thread", ", thread sender"),
                                  (50, ".spin", ", spinning sender"), (90, "", ""),
                                  (50, ".closed", " of the closed-loop maximum"),
                                  (50, ".rsc_rate", " of rsc's open-loop maximum (rsc's 50% rate)")):
            f = figs.get(f"{who}.lat.{load}{suffix}")
            if f is None:
                if not suffix and load in (50, 90):  # 10% and 25% came later: older files lack them
                    table.row([f"    at {load}% of the open-loop maximum", "not measured"])
                continue
            if not suffix and f.extra.get("of_maximum") != "open":  # a file from before the open-loop search
                how = " of the closed-loop maximum"
            if "sustained" in f.extra and not f.extra["sustained"]:
                how += ", NOT kept up"
            gc_note = (f", {f.extra['gc_passes']} gc passes, longest {f.extra['gc_longest_us']:,.0f} us"
                       if "gc_passes" in f.extra else "")
            if "origin_cpu_wait_ms" in f.extra:  # how long origin and node waited, runnable, for a CPU
                gc_note += (f", waited for a CPU {f.extra['origin_cpu_wait_ms']:,.0f} / "
                            f"{f.extra['node_cpu_wait_ms']:,.0f} ms")
                if "origin_sleeps" in f.extra:  # each wake-up may wait for a CPU
                    gc_note += f" in {f.extra['origin_sleeps']:,} / {f.extra['node_sleeps']:,} wake-ups"
            if "sender_cpu_us" in f.extra:  # the process sender's own cost, the third process on the cores
                gc_note += (f"; CPU per request origin {f.extra['origin_cpu_us']:.1f} / node "
                            f"{f.extra['node_cpu_us']:.1f} / sender {f.extra['sender_cpu_us']:.1f} us, the sender "
                            f"waited {f.extra['sender_cpu_wait_ms']:,.0f} ms")
            if "worst_at_s" in f.extra:  # whose stall the slowest request was
                gc_note += (f"; slowest due at {f.extra['worst_at_s']:.2f} s, its sender lag "
                            f"{f.extra['worst_send_lag_us']:,.0f} us")
            table.row([f"    at {load}%{how} ({f.extra['rate']:,.0f}/s offered, {f.extra['achieved']:,.0f}/s done, "
                       f"sender lag p99 {f.extra['send_lag_p99_us']:,.0f} us{gc_note}; "
                       f"load avg {f.extra.get('loadavg_1m', 0):.1f})", fmt_tail(f)])
            if who == "raw" and load == 50 and suffix in ("", ".rsc_rate") and unloaded is not None:
                at = "rsc's 50% rate" if suffix else "50%"
                table.row([f"    p99 at {at} / unloaded p50 (what this machine allows the target)",
                           f"{f.extra['p99_us'] / unloaded.extra['p50_us']:.1f}x"])
            if who == "rsc" and load == 50 and suffix in ("", ".closed") and unloaded is not None:
                r = f.extra["p99_us"] / unloaded.extra["p50_us"]
                of = "closed-loop" if suffix or f.extra.get("of_maximum") != "open" else "open-loop"
                attach(Target(f"p99 at 50% of the {of} maximum < {LATENCY_P99_OVER_P50:g}x unloaded p50",
                              f"{r:.1f}x", r < LATENCY_P99_OVER_P50))
        curve = [(load, figs.get(f"{who}.lat.{load}")) for load in (10, 25, 50, 90)]
        if unloaded is not None and sum(f is not None for _, f in curve) > 1:
            table.row([f"    p99 / unloaded p50 at {' / '.join(f'{load}%' for load, f in curve if f)} "
                       "of the open-loop maximum (how the tail grows with load)",
                       " / ".join(f"{f.extra['p99_us'] / unloaded.extra['p50_us']:.1f}x" for _, f in curve if f)])


def placement_section(table: Table, figs: dict[str, Figure], attach: Callable[[Target], None],
                      notes: list[str]) -> None:
    """One-in-flight round trips with both ends pinned (bench_placement.py)."""
    if not any(k.startswith("place.") for k in figs):
        table.section("placement: not in this file (bench/bench_placement.py)")
        return
    table.section("placement: one in flight, both ends pinned (same core / cross core / not pinned)")
    for placement, text in (("same", "same core"), ("cross", "cross core"), ("free", "not pinned")):
        raw, one = figs.get(f"place.raw.{placement}"), figs.get(f"place.rsc.{placement}")
        table.row([f"  raw echo, {text}", fmt_us(raw.us_per_op) if raw else "not measured"])
        table.row([f"  rsc noop, {text}", fmt_us(one.us_per_op) if one else "not measured",
                   fmt_ratio(speed_ratio(one, raw))])
        if raw is not None and one is not None:
            r = one.us_per_op / raw.us_per_op
            attach(Target("RTT <= 1.5x raw RTT", fmt_ratio(r), r <= 1.5))


INSTRUCTION_ROWS = (("node", "echo-server", "node / echo server"),
                    ("origin", "echo-client", "origin / echo client"))


def instructions_section(table: Table, counts: dict[str, Any] | None, where: str) -> None:
    """bench/instructions.py's saved counts, rsc beside the raw echo (x raw: raw's count over rsc's)."""
    if not counts:
        table.section(f"instructions per task: none saved ({where}; run bench/instructions.py "
                      "--side all --json FILE)")
        return
    c = counts.get("counts", {})
    runs = counts.get("runs", {})
    stamp = next(iter(runs.values()), {})
    table.section(f"instructions per task (callgrind, user space; python {stamp.get('python', '?')}, "
                  f"commit {stamp.get('commit', '?')}); x raw: the raw echo's count per request over rsc's")
    for rsc_side, raw_side, label in INSTRUCTION_ROWS:
        for mode, text in (("pipe", "pipelined"), ("one", "one in flight")):
            n, raw = c.get(f"{rsc_side}.{mode}"), c.get(f"{raw_side}.{mode}")
            table.row([f"  {label}, {text}",
                       f"{n:,.0f} / {raw:,.0f}" if n and raw else (f"{n:,.0f} / -" if n else "not measured"),
                       fmt_ratio(raw / n) if n and raw else "-"])


def core_section(table: Table, data: dict[str, Any], attach: Callable[[Target], None]) -> None:
    """Compiled vs twin vs stdlib for each micro-benchmark group (best round, per operation)."""
    groups: dict[str, dict[str, float]] = {}
    for b in data.get("benchmarks", []):
        group = b.get("group") or ""
        impl = (b.get("params") or {}).get("impl")
        stats = b.get("stats") or {}
        if group.startswith("e2e-") or impl is None or "min" not in stats:
            continue
        extra = b.get("extra_info") or {}
        ns = extra.get("ns_per_op", extra.get("ns_per_message"))
        groups.setdefault(group, {})[impl] = float(ns) if ns is not None else stats["min"] * 1e9
    table.section("core micro-benchmarks: compiled ns per operation (best round); target column: "
                  "each other implementation's time over the compiled one's")
    if not groups:
        table.section("  (none in this file: `make bench` runs bench_envelope/idemtable/leaseheap too)")
        return
    blank = [""] * (len(table.headers) - 4)
    for group in sorted(groups):
        by = groups[group]
        c = by.get("compiled")
        others = ", ".join(f"{i} {by[i] / c:.1f}x" for i in sorted(by, key=lambda i: (i != "twin", i))
                           if i != "compiled" and c)
        table.row([f"  {group}", f"{c:,.0f} ns" if c is not None else "not measured"] + blank
                  + [others, ""])
        if group in CORE_TARGETS:  # (idemtable's target is judged on its interleaved groups, below)
            at_least, max_ns = CORE_TARGETS[group]
            twin = by.get("twin")
            text = f">= {at_least:g}x twin" + (f", < {max_ns:,.0f} ns" if max_ns else "")
            if c is None or twin is None:
                attach(Target(text, "not measured", None))
            else:
                attach(Target(text, f"{twin / c:.1f}x" + (f", {c:,.0f} ns" if max_ns else ""),
                              twin / c >= at_least and (max_ns is None or c < max_ns)))


def interleaved_section(table: Table, data: dict[str, Any], attach: Callable[[Target], None]) -> None:
    """The idempotency table's target, judged on rounds that alternate compiled
    and twin on the same tables (its separate-stretch groups swing with load)."""
    blank = [""] * (len(table.headers) - 4)
    for b in data.get("benchmarks", []):
        group = b.get("group") or ""
        extra = b.get("extra_info") or {}
        if not group.startswith("idemtable-interleaved-") or "x_compiled_median_of_pairs" not in extra:
            continue
        x = float(extra["x_compiled_median_of_pairs"])
        table.row([f"  {group}", f"{extra['compiled_ns_per_op_median']:,.0f} ns"] + blank
                  + [f"twin {x:.1f}x (median of pairs; worst pair {extra.get('x_compiled_worst_pair', 0):.1f}x)", ""])
        attach(Target(">= 4x twin", f"{x:.1f}x", x >= 4.0))


LAB_SEEDS_PER_MIN = 1000.0  # issue 13: a 4-node, 200-task scenario with faults


def lab_section(table: Table, data: dict[str, Any], attach: Callable[[Target], None]) -> None:
    """The lab's speed (bench/bench_lab.py): seeds a minute of bench/lab_scenario.py."""
    blank = [""] * (len(table.headers) - 4)
    for b in data.get("benchmarks", []):
        extra = b.get("extra_info") or {}
        if b.get("group") != "lab" or "seeds_per_min" not in extra:
            continue
        rate = float(extra["seeds_per_min"])
        table.section("lab: seeds a minute of a 4-node, 200-task scenario with faults (median round)")
        table.row([f"  {b.get('name', 'lab')}", f"{rate:,.0f}/min"] + blank
                  + [f"{extra.get('spawns_per_seed', 0):.0f} spawns, {extra.get('faults_per_seed', 0):.1f} "
                     f"faults, {extra.get('virtual_s_per_seed', 0):.1f} virtual s a seed; "
                     f"{extra.get('cpu_seeds_per_min', 0):,.0f}/min of CPU time", ""])
        attach(Target(f">= {LAB_SEEDS_PER_MIN:,.0f} seeds/min", f"{rate:,.0f}/min",
                      rate >= LAB_SEEDS_PER_MIN))


INSTRUCTIONS_JSON = os.path.join(REPO_ROOT, ".benchmarks", "instructions.json")


def main(argv: list[str]) -> int:
    counts_path = INSTRUCTIONS_JSON
    if "--instructions" in argv:
        i = argv.index("--instructions")
        counts_path = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    where = argv[0] if argv else os.path.join(REPO_ROOT, ".benchmarks")
    path = newest_json(where) if os.path.isdir(where) else where
    if not path or not os.path.exists(path):
        print(f"no pytest-benchmark results under {where}; run `make bench` "
              "(or pytest bench --benchmark-only --benchmark-autosave) first")
        return 1
    data = load(path)
    commit = data.get("commit_info") or {}
    machine = data.get("machine_info") or {}
    cpu = machine.get("cpu") or {}
    print(f"results: {os.path.relpath(path)}")
    print(f"run {data.get('datetime', '?')}, commit {str(commit.get('id', '?'))[:10]}"
          f"{' (dirty)' if commit.get('dirty') else ''}, python {machine.get('python_version', '?')}, "
          f"{cpu.get('count', '?')} CPUs ({cpu.get('brand_raw', '?')})")
    figs = figures_of(data)
    if not figs:
        print("no end-to-end figures in this file (bench/bench_e2e.py did not run)")
    table, targets, notes = build(figs, data)
    instructions_section(table, load(counts_path) if os.path.exists(counts_path) else None,
                         os.path.relpath(counts_path))
    print("x X = this row's speed / X's speed on the same job (above 1: faster than X)")
    print()
    print(table.render())
    measured = [t for t in targets if t.ok is not None]
    print()
    print(f"targets met: {sum(1 for t in measured if t.ok)} of {len(measured)} measured"
          f" ({len(targets) - len(measured)} not measured)")
    for n in notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
