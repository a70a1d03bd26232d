"""The origin's per-task objects and the cyclic collector.

A spawn makes two collector-tracked objects that live until the outcome is
in: the handle and its task record. The compiled build recycles both through
free lists (a freed one is kept for the next spawn), so a burst of spawns
allocates few new tracked objects and the young collections that would walk
every outstanding task come far less often. What must not change: a recycled
object is tracked again (a cycle through it is still found), a cycle through
a handle and the caller's code is collected, and running many tasks leaves
no objects or memory behind. These tests run on real node processes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tracemalloc
import weakref
from typing import Any

import pytest

import rsc
from rsc import Runtime, spawn_remote
from rsc.launch import LocalCluster

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def two(module_cluster: Any) -> LocalCluster:
    return module_cluster(2)


def live(type_name: str) -> int:
    """Objects of the named type the collector tracks now."""
    return sum(1 for o in gc.get_objects() if type(o).__name__ == type_name)


async def burst(cx: rsc.Cx, n: int) -> None:
    hs = [spawn_remote(cx, "worker-1", "echo", b"x") for _ in range(n)]
    for h in hs:
        assert await h.join() == b"x"


def test_a_recycled_handle_and_task_are_tracked_again(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            cx = rt.cx()
            await burst(cx, 50)  # freed handles and tasks (on a free list when compiled)
            h = spawn_remote(cx, "worker-1", "echo", b"y")
            assert gc.is_tracked(h) and gc.is_tracked(h._task)
            assert await h.join() == b"y"
            assert gc.is_tracked(h) and gc.is_tracked(h._task)

    asyncio.run(main())


async def refused_and_kept(cx: rsc.Cx) -> weakref.ref:
    """A handle in a reference cycle with this call's frame: the error that
    settled it is kept by the handle, and raising it gave it a traceback that
    holds this frame, which holds the handle."""
    h = spawn_remote(cx, "worker-1", "no-such-computation", b"x")  # before the handshake
    with pytest.raises(rsc.RemoteError) as caught:
        await h.join()
    assert caught.value is h._error  # the handle's own error: handle -> error -> frame -> handle
    assert caught.value.__traceback__ is not None
    del caught
    return weakref.ref(h)


def test_a_cycle_through_a_handle_and_the_callers_frame_is_collected(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            await burst(rt.cx(), 50)  # the next handle and task come off the free lists when compiled
        async with Runtime(two.nodes) as rt:  # not connected yet: the node's catalogue is not known
            gc.disable()
            try:
                ref = await refused_and_kept(rt.cx())
                assert ref() is not None  # only the cycle holds it: reference counts cannot free it
                gc.collect()
                assert ref() is None
            finally:
                gc.enable()

    asyncio.run(main())


def test_many_tasks_leave_no_objects_or_memory_behind(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            cx = rt.cx()
            await burst(cx, 2000)  # warm up: free lists, caches, buffers
            gc.collect()
            handles, tasks = live("RemoteHandle"), live("OriginTask")
            tracemalloc.start()
            try:
                await burst(cx, 2000)
                gc.collect()
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(4):
                    await burst(cx, 2000)
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            assert (live("RemoteHandle"), live("OriginTask")) == (handles, tasks) == (0, 0)
            # a handle and its task are ~400 bytes: one of them kept per task
            # of 8,000 would be ~3 MB
            assert grown < 256 * 1024, grown

    asyncio.run(main())


def test_the_pure_twin_needs_no_cython_installed() -> None:
    """Cython is a build requirement only: the pure-mode sources import it for
    their class decorators, and run without it."""
    code = (
        "import sys; sys.modules['cython'] = None\n"  # as if Cython were not installed
        "import rsc.handle, rsc._engine.origin as origin\n"
        "t = origin.new_task(1, 'n', 'c', b'x', 1000, bytes(16), None, None, 0, 0, None, None)\n"
        "assert t.rtid == 1 and rsc.handle.RemoteHandle.__name__ == 'RemoteHandle'\n"
        "print(rsc.handle.__file__.endswith('.py'), origin.__file__.endswith('.py'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RSC_NO_EXTENSIONS": "1"}, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_a_cancelled_join_leaves_no_waiter_and_a_later_join_gets_the_outcome(two: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(two.nodes) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", 300)
            joins = [asyncio.ensure_future(h.join()) for _ in range(3)]
            await asyncio.sleep(0.05)
            assert h._waiters is not None and len(h._waiters) == 3
            joins[0].cancel()
            joins[2].cancel()
            await asyncio.gather(joins[0], joins[2], return_exceptions=True)
            assert not h.is_finished()  # (the task sleeps 300 ms)
            assert len(h._waiters) == 1  # the cancelled two took theirs out
            assert await joins[1] == 300
            assert h._waiters is None
            assert [j.cancelled() for j in joins] == [True, False, True]
            assert await h.join() == 300

    asyncio.run(main())
