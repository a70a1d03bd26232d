"""A lab node's durable journal: the production journal (rsc.node.journal) on
a simulated disk that outlives the node's crash, with fsync semantics; the
at_most_once oracle across restarts; and a journal that loses its records
is caught."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from rsc.lab import Lab, load_scenario
from rsc.lab.disk import SimDisk
from rsc.node.journal import JOURNAL_FILE, Journal, StateDirError
from tests.lab_variants import ForgetsOnCrash

SCENARIO = str(Path(__file__).resolve().parent.parent / "examples" / "lab" / "durable_restart.py")


class _Clock:
    def now_ns(self) -> int:
        return 0


def test_the_simulated_disk_keeps_only_what_was_synced_and_renames_made_durable() -> None:
    disk = SimDisk(random.Random(1))
    files = disk.mount(_Clock())
    j = Journal("/d", 10**12, files)
    j.compact(*j.load())  # at open: a fresh file, renamed in and made durable
    j.admitted(b"k" * 16, b"f" * 16, "o1", 1)
    j.sync()
    j.admitted(b"q" * 16, b"f" * 16, "o1", 2)  # buffered only: never reaches the disk
    with pytest.raises(StateDirError, match="in use"):
        Journal("/d", 10**12, disk.mount(_Clock()))  # one process per directory
    disk.crash()
    j.sync()  # what the dead process still does reaches nothing
    j2 = Journal("/d", 10**12, disk.mount(_Clock()))
    records, _ = j2.load()
    assert [r[0] for r in records] == [b"k" * 16]
    assert j2.journal_id == j.journal_id
    # a compaction whose rename was not made durable is lost in a crash: the old file stays
    old = disk.file("/d/" + JOURNAL_FILE)
    j2.write_snapshot([], [])  # an empty state, synced, but ...
    j2._files.replace("/d/" + JOURNAL_FILE + ".tmp", "/d/" + JOURNAL_FILE)  # ... no sync_dir
    assert len(disk.file("/d/" + JOURNAL_FILE)) < len(old)  # what the live process reads
    disk.crash()
    assert disk.file("/d/" + JOURNAL_FILE) == old
    j3 = Journal("/d", 10**12, disk.mount(_Clock()))
    assert [r[0] for r in j3.load()[0]] == [b"k" * 16]
    assert disk.crashes == 2 and disk.syncs >= 2


def test_a_restart_finds_its_records_and_the_origin_is_told_the_journal_was_kept() -> None:
    lab = Lab(4, network="lan")
    report = lab.run(load_scenario(SCENARIO).fn)
    assert report.ok, report.format()
    assert report.figures["records_restored"] == 20 and report.figures["reexecuted_after_crash"] == 0
    restarts = [r for r in lab.trace.records if r["event"] == "remote::node_restarted"]
    assert restarts and all(r["kept_journal"] for r in restarts)
    assert lab.disks["n1"].crashes == 1 and lab.disks["n1"].syncs > 0
    # (every seed of the scenario: tests/test_lab_scenarios.py)


def test_without_a_journal_the_same_crash_reruns_keys_and_says_so() -> None:
    load_scenario(SCENARIO)
    module = sys.modules["rsc_lab_scenario_durable_restart"]
    reruns = 0
    for seed in range(20):
        report = Lab(seed, network="lan").run(lambda lab: module.run(lab, durable=False))
        assert report.ok, report.format()
        assert report.figures["records_restored"] == 0
        reruns += report.figures["reexecuted_after_crash"]
    assert reruns > 0  # visible, not hidden


def test_a_journal_that_forgets_in_a_crash_breaks_at_most_once() -> None:
    scenario = load_scenario(SCENARIO)
    for seed in range(20):
        lab = Lab(seed, network="lan")
        lab.disks["n1"] = ForgetsOnCrash(random.Random(seed))
        report = lab.run(scenario.fn)
        if not report.ok:
            break
    else:
        pytest.fail("a journal that forgets its records went unnoticed for 20 seeds")
    v = report.violations[0]
    assert v.oracle == "at_most_once" and "durable node n1" in v.message, report.format()
    assert v.seed == seed and v.position > 0


def test_a_node_compacting_its_journal_as_it_runs_keeps_its_records(monkeypatch: pytest.MonkeyPatch) -> None:
    import rsc.node.journal as journal

    # compact after a few entries, not 65,536: the running node's compaction
    # (state taken on the loop, snapshot written, tail appended, renamed)
    monkeypatch.setattr(journal, "COMPACT_MIN", 8)
    monkeypatch.setattr(journal, "COMPACT_FACTOR", 2)
    scenario = load_scenario(SCENARIO)
    renames = 0
    for seed in range(15):
        lab = Lab(seed, network="lan")
        report = lab.run(scenario.fn)
        assert report.ok, report.format()
        assert report.figures["records_restored"] == 20
        renames += lab.disks["n1"].renames
    assert renames > 15 * 2  # beyond the compaction at each of its two opens (start, restart)
