"""The durable idempotency journal (``rsc node --state-dir``; issue 10 item 8).

Real node processes killed with SIGKILL and restarted on the same directory:
a key whose result was stored is answered from the journal without running
again, a task that was running when the node died is answered cancelled
("node restarted while it ran") instead of running again, and a torn or
corrupt tail is survived. Then the journal itself: format, TTL on replay,
compaction, and the directory rules (0700, unsafe ones refused, one node).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rsc.errors import InvalidArgument

from rsc import Runtime, spawn_remote
from rsc._core.messages import CancelRequest
from rsc.errors import RemoteCancelled
from rsc.node import journal as J
from rsc.types import IdempotencyKey, OutcomeKind
from tests.cluster import REPO_ROOT
from tests.engine_link import Link

MS = 1_000_000


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _spawn_once(nodes: dict, key: IdempotencyKey, computation: str, arg: Any,
                      lease: float = 2.0) -> Any:
    """A fresh origin (as after the origin restarted too) sends ``key`` once."""
    async with Runtime(nodes) as rt:
        h = spawn_remote(rt.cx(), "worker-1", computation, arg, idempotency_key=key, lease=lease)
        return await asyncio.wait_for(h.join(), 10.0)


def _restart(c: Any, cluster: Any) -> None:
    c.kill("worker-1")
    c.procs["worker-1"].wait(10.0)
    c.restart("worker-1")
    cluster.track(c)


def test_result_survives_kill_9_and_is_not_recomputed(cluster: Any, tmp_path: Path) -> None:
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    c = cluster(1, extra_args=["--state-dir", str(state)])
    key = IdempotencyKey.from_bytes(secrets.token_bytes(16))
    req = {"token": "once", "path": str(counter)}
    assert asyncio.run(_spawn_once(c.nodes, key, "count", req)) == "once"
    assert _lines(counter) == ["once"]
    _restart(c, cluster)
    # the same key again, from another origin: the stored result, no second run
    assert asyncio.run(_spawn_once(c.nodes, key, "count", req)) == "once"
    assert _lines(counter) == ["once"]
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700


def test_torn_and_corrupt_tail_is_survived(cluster: Any, tmp_path: Path) -> None:
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    c = cluster(1, extra_args=["--state-dir", str(state)])
    key = IdempotencyKey.from_bytes(secrets.token_bytes(16))
    req = {"token": "t", "path": str(counter)}
    asyncio.run(_spawn_once(c.nodes, key, "count", req))
    c.kill("worker-1")
    c.procs["worker-1"].wait(10.0)
    with open(state / J.JOURNAL_FILE, "ab") as f:
        bad = J._entry([J.J_TOMB, "o", 1, [0, "x"], time.time_ns() + 10**12])
        f.write(bad[:4] + b"\xff\xff\xff\xff" + bad[8:])  # a whole entry with a wrong checksum
        f.write(J._entry([J.J_RECORD, b"k" * 16, b"f" * 16, "o", 2])[:9])  # a torn write
    c.restart("worker-1")
    cluster.track(c)
    assert asyncio.run(_spawn_once(c.nodes, key, "count", req)) == "t"
    assert _lines(counter) == ["t"]


def test_task_running_at_the_crash_is_answered_cancelled_not_rerun(cluster: Any, tmp_path: Path) -> None:
    state, marks = tmp_path / "state", tmp_path / "marks.txt"
    c = cluster(1, extra_args=["--state-dir", str(state)])
    key = IdempotencyKey.from_bytes(secrets.token_bytes(16))
    req = {"path": str(marks), "seconds": 30.0}

    async def start_then_kill() -> None:
        async with Runtime(c.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "observe_async", req, idempotency_key=key, lease=2.0)
            deadline = time.monotonic() + 10.0
            while _lines(marks) != ["started"]:
                assert time.monotonic() < deadline, "the task never started"
                await asyncio.sleep(0.02)
            c.kill("worker-1")
            with pytest.raises(Exception):
                await asyncio.wait_for(h.join(), 10.0)

    asyncio.run(start_then_kill())
    c.procs["worker-1"].wait(10.0)
    c.restart("worker-1")
    cluster.track(c)
    with pytest.raises(RemoteCancelled, match="node restarted while it ran"):
        asyncio.run(_spawn_once(c.nodes, key, "observe_async", req))
    assert _lines(marks) == ["started"]  # not run a second time


def test_second_node_on_the_same_state_dir_is_refused(cluster: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    c = cluster(1, extra_args=["--state-dir", str(state)])
    with pytest.raises(J.StateDirError, match="in use by another node"):
        J.Journal(str(state), 10**9)
    sock = tmp_path / "second.sock"
    proc = subprocess.run([sys.executable, "-m", "rsc", "node", "--name", "second", "--listen",
                           f"unix:{sock}", "--registry", "tests.registries:basic", "--state-dir",
                           str(state)], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert proc.returncode == 2
    assert f"state directory {state} is in use by another node (pid {c.pids['worker-1']})" in proc.stderr
    assert not sock.exists()


# ----------------------------------------------------------------- the journal


def _engine_with_journal(path: Path, ttl_ms: int = 60_000) -> tuple[Link, J.Journal]:
    link = Link(ttl_ns=ttl_ms * MS)
    journal = J.open_journal(str(path), link.node, link.now)
    link.connect()
    return link, journal


def test_records_outcomes_and_tombstones_replay(tmp_path: Path) -> None:
    link, journal = _engine_with_journal(tmp_path / "s")
    done = link.spawn("echo", b"a", key=b"A" * 16)
    running = link.spawn("echo", b"b", key=b"B" * 16)
    link.finish(link.started[0], 1, "it failed")
    link.node.receive(link.conn, CancelRequest("origin-a", 1, 42, (0, "stop it"), "origin-a"), link.now)
    journal.sync()
    assert journal.entries >= 5 and not journal.dirty
    journal.close()

    again = Link(ttl_ns=60_000 * MS)
    j2 = J.open_journal(str(tmp_path / "s"), again.node, again.now)
    try:
        recs = {r.key: r for r in again.node._idem.records()}
        assert recs[b"A" * 16].outcome == (1, "it failed", 5)
        assert recs[b"A" * 16].task_id == done.rtid
        assert recs[b"B" * 16].outcome[0] == int(OutcomeKind.CANCELLED)
        assert recs[b"B" * 16].outcome[1] == (9, "node restarted while it ran")
        assert recs[b"B" * 16].task_id == running.rtid
        assert again.node._idem.has_tombstone("origin-a", 42)
        assert again.node._idem.tombstone_reason("origin-a", 42) == (0, "stop it")
        assert again.node.features["journal"] == journal.journal_id.hex() == j2.journal_id.hex()
    finally:
        j2.close()


def test_replay_keeps_the_newest_results_within_the_budget(tmp_path: Path) -> None:
    """A replay drops results oldest first as it reads, as the running node
    did: the records stay (nothing runs twice), the dropped ones holding the
    engine's stand-in, and the budget the restarted engine counts is met."""
    link, journal = _engine_with_journal(tmp_path / "s")
    for i in range(5):
        link.spawn("echo", b"x", key=bytes([65 + i]) * 16)
        link.finish(link.started[i], 0, bytes([97 + i]) * 100)
    journal.sync()
    journal.close()
    j2 = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        with pytest.raises(InvalidArgument):
            j2.load(max_kept_bytes=250)  # a budget needs the stand-in its drops hold
        dropped = (1, "not kept", 0)
        records, _ = j2.load(max_kept_bytes=250, dropped_outcome=dropped)
        outcomes = {r[0][:1]: r[4] for r in records}
        assert [outcomes[k] is dropped for k in (b"A", b"B", b"C", b"D", b"E")] == [
            True, True, True, False, False]
        assert outcomes[b"E"][1] == b"e" * 100
        assert j2.load()[0][0][4] is not dropped  # no budget: every result, as written
    finally:
        j2.close()

    again = Link(ttl_ns=60_000 * MS, max_kept_result_bytes=250)
    j3 = J.open_journal(str(tmp_path / "s"), again.node, again.now)
    try:
        recs = {r.key[:1]: r for r in again.node._idem.records()}
        assert len(recs) == 5 and again.node._idem.kept_bytes == 200
        assert recs[b"A"].outcome == again.node.dropped_outcome
        assert recs[b"E"].outcome[1] == b"e" * 100
    finally:
        j3.close()


