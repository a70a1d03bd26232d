"""A running node compacts its journal a step at a time.

A node that keeps many idempotency records (a million at a few thousand
tasks/s with the default TTL) once took its whole live state in one call on
its event loop when the journal needed rewriting: about a second at a million
records, every connection waiting. Now the table yields its records a chunk
of slots at a time (``IdemTable.scan_records``), the engine converts each
chunk (``NodeEngine.durable_records``), and the node writes one chunk per
loop turn into the snapshot (``Journal.start_snapshot``, ``Snapshot.add``)
before syncing it in a thread (``Snapshot.seal``). The state changes between
steps; every change from ``begin_compaction`` on is in the journal's tail,
replayed after the snapshot, so the rewritten file holds what the node holds.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import ModuleType

import pytest

from rsc import Runtime, spawn_remote
from rsc.errors import InvalidArgument
from rsc.node import journal as J
from rsc.node import server as S
from tests.engine_link import MS, Link

FP = b"\x03" + bytes(16)  # a drawn-key fingerprint: nothing hashed


def K(i: int) -> bytes:
    return i.to_bytes(16, "big")


# --- the table ------------------------------------------------------------------


def test_a_scan_yields_each_record_that_stays_once_while_the_table_changes(
        idemtable_mod: ModuleType) -> None:
    """Records added, finished and evicted between steps, across the compiled
    table's record blocks: those present throughout are yielded exactly once,
    none that was never present is, and no step holds more than ``chunk``."""
    t = idemtable_mod.IdemTable(1_000)
    rng = random.Random(7)
    for i in range(6_000):
        t.check_and_record(K(i), FP, "o", i, 0)
    for i in range(0, 6_000, 3):
        t.complete(K(i), i, (0, b"r", 1), 0)
    stays = {K(i) for i in range(6_000) if i % 3}  # running: never evicted
    seen: list[bytes] = []
    n = 6_000
    for step in t.scan_records(97):
        assert len(step) <= 97
        seen.extend(r.key for r in step)
        for _ in range(rng.randrange(0, 60)):  # new records, some of which the scan may meet
            t.check_and_record(K(n), FP, "o", n, 0)
            n += 1
        t.evict_expired(2_000, 50)  # the finished ones expire, a few per step
    assert len(seen) == len(set(seen))
    assert stays <= set(seen)
    assert set(seen) <= {K(i) for i in range(n)}


def test_a_scan_ends_however_fast_records_are_added(idemtable_mod: ModuleType) -> None:
    """A node under load adds records between the steps faster than a step
    covers them: the scan still ends, covering what was there at the call."""
    t = idemtable_mod.IdemTable(1_000)
    for i in range(1_000):
        t.check_and_record(K(i), FP, "o", i, 0)
    n, steps, seen = 1_000, 0, set()
    for step in t.scan_records(10):
        steps += 1
        seen.update(r.key for r in step)
        for _ in range(25):
            t.check_and_record(K(n), FP, "o", n, 0)
            n += 1
    assert steps == 100 and {K(i) for i in range(1_000)} <= seen


def test_a_scan_of_an_empty_table_and_bad_chunks(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(1_000)
    assert [r for step in t.scan_records(10) for r in step] == []
    for bad in (0, -1, 1.5, "3", True, None):
        with pytest.raises(InvalidArgument, match="chunk"):
            t.scan_records(bad)  # refused at the call, not at the first step


def test_a_scan_is_the_records(idemtable_mod: ModuleType) -> None:
    t = idemtable_mod.IdemTable(1_000)
    for i in range(300):
        t.check_and_record(K(i), FP, "o", i, 0)
        if i % 2:
            t.complete(K(i), i, (0, i, 1), 5)
    scanned = sorted((r.key, r.outcome, r.expires_at) for step in t.scan_records(64) for r in step)
    assert scanned == sorted((r.key, r.outcome, r.expires_at) for r in t.records())


# --- engine and journal -----------------------------------------------------------


def _state(records: list[tuple]) -> dict[bytes, tuple]:
    """A state's records by key: (task id, outcome); remaining times left out
    (they are measured at different moments)."""
    return {r[0]: (r[3], r[4]) for r in records}


def test_a_compaction_in_steps_while_the_node_changes_replays_to_the_nodes_state(tmp_path: Path) -> None:
    """Between the steps the engine admits, finishes, tombstones and evicts;
    after the rewrite the file replays to exactly what the engine then holds."""
    link = Link(ttl_ns=2_000 * MS, capacity=10_000)
    journal = J.open_journal(str(tmp_path / "s"), link.node, link.now)
    link.connect()
    try:
        for i in range(400):
            link.spawn("echo", b"a", key=K(i))
        for task in link.started[:300]:
            link.finish(task)
        journal.sync()
        journal.begin_compaction()
        snap = journal.start_snapshot()
        steps = link.node.durable_scan(16)
        i = 400
        for views in steps:
            snap.add(link.node.durable_records(views, link.now))
            link.spawn("echo", b"b", key=K(i))  # in the tail only
            i += 1
            if len(link.started) > 300 + i - 400:
                link.finish(link.started[300 + (i - 400) // 2])  # an early one finishes meanwhile
            link.now += 50 * MS
            link.node.tick(link.now)  # the first ones expire and are evicted meanwhile
            journal.sync()
        snap.add((), link.node.durable_tombstones(link.now))
        journal.finish_compaction(*snap.seal())
        assert not (tmp_path / "s" / (J.JOURNAL_FILE + ".tmp")).exists()
        link.finish(link.started[-1])
        journal.sync()
        expected = _state(link.node.durable_state(link.now)[0])
        assert len(expected) > 200  # some expired, most did not
    finally:
        journal.close()
    j2 = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        # replayed at the moment the engine's state was taken (remaining times
        # count from the snapshot's wall clock): nothing expired is brought back
        assert _state(j2.load()[0]) == expected
    finally:
        j2.close()


def test_a_snapshot_that_cannot_be_written_is_discarded(tmp_path: Path) -> None:
    """A value the journal cannot encode (or a full disk) fails the step; the
    temporary file goes, the old journal stays in use."""
    link = Link(ttl_ns=60_000 * MS)
    journal = J.open_journal(str(tmp_path / "s"), link.node, link.now)
    link.connect()
    try:
        link.spawn("echo", b"a", key=K(1))
        journal.sync()
        journal.begin_compaction()
        snap = journal.start_snapshot()
        with pytest.raises(TypeError):
            snap.add([(K(2), FP, "o", 2, (0, object(), 1), 10)])
        snap.discard()
        journal.abort_compaction()
        assert not (tmp_path / "s" / (J.JOURNAL_FILE + ".tmp")).exists()
        journal.sync()
    finally:
        journal.close()
    j2 = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        assert [r[0] for r in j2.load()[0]] == [K(1)]
    finally:
        j2.close()


def test_closing_a_journal_mid_snapshot_removes_the_snapshot(tmp_path: Path) -> None:
    """A journal closed while a snapshot is being written (a node shutting
    down between two steps, or a caller that gives up) removes the snapshot's
    file and closes its descriptor itself; the node's next step, if one runs,
    finds nothing left to do. A snapshot being sealed is left to
    ``finish_compaction``, which finds the journal closed. (The file was once
    left behind.)"""
    import os

    link = Link(ttl_ns=60_000 * MS)
    journal = J.open_journal(str(tmp_path / "s"), link.node, link.now)
    link.connect()
    link.spawn("echo", b"a", key=K(1))
    journal.sync()
    fds_before = set(os.listdir("/proc/self/fd"))
    journal.begin_compaction()
    snap = journal.start_snapshot()
    snap.add(link.node.durable_records(link.node._idem.records(), link.now))
    journal.close()
    assert not (tmp_path / "s" / (J.JOURNAL_FILE + ".tmp")).exists()
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    snap.discard()  # what the node's next step does: nothing now
    journal.abort_compaction()
    j2 = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        assert [r[0] for r in j2.load()[0]] == [K(1)]
        j2.begin_compaction()
        sealing = j2.start_snapshot()
        fd, n = sealing.seal()
    finally:
        j2.close()  # a snapshot being sealed is not the close's
    j2.finish_compaction(fd, n)  # closes it and removes the file: the journal is closed
    assert not (tmp_path / "s" / (J.JOURNAL_FILE + ".tmp")).exists()
    assert set(os.listdir("/proc/self/fd")) <= fds_before


# --- a real node ------------------------------------------------------------------


def test_a_node_compacts_in_steps_and_serves_between_them(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A NodeServer in this process, through a real socket: a compaction of
    thousands of records takes them a step at a time (COMPACT_STEP slots),
    tasks are answered while it is under way, and the state survives.
    (It once took them all in one call: one ``write_snapshot`` of thousands.)"""
    monkeypatch.setattr(J, "COMPACT_MIN", 6_000)
    monkeypatch.setattr(J, "COMPACT_FACTOR", 1)
    monkeypatch.setattr(S, "COMPACT_STEP", 64)
    taken: list[int] = []  # records handed to the snapshot by each call

    class SnapshotSpy:
        def __init__(self, snap: J.Snapshot) -> None:
            self._snap = snap

        def add(self, records: list, tombstones: list = []) -> None:  # noqa: B006
            taken.append(len(records))
            self._snap.add(records, tombstones)

        def __getattr__(self, name: str) -> object:
            return getattr(self._snap, name)

    class JournalSpy:
        """The node's journal, as the node sees it: every call forwarded."""

        def __init__(self, journal: J.Journal) -> None:
            self._journal = journal

        def write_snapshot(self, records: list, tombstones: list) -> tuple[int, int]:
            taken.append(len(records))
            return self._journal.write_snapshot(records, tombstones)

        def start_snapshot(self) -> SnapshotSpy:
            return SnapshotSpy(self._journal.start_snapshot())

        def __getattr__(self, name: str) -> object:
            return getattr(self._journal, name)

    from tests.registries import basic

    state, sock = tmp_path / "s", tmp_path / "n.sock"

    async def main() -> tuple[int, int]:
        server = S.NodeServer("worker-1", f"unix:{sock}", basic, ttl_s=600.0, state_dir=str(state))
        await server.start()
        server._journal = JournalSpy(server._journal)
        served_while_compacting = 0
        try:
            async with Runtime({"worker-1": f"unix:{sock}"}) as rt:
                n = 0
                while not server._compacting:  # each task appends two entries, none expires
                    hs = [spawn_remote(rt.cx(), "worker-1", "echo", b"x%d" % (n + i)) for i in range(200)]
                    n += len(hs)
                    for h in hs:
                        await h.join()
                    assert n < 20_000, "no compaction started"
                while server._compacting:
                    assert await spawn_remote(rt.cx(), "worker-1", "echo", b"y%d" % n).join() == b"y%d" % n
                    n += 1
                    served_while_compacting += 1
            return n, served_while_compacting
        finally:
            await server.shutdown(0.5)

    n, served = asyncio.run(main())
    assert len(taken) > 20 and max(taken) <= 64, taken[:5]  # about 3,000 records: ~47 steps
    assert served > 0
    j2 = J.Journal(str(state), 10**9)
    try:
        recs, _ = j2.load()
        assert len(recs) == n and all(r[4] is not None and r[4][0] == 0 for r in recs)
    finally:
        j2.close()


