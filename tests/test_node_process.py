"""The node process itself: lifeline, socket permissions, bad arguments."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_node(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    sock = str(tmp_path / "d" / "n.sock")
    p = subprocess.Popen([sys.executable, "-m", "rsc", "node", "--name", "n1", "--listen", f"unix:{sock}",
                          "--registry", "tests.registries:basic", *extra],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    return p, sock


def test_node_stops_when_its_lifeline_closes(tmp_path: Path) -> None:
    p, sock = start_node(tmp_path, "--lifeline-stdin")
    try:
        assert p.stdout.readline().startswith("READY n1 ")
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
        p.stdin.close()  # the launcher "died"
        assert p.wait(10) == 0
        assert not os.path.exists(sock)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def test_bad_arguments_exit_2_with_a_message(tmp_path: Path) -> None:
    p, _ = start_node(tmp_path, "--capacity", "0")
    try:
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 2 and "--capacity must be at least 1" in err
