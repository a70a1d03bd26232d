"""The byte budget of kept results (``rsc node --max-kept-result-bytes``).

A node keeps each finished result for the idempotency TTL so a duplicate can be
answered without running again. The budget bounds what that holds: over it,
the oldest kept results are dropped, their records stay (the key still never
runs twice), and a duplicate of one gets ``ResultNotKept``. First the table
(both twins, against each other), then real node processes: a 4 MiB budget
and 1 MiB results, RSS measured with psutil as a bound, and a journal replayed
through the budget.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

import rsc
from rsc import IdempotencyKey, Runtime, spawn_remote
from rsc.errors import RemoteFailed, ResultNotKept, failed_error

MiB = 1024 * 1024
TTL = 1_000
DROPPED = ("dropped",)


def K(i: int) -> bytes:
    return i.to_bytes(16, "big")


FP = bytes(range(17))  # a fingerprint: an algorithm tag, then 16 bytes


def finish(table: Any, i: int, size: int, now: int = 0, origin: str = "o") -> list:
    assert table.check_and_record(K(i), FP, origin, i, now).dedup == 0
    return table.complete(K(i), i, ("out", i), now, size)


# --- the table, both twins -----------------------------------------------------


def test_oldest_results_are_dropped_and_records_stay(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(TTL, 4 * MiB, DROPPED)
    for i in range(6):
        finish(t, i, MiB)
        assert t.kept_bytes <= 4 * MiB
    assert t.kept_bytes == 4 * MiB and t.results_dropped == 2 and len(t) == 6
    for i in range(6):
        rec = t.get(K(i))
        assert rec.finished
        if i < 2:
            assert rec.result_dropped and rec.outcome == DROPPED and rec.kept_bytes == 0
        else:
            assert not rec.result_dropped and rec.outcome == ("out", i) and rec.kept_bytes == MiB
    # a duplicate of a dropped one is still a duplicate: its record answers, nothing runs
    dup = t.check_and_record(K(0), FP, "other", 99, 1)
    assert dup.dedup == 1 and dup.outcome == DROPPED


def test_a_result_over_the_budget_is_not_kept(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(TTL, 4 * MiB, DROPPED)
    finish(t, 1, 10)
    finish(t, 2, 5 * MiB)
    assert t.kept_bytes == 0 and t.get(K(2)).result_dropped and t.get(K(1)).result_dropped
    finish(t, 3, 10)
    assert t.kept_bytes == 10 and t.get(K(3)).outcome == ("out", 3)


def test_no_budget_keeps_everything(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(TTL)
    for i in range(5):
        finish(t, i, MiB)
    assert t.kept_bytes == 5 * MiB and t.results_dropped == 0 and t.max_kept_bytes is None


def test_eviction_and_discard_give_bytes_back(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(TTL, 4 * MiB, DROPPED)
    finish(t, 1, MiB, now=0)
    finish(t, 2, MiB, now=10)
    assert t.discard(K(2)) and t.kept_bytes == MiB
    assert t.evict_expired(TTL) == 1 and t.kept_bytes == 0
    for i in range(3, 8):  # the budget's cursor survives the evictions before it
        finish(t, i, MiB, now=TTL + i)
    assert t.kept_bytes == 4 * MiB and t.get(K(3)).result_dropped and not t.get(K(4)).result_dropped


def test_the_stand_in_counts_no_bytes(idemtable_mod: ModuleType) -> None:
    # a record restored with its result already dropped completes with the
    # table's own stand-in: whatever size the caller gives, it keeps nothing
    t = idemtable_mod.IdemTable(TTL, 4 * MiB, DROPPED)
    t.check_and_record(K(1), FP, "o", 1, 0)
    t.complete(K(1), 1, DROPPED, 0, MiB)
    finish(t, 2, 4 * MiB)
    assert t.kept_bytes == 4 * MiB and t.results_dropped == 0
    assert t.get(K(1)).kept_bytes == 0 and t.get(K(2)).outcome == ("out", 2)


def test_held_results_are_replaced_when_dropped(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(TTL, 2 * MiB, DROPPED)
    for i in range(2):
        finish(t, i, MiB)
        t.hold("o", i, ("out", i), 0)
    t.check_and_record(K(5), FP, "o", 5, 0)
    assert t.check_and_record(K(5), FP, "alias", 7, 0).dedup == 1  # an alias of the running one
    assert t.complete(K(5), 5, ("out", 5), 0, 2 * MiB) == [("alias", 7)]
    t.hold("alias", 7, ("out", 5), 0)  # held after its record kept it: stays
    finish(t, 6, MiB)  # drops 5's result (and the two before it)
    t.hold("o", 6, ("out", 6), 0)
    assert t.take_held("o") == [(0, DROPPED), (1, DROPPED), (6, ("out", 6))]
    assert t.take_held("alias") == [(7, DROPPED)]
    finish(t, 8, 3 * MiB)  # over the budget alone: dropped at once, so what is held is the stand-in
    t.hold("o", 8, ("out", 8), 0)
    assert t.take_held("o") == [(8, DROPPED)]


def test_twins_agree_on_random_work(both_idemtables: tuple[ModuleType, ModuleType]) -> None:
    rnd = random.Random(17)
    tables = [mod.IdemTable(TTL, 50, DROPPED) for mod in both_idemtables]
    now = 0
    for step in range(3000):
        op = rnd.random()
        now += rnd.randrange(0, 20)
        i = rnd.randrange(200)
        for t in tables:
            if op < 0.5:
                if t.get(K(i)) is None:
                    t.check_and_record(K(i), FP, "o", i, now)
                    t.complete(K(i), i, ("out", i), now, random.Random(step).randrange(0, 30))
            elif op < 0.6:
                t.discard(K(i))
            elif op < 0.7:
                t.hold("o", i, ("held", i), now)
            elif op < 0.75:
                t.take_held("o")
            else:
                t.evict_expired(now, random.Random(step).randrange(1, 5))
        views = [sorted((r.key, r.outcome, r.kept_bytes, r.result_dropped) for r in t.records())
                 for t in tables]
        assert views[0] == views[1], f"step {step}"
        assert tables[0].kept_bytes == tables[1].kept_bytes <= 50
        assert tables[0].results_dropped == tables[1].results_dropped
    assert tables[0].results_dropped > 100  # the budget was exercised


def test_bad_budget_arguments(idemtable_mod: ModuleType) -> None:
    with pytest.raises(rsc.InvalidArgument, match="max_kept_bytes"):
        idemtable_mod.IdemTable(TTL, -1)
    t = idemtable_mod.IdemTable(TTL, 10)
    t.check_and_record(K(1), FP, "o", 1, 0)
    with pytest.raises(rsc.InvalidArgument, match="kept_bytes"):
        t.complete(K(1), 1, "x", 0, -5)
    assert not t.get(K(1)).finished  # refused, changing nothing


def test_the_error_reads_back_from_its_text() -> None:
    text = ResultNotKept.text("worker-1", 4 * MiB)
    err = failed_error(text)
    assert isinstance(err, ResultNotKept) and isinstance(err, RemoteFailed)
    assert err.limit == 4 * MiB and "new key" in str(err)


# --- real node processes ---------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _spawn(nodes: dict, key: IdempotencyKey, token: str, path: Path, n: int = MiB) -> bytes:
    """A fresh origin sends ``key`` once (as a retry after the origin restarted would)."""
    async with Runtime(nodes) as rt:
        h = spawn_remote(rt.cx(), "worker-1", "count_big", {"token": token, "path": str(path), "n": n},
                         idempotency_key=key, lease=5.0)
        return await asyncio.wait_for(h.join(), 30.0)


async def _status(nodes: dict) -> dict:
    async with Runtime(nodes) as rt:
        return await rt.status("worker-1")


def test_node_keeps_4_mib_of_1_mib_results_and_never_reruns(cluster: Any, tmp_path: Path) -> None:
    counter = tmp_path / "count.txt"
    c = cluster(1, extra_args=["--max-kept-result-bytes", str(4 * MiB)])
    keys = [IdempotencyKey.from_bytes(secrets.token_bytes(16)) for _ in range(8)]

    async def main() -> None:
        for i, key in enumerate(keys):
            assert (await _spawn(c.nodes, key, f"t{i}", counter))[:2] == f"t{i}".encode()
        # the newest results are kept: a duplicate gets the result, nothing runs
        assert (await _spawn(c.nodes, keys[-1], "t7", counter))[:2] == b"t7"
        # the oldest were dropped: a duplicate gets ResultNotKept, nothing runs either
        with pytest.raises(ResultNotKept) as e:
            await _spawn(c.nodes, keys[0], "t0", counter)
        assert e.value.limit == 4 * MiB and "worker-1" in str(e.value)
        st = await _status(c.nodes)
        assert st["kept_result_bytes"] <= 4 * MiB and st["results_dropped"] >= 3
        assert st["duplicates"] == 2

    asyncio.run(main())
    assert _lines(counter) == [f"t{i}" for i in range(8)]  # each key ran once


def test_node_memory_stays_bounded_under_large_results(cluster: Any, tmp_path: Path) -> None:
    """64 results of 1 MiB under a 4 MiB budget: without it the node would
    keep 64 MiB for the TTL. RSS is a bound here, not a timing."""
    counter = tmp_path / "count.txt"
    c = cluster(1, extra_args=["--max-kept-result-bytes", str(4 * MiB)])
    proc = psutil.Process(c.pids["worker-1"])

    async def main() -> int:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            req = {"token": "w", "path": str(counter), "n": MiB}
            for _ in range(4):  # warm up: allocator arenas, buffers at their working size
                await spawn_remote(cx, "worker-1", "count_big", req).join()
            base = proc.memory_info().rss
            for _ in range(64):
                await spawn_remote(cx, "worker-1", "count_big", req).join()
            st = await rt.status("worker-1")
            assert st["kept_result_bytes"] <= 4 * MiB
            return proc.memory_info().rss - base

    grown = asyncio.run(main())
    assert grown < 32 * MiB, f"node RSS grew by {grown / MiB:.1f} MiB under a 4 MiB budget"
    assert len(_lines(counter)) == 68


def test_journal_replays_through_the_budget(cluster: Any, tmp_path: Path) -> None:
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    c = cluster(1, extra_args=["--state-dir", str(state), "--max-kept-result-bytes", str(2 * MiB)])
    keys = [IdempotencyKey.from_bytes(secrets.token_bytes(16)) for _ in range(4)]
    for i, key in enumerate(keys):
        asyncio.run(_spawn(c.nodes, key, f"t{i}", counter))
    c.kill("worker-1")
    c.procs["worker-1"].wait(10.0)
    c.restart("worker-1")
    cluster.track(c)

    async def after() -> None:
        assert (await _spawn(c.nodes, keys[3], "t3", counter))[:2] == b"t3"
        for i, key in enumerate(keys[:2]):
            with pytest.raises(ResultNotKept):
                await _spawn(c.nodes, key, f"t{i}", counter)
        assert (await _status(c.nodes))["kept_result_bytes"] <= 2 * MiB

    asyncio.run(after())
    assert _lines(counter) == ["t0", "t1", "t2", "t3"]  # nothing ran again after the restart


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_a_restart_replays_a_large_journal_within_the_budget(cluster: Any, tmp_path: Path) -> None:
    """A journal holding 48 MiB of results (48 of 1 MiB, before any compaction)
    is replayed by a node with a 4 MiB budget without holding them all at once:
    its peak RSS after the restart stays near a fresh node's, not 48 MiB above."""
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    args = ["--state-dir", str(state), "--max-kept-result-bytes", str(4 * MiB)]
    c = cluster(1, extra_args=args)

    async def fill() -> None:
        async with Runtime(c.nodes) as rt:
            req = {"token": "w", "path": str(counter), "n": MiB}
            for _ in range(48):
                await spawn_remote(rt.cx(), "worker-1", "count_big", req).join()

    asyncio.run(fill())
    assert sum(f.stat().st_size for f in state.iterdir()) > 48 * MiB  # the journal holds them all
    fresh = cluster(1, extra_args=["--state-dir", str(tmp_path / "fresh"), "--max-kept-result-bytes",
                                   str(4 * MiB)], directory=str(tmp_path / "fresh-sockets"))
    fresh_peak = _peak_rss(fresh.pids["worker-1"])
    c.kill("worker-1")
    c.procs["worker-1"].wait(10.0)
    c.restart("worker-1")
    cluster.track(c)
    restarted_peak = _peak_rss(c.pids["worker-1"])
    assert asyncio.run(_status(c.nodes))["kept_result_bytes"] <= 4 * MiB
    grown = restarted_peak - fresh_peak
    assert grown < 20 * MiB, f"replaying the journal took the peak RSS {grown / MiB:.1f} MiB above a fresh node's"