def test_ttl_is_respected_on_replay(tmp_path: Path) -> None:
    link, journal = _engine_with_journal(tmp_path / "s", ttl_ms=1_000)
    link.spawn("echo", b"a", key=b"A" * 16)
    link.finish(link.started[0])
    journal.sync()
    journal.close()
    j2 = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        assert len(j2.load()[0]) == 1
        assert j2.load(now_wall_ns=time.time_ns() + 2 * 10**9) == ([], [])  # expired while down
    finally:
        j2.close()


def test_compaction_keeps_the_live_state_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J, "COMPACT_MIN", 10)
    link, journal = _engine_with_journal(tmp_path / "s", ttl_ms=1_000)
    for i in range(20):
        link.spawn("echo", b"x", key=i.to_bytes(16, "big"))
        link.finish(link.started[-1])
    journal.sync()
    assert journal.needs_compaction()
    link.now += 2_000 * MS
    link.node.tick(link.now)
    link.spawn("echo", b"y", key=b"L" * 16)  # one live (running) record
    journal.compact(*link.node.durable_state(link.now))
    assert not journal.needs_compaction() and journal.entries == 2  # header + that record
    size = os.path.getsize(tmp_path / "s" / J.JOURNAL_FILE)
    journal.close()
    j2 = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        recs, tombs = j2.load()
        assert [r[0] for r in recs] == [b"L" * 16] and tombs == [] and size < 200
    finally:
        j2.close()


