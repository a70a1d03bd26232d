"""The idempotency table's slowest single calls, and the record count each fell at.

A node's event loop is held for the whole of every table call, so one slow
call is a pause of every task on the node. The table grows (and, after
evictions, shrinks) as records come and go; this probe finds the calls where
that work lands. It drives one table through three phases:

- ``grow``: ``check_and_record`` + ``complete`` of N fresh keys (every record
  stays: its TTL has not passed);
- ``drain``: ``now`` moves past every expiry and ``evict_expired(now, 4096)``
  (the node's limit per tick) is called until the table is empty, so it shrinks;
- ``refill``: N fresh keys again, so it grows back.

Each call is timed with ``perf_counter_ns``. The run is repeated and, for each
call position, the FASTEST of the repeats is kept: a pause the table causes
recurs at the same position in every repeat, a pause the machine causes (a
preemption, another process's burst) does not. What is printed is the slowest
calls after that, per operation, with the record count when each ran.

    python bench/idem_pauses.py                    # compiled, 3,000,000 records, 3 repeats
    python bench/idem_pauses.py --impl py --n 1000000
    python bench/idem_pauses.py --impl both --repeat 2 --top 5

Wall-clock figures: run it on a quiet machine (the minimum over repeats hides
noise, not a machine that is busy throughout).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import os
import sys
import time
from array import array
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's rsc

from rsc._core import _idemtable, _idemtable_py

TTL = 1_000_000_000_000  # ns; far beyond the virtual clock of a phase
EVICT_LIMIT = 4096  # EVICT_PER_TICK of rsc._engine.node
ORIGIN = "origin-0"
OUTCOME = b"\x93\x00\xa2ok"
OPS = ("check_and_record", "complete", "evict_expired")


def _keys(n: int, salt: int) -> list[bytes]:
    return [((salt << 40) | i).to_bytes(16, "little") for i in range(n)]


def one_run(module: Any, n: int) -> dict[str, tuple[array, array]]:
    """Durations (ns) and record counts per call position, per phase+op."""
    perf = time.perf_counter_ns
    table = module.IdemTable(TTL)
    fp = b"\x01" + bytes(16)
    out: dict[str, tuple[array, array]] = {}

    def fill(phase: str, salt: int, now: int) -> None:
        keys = _keys(n, salt)
        d_rec, d_com = array("q", bytes(8 * n)), array("q", bytes(8 * n))
        counts = array("q", range(n))
        car, com = table.check_and_record, table.complete
        for i, k in enumerate(keys):
            t0 = perf()
            car(k, fp, ORIGIN, i + salt * n, now)
            t1 = perf()
            com(k, i + salt * n, OUTCOME, now)
            t2 = perf()
            d_rec[i] = t1 - t0
            d_com[i] = t2 - t1
        out[f"{phase}.check_and_record"] = (d_rec, counts)
        out[f"{phase}.complete"] = (d_com, counts)

    gc.disable()
    try:
        fill("grow", 1, 0)
        durs, counts = array("q"), array("q")
        now = 2 * TTL
        while len(table):
            before = len(table)
            t0 = perf()
            table.evict_expired(now, EVICT_LIMIT)
            durs.append(perf() - t0)
            counts.append(before)
        out["drain.evict_expired"] = (durs, counts)
        fill("refill", 2, now)
    finally:
        gc.enable()
    return out


def probe(module: Any, n: int, repeat: int) -> dict[str, tuple[array, array]]:
    best: dict[str, tuple[array, array]] = {}
    for _ in range(repeat):
        run = one_run(module, n)
        for name, (durs, counts) in run.items():
            if name not in best:
                best[name] = (durs, counts)
            else:
                b = best[name][0]
                for i in range(min(len(b), len(durs))):
                    b[i] = min(b[i], durs[i])
    return best


def report(label: str, best: dict[str, tuple[array, array]], top: int) -> float:
    worst = 0.0
    print(f"== {label}")
    for name, (durs, counts) in best.items():
        slow = heapq.nlargest(top, range(len(durs)), key=durs.__getitem__)
        srt = sorted(durs)
        med = srt[len(srt) // 2] if srt else 0
        cells = ", ".join(f"{durs[i] / 1e6:.2f} ms @ {counts[i]:,}" for i in slow)
        print(f"  {name:26} median {med / 1e3:6.2f} us   slowest: {cells}")
        if slow:
            worst = max(worst, durs[slow[0]] / 1e6)
    print(f"  worst single call: {worst:.2f} ms")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impl", choices=("c", "py", "both"), default="c")
    ap.add_argument("--n", type=int, default=3_000_000, help="records per fill")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--top", type=int, default=6)
    args = ap.parse_args()
    impls = {"c": [("compiled", _idemtable)], "py": [("pure twin", _idemtable_py)]}
    impls["both"] = impls["c"] + impls["py"]
    for label, module in impls[args.impl]:
        print(f"({module.__file__})")
        best = probe(module, args.n, args.repeat)
        report(f"{label}: {args.n:,} records, fastest of {args.repeat} per call", best, args.top)


if __name__ == "__main__":
    main()