# --- the lab: the oracles with results dropped as soon as they are kept ----------------


def test_lab_oracles_hold_when_no_result_is_kept() -> None:
    """Duplicate frames (one in ten) against nodes that keep no result at
    all (budget 0): every duplicate spawn is answered from a record whose
    result was dropped, nothing runs twice (at_most_once) and every spawn
    still gets exactly one outcome, the real one."""
    import sys

    from rsc.lab import Lab, LinkProfile, load_scenario

    load_scenario(str(Path(__file__).resolve().parent.parent / "examples" / "lab" / "duplicates.py"))
    registry = sys.modules["lab_registry"].registry

    async def scenario(lab: Any) -> None:
        for n in ("n1", "n2"):
            await lab.start_node(n, registry, max_kept_result_bytes=0)
        rt = await lab.start_origin("o1")
        async with rsc.region(rt.cx(seed=lab.seed)) as r:
            handles = [spawn_remote(r.cx, f"n{1 + i % 2}", "work", [i, lab.random.uniform(0, 0.5)])
                       for i in range(40)]
            for i, h in enumerate(handles):
                assert await h.join() == 2 * i

    dropped = 0
    for seed in range(4):
        lab = Lab(seed, network=LinkProfile(latency_s=0.001, jitter_s=0.002, duplicate=0.1))
        report = lab.run(scenario)
        assert report.ok, report.format()
        dropped += sum(node.engine._idem.results_dropped for node in lab.nodes.values())
    assert dropped >= 4 * 40  # every result was dropped, and the run still held