def test_a_node_shut_down_mid_compaction_leaves_no_file_or_descriptor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shutdown closes the journal between two steps: the snapshot's file is
    removed, its descriptor closed, and the journal on disk is whole."""
    import os

    monkeypatch.setattr(J, "COMPACT_MIN", 2_000)
    monkeypatch.setattr(J, "COMPACT_FACTOR", 1)
    monkeypatch.setattr(S, "COMPACT_STEP", 1)  # a step a record: many turns
    from tests.registries import basic

    state, sock = tmp_path / "s", tmp_path / "n.sock"
    fds_before = set(os.listdir("/proc/self/fd"))

    async def main() -> int:
        server = S.NodeServer("worker-1", f"unix:{sock}", basic, ttl_s=600.0, state_dir=str(state))
        await server.start()
        n = 0
        try:
            async with Runtime({"worker-1": f"unix:{sock}"}) as rt:
                while not server._compacting:
                    hs = [spawn_remote(rt.cx(), "worker-1", "echo", b"x%d" % (n + i)) for i in range(100)]
                    n += len(hs)
                    for h in hs:
                        await h.join()
                    assert n < 10_000, "no compaction started"
                assert (state / (J.JOURNAL_FILE + ".tmp")).exists()  # under way
        finally:
            await server.shutdown(0.5)
        assert server._compacting  # shut down between steps
        return n

    n = asyncio.run(main())
    assert sorted(p.name for p in state.iterdir()) == [J.JOURNAL_FILE, J.LOCK_FILE]
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    j2 = J.Journal(str(state), 10**9)
    try:
        assert len(j2.load()[0]) == n
    finally:
        j2.close()
