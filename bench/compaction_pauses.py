"""A journal compaction's longest hold of the node's loop, at a given record count.

A node with a durable journal (``rsc node --state-dir``) rewrites it from its
live state now and then. Whatever runs on the loop holds every task on the
node, so what matters is the longest single piece. This probe fills an
idempotency table with N finished records and times, against a real journal
in a temporary directory:

- ``one call``: taking every record at once (``IdemTable.records()`` and
  ``NodeEngine.durable_records``), what a compaction once did on the loop;
- ``steps``: the node's way, one step a loop turn: the next ``--step`` record
  slots (``IdemTable.scan_records``), converted and appended to the snapshot
  (``Snapshot.add``); the longest step, the mean, the count and the total;
- ``seal``: the fsync, which a node runs in a thread.

    python bench/compaction_pauses.py                 # 1,000,000 records, steps of 512
    python bench/compaction_pauses.py --n 200000 --step 256

Wall-clock figures: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's rsc

from rsc._core import USING_EXTENSIONS, idemtable as _idem  # noqa: E402
from rsc._engine.node import NodeEngine  # noqa: E402
from rsc.node import journal as J  # noqa: E402
from rsc.node.server import COMPACT_STEP  # noqa: E402

DRAWN = b"\x03" + bytes(16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="finished records in the table")
    ap.add_argument("--step", type=int, default=COMPACT_STEP, help="record slots a step")
    args = ap.parse_args()
    table = _idem.IdemTable(10**15)
    for i in range(args.n):
        key = i.to_bytes(16, "big")
        table.check_and_record(key, DRAWN, "origin-1", i, 0)
        table.complete(key, i, (0, b"r" * 32, 5), 0)
    tmp = tempfile.mkdtemp(prefix="rsc-compaction-")
    journal = J.Journal(os.path.join(tmp, "s"), 10**15)
    try:
        journal.compact(*journal.load())
        t0 = time.perf_counter()
        NodeEngine.durable_records(table.records(), 1)
        one = time.perf_counter() - t0
        journal.begin_compaction()
        snap = journal.start_snapshot()
        steps = table.scan_records(args.step)
        times: list[float] = []
        while True:
            t0 = time.perf_counter()
            views = next(steps, None)
            if views is None:
                break
            snap.add(NodeEngine.durable_records(views, 1))
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fd, n = snap.seal()
        seal = time.perf_counter() - t0
        journal.finish_compaction(fd, n)
    finally:
        journal.close()
        shutil.rmtree(tmp)
    print(f"{args.n:,} records ({'compiled' if USING_EXTENSIONS else 'pure'} table)")
    print(f"  one call (all records at once): {one * 1e3:,.0f} ms")
    print(f"  steps of {args.step} slots: longest {max(times) * 1e3:.2f} ms, mean "
          f"{sum(times) / len(times) * 1e3:.2f} ms, {len(times):,} steps, {sum(times):.2f} s in all")
    print(f"  seal (fsync, in a thread on a node): {seal * 1e3:,.0f} ms, {n:,} entries")


if __name__ == "__main__":
    main()
