"""Freed memory kept for the next task's payload (``rsc.heap``).

With glibc's malloc defaults, a process that allocates and frees blocks of a
megabyte or more for every task (frames received, values packed and
unpacked) gets fresh pages for each: a page fault per 4 KiB. ``rsc node``
keeps up to ``--heap-keep-bytes`` of freed memory (256 MiB by default), and a
program may call ``rsc.heap.keep_freed_memory()`` itself. These tests count
the page faults of real processes.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import subprocess
import sys
from typing import Any

import pytest

from rsc import Runtime, spawn_remote
from rsc.errors import InvalidArgument
from rsc.heap import DEFAULT_KEEP_BYTES, MAX_KEEP_BYTES, keep_freed_memory
from rsc.node.main import heap_keep_bytes

MiB = 1024 * 1024
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="rsc.heap tunes glibc's malloc only (elsewhere it does nothing)")

_CHURN = """
import resource, sys
import rsc.heap

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def churn():
    before = faults()
    for _ in range(40):
        blocks = [bytearray(1 << 20) for _ in range(16)]  # 16 MiB in flight, 1 MiB each
        del blocks
    return faults() - before

churn()  # glibc's own adaptive threshold settles first
default = churn()
applied = rsc.heap.keep_freed_memory()
print(default, applied, churn())
"""


@glibc_only
def test_kept_memory_takes_the_page_faults_out_of_a_churn_of_large_blocks() -> None:
    _churn_keeps_its_pages(_CHURN)


_RUNTIME_CHURN = _CHURN.replace("applied = rsc.heap.keep_freed_memory()", """\
import rsc
rt = rsc.Runtime({"w1": "unix:/nonexistent/w1.sock"}, heap_keep_bytes=rsc.heap.DEFAULT_KEEP_BYTES)
applied = rt.heap_keep_bytes == rsc.heap.DEFAULT_KEEP_BYTES""")


@glibc_only
def test_a_runtime_told_to_keeps_freed_memory_for_its_process() -> None:
    """``Runtime(heap_keep_bytes=...)`` is ``keep_freed_memory`` for an
    origin's process: the same churn of 1 MiB blocks, before and after one is
    made with it, in a real process."""
    assert "heap_keep_bytes" in _RUNTIME_CHURN
    _churn_keeps_its_pages(_RUNTIME_CHURN)


def _churn_keeps_its_pages(script: str) -> None:
    """Run a churn script in a real process: the page faults of its rounds
    before and after it keeps freed memory (and whether that was applied)."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    default, applied, kept = int(out[0]), out[1] == "True", int(out[2])
    assert applied
    # 40 rounds of 16 MiB of fresh pages is 163,840 faults; kept, the pages are reused
    assert default > 40 * 16 * 256 // 2, default
    assert kept * 10 < default, (default, kept)


def test_a_runtime_leaves_malloc_alone_by_default_and_checks_the_option() -> None:
    rt = Runtime({"w1": "unix:/nonexistent/w1.sock"})
    assert rt.heap_keep_bytes == 0
    for bad in (-1, MAX_KEEP_BYTES + 1, 1.5, True, "1MiB"):
        with pytest.raises(InvalidArgument, match="heap_keep_bytes must be an int"):
            Runtime({"w1": "unix:/nonexistent/w1.sock"}, heap_keep_bytes=bad)  # type: ignore[arg-type]


def test_keep_freed_memory_arguments() -> None:
    assert keep_freed_memory(0) is False  # leaves malloc's defaults
    for bad in (-1, MAX_KEEP_BYTES + 1, 1.5, True, "1MiB"):
        with pytest.raises(InvalidArgument, match="keep_bytes must be an int"):
            keep_freed_memory(bad)  # type: ignore[arg-type]


def test_the_node_option_reads_sizes_and_zero() -> None:
    assert heap_keep_bytes("0") == 0
    assert heap_keep_bytes("256MiB") == DEFAULT_KEEP_BYTES
    assert heap_keep_bytes("1048576") == MiB
    for bad in ("2GiB", "-5", "lots"):
        with pytest.raises(argparse.ArgumentTypeError):
            heap_keep_bytes(bad)


def _minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])  # field 10, minflt


@glibc_only
def test_a_node_keeps_freed_memory_unless_told_not_to(cluster: Any) -> None:
    """The same 1 MiB echoes on a node with the default and on one started
    ``--heap-keep-bytes 0``: the default node faults in a fraction of the
    pages (the other one faults in every payload it receives and sends)."""
    data = bytes(range(256)) * 4096  # 1 MiB

    def faults_for(extra: list[str]) -> int:
        # no kept results: each would be memory of its own, whatever malloc keeps
        c = cluster(1, extra_args=["--max-kept-result-bytes", "0", *extra])
        pid = c.pids["worker-1"]

        async def main() -> int:
            async with Runtime(c.nodes) as rt:
                cx = rt.cx()

                async def batch() -> None:
                    for h in [spawn_remote(cx, "worker-1", "echo", data) for _ in range(16)]:
                        assert await h.join() == data

                for _ in range(3):  # settle: connection, kept results, glibc's own threshold
                    await batch()
                before = _minor_faults(pid)
                for _ in range(10):
                    await batch()
                return _minor_faults(pid) - before

        try:
            return asyncio.run(main())
        finally:
            c.stop()

    kept = faults_for([])
    returned = faults_for(["--heap-keep-bytes", "0"])
    assert returned > 2 * kept, (returned, kept)
