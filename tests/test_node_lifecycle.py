"""A node process's files and exit, on real processes, sockets and signals:

- it changes the mode of no directory it did not create, and refuses an unsafe one;
- it never takes over a socket path something answers on, and removes only its own socket;
- it is gone within its documented shutdown bound whatever its computations do;
- it refuses a key file others may read.

Every process a test starts is stopped by pid in a finally block; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rsc
from rsc.errors import PathInUse, UnsafePath
from rsc.launch import LocalCluster, probe
from rsc.localfs import check_dir_is_safe, ensure_private_dir, read_key_file
from rsc.node.server import shutdown_bound_s
from tests.cluster import REPO_ROOT, terminate

NOBODY = 65534


class Node:
    """An ``rsc node`` process on ``tests.registries:basic`` (or another registry)."""

    def __init__(self, sock: str | Path, *extra: str, name: str = "n1",
                 registry: str = "tests.registries:basic", env: dict[str, str] | None = None) -> None:
        self.sock = str(sock)
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rsc", "node", "--name", name, "--listen", f"unix:{self.sock}",
             "--registry", registry, *extra],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=None if env is None else {**os.environ, **env})

    def ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith(f"READY {self.name} "), (line, self.stderr())

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for the process to exit on its own; (exit code, stderr)."""
        _out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def stop(self) -> None:
        terminate(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def nodes() -> Iterator[Any]:
    started: list[Node] = []

    def start(*args: Any, **kw: Any) -> Node:
        n = Node(*args, **kw)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def answers(sock: str, name: str) -> bool:
    """Node ``name`` completes a handshake and a STATUS_REQUEST at ``sock``."""
    res = probe({name: f"unix:{sock}"}, 10)[name]
    return isinstance(res, dict)


# ------------------------------------------------------- directories (item 4)


@pytest.mark.parametrize("dir_mode", [0o1777, 0o755, 0o700, 0o1770])
def test_an_existing_safe_directory_keeps_its_mode(nodes: Any, tmp_path: Path, dir_mode: int) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(dir_mode)
    n = nodes(d / "x.sock")
    n.ready()
    assert mode(d) == dir_mode
    assert mode(d / "x.sock") == 0o600
    n.stop()
    assert n.proc.returncode == 0
    assert mode(d) == dir_mode  # before the fix: 0700
    assert not (d / "x.sock").exists()


def test_a_directory_rsc_creates_is_0700(nodes: Any, tmp_path: Path) -> None:
    n = nodes(tmp_path / "a" / "b" / "x.sock")
    n.ready()
    assert mode(tmp_path / "a" / "b") == 0o700


@pytest.mark.parametrize("dir_mode, owner, expect", [
    (0o777, None, "mode 0777: writable by group and others without the sticky bit"),
    (0o702, None, "writable by others without the sticky bit"),
    (0o770, None, "writable by group without the sticky bit"),
    (0o700, NOBODY, f"belongs to uid {NOBODY}, not to you"),
])
def test_an_unsafe_directory_is_refused_and_left_alone(nodes: Any, tmp_path: Path, dir_mode: int,
                                                       owner: int | None, expect: str) -> None:
    if owner is not None and os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    d = tmp_path / "unsafe"
    d.mkdir()
    d.chmod(dir_mode)
    if owner is not None:
        os.chown(d, owner, -1)
    n = nodes(d / "x.sock")
    code, err = n.finish()
    assert code == 2, err
    assert f"socket directory {d}" in err and expect in err, err
    assert mode(d) == dir_mode and not (d / "x.sock").exists()


def test_private_dir_rules_in_process(tmp_path: Path) -> None:
    created = tmp_path / "new"
    assert ensure_private_dir(str(created)) is True and mode(created) == 0o700
    assert ensure_private_dir(str(created)) is False
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(UnsafePath, match="is not a directory"):
        check_dir_is_safe(str(f), "--dir")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert ensure_private_dir(str(sticky), "--dir") is False and mode(sticky) == 0o1777


# ------------------------------------------------------- socket in use (item 9)


def test_a_second_node_on_a_live_socket_is_refused(nodes: Any, tmp_path: Path) -> None:
    sock = tmp_path / "d" / "x.sock"
    first = nodes(sock, name="first")
    first.ready()
    inode = os.stat(sock).st_ino
    second = nodes(sock, name="second")
    code, err = second.finish()
    assert code == 2, err
    assert f"{sock} is in use" in err, err
    assert os.stat(sock).st_ino == inode  # before the fix: replaced, then deleted by the second
    assert answers(str(sock), "first")


def test_a_stale_socket_is_replaced(nodes: Any, tmp_path: Path) -> None:
    sock = tmp_path / "d" / "x.sock"
    sock.parent.mkdir(mode=0o700)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock))  # bound, never listening: what a node killed with SIGKILL leaves
    s.close()
    n = nodes(sock)
    n.ready()
    assert answers(str(sock), "n1")


def test_a_node_removes_only_the_socket_it_created(nodes: Any, tmp_path: Path) -> None:
    """The first node's socket file was replaced (its path unlinked and
    reused by a second node): the first node, stopping, leaves the second's alone."""
    sock = tmp_path / "d" / "x.sock"
    first = nodes(sock, name="first")
    first.ready()
    os.unlink(sock)
    second = nodes(sock, name="second")
    second.ready()
    first.stop()
    assert first.proc.returncode == 0
    assert sock.exists() and answers(str(sock), "second")  # before the fix: the first node deleted it
    second.stop()
    assert not sock.exists()


# ------------------------------------------------------- shutdown bound (item 10)