def test_a_journal_of_another_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir(mode=0o700)
    (tmp_path / "s" / J.JOURNAL_FILE).write_bytes(J._entry([J.J_HEAD, 99, b"i" * 16]))
    j = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        with pytest.raises(J.StateDirError, match="format"):
            j.load()
    finally:
        j.close()


def test_unsafe_state_dirs_are_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(J.StateDirError, match="writable by group or others"):
        J.Journal(str(shared), 10**9)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777  # left as it was
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(J.StateDirError, match="not a directory"):
        J.Journal(str(afile), 10**9)
    mine = tmp_path / "mine"
    j = J.Journal(str(mine), 10**9)
    try:
        assert stat.S_IMODE(mine.stat().st_mode) == 0o700
        with pytest.raises(J.StateDirError, match="in use"):
            J.Journal(str(mine), 10**9)
    finally:
        j.close()
    J.Journal(str(mine), 10**9).close()  # the lock went with the first one


def test_compaction_in_steps_keeps_what_was_synced_meanwhile(tmp_path: Path) -> None:
    link, journal = _engine_with_journal(tmp_path / "s")
    link.spawn("echo", b"a", key=b"A" * 16)
    journal.begin_compaction()
    state = link.node.durable_state(link.now)
    link.spawn("echo", b"b", key=b"B" * 16)  # after the state was taken: only in the tail
    link.finish(link.started[0])
    journal.sync()
    fd, n = journal.write_snapshot(*state)  # what a node runs in a thread
    journal.finish_compaction(fd, n)
    link.finish(link.started[1])
    journal.sync()
    journal.close()
    j2 = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        recs = {r[0]: r for r in j2.load()[0]}
        assert set(recs) == {b"A" * 16, b"B" * 16}
        assert recs[b"A" * 16][4] == (0, b"out", 5) and recs[b"B" * 16][4] == (0, b"out", 5)
        assert not (tmp_path / "s" / (J.JOURNAL_FILE + ".tmp")).exists()
    finally:
        j2.close()


def test_a_running_node_compacts_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NodeServer in this process, served through a real socket: its journal
    is compacted while tasks flow, and the state survives into a new node."""
    from rsc.node.server import NodeServer
    from tests.registries import basic

    monkeypatch.setattr(J, "COMPACT_MIN", 50)
    state, sock = tmp_path / "s", tmp_path / "n.sock"

    async def main() -> int:
        server = NodeServer("worker-1", f"unix:{sock}", basic, ttl_s=600.0, state_dir=str(state))
        await server.start()
        try:
            async with Runtime({"worker-1": f"unix:{sock}"}) as rt:
                for _ in range(4):
                    hs = [spawn_remote(rt.cx(), "worker-1", "echo", b"x%d" % i) for i in range(60)]
                    for h in hs:
                        await h.join()
                    await asyncio.sleep(0.2)  # let a compaction started meanwhile finish
            return server._journal.live
        finally:
            await server.shutdown(0.5)

    # rewritten at least once while serving (a fresh journal holds its header alone)
    assert asyncio.run(main()) > 1
    j2 = J.Journal(str(state), 10**9)
    try:
        recs, _ = j2.load()
        assert len(recs) == 240 and all(r[4] is not None and r[4][0] == 0 for r in recs)
    finally:
        j2.close()


def test_a_sync_asked_for_before_shutdown_closes_the_journal_finds_it_closed(tmp_path: Path) -> None:
    """A journal sync is asked for on one loop turn and runs on the next; if
    shutdown closes the journal in between (closing syncs it), the sync does
    nothing to the closed journal and the node's pending actions still go out
    (it once called sync() on None: an exception in a loop callback)."""
    from rsc.node.server import NodeServer
    from tests.registries import basic

    errors: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        server = NodeServer("worker-1", f"unix:{tmp_path}/n.sock", basic, ttl_s=600.0,
                            state_dir=str(tmp_path / "s"))
        await server.start()
        try:
            journal = server._journal
            journal.admitted(b"K" * 16, b"F" * 16, "origin-1", 1)  # an unsynced entry
            server._pump()  # asks for the sync on the next turn
            assert server._sync_pending
            server._journal = None  # what shutdown does, within the same turn
            journal.close()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert not server._sync_pending
        finally:
            await server.shutdown(0.5)

    asyncio.run(main())
    assert errors == []
    j2 = J.Journal(str(tmp_path / "s"), 10**9)
    try:
        recs, _ = j2.load()
        assert [r[0] for r in recs] == [b"K" * 16]  # closing synced it
    finally:
        j2.close()
