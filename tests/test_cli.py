"""The ``rsc`` command on real processes: one CLI whether run as ``rsc`` or
``python -m rsc``, help with defaults, user errors in one line, names and
addresses checked, logging one line per event.

Every process a test starts is stopped by pid (``terminate``) in a finally block.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsc import Runtime, spawn_remote
from rsc.errors import InvalidArgument, NodeUnreachable
from rsc.launch import LocalCluster
from rsc.transport.uds import UnixTransport
from tests.cluster import REPO_ROOT, terminate

RSC = os.path.join(os.path.dirname(sys.executable), "rsc")  # the console script
PYTHON_M = [sys.executable, "-m", "rsc"]

REGISTRY_MODULE = textwrap.dedent("""\
    from rsc import Registry

    registry = Registry()


    @registry.computation("triple", codec="msgpack")
    def triple(cx, x):
        return 3 * x
""")


def _env(**extra: str) -> dict[str, str]:
    """The environment with nothing on PYTHONPATH: a registry must come from the cwd."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding a user's registry module, as a service's checkout would."""
    d = tmp_path / "app"
    d.mkdir()
    (d / "myservice_registry.py").write_text(REGISTRY_MODULE)
    return d


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        terminate(p)
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()


def _start(procs: list[subprocess.Popen], argv: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    p = subprocess.Popen(argv, cwd=cwd, env=_env(**env), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def _read_until(p: subprocess.Popen, pred, timeout: float = 60.0) -> list[str]:
    """stdout lines up to the first that satisfies ``pred`` (bounded wait)."""
    assert p.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            raise AssertionError(f"exited ({p.wait(10)}) before the line; stdout={lines} "
                                 f"stderr={p.stderr.read() if p.stderr else ''}")
        lines.append(line.rstrip("\n"))
        if pred(lines[-1]):
            return lines
    raise AssertionError(f"no such line within {timeout} s: {lines}")


async def _triple(nodes: dict[str, str] | str, node: str, x: int) -> int:
    async with Runtime(nodes) as rt:
        return await asyncio.wait_for(spawn_remote(rt.cx(), node, "triple", x).join(), 20)


# ------------------------------------------------------------ one CLI, from the cwd


@pytest.mark.parametrize("how", ["rsc", "python -m rsc"])
def test_node_imports_the_registry_from_the_current_directory(app_dir: Path, procs, how: str) -> None:
    argv = [RSC] if how == "rsc" else PYTHON_M
    sock = app_dir / "w1.sock"
    p = _start(procs, [*argv, "node", "--name", "w1", "--listen", f"unix:{sock}",
                       "--registry", "myservice_registry:registry"], cwd=app_dir)
    _read_until(p, lambda s: s.startswith("READY w1 "))
    assert asyncio.run(_triple({"w1": f"unix:{sock}"}, "w1", 14)) == 42
    assert terminate(p) == 0
    err = p.stderr.read() if p.stderr else ""
    assert "Traceback" not in err, err


def test_launch_imports_the_registry_from_the_current_directory_and_shows_progress(
        app_dir: Path, procs) -> None:
    socks = app_dir / "socks"
    p = _start(procs, [RSC, "launch", "-n", "2", "--registry", "myservice_registry:registry",
                       "--dir", str(socks)], cwd=app_dir)
    lines = _read_until(p, lambda s: s.startswith("cluster file: "))
    cf = lines[-1][len("cluster file: "):]
    assert lines[0] == "2 nodes ready (registry myservice_registry:registry)", lines
    assert any(re.match(r"worker-1\s+\d+\s+unix:", s) for s in lines), lines
    assert asyncio.run(_triple(cf, "worker-2", 5)) == 15
    p.send_signal(signal.SIGINT)
    assert p.wait(30) == 0
    err = p.stderr.read() if p.stderr else ""
    # progress while the nodes start (not a terminal: one line per node), before the table
    assert "rsc launch: starting 2 nodes (worker-1, worker-2)" in err, err
    ready = re.findall(r"rsc launch: (worker-\d) ready \((\d)/2, [\d.]+ s\)", err)
    assert sorted(ready) == [("worker-1", "1"), ("worker-2", "2")] or \
        sorted(ready) == [("worker-1", "2"), ("worker-2", "1")], err


def test_version_and_help_show_every_verb_and_its_defaults() -> None:
    out = subprocess.run([RSC, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and re.fullmatch(r"rsc \d+\.\d+\.\d+\S*\n", out.stdout), out
    top = subprocess.run([RSC, "--help"], capture_output=True, text=True, timeout=30).stdout
    for verb in ("node", "launch", "status", "probe", "lab", "trace"):
        assert re.search(rf"^\s+{verb}\s+\S", top, re.M), top  # each verb with its summary line
    node = subprocess.run([*PYTHON_M, "node", "--help"], capture_output=True, text=True,
                          timeout=30).stdout
    flat = " ".join(node.split())
    assert flat.startswith("usage: rsc node") and "run one node process" in flat
    for default in ("(default: 16384)", "(default: 5.0)", "(default: INFO)", "(default: thread)"):
        assert default in flat, (default, node)
    assert "(default: None)" not in flat and "(default: False)" not in flat
    status = " ".join(subprocess.run([RSC, "status", "--help"], capture_output=True, text=True,
                                     timeout=30).stdout.split())
    assert '"reachable": true' in status and "Exit status" in status  # --json documented


# ------------------------------------------------------------ errors, once


def _node_error(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RSC, "node", "--name", "w1", "--listen", f"unix:{cwd}/w1.sock", *args],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60)


def test_a_registry_that_is_not_found_is_one_line_saying_where_it_looked(tmp_path: Path) -> None:
    out = _node_error(tmp_path, "--registry", "no_such_registry_mod:registry")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "no module named 'no_such_registry_mod' (looked in the current directory " \
           f"{tmp_path}" in out.stderr, out.stderr


def test_a_registry_importing_a_missing_module_names_it_and_the_line(app_dir: Path) -> None:
    (app_dir / "needs_dep.py").write_text("import os\nimport rsc_dep_that_is_not_installed\n")
    out = _node_error(app_dir, "--registry", "needs_dep:registry")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "module 'needs_dep' imports 'rsc_dep_that_is_not_installed', which is not installed " \
           f"(at {app_dir}/needs_dep.py:2;" in out.stderr, out.stderr


def test_an_exception_while_importing_a_registry_names_file_and_line(app_dir: Path) -> None:
    (app_dir / "raises.py").write_text("x = 1\n\n\ndef f():\n    return 1 / 0\n\n\nf()\n")
    out = _node_error(app_dir, "--registry", "raises:registry")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert f"raised ZeroDivisionError: division by zero (at {app_dir}/raises.py:5)" in out.stderr
    (app_dir / "bad_syntax.py").write_text("x = (\n")
    out = _node_error(app_dir, "--registry", "bad_syntax:registry")
    assert out.returncode == 2 and f"{app_dir}/bad_syntax.py:1: SyntaxError" in out.stderr, out.stderr


def test_launch_reports_a_registry_error_once(app_dir: Path) -> None:
    out = subprocess.run([RSC, "launch", "-n", "3", "--registry", "no_such_registry_mod:registry",
                          "--dir", str(app_dir / "s")], cwd=app_dir, env=_env(),
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 1
    assert out.stderr.count("no module named 'no_such_registry_mod'") == 1, out.stderr
    assert "Traceback" not in out.stderr and not (app_dir / "s").exists()


# ------------------------------------------------------------ names and addresses


@pytest.mark.parametrize("name, why", [("a b", "whitespace"), ("a/b", "a path separator"),
                                       ("tab\there", "control characters"),
                                       ("x" * 256, r"bytes in UTF-8; at most 255"), ("nbsp\u00a0here", "whitespace"),
                                       ("", "must not be empty")])
def test_node_names_are_checked_everywhere(tmp_path: Path, name: str, why: str) -> None:
    out = subprocess.run([*PYTHON_M, "node", "--name", name, "--listen", f"unix:{tmp_path}/n.sock",
                          "--registry", "tests.registries:basic"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out.stderr
    with pytest.raises(InvalidArgument, match=why):
        Runtime({name: f"unix:{tmp_path}/n.sock"})
    if name:
        with pytest.raises(InvalidArgument, match=why):
            LocalCluster(1, "tests.registries:basic", name_prefix=name)
    env = subprocess.run([*PYTHON_M, "node", "--listen", f"unix:{tmp_path}/n.sock", "--registry",
                          "tests.registries:basic"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, RSC_NAME=name))
    if name:  # RSC_NAME="" is no RSC_NAME: --name is then missing
        assert env.returncode == 2 and why in env.stderr, env.stderr


def test_a_socket_path_over_the_kernel_limit_says_the_limit_and_its_length(tmp_path: Path) -> None:
    path = "/tmp/" + "d" * 120 + "/w1.sock"
    out = subprocess.run([*PYTHON_M, "node", "--name", "w1", "--listen", f"unix:{path}",
                          "--registry", "tests.registries:basic"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    n = len(path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"is {n} bytes; the kernel takes at most 107" in out.stderr, out.stderr
    with pytest.raises(InvalidArgument, match=f"is {n} bytes; the kernel takes at most 107"):
        Runtime({"w1": f"unix:{path}"})
    with pytest.raises(ValueError, match="over the 107-byte limit"):
        LocalCluster(1, "tests.registries:basic", directory=str(tmp_path / ("d" * 100))).start()


def _no_tcp() -> list[str]:
    """A command prefix that runs a process where TCP cannot be used: a new
    network namespace, whose only interface (loopback) is down."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.decode().strip()}")
    return ["unshare", "--net"]


def test_a_tcp_address_where_tcp_is_unavailable_is_a_clean_error_on_both_sides(tmp_path: Path) -> None:
    # the node: an address that is not this host's, and a host name that does not resolve
    for listen, why in (("tcp:192.0.2.1:7001", "Cannot assign requested address"),
                        ("tcp:no-such-host.invalid:7001", "")):
        node = subprocess.run([*PYTHON_M, "node", "--name", "w1", "--listen", listen, "--insecure",
                               "--registry", "tests.registries:basic"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert node.returncode == 1 and "Traceback" not in node.stderr, node.stderr
        assert re.fullmatch(rf"rsc node w1: cannot listen on {re.escape(listen)}: .*{why}.*\n",
                            node.stderr, re.I), node.stderr
    # the origin, where no network is up at all
    prefix = _no_tcp()
    origin = textwrap.dedent("""\
        import asyncio, sys
        from rsc import Runtime, spawn_remote
        from rsc.errors import NodeUnreachable

        async def main():
            async with Runtime({"w1": "tcp:127.0.0.1:7001"}, connect_timeout_s=1.0) as rt:
                try:
                    await asyncio.wait_for(spawn_remote(rt.cx(), "w1", "square", 3).join(), 20)
                except NodeUnreachable as exc:
                    print("NodeUnreachable:", exc)
                    return 0
                return 1

        sys.exit(asyncio.run(main()))
    """)
    out = subprocess.run([*prefix, sys.executable, "-c", origin], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("NodeUnreachable:"), (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr


def test_a_runtime_refuses_at_once_an_address_its_transport_cannot_dial(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"node w1 is at tcp:127\.0\.0\.1:7001, but this "
                                              r"runtime's transport .* dials unix: addresses only"):
        Runtime({"w1": "tcp:127.0.0.1:7001"}, transport=UnixTransport())

    class Dialler:  # a transport of one's own that names no schemes dials what it is given
        async def connect(self, address, factory):
            raise InvalidArgument(f"cannot dial {address} here")

        async def listen(self, address, factory):
            raise InvalidArgument("no")

    async def main() -> None:
        async with Runtime({"w1": "tcp:127.0.0.1:7001"}, transport=Dialler()) as rt:
            h = spawn_remote(rt.cx(), "w1", "square", 3)
            with pytest.raises(NodeUnreachable, match="cannot dial tcp:127.0.0.1:7001 here"):
                await asyncio.wait_for(h.join(), 10)

    asyncio.run(main())


# ------------------------------------------------------------ logging


def test_a_node_logs_one_line_per_event_not_per_task(tmp_path: Path, procs) -> None:
    sock = tmp_path / "w1.sock"
    p = _start(procs, [*PYTHON_M, "node", "--name", "w1", "--listen", f"unix:{sock}",
                       "--registry", "tests.registries:basic"], cwd=Path(REPO_ROOT),
               PYTHONPATH=REPO_ROOT)

    async def work() -> None:
        async with Runtime({"w1": f"unix:{sock}"}) as rt:
            cx = rt.cx()
            assert await asyncio.gather(*(spawn_remote(cx, "w1", "square", i).join()
                                          for i in range(200))) == [i * i for i in range(200)]

    _read_until(p, lambda s: s.startswith("READY w1 "))
    asyncio.run(work())
    with socket.socket(socket.AF_UNIX) as raw:  # a peer that sends garbage: one line, its own
        raw.settimeout(10)
        raw.connect(str(sock))
        raw.sendall(b"\xff" * 64)
        while raw.recv(4096):
            pass
    assert terminate(p) == 0
    lines = (p.stderr.read() if p.stderr else "").splitlines()
    text = "\n".join(lines)
    assert re.search(r"INFO rsc\.node: node w1 listening on unix:", text), text
    assert re.search(r"INFO rsc\.node: node w1: connection 1 opened", text), text
    assert re.search(r"INFO rsc\.node: node w1: connection 1 closed", text), text
    assert re.search(r"INFO rsc\.node: node w1: connection 2 broke the protocol \(.+\); closing it",
                     text), text
    assert re.search(r"INFO rsc\.node: node w1 stopped", text), text
    assert len(lines) < 10, text  # 200 tasks, a handful of lines


def test_log_level_flag_quiets_the_node(tmp_path: Path, procs) -> None:
    sock = tmp_path / "w1.sock"
    p = _start(procs, [*PYTHON_M, "node", "--name", "w1", "--listen", f"unix:{sock}",
                       "--registry", "tests.registries:basic", "--log-level", "warning"],
               cwd=Path(REPO_ROOT), PYTHONPATH=REPO_ROOT)
    _read_until(p, lambda s: s.startswith("READY w1 "))
    assert terminate(p) == 0
    assert (p.stderr.read() if p.stderr else "") == ""
    bad = subprocess.run([*PYTHON_M, "node", "--name", "w1", "--listen", f"unix:{sock}",
                          "--registry", "tests.registries:basic", "--log-level", "loud"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'LOUD'" in bad.stderr, bad.stderr


def test_the_origin_logs_connections_and_escalations_not_tasks(cluster, caplog) -> None:
    import logging

    from tests.test_metrics import retry_after_a_lapse

    c = cluster(2)
    caplog.set_level(logging.INFO, logger="rsc")

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            await asyncio.gather(*(spawn_remote(cx, "worker-1", "square", i).join() for i in range(100)))
            await retry_after_a_lapse(cx, c.pids["worker-1"])

    asyncio.run(main())
    msgs = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("rsc")]
    assert ("rsc.origin", "INFO") in {(n, lv) for n, lv, m in msgs if "connected to node worker-1" in m}
    assert any("lease escalation" in m and "worker-2" in m for _, _, m in msgs), msgs
    assert len(msgs) < 15, msgs  # 101 tasks: a handful of records


def test_the_library_is_quiet_by_default() -> None:
    code = ("import logging, rsc; rsc.Runtime; lg = logging.getLogger('rsc'); "
            "print(any(isinstance(h, logging.NullHandler) for h in lg.handlers))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "True", out


# ------------------------------------------------------------ the build's progress (make venv/demo)


def test_the_build_shows_progress_lines_only_and_pips_log_when_it_fails(tmp_path: Path) -> None:
    script = os.path.join(REPO_ROOT, "scripts", "pip_progress.py")
    ok = subprocess.run([sys.executable, script, "--no-deps", "--no-index", "prometheus-client"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines and all(s.startswith("rsc build [") for s in lines), lines  # pip's log kept back
    assert lines[-1].endswith("] installed") and ok.stderr == ""
    bad = subprocess.run([sys.executable, script, "--no-deps", "--no-index", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "nothing" in bad.stderr  # pip's own words, shown because it failed
    assert re.search(r"pip failed with exit status \d+", bad.stdout.splitlines()[-1]), bad.stdout


def _launch_quiet(procs: list[subprocess.Popen], default_file: Path) -> tuple[subprocess.Popen, str]:
    p = _start(procs, [*PYTHON_M, "launch", "-n", "1", "--registry", "tests.registries:basic",
                       "--quiet"], cwd=Path(REPO_ROOT), PYTHONPATH=REPO_ROOT,
               RSC_CLUSTER_FILE=str(default_file))
    return p, _read_until(p, lambda s: s.endswith(".json"))[-1]


def test_launch_takes_a_stale_default_cluster_file_and_leaves_a_live_ones_alone(
        tmp_path: Path, procs) -> None:
    from rsc.cluster_file import read_cluster_file, write_cluster_file

    default = tmp_path / "rsc" / "cluster.json"
    default.parent.mkdir(mode=0o700)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    write_cluster_file(str(default), {"old-1": f"unix:{tmp_path}/old.sock"}, {"old-1": 1},
                       launcher_pid=gone.pid)
    first, cf = _launch_quiet(procs, default)
    assert cf == str(default) and list(read_cluster_file(cf)) == ["worker-1"]  # stale: replaced

    second, cf2 = _launch_quiet(procs, default)  # the first still runs: its file is left alone
    assert cf2 != str(default) and os.path.basename(cf2) == "cluster.json"
    assert read_cluster_file(cf)["worker-1"]["pid"] != read_cluster_file(cf2)["worker-1"]["pid"]
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert "another launcher's cluster uses the default cluster file" in (second.stderr.read()
                                                                          if second.stderr else "")
    assert default.exists()  # the second launcher removed only its own file
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0 and not default.exists()
