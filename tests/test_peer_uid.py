"""Who may connect to a node's Unix socket (issue 15): the node asks the
kernel who is at the other end (SO_PEERCRED) and refuses every user but its
own, with ERROR auth_failed naming ``--allow-uid``, unless ``--allow-uid``
names them.

The socket's modes (0600 in a 0700 directory) already keep other users out;
these tests open them up by hand, as a careless operator might, to show that
the uid check holds on its own. They run a client as a real other user: a
system user created for the test (``useradd``) and removed after it, the
client a forked child that drops to that uid with ``os.setuid``. That needs
root; elsewhere the tests skip and say so.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from tests.rawclient import ERROR, WELCOME, frame, pack, unpack_body

E_AUTH_FAILED = 2


@pytest.fixture(scope="module")
def other_user() -> Iterator[tuple[int, int]]:
    """(uid, gid) of a user made for this module, removed at its end."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user and run a client as it")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed")
    name = f"rsct{os.getpid() % 100000}"
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a user here: {made.stderr.strip()}")
    try:
        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def talk_as(uid: int, gid: int, path: str, send: bytes) -> bytes:
    """Connect to ``path`` as ``uid``:``gid`` (in a forked child that drops
    to them), send ``send``, and return the first frame's body the node
    answers with (b"" if it closes first; ``EXC ...`` if the child failed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(path)
                try:
                    s.sendall(send)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused at once: what it answered is still to be read
                data = b""
                while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            os.write(w, data)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(w, b"EXC " + repr(exc).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    data = b"".join(chunks)
    if data.startswith(b"EXC "):
        raise AssertionError(f"the client running as uid {uid} failed: {data[4:].decode()}")
    return data[4:4 + int.from_bytes(data[:4], "big")] if len(data) >= 4 else b""


def open_up(cluster: Any) -> str:
    """Make the node's socket reachable by everyone (what rsc never does)."""
    path = cluster.socket_path("worker-1")
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o666)
    return path


HELLO = frame(pack([0, "raw-other", 1, 1, "origin", os.urandom(32), {}]))


def test_another_user_is_refused(cluster: Callable[..., Any],
                                 other_user: tuple[int, int]) -> None:
    uid, gid = other_user
    c = cluster(1)
    # nothing sent: the node refuses on connecting, before it reads a byte
    # (sending would race the close, which may reset the connection)
    body = talk_as(uid, gid, open_up(c), b"")
    msg = unpack_body(body)
    assert msg[0] == ERROR and msg[3] == E_AUTH_FAILED, msg
    assert f"uid {uid} may not connect" in msg[4] and f"--allow-uid {uid}" in msg[4], msg
    deadline = time.monotonic() + 10  # the node's log line reaches us through a pipe
    while "refused a connection from uid" not in c.stderr_of("worker-1"):
        assert time.monotonic() < deadline, c.stderr_of("worker-1")
        time.sleep(0.02)
    # the node's own user is served as before
    from tests.rawclient import RawClient
    with RawClient(c.socket_path("worker-1"), "owner") as rc:
        assert rc.handshake()[0] == WELCOME


def test_allow_uid_lets_that_user_in(cluster: Callable[..., Any],
                                     other_user: tuple[int, int]) -> None:
    uid, gid = other_user
    c = cluster(1, extra_args=["--allow-uid", str(uid)])
    msg = msgpack.unpackb(talk_as(uid, gid, open_up(c), HELLO))
    assert msg[0] == WELCOME, msg
