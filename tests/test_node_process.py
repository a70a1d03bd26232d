"""The node process itself: lifeline, socket permissions, bad arguments."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import rsc

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


def test_keyed_node_proves_and_demands_the_key(cluster: Any, tmp_path: Path) -> None:
    key = os.urandom(32)
    key_file = tmp_path / "key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    c = cluster(1, key_file=str(key_file))

    async def main() -> None:
        async with rsc.Runtime(c.nodes, key=key) as rt:
            assert await rsc.spawn_remote(rt.cx(), "worker-1", "square", 9).join() == 81
        async with rsc.Runtime(c.nodes, key=os.urandom(32)) as rt:  # node's proof fails here
            with pytest.raises(rsc.errors.AuthFailed):
                await asyncio.wait_for(rsc.spawn_remote(rt.cx(), "worker-1", "square", 9).join(), 10)
            assert rt.debug_counts() == dict(handles=0, tasks=0, leases=0)
        async with rsc.Runtime(c.nodes) as rt:  # no key: the node refuses our nil proof
            with pytest.raises(rsc.errors.AuthFailed):
                await asyncio.wait_for(rsc.spawn_remote(rt.cx(), "worker-1", "square", 9).join(), 10)

    asyncio.run(main())


def test_tune_gc_freezes_start_up_objects_and_raises_gen0() -> None:
    """What a node does to its own collector once it listens (in a fresh
    interpreter: freezing this test process's heap would change every test after)."""
    code = ("import gc; from rsc.node.main import GC_GEN0_THRESHOLD, tune_gc; tune_gc(); "
            "assert gc.get_freeze_count() > 1000, gc.get_freeze_count(); "
            "assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD == 20000, gc.get_threshold(); "
            "assert gc.isenabled()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
