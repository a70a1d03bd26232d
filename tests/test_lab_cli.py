"""``rsc lab run``, ``rsc lab explore``, ``rsc trace merge`` and ``rsc trace show``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsc.cli import main
from rsc.trace import Trace

REPO = Path(__file__).resolve().parent.parent
HAPPY = str(REPO / "examples" / "lab" / "happy_path.py")

BROKEN = '''
from rsc import Registry, spawn_remote

registry = Registry()


@registry.computation("n", codec="msgpack")
def n(cx, x):
    return x


async def scenario(lab):
    await lab.start_node("n1", registry)
    rt = await lab.start_origin("o1")
    x = await spawn_remote(rt.cx(), "n1", "n", lab.random.randrange(10)).join()
    assert x != 7, "the scenario's own check failed"
'''


def test_lab_run_prints_the_report_and_the_same_digest_twice(capsys: pytest.CaptureFixture[str]) -> None:
    digests = []
    for _ in range(2):
        assert main(["lab", "run", HAPPY, "--seed", "4"]) == 0
        out = capsys.readouterr().out
        assert "seed 4: all oracles hold" in out
        digests.append(out.strip().splitlines()[-1])
    assert digests[0] == digests[1] and digests[0].startswith("digest: ") and len(digests[0]) == 8 + 64


def test_lab_explore_stops_at_the_first_violation_and_prints_its_replay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    assert main(["lab", "explore", str(path), "--seeds", "200"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION run" in out and "the scenario's own check failed" in out
    replay = out.strip().splitlines()[-1]
    assert replay.startswith(f"replay: rsc lab run {path} --seed ")
    seed = replay.split()[-1]
    assert seed != "0"  # other seeds ran before it in this process
    digest = next(line for line in out.splitlines() if line.startswith("digest: "))
    assert main(["lab", "run", str(path), "--seed", seed]) == 1
    again = capsys.readouterr().out
    assert "VIOLATION run" in again and digest in again.splitlines()  # the same run, replayed
    assert main(["lab", "explore", HAPPY, "--seeds", "3"]) == 0
    assert "3 seeds from 0: every oracle held" in capsys.readouterr().out


def test_trace_merge_orders_processes_causally_and_show_tells_one_tasks_story(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "run.jsonl"
    assert main(["lab", "run", HAPPY, "--seed", "2", "--trace", str(full)]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in full.read_text().splitlines()]
    # split the run's trace into one file per process, as production processes write them
    files = {}
    for rec in records:
        files.setdefault(rec["who"], []).append(rec)
    paths = []
    for who, recs in sorted(files.items()):
        p = tmp_path / f"{who}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        paths.append(str(p))
    assert main(["trace", "merge", *paths]) == 0
    merged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(merged) == len(records)
    for who in files:  # each process's own records keep their order
        seqs = [r["seq"] for r in merged if r["who"] == who]
        assert seqs == sorted(seqs)
    for r in merged:  # a message read carries a smaller Lamport stamp than its reading
        if r["event"] == "recv" and r.get("stamp") is not None:
            assert r["stamp"] < r["lamport"]
    lam = [r["lamport"] for r in merged if "lamport" in r]
    assert lam == sorted(lam)  # Lamport order first
    third = [r["rtid"] for r in records if r["who"] == "o1" and r["event"] == "spawn"][2]
    assert main(["trace", "show", *paths, "--task", str(third), "--origin", "o1"]) == 0
    story = capsys.readouterr().out.splitlines()
    kinds = " ".join(story)
    assert "spawn" in kinds and "recv SpawnRequest from o1" in kinds and "recv ResultDelivery" in kinds
    assert all(f"rtid={third}" in line for line in story)
    assert main(["trace", "show", str(full), "--region", "1"]) == 0
    region = capsys.readouterr().out.splitlines()
    assert "region::closed" in region[-1]
    assert sum("remote::spawn_request_created" in line for line in region) == 60


def test_a_production_trace_carries_the_emitters_lamport_time(tmp_path: Path) -> None:
    clock = iter(range(100))
    tr = Trace("n1", str(tmp_path / "t.jsonl"), lamport=lambda: next(clock))
    tr("a", {})
    tr("b", {})
    tr.close()
    assert [r["lamport"] for r in tr.records] == [0, 1]