@pytest.mark.parametrize("build", ["compiled", "pure"])
def test_a_node_with_a_thread_stuck_in_c_exits_within_its_bound(cluster: Any, build: str) -> None:
    grace = 0.5
    env = {"RSC_NO_EXTENSIONS": "1"} if build == "pure" else {}
    c = cluster(1, registry="tests.stuck_registry:registry", grace=grace, env=env)
    proc, sock = c.procs["worker-1"], c.socket_path("worker-1")

    async def main() -> None:
        async with rsc.Runtime(c.nodes) as rt:
            h = rsc.spawn_remote(rt.cx(), "worker-1", "block_in_c", 600.0, lease=60.0)
            while h.state is not rsc.RemoteTaskState.RUNNING:
                await asyncio.sleep(0.01)
            os.kill(proc.pid, signal.SIGTERM)
            # the origin hears how the task ended: abandoned, not a lapsed lease
            with pytest.raises(rsc.RemotePanicked,
                               match="abandoned at shutdown: still running 6 s after the shutdown cancel"):
                await asyncio.wait_for(h.join(), shutdown_bound_s(grace) + 5)

    asyncio.run(main())
    # before the fix: the pool's thread, stuck for 600 s, kept the process alive
    assert proc.wait(shutdown_bound_s(grace) + 5) == 0
    assert not os.path.exists(sock)


def test_a_second_signal_during_shutdown_exits_at_once(nodes: Any, tmp_path: Path) -> None:
    n = nodes(tmp_path / "d" / "x.sock", "--grace", "600", registry="tests.stuck_registry:registry")
    n.ready()

    async def main() -> None:
        async with rsc.Runtime({"n1": f"unix:{n.sock}"}) as rt:
            h = rsc.spawn_remote(rt.cx(), "n1", "block_in_c", 600.0, lease=2.0)
            while h.state is not rsc.RemoteTaskState.RUNNING:
                await asyncio.sleep(0.01)
            n.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert n.proc.poll() is None  # draining: the grace is 600 s
            n.proc.send_signal(signal.SIGINT)
            # before the fix: the second signal did nothing, so this waited the full grace
            await asyncio.to_thread(n.proc.wait, 20)
            with pytest.raises((rsc.errors.TransportError, rsc.LeaseExpired)):
                await asyncio.wait_for(h.join(), 60)

    asyncio.run(main())
    code, err = n.finish()
    assert code == 128 + signal.SIGINT, err
    assert "second SIGINT during shutdown" in err, err
    assert not os.path.exists(n.sock)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_node_whose_loop_is_held_still_leaves_within_its_bound(nodes: Any, tmp_path: Path,
                                                                 loop: str) -> None:
    """A computation holds the loop thread itself, so the graceful shutdown
    cannot even begin: the watchdog armed by the signal ends the process when
    the bound is over, and removes its socket."""
    grace = 0.5
    env = {"RSC_NO_UVLOOP": "1"} if loop == "asyncio" else {}
    n = nodes(tmp_path / "d" / "x.sock", "--grace", str(grace), registry="tests.stuck_registry:registry",
              env=env)
    n.ready()

    async def main() -> None:
        async with rsc.Runtime({"n1": f"unix:{n.sock}"}) as rt:
            h = rsc.spawn_remote(rt.cx(), "n1", "hog_loop", 600.0, lease=1.0)
            with pytest.raises(rsc.LeaseExpired):  # the held loop renews nothing
                await asyncio.wait_for(h.join(), 30)

    asyncio.run(main())
    n.proc.send_signal(signal.SIGTERM)
    # before the fix: the shutdown never ran, and nothing else ended the process
    code, err = n.finish(timeout=shutdown_bound_s(grace) + 10)
    assert code == 1, err
    assert f"shutdown still running after {shutdown_bound_s(grace):.1f} s" in err, err
    assert not os.path.exists(n.sock)


def test_the_bound_is_in_the_help() -> None:
    out = subprocess.run([sys.executable, "-m", "rsc", "node", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "grace + 10 s" in " ".join(out.stdout.split()), out.stdout
    assert shutdown_bound_s(5.0) == 15.0


# ------------------------------------------------------- key files (smaller b)


@pytest.mark.parametrize("key_mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_may_read_is_refused(nodes: Any, tmp_path: Path, key_mode: int) -> None:
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    key.chmod(key_mode)
    fix = f"chmod 600 {key}"
    with pytest.raises(UnsafePath, match=f"mode {key_mode:04o}.*{fix}"):
        read_key_file(str(key))
    with pytest.raises(UnsafePath, match=fix):
        LocalCluster(1, "tests.registries:basic", key_file=str(key))
    n = nodes(tmp_path / "d" / "x.sock", "--key-file", str(key))
    code, err = n.finish()
    assert code == 2 and fix in err and f"{key_mode:04o}" in err, err
    cf = tmp_path / "cluster.json"
    cf.write_text(f'{{"version": 1, "nodes": {{"ghost": "unix:{tmp_path}/ghost.sock"}}}}')
    st = subprocess.run([sys.executable, "-m", "rsc", "status", "--cluster", str(cf), "--key-file",
                         str(key)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert st.returncode == 2 and fix in st.stderr, st.stderr


def test_a_private_key_file_is_read(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"k" * 16)
    key.chmod(0o600)
    assert read_key_file(str(key)) == b"k" * 16
    key.chmod(0o400)
    assert read_key_file(str(key)) == b"k" * 16


def test_path_in_use_is_a_typed_invalid_argument() -> None:
    assert issubclass(PathInUse, rsc.InvalidArgument) and issubclass(UnsafePath, rsc.InvalidArgument)
