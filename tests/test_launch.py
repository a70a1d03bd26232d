"""scripts/launch_nodes.py, `rsc status` and LocalCluster, on real processes.

Every process a test starts is stopped by pid in a finally block, and every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from rsc import IdempotencyKey, Runtime, spawn_remote
from rsc.errors import PathInUse
from rsc.launch import LocalCluster, NodeStartError, probe, read_cluster_file
from tests.cluster import REPO_ROOT, cluster, terminate, wait_no_children  # noqa: F401  (fixture)

LAUNCH = [sys.executable, os.path.join(REPO_ROOT, "scripts", "launch_nodes.py")]
REGISTRY = "tests.registries:basic"
ROW = re.compile(r"^(worker-\d+)\s+(\d+)\s+(unix:\S+)$")


class Launcher:
    """A launcher subprocess with its stdout/stderr drained by threads."""

    def __init__(self, *args: str, default_cluster_file: Path) -> None:
        # the default cluster file (a launcher given neither --dir nor
        # --cluster-file writes it) is the test's own, not the user's
        env = dict(os.environ, RSC_CLUSTER_FILE=str(default_cluster_file))
        self.proc = subprocess.Popen(
            [*LAUNCH, *args], cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.node_procs: dict[int, psutil.Process] = {}
        self.readers = [threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
                        for stream, sink in ((self.proc.stdout, self.stdout),
                                             (self.proc.stderr, self.stderr))]
        for t in self.readers:
            t.start()

    def _drain(self, stream, sink: list[str]) -> None:
        with stream:
            for line in stream:
                sink.append(line.rstrip("\n"))
                if stream is self.proc.stdout:
                    self.lines.put(line.rstrip("\n"))

    def wait_line(self, pred: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such line within {timeout} s; stdout={self.stdout} "
                                     f"stderr={self.err()}")
            try:
                line = self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    time.sleep(0.2)
                    if self.lines.empty():
                        raise AssertionError(f"launcher exited ({self.proc.returncode}); "
                                             f"stdout={self.stdout} stderr={self.err()}") from None
                continue
            if pred(line):
                return line

    def table(self) -> tuple[dict[str, tuple[int, str]], str]:
        """Wait for the startup table: name -> (pid, address), and the cluster file."""
        cf = self.wait_line(lambda s: s.startswith("cluster file: "))[len("cluster file: "):]
        rows = {m[1]: (int(m[2]), m[3]) for m in map(ROW.match, self.stdout) if m}
        for pid, _ in rows.values():
            self.watch(pid)
        return rows, cf

    def watch(self, pid: int) -> None:
        try:
            self.node_procs[pid] = psutil.Process(pid)
        except psutil.NoSuchProcess:
            pass

    def err(self) -> str:
        return "\n".join(self.stderr)

    def wait(self, timeout: float = 30.0) -> int:
        rc = self.proc.wait(timeout)
        for t in self.readers:  # everything it wrote is in stdout/stderr now
            t.join(5)
        return rc

    def kill_all(self) -> None:
        """Teardown: SIGTERM the launcher, then SIGKILL it and any node it left."""
        terminate(self.proc)
        for p in self.node_procs.values():  # psutil guards against pid reuse
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(self.node_procs.values()), timeout=5)
        for t in self.readers:
            t.join(5)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Callable[..., Launcher]]:
    started: list[Launcher] = []

    def start(*args: str) -> Launcher:
        lau = Launcher(*args, default_cluster_file=tmp_path / "default" / "cluster.json")
        started.append(lau)
        return lau

    yield start
    for lau in started:
        lau.kill_all()


def gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def rsc_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rsc", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


async def square_on(nodes: dict[str, str], node: str, x: int) -> int:
    async with Runtime(nodes) as rt:
        return await asyncio.wait_for(spawn_remote(rt.cx(), node, "square", x).join(), 10)


# ------------------------------------------------------------------ the launcher


def test_launch_status_and_sigterm(launcher: Callable[..., Launcher], tmp_path: Path) -> None:
    lau = launcher("-n", "2", "--registry", REGISTRY)
    rows, cf = lau.table()
    assert sorted(rows) == ["worker-1", "worker-2"]
    assert cf == str(tmp_path / "default" / "cluster.json")  # neither --dir nor --cluster-file

    data = json.loads(Path(cf).read_text())
    assert data["version"] == 1 and data["launcher_pid"] == lau.proc.pid
    assert {n: (e["pid"], e["address"]) for n, e in data["nodes"].items()} == rows
    sock_dir = os.path.dirname(rows["worker-1"][1][len("unix:"):])
    assert stat.S_IMODE(os.stat(sock_dir).st_mode) == 0o700
    launcher_kids = {c.pid for c in psutil.Process(lau.proc.pid).children()}
    for pid, addr in rows.values():
        assert pid in launcher_kids
        assert stat.S_IMODE(os.stat(addr[len("unix:"):]).st_mode) == 0o600

    table = rsc_cli("status", "--cluster", cf)
    assert table.returncode == 0, table.stderr
    for name, (pid, _) in rows.items():
        assert re.search(rf"^{name}\s+{pid}\s+0\s", table.stdout, re.M), table.stdout

    assert asyncio.run(square_on(cf, "worker-2", 12)) == 144  # the cluster file works as a cluster
    as_json = rsc_cli("status", "--cluster", cf, "--json")
    assert as_json.returncode == 0, as_json.stderr
    nodes = json.loads(as_json.stdout)["nodes"]
    assert {n: r["stats"]["pid"] for n, r in nodes.items()} == {n: p for n, (p, _) in rows.items()}
    assert nodes["worker-2"]["stats"]["completed"] == 1 and all(r["reachable"] for r in nodes.values())

    lau.proc.send_signal(signal.SIGTERM)
    assert lau.wait(30) == 0, lau.err()
    for pid, _ in rows.values():
        assert gone(lau.node_procs[pid]), f"node {pid} outlived the launcher"
    assert not os.path.exists(cf)
    assert not os.path.exists(sock_dir)
    assert "stopped 2 nodes on SIGTERM" in lau.err()


def test_sigint_stops_cleanly_with_given_dir(launcher: Callable[..., Launcher], tmp_path: Path) -> None:
    d = tmp_path / "socks"
    cf = tmp_path / "my-cluster.json"
    lau = launcher("-n", "1", "--registry", REGISTRY, "--dir", str(d), "--cluster-file", str(cf),
                   "--name-prefix", "w", "--grace", "1", "--quiet")
    lau.wait_line(lambda s: s == str(cf))  # --quiet prints only the cluster file's path
    data = read_cluster_file(str(cf))
    assert list(data) == ["w-1"] and data["w-1"]["address"] == f"unix:{d}/w-1.sock"
    lau.watch(data["w-1"]["pid"])
    lau.proc.send_signal(signal.SIGINT)
    assert lau.wait(30) == 0, lau.err()
    assert gone(lau.node_procs[data["w-1"]["pid"]])
    assert not cf.exists() and not d.exists()  # the launcher created d, so it removes it


@pytest.mark.parametrize("spec, expect", [
    ("tests.registries:nope", "has no attribute 'nope'"),
    ("tests.no_such_module:basic", "no module named 'tests.no_such_module'"),
    ("tests.registries:not_a_registry", "not an rsc Registry"),
])
def test_bad_registry_exits_nonzero_with_node_error(launcher: Callable[..., Launcher], tmp_path: Path,
                                                    spec: str, expect: str) -> None:
    d = tmp_path / "socks"
    lau = launcher("-n", "2", "--registry", spec, "--dir", str(d), "--ready-timeout", "20")
    rc = lau.wait(40)
    err = lau.err()
    assert rc == 1, err
    assert "failed to start" in err and expect in err, err
    assert re.search(r"node 'worker-\d' failed to start: exited with code 2", err), err
    assert err.count(expect) == 1, err  # once, not once per node nor echoed and then repeated
    assert "Traceback" not in err, err
    assert not d.exists()
    leaked = [p for p in psutil.process_iter(["cmdline"]) if str(d) in " ".join(p.info["cmdline"] or [])]
    assert not leaked, leaked


def test_restart_brings_a_killed_node_back(launcher: Callable[..., Launcher]) -> None:
    lau = launcher("-n", "2", "--registry", REGISTRY, "--restart")
    rows, cf = lau.table()
    old_pid, addr = rows["worker-1"]
    os.kill(old_pid, signal.SIGKILL)

    def new_pid() -> int | None:
        pid = read_cluster_file(cf)["worker-1"]["pid"]
        return pid if pid != old_pid else None

    wait_until(new_pid, 30, "worker-1's new pid in the cluster file")
    pid = new_pid()
    assert pid is not None
    lau.watch(pid)
    assert read_cluster_file(cf)["worker-1"]["address"] == addr
    assert read_cluster_file(cf)["worker-2"]["pid"] == rows["worker-2"][0]  # untouched
    stats = probe({"worker-1": addr}, 10)["worker-1"]
    assert isinstance(stats, dict) and stats["pid"] == pid
    assert asyncio.run(square_on(cf, "worker-1", 9)) == 81
    assert re.search(rf"node worker-1 \(pid {old_pid}\) killed by SIGKILL; restarting", lau.err())

    lau.proc.send_signal(signal.SIGTERM)
    assert lau.wait(30) == 0, lau.err()
    assert all(gone(p) for p in lau.node_procs.values())


def test_launch_state_dir_keeps_answers_across_a_restart(launcher: Callable[..., Launcher],
                                                        tmp_path: Path) -> None:
    """rsc launch --restart --state-dir: a node killed with -9 comes back on its
    journal, and a resent key is answered from it instead of running again."""
    state, counter = tmp_path / "state", tmp_path / "count.txt"
    lau = launcher("-n", "1", "--registry", REGISTRY, "--restart", "--state-dir", str(state))
    rows, cf = lau.table()
    old_pid, addr = rows["worker-1"]
    key = IdempotencyKey.from_bytes(secrets.token_bytes(16))
    req = {"token": "once", "path": str(counter)}

    async def once() -> str:
        async with Runtime(cf) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "count", req, idempotency_key=key)
            return await asyncio.wait_for(h.join(), 10)

    assert asyncio.run(once()) == "once"
    assert (state / "worker-1").is_dir()
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: read_cluster_file(cf)["worker-1"]["pid"] != old_pid, 30, "worker-1 restarted")
    lau.watch(read_cluster_file(cf)["worker-1"]["pid"])
    wait_until(lambda: isinstance(probe({"worker-1": addr}, 2)["worker-1"], dict), 30,
               "worker-1 serving")
    assert asyncio.run(once()) == "once"
    assert counter.read_text().splitlines() == ["once"]  # ran once, across the restart
    lau.proc.send_signal(signal.SIGTERM)
    assert lau.wait(30) == 0, lau.err()


def test_a_dead_node_without_restart_stays_down_and_the_others_serve(
        launcher: Callable[..., Launcher]) -> None:
    lau = launcher("-n", "3", "--registry", REGISTRY)
    rows, cf = lau.table()
    dead_pid = rows["worker-1"][0]
    os.kill(dead_pid, signal.SIGKILL)
    wait_until(lambda: "node worker-1" in lau.err() and "stays down" in lau.err(), 30,
               "the launcher to notice worker-1 died")
    # before the fix: the launcher stopped every node here
    assert lau.proc.poll() is None, lau.err()
    assert asyncio.run(square_on(cf, "worker-2", 3)) == 9
    assert asyncio.run(square_on(cf, "worker-3", 4)) == 16
    assert re.search(rf"node worker-1 \(pid {dead_pid}\) killed by SIGKILL; it stays down and "
                     r"the other 2 keep serving", lau.err()), lau.err()

    table = rsc_cli("status", "--cluster", cf)
    assert table.returncode == 1
    assert re.search(rf"^worker-1\s+{dead_pid}\s+down \(ConnectionRefusedError", table.stdout, re.M), \
        table.stdout
    for name in ("worker-2", "worker-3"):
        assert re.search(rf"^{name}\s+{rows[name][0]}\s+0\s", table.stdout, re.M), table.stdout
    js = json.loads(rsc_cli("status", "--cluster", cf, "--json").stdout)["nodes"]
    assert js["worker-1"]["down"] is True and js["worker-2"]["reachable"] is True

    lau.proc.send_signal(signal.SIGTERM)
    assert lau.wait(30) == 0, lau.err()
    assert all(gone(p) for p in lau.node_procs.values())
    sock_dir = os.path.dirname(rows["worker-1"][1][len("unix:"):])
    assert not os.path.exists(cf) and not os.path.exists(sock_dir)


def test_a_launcher_stops_when_every_node_is_down(launcher: Callable[..., Launcher]) -> None:
    lau = launcher("-n", "1", "--registry", REGISTRY)
    rows, cf = lau.table()
    os.kill(rows["worker-1"][0], signal.SIGKILL)
    assert lau.wait(30) == 1, lau.err()
    assert "every node is down; stopping" in lau.err()
    assert not os.path.exists(cf)


def test_a_second_launcher_on_a_live_dir_refuses_and_leaves_it_alone(
        launcher: Callable[..., Launcher], tmp_path: Path) -> None:
    d = tmp_path / "socks"
    first = launcher("-n", "2", "--registry", REGISTRY, "--dir", str(d))
    rows, cf = first.table()
    inodes = {n: os.stat(a[len("unix:"):]).st_ino for n, (_, a) in rows.items()}
    second = launcher("-n", "2", "--registry", REGISTRY, "--dir", str(d))
    assert second.wait(60) == 2, second.err()
    assert f"{d} is in use by another rsc launcher (pid {first.proc.pid})" in second.err(), second.err()
    # before the fix: the second took the sockets over, and on leaving removed them and cf
    assert {n: os.stat(a[len("unix:"):]).st_ino for n, (_, a) in rows.items()} == inodes
    assert read_cluster_file(cf) == {n: {"address": a, "pid": p} for n, (p, a) in rows.items()}
    assert asyncio.run(square_on(cf, "worker-1", 5)) == 25

    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.err()
    assert not d.exists()
    # the lock went with the first launcher: the directory can be used again
    third = launcher("-n", "1", "--registry", REGISTRY, "--dir", str(d))
    third.table()
    third.proc.send_signal(signal.SIGTERM)
    assert third.wait(30) == 0, third.err()


def test_launch_keeps_an_existing_dir_and_its_mode(launcher: Callable[..., Launcher],
                                                   tmp_path: Path) -> None:
    d = tmp_path / "socks"
    d.mkdir()
    d.chmod(0o755)
    (d / "mine.txt").write_text("not rsc's")
    lau = launcher("-n", "1", "--registry", REGISTRY, "--dir", str(d))
    rows, cf = lau.table()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755  # before the fix: 0700
    assert (d / ".rsc-launch.lock").exists()
    lau.proc.send_signal(signal.SIGTERM)
    assert lau.wait(30) == 0, lau.err()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755
    assert sorted(os.listdir(d)) == ["mine.txt"]


def test_launch_refuses_an_unsafe_dir(launcher: Callable[..., Launcher], tmp_path: Path) -> None:
    d = tmp_path / "socks"
    d.mkdir()
    d.chmod(0o777)
    lau = launcher("-n", "1", "--registry", REGISTRY, "--dir", str(d))
    assert lau.wait(60) == 2, lau.err()
    assert f"--dir {d} has mode 0777: writable by group and others without the sticky bit" in lau.err()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o777 and os.listdir(d) == []


def test_a_cluster_does_not_take_over_a_live_node_socket(tmp_path: Path) -> None:
    """A node someone started by hand serves at DIR/worker-1.sock: a cluster
    on DIR fails to start, and its clean-up leaves that node's socket alone."""
    d = tmp_path / "socks"
    d.mkdir(mode=0o700)
    sock = d / "worker-1.sock"
    other = subprocess.Popen([sys.executable, "-m", "rsc", "node", "--name", "worker-1", "--listen",
                              f"unix:{sock}", "--registry", REGISTRY], cwd=REPO_ROOT,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().startswith("READY worker-1 ")
        c = LocalCluster(1, REGISTRY, directory=str(d), cwd=REPO_ROOT, ready_timeout=20)
        with pytest.raises(NodeStartError) as info:
            c.start()
        assert f"{sock} is in use" in info.value.stderr
        assert sock.exists()
        assert isinstance(probe({"worker-1": f"unix:{sock}"}, 10)["worker-1"], dict)
    finally:
        terminate(other)
        assert other.stdout is not None
        other.stdout.close()
    assert not sock.exists()


def test_a_second_local_cluster_on_a_dir_in_use_is_refused(cluster, tmp_path: Path) -> None:  # noqa: F811
    d = tmp_path / "socks"
    first = cluster(1, directory=str(d))
    with pytest.raises(PathInUse, match=f"pid {os.getpid()}"):
        LocalCluster(1, REGISTRY, directory=str(d), cwd=REPO_ROOT).start()
    assert asyncio.run(square_on(first.nodes, "worker-1", 7)) == 49
    assert os.path.exists(first.cluster_file)


def test_status_reports_unreachable_nodes(tmp_path: Path) -> None:
    cf = tmp_path / "cluster.json"
    cf.write_text(json.dumps({"version": 1, "launcher_pid": 1, "nodes": {
        "ghost": {"address": f"unix:{tmp_path}/ghost.sock", "pid": 999999}}}))
    out = rsc_cli("status", "--cluster", str(cf))
    assert out.returncode == 1
    assert re.search(r"^ghost\s+999999\s+down \(FileNotFoundError", out.stdout, re.M), out.stdout
    js = rsc_cli("status", "--cluster", str(cf), "--json")
    assert js.returncode == 1
    assert json.loads(js.stdout)["nodes"]["ghost"]["reachable"] is False
    missing = rsc_cli("status", "--cluster", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read cluster file" in missing.stderr


# ------------------------------------------------------------------ LocalCluster


def test_local_cluster_lifecycle(cluster) -> None:  # noqa: F811
    c = cluster(2)
    assert list(c.nodes) == ["worker-1", "worker-2"]
    assert set(c.procs) == set(c.pids) == set(c.nodes)
    d = c.directory
    assert d is not None and stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert read_cluster_file(c.cluster_file) == {
        n: {"address": c.nodes[n], "pid": c.pids[n]} for n in c.nodes}
    assert asyncio.run(square_on(c.nodes, "worker-2", 5)) == 25

    old = c.pids["worker-1"]
    c.kill("worker-1", signal.SIGKILL)
    c.procs["worker-1"].wait(10)
    assert c.dead() == {"worker-1": -signal.SIGKILL}
    new = c.restart("worker-1")
    assert new != old and c.pids["worker-1"] == new
    assert read_cluster_file(c.cluster_file)["worker-1"]["pid"] == new
    assert asyncio.run(square_on(c.nodes, "worker-1", 6)) == 36

    procs = [psutil.Process(p) for p in c.pids.values()]
    assert c.stop() == []
    assert all(gone(p) for p in procs)
    assert not os.path.exists(d)
    assert c.stop() == []  # twice is fine


def test_a_cluster_waits_out_the_shutdown_bound_its_nodes_were_given(cluster) -> None:  # noqa: F811
    """stop() gives a SIGTERMed node its own shutdown bound before SIGKILL:
    grace + max(5, 3 x cancel grace) + 4 s, from what the nodes were started
    with (extra_args, then their environment), not the node's defaults. It
    took the default cancel grace (6 s of cancel wait) whatever the nodes
    had, so a node given --cancel-grace 6 (18 s) was SIGKILLed while still
    waiting for its cancelled tasks."""
    from rsc.node.server import shutdown_bound_s

    c = cluster(1, extra_args=["--cancel-grace", "6"], env={"RSC_GRACE": "1.5"})
    assert c._stop_timeout() == shutdown_bound_s(1.5, 6.0) + 2.0 == 1.5 + 18 + 4 + 2
    d = cluster(1, grace=0.5, env={"RSC_CANCEL_GRACE": "3"})  # grace= is --grace; the variable is the node's
    assert d._stop_timeout() == 0.5 + 9 + 4 + 2


def test_local_cluster_inside_a_running_loop() -> None:
    async def main() -> int:
        async with LocalCluster(1, REGISTRY, cwd=REPO_ROOT, name_prefix="n") as c:
            async with Runtime(c.nodes) as rt:
                return await asyncio.wait_for(spawn_remote(rt.cx(), "n-1", "square", 11).join(), 10)

    before = {ch.pid for ch in psutil.Process().children(recursive=True)}
    assert asyncio.run(main()) == 121
    assert not {ch.pid for ch in psutil.Process().children(recursive=True)} - before


def test_local_cluster_start_failure_cleans_up(tmp_path: Path) -> None:
    d = tmp_path / "socks"
    c = LocalCluster(2, "tests.registries:nope", directory=str(d), cwd=REPO_ROOT, ready_timeout=20)
    with pytest.raises(NodeStartError) as info:
        c.start()
    assert info.value.returncode == 2 and "has no attribute 'nope'" in info.value.stderr
    assert not d.exists() and c.procs == {}


def _fake_node(tmp_path: Path, body: str) -> str:
    """An executable standing in for the interpreter: gets `-m rsc node --name N --listen A ...`."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("body, reason", [
    ("exec sleep 60\n", "not ready within 1 s"),
    ('echo "READY $5 $$ $7"\nexec sleep 60\n', "did not answer a handshake"),
    ('echo "READY $5 1 $7"\nexec sleep 60\n', "unexpected READY line"),
])
def test_local_cluster_not_ready_in_time(tmp_path: Path, body: str, reason: str) -> None:
    c = LocalCluster(1, REGISTRY, python=_fake_node(tmp_path, body), ready_timeout=1.0)
    t = time.monotonic()
    with pytest.raises(NodeStartError, match=reason):
        c.start()
    assert time.monotonic() - t < 15
    assert c.procs == {} and c.directory is None
    assert not wait_no_children({ch.pid for ch in psutil.Process().children(recursive=True)})


def test_local_cluster_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        LocalCluster(0, REGISTRY)
    with pytest.raises(ValueError, match="package.module:attr"):
        LocalCluster(1, "tests.registries")
    with pytest.raises(ValueError, match="over the .*limit"):
        LocalCluster(1, REGISTRY, directory="/tmp/" + "d" * 120).start()
    assert not os.path.exists("/tmp/" + "d" * 120)


def test_rsc_launch_is_the_same_verb() -> None:
    out = rsc_cli("launch", "--help")
    assert out.returncode == 0
    for flag in ("--nodes", "--registry", "--dir", "--name-prefix", "--cluster-file", "--restart",
                 "--capacity", "--threads", "--grace", "--ready-timeout", "--quiet"):
        assert flag in out.stdout
    bad = rsc_cli("launch", "-n", "0", "--registry", REGISTRY)
    assert bad.returncode == 2 and "at least 1" in bad.stderr


def test_rsc_version(capsys: pytest.CaptureFixture[str]) -> None:
    import rsc
    from rsc.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"rsc {rsc.__version__}\n"
