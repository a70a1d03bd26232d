"""The latency benchmarks' open-loop sender (bench/latency_sender.py).

The process sender delivers requests to the origin's loop the way a service
receives them, from a socket its loop reads: every request once, in order,
none before it is due, with nothing of the sender running in the origin's
process (no thread sharing its interpreter lock); its process is gone and
its temporary file removed afterwards. The thread sender keeps the same
schedule and contract, from a thread of this process.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time

import psutil
import pytest

from bench.latency_sender import SENDER_STATS, SENDERS, SocketSender

N = 300
INTERVAL = 0.0002  # 5,000 a second


def deliver(kind: str) -> tuple[list[tuple[int, int, int]], object, int]:
    """Run sender ``kind`` on a fresh loop: ((i, j, arrival ns) per arrival,
    the sender, the most threads this process had meanwhile)."""
    arrivals: list[tuple[int, int, int]] = []
    most_threads = [threading.active_count()]

    async def main() -> object:
        def arrive(i: int, j: int) -> None:
            arrivals.append((i, j, time.monotonic_ns()))
            most_threads[0] = max(most_threads[0], threading.active_count())

        async with SENDERS[kind](INTERVAL, N, arrive) as s:
            while not arrivals or arrivals[-1][1] < N:
                await asyncio.sleep(0.005)
        return s

    sender = asyncio.run(main())
    return arrivals, sender, most_threads[0]


@pytest.mark.parametrize("kind", sorted(SENDERS))
def test_every_request_arrives_once_in_order_and_never_early(kind: str) -> None:
    arrivals, sender, _ = deliver(kind)
    covered = [k for i, j, _ in arrivals for k in range(i, j)]
    assert covered == list(range(N))
    t0 = sender.t0  # type: ignore[attr-defined]
    sent = sender.sent  # type: ignore[attr-defined]
    assert len(sent) == N
    for k in range(N):
        assert sent[k] >= int((t0 + k * INTERVAL) * 1e9) - 1000  # handed over once due (clock rounding)
    for i, j, at in arrivals:
        assert at >= sent[j - 1]  # arrives after it was sent


def test_the_process_sender_runs_nothing_in_this_process_and_leaves_nothing() -> None:
    before_children = {p.pid for p in psutil.Process().children(recursive=True)}
    threads_before = threading.active_count()
    arrivals, sender, most_threads = deliver("proc")
    assert isinstance(sender, SocketSender)
    assert most_threads == threads_before  # no thread of this process shares the loop's lock
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before_children
    # its own file, not every rsc-sender-* of the temp dir: other runs on a
    # shared machine make and remove theirs meanwhile
    out = sender._out
    assert out.startswith(os.path.join(tempfile.gettempdir(), "rsc-sender-"))
    assert not os.path.exists(out)


def test_the_thread_sender_is_a_thread_of_this_process() -> None:
    threads_before = threading.active_count()
    _, _, most_threads = deliver("thread")
    assert most_threads == threads_before + 1
    assert threading.active_count() == threads_before


def test_the_process_sender_reports_what_sending_cost_it() -> None:
    """The process sender's own account (``stats``, what the latency budget
    prints beside the origin's and the node's): every field, counts that
    agree with its schedule (one write per hand-over, at most one sleep
    before each, at most one hand-over per request), and ``on_start`` given
    its pid while it runs."""
    started: list[tuple[int, bool]] = []

    async def main() -> SocketSender:
        def on_start(pid: int) -> None:
            started.append((pid, psutil.pid_exists(pid)))

        got = [0]

        def arrive(i: int, j: int) -> None:
            got[0] = j

        async with SocketSender(INTERVAL, N, arrive, on_start=on_start) as s:
            while got[0] < N:
                await asyncio.sleep(0.005)
        return s

    sender = asyncio.run(main())
    stats = sender.stats
    assert sorted(stats) == sorted(SENDER_STATS)
    assert 1 <= stats["writes"] <= N
    assert stats["sleeps"] <= stats["writes"]
    assert stats["cpu_ns"] > 0 and stats["wait_ns"] >= 0
    assert stats["voluntary"] >= 0 and stats["involuntary"] >= 0
    assert len(sender.sent) == N  # the account follows the send times, not mixed into them
    assert len(started) == 1 and started[0][1]
