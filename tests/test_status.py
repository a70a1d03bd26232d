"""``rsc status`` on real node processes: the default cluster file, the
REJECTED column, --node, --json, --watch redrawing in place, a stale
cluster file in one line, and the exit status.

Clusters are stopped by pid at teardown (tests.cluster); every subprocess
a test starts is stopped by pid too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsc import Runtime, spawn_remote
from rsc.cluster_file import default_cluster_file, write_cluster_file
from rsc.errors import UnknownComputation
from tests.cluster import REPO_ROOT, terminate

RSC = [sys.executable, "-m", "rsc"]


def status(*args: str, cluster_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RSC_CLUSTER_FILE",)}
    if cluster_file is not None:
        env["RSC_CLUSTER_FILE"] = str(cluster_file)
    return subprocess.run([*RSC, "status", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def _row(out: str, name: str) -> dict[str, str]:
    """The table row of ``name`` as COLUMN -> value."""
    lines = out.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    for line in lines[1:]:
        if line.split()[0] == name:
            return dict(zip(header, re.split(r"\s{2,}", line.strip())))
    raise AssertionError(f"no row for {name}: {out}")


def test_status_without_arguments_reads_the_default_cluster_file(cluster, tmp_path: Path) -> None:
    cf = tmp_path / "rsc" / "cluster.json"
    cf.parent.mkdir()
    # without the catalogue the origin sends the unknown names, and worker-2 rejects them
    c = cluster(2, cluster_file=str(cf), extra_args=["--no-catalogue"])

    async def work() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            assert await spawn_remote(cx, "worker-1", "square", 4).join() == 16
            for _ in range(2):
                with pytest.raises(UnknownComputation):
                    await spawn_remote(cx, "worker-2", "no_such_computation", 1).join()

    asyncio.run(work())
    out = status(cluster_file=cf)
    assert out.returncode == 0, out.stderr
    w1, w2 = _row(out.stdout, "worker-1"), _row(out.stdout, "worker-2")
    assert (w1["PID"], w1["COMPLETED"], w1["REJECTED"]) == (str(c.pids["worker-1"]), "1", "0"), out.stdout
    assert (w2["ACCEPTED"], w2["REJECTED"]) == ("0", "2"), out.stdout

    only = status("--node", "worker-2", "--json", cluster_file=cf)
    report = json.loads(only.stdout)
    assert report["cluster"] == str(cf) and report["stale"] is None
    assert list(report["nodes"]) == ["worker-2"]
    node = report["nodes"]["worker-2"]
    assert node["reachable"] is True and node["stats"]["rejected"] == 2
    assert node["stats"]["node"] == "worker-2" and node["stats"]["pid"] == c.pids["worker-2"]
    unknown = status("--node", "worker-9", cluster_file=cf)
    assert unknown.returncode == 2 and "no node 'worker-9'" in unknown.stderr


def test_a_node_down_makes_the_exit_status_non_zero(cluster, tmp_path: Path) -> None:
    cf = tmp_path / "cluster.json"
    c = cluster(2, cluster_file=str(cf))
    c.kill("worker-1")
    c.procs["worker-1"].wait(10)
    out = status("--cluster", str(cf))
    assert out.returncode == 1
    assert re.search(r"^worker-1\s+\d+\s+down \(ConnectionRefusedError", out.stdout, re.M), out.stdout
    assert _row(out.stdout, "worker-2")["RUNNING"] == "0"


def test_a_stale_cluster_file_is_one_line(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)  # reaped: its pid names no process now
    cf = tmp_path / "cluster.json"
    nodes = {f"worker-{i}": f"unix:{tmp_path}/worker-{i}.sock" for i in range(1, 5)}
    write_cluster_file(str(cf), nodes, {n: 0 for n in nodes}, launcher_pid=gone.pid)
    out = status("--cluster", str(cf))
    assert out.returncode == 1
    assert out.stdout == (f"cluster file {cf} is stale: its launcher (pid {gone.pid}) is gone, "
                          "and its nodes with it; start the cluster again (rsc launch)\n")
    js = status("--cluster", str(cf), "--json")
    assert js.returncode == 1 and json.loads(js.stdout)["stale"] == {"launcher_pid": gone.pid}
    # a live launcher: not stale
    write_cluster_file(str(cf), nodes, {n: 0 for n in nodes}, launcher_pid=os.getpid())
    assert json.loads(status("--cluster", str(cf), "--json").stdout)["stale"] is None
    # a live process that started after the file was last written did not write it: its pid
    # was reused, and the file is stale
    long_ago = time.time() - 10 * 86400
    os.utime(cf, (long_ago, long_ago))
    assert json.loads(status("--cluster", str(cf), "--json").stdout)["stale"] == {
        "launcher_pid": os.getpid()}


def test_no_cluster_file_says_where_it_looked(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "cluster.json"
    out = status(cluster_file=missing)
    assert out.returncode == 2
    assert out.stderr == (f"rsc status: cannot read cluster file {missing}: No such file or "
                          "directory (rsc launch writes it there when started without --dir or "
                          "--cluster-file; or give --cluster FILE)\n")


def test_default_cluster_file_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RSC_CLUSTER_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_cluster_file() == str(tmp_path / "rsc" / "cluster.json")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_cluster_file() == f"/tmp/rsc-{os.geteuid()}/cluster.json"
    monkeypatch.setenv("RSC_CLUSTER_FILE", "rel/c.json")
    assert default_cluster_file() == os.path.abspath("rel/c.json")


def test_watch_redraws_in_place_and_ctrl_c_exits_zero(cluster, tmp_path: Path) -> None:
    cf = tmp_path / "cluster.json"
    cluster(1, cluster_file=str(cf))
    with subprocess.Popen([*RSC, "status", "--cluster", str(cf), "--watch", "0.2"], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        _check_watch_frames(p)


def _check_watch_frames(p: subprocess.Popen) -> None:
    try:
        assert p.stdout is not None
        seen = b""
        deadline = time.monotonic() + 30
        while seen.count(b"\033[H\033[2J") < 3 and time.monotonic() < deadline:
            seen += os.read(p.stdout.fileno(), 65536)
        assert seen.count(b"\033[H\033[2J") >= 3, seen
        frames = seen.split(b"\033[H\033[2J")
        assert b"every 0.2 s; Ctrl-C quits" in frames[1] and b"worker-1" in frames[1], frames[1]
        p.send_signal(signal.SIGINT)
        assert p.wait(20) == 0
        assert b"Traceback" not in (p.stderr.read() if p.stderr else b"")
    finally:
        terminate(p)


def test_watch_json_prints_one_object_per_refresh(cluster, tmp_path: Path) -> None:
    cf = tmp_path / "cluster.json"
    c = cluster(1, cluster_file=str(cf))
    with subprocess.Popen([*RSC, "status", "--cluster", str(cf), "--watch", "0.2", "--json"],
                          cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as p:
        _check_json_lines(p, c.pids["worker-1"])


def _check_json_lines(p: subprocess.Popen, pid: int) -> None:
    try:
        assert p.stdout is not None
        reports = [json.loads(p.stdout.readline()) for _ in range(2)]
        assert all(r["nodes"]["worker-1"]["stats"]["pid"] == pid for r in reports)
        p.send_signal(signal.SIGINT)
        assert p.wait(20) == 0
    finally:
        terminate(p)


def test_a_cluster_file_with_a_bad_node_name_is_refused(tmp_path: Path) -> None:
    cf = tmp_path / "cluster.json"
    cf.write_text(json.dumps({"version": 1, "nodes": {"worker 1": f"unix:{tmp_path}/w.sock"}}))
    out = status("--cluster", str(cf))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"rsc status: cannot read cluster file {cf}: node name 'worker 1' "
                                 "contains whitespace"), out.stderr
