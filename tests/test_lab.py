"""rsc.lab's parts: the virtual-time loop, its clocks and pool, the simulated
network's model, the faults, and determinism across processes."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import rsc
from rsc import Registry, spawn_remote
from rsc.lab import Lab, LabClock, LinkProfile, Stuck, TimeLimit, VirtualLoop, preset
from rsc._core.messages import Ping
from rsc.transport.address import Address
from rsc.transport.connection import FramedConnection

REPO = Path(__file__).resolve().parent.parent

registry = Registry()


@registry.computation("nap", codec="msgpack")
async def nap(cx: Any, seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@registry.computation("ticker", codec="msgpack")
async def ticker(cx: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        await asyncio.sleep(0.1)
        out.append(round(asyncio.get_running_loop().time(), 6))
    return out


@registry.computation("ticks", codec="msgpack")
def ticks(cx: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        time.sleep(0.1)  # virtual in the lab: the thread gives the loop its turn
        out.append(round(time.monotonic(), 6))
    return out


@registry.computation("where", codec="msgpack")
def where(cx: Any, _: Any) -> str:
    return threading.current_thread().name


# -- the loop ----------------------------------------------------------------------------
def test_virtual_time_jumps_to_the_next_timer_and_costs_no_wall_time() -> None:
    loop = VirtualLoop()
    woke: list[float] = []

    async def main() -> None:
        await asyncio.sleep(3600 * 24 * 7)
        woke.append(loop.time())
        await asyncio.sleep(0.25)
        woke.append(loop.time())

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    loop.close()
    assert woke == [3600 * 24 * 7, 3600 * 24 * 7 + 0.25]
    assert time.perf_counter() - t0 < 1.0


def test_a_deadlock_is_reported_not_slept_through() -> None:
    loop = VirtualLoop()
    with pytest.raises(Stuck, match="nothing ready"):
        loop.run_until_complete(loop.create_future())
    loop.close()


def test_the_time_limit_stops_a_run_that_never_ends() -> None:
    loop = VirtualLoop(time_limit=10)

    async def forever() -> None:
        while True:
            await asyncio.sleep(1)

    with pytest.raises(TimeLimit):
        loop.run_until_complete(forever())
    for t in asyncio.all_tasks(loop):
        t.cancel()
    loop.close()


def _order(shuffle: random.Random | None) -> list[int]:
    loop = VirtualLoop(shuffle=shuffle)
    out: list[int] = []

    async def main() -> None:
        for i in range(20):
            loop.call_soon(out.append, i)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    loop.close()
    return out


def test_ready_callbacks_run_fifo_or_shuffled_by_the_seed() -> None:
    assert _order(None) == list(range(20))
    a, b, c = _order(random.Random(1)), _order(random.Random(1)), _order(random.Random(2))
    assert sorted(a) == list(range(20)) and a != list(range(20))
    assert a == b and a != c


def test_a_lab_clock_follows_virtual_time_at_its_rate_freezes_and_jumps() -> None:
    loop = VirtualLoop()
    clock = LabClock(loop)

    async def main() -> list[int]:
        seen = []
        await asyncio.sleep(1)
        seen.append(clock.now_ns())  # 1 s
        clock.set_rate(0.5)
        await asyncio.sleep(2)
        seen.append(clock.now_ns())  # 1 + 1 s
        clock.freeze()
        await asyncio.sleep(4)
        seen.append(clock.now_ns())  # frozen at 2 s
        clock.thaw()
        seen.append(clock.now_ns())  # jumped by 4 s * 0.5
        clock.jump(10**9)
        seen.append(clock.now_ns())
        return seen

    assert loop.run_until_complete(main()) == [10**9, 2 * 10**9, 2 * 10**9, 4 * 10**9, 5 * 10**9]
    loop.close()


def test_sync_computations_run_on_a_lab_thread_in_lockstep() -> None:
    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry)
        rt = await lab.start_origin("o1")
        assert await spawn_remote(rt.cx(), "n1", "where", None).join() == "rsc-lab-computation"

    report = Lab(1).run(scenario)
    assert report.ok, report.format()


# -- the network -------------------------------------------------------------------------
class _Peer:
    def __init__(self) -> None:
        self.got: list[tuple[float, int]] = []
        self.lost: list[Exception | None] = []

    def factory(self) -> FramedConnection:
        return FramedConnection(on_messages=self._on, on_protocol_error=lambda c, e: None,
                                on_close=lambda c, exc: self.lost.append(exc))

    def _on(self, conn: FramedConnection, msgs: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        self.got.extend((loop.time(), m.nonce) for m in msgs)


def _pipe(profile: LinkProfile, seed: int = 1, frames: int = 50, *, between: Any = None) -> tuple[_Peer, Lab]:
    lab = Lab(seed, network=profile)
    server = _Peer()

    async def main() -> None:
        await lab.net.transport_for("b").listen(Address.parse("unix:/b"), server.factory)
        client = await lab.net.transport_for("a").connect(Address.parse("unix:/b"),
                                                          _Peer().factory)
        for i in range(frames):
            client.send(Ping("a", i + 1, i))
            await asyncio.sleep(0.001)
            if between is not None:
                between(lab, i)
        await asyncio.sleep(5)

    lab.loop.run_until_complete(main())
    lab.loop.close()
    return server, lab


def test_latency_and_jitter_delay_frames_but_one_connection_stays_in_order() -> None:
    server, _ = _pipe(LinkProfile(latency_s=0.010, jitter_s=0.050))
    nonces = [n for _, n in server.got]
    assert nonces == list(range(50))
    first_sent = 0.002 * 1  # after the stream's own handshake (2 x latency)
    assert server.got[0][0] >= first_sent + 0.010


def test_bandwidth_spaces_frames_by_their_size() -> None:
    server, _ = _pipe(LinkProfile(latency_s=0.0, bandwidth=1000.0), frames=5)
    times = [t for t, _ in server.got]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 0.005 for g in gaps)  # a Ping frame is >5 bytes: over 5 ms at 1 kB/s


def test_a_lost_frame_resets_the_connection() -> None:
    server, lab = _pipe(LinkProfile(latency_s=0.001, loss=0.2), seed=3)
    assert lab.net.counts["lost"] >= 1 and lab.net.counts["resets"] >= 1
    assert len(server.got) < 50 and isinstance(server.lost[0], ConnectionResetError)
    assert [n for _, n in server.got] == list(range(len(server.got)))  # nothing after the gap


def test_a_duplicated_frame_arrives_twice_back_to_back() -> None:
    server, lab = _pipe(LinkProfile(latency_s=0.001, duplicate=0.2), seed=3)
    nonces = [n for _, n in server.got]
    assert lab.net.counts["duplicated"] >= 1
    assert len(nonces) == 50 + lab.net.counts["duplicated"]
    assert sorted(set(nonces)) == nonces[:1] + sorted(set(nonces))[1:] and nonces == sorted(nonces)


def test_a_partition_holds_frames_until_heal_or_resets_after_a_while() -> None:
    def cut_and_heal(lab: Lab, i: int) -> None:
        if i == 10:
            lab.partition("a", "b")
        if i == 20:
            lab.heal()

    server, lab = _pipe(LinkProfile(latency_s=0.001, reset_after_s=1.0), between=cut_and_heal)
    assert [n for _, n in server.got] == list(range(50)) and lab.net.counts["resets"] == 0
    held = [t for t, n in server.got if 10 <= n < 20]
    assert min(held) >= max(t for t, n in server.got if n < 10)

    def cut(lab: Lab, i: int) -> None:
        if i == 10:
            lab.partition("a", "b")

    server, lab = _pipe(LinkProfile(latency_s=0.001, reset_after_s=0.5), between=cut)
    assert len(server.got) <= 11 and lab.net.counts["resets"] == 1


def test_the_presets_exist_and_an_unknown_one_is_refused() -> None:
    assert set(rsc.lab.PRESETS) == {"local", "lan", "wan", "lossy", "congested"}
    assert preset("lossy").loss > 0 and preset("wan").latency_s > preset("lan").latency_s
    with pytest.raises(ValueError, match="unknown network preset"):
        preset("moon")


# -- faults --------------------------------------------------------------------------------
def test_a_crash_loses_the_idempotency_records_and_a_rerun_after_it_is_counted() -> None:
    key = rsc.IdempotencyKey.from_bytes(b"k" * 16)

    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry)
        rt = await lab.start_origin("o1")
        assert await spawn_remote(rt.cx(), "n1", "nap", 0.1, idempotency_key=key).join() == 0.1
        assert lab.nodes["n1"].engine.idempotency_records == 1
        lab.crash("n1")
        await asyncio.sleep(0.5)  # the origin notices the reset before n1 is back
        await lab.start_node("n1")
        assert lab.nodes["n1"].engine.idempotency_records == 0
        assert await spawn_remote(rt.cx(), "n1", "nap", 0.1, idempotency_key=key).join() == 0.1

    report = Lab(1).run(scenario)
    assert report.ok, report.format()
    assert report.figures["reexecuted_after_crash"] == 1


def test_pause_freezes_a_node_and_expire_leases_lapses_them_now() -> None:
    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry)
        rt = await lab.start_origin("o1")
        h = spawn_remote(rt.cx(), "n1", "nap", 0.5, lease=30.0)
        await asyncio.sleep(0.1)
        before = lab.nodes["n1"].clock.now_ns()
        lab.pause("n1", 1.0)
        await asyncio.sleep(0.5)
        assert lab.nodes["n1"].clock.now_ns() == before  # stopped
        await asyncio.sleep(1.0)
        assert await h.join() == 0.5
        h2 = spawn_remote(rt.cx(), "n1", "nap", 100.0, lease=30.0)
        await asyncio.sleep(0.1)
        lab.expire_leases("o1")
        with pytest.raises(rsc.LeaseExpired):
            await h2.join()

    report = Lab(1).run(scenario)
    assert report.ok, report.format()
    assert report.figures["faults"] == 3  # pause, resume, expire_leases


def test_a_pause_freezes_a_nodes_coroutines_threads_and_timers_but_not_the_others() -> None:
    got: dict[str, Any] = {}

    async def scenario(lab: Lab) -> None:
        for n in ("n1", "n2"):
            await lab.start_node(n, registry)
        rt = await lab.start_origin("o1")
        lab.at(0.55, lab.pause, "n1", 1.0)
        hs = {(n, c): spawn_remote(rt.cx(), n, c, 20, lease=30.0)
              for n in ("n1", "n2") for c in ("ticks", "ticker")}
        for k, h in hs.items():
            got[k] = await h.join()

    report = Lab(2).run(scenario)
    assert report.ok, report.format()
    for comp in ("ticks", "ticker"):
        paused, free = got[("n1", comp)], got[("n2", comp)]
        # nothing of n1 ran between 0.55 s and its resume at 1.55 s ...
        assert not [t for t in paused if 0.56 < t < 1.55], (comp, paused)
        # ... then its overdue step ran at once, and the rest went on from there
        assert any(abs(t - 1.55) < 0.002 for t in paused), (comp, paused)
        # n2 ticked right through
        assert [t for t in free if 0.56 < t < 1.55], (comp, free)
        assert len(paused) == len(free) == 20


def test_chaos_draws_the_same_faults_for_the_same_seed() -> None:
    plans = []
    for seed in (5, 5, 6):
        lab = Lab(seed)
        plans.append(lab.chaos(nodes=["n1", "n2"], origins=["o1"], faults=4))
        lab.loop.close()
    assert plans[0] == plans[1] != plans[2]
    assert len(plans[0]) >= 4


# -- determinism across processes -------------------------------------------------------------
# one scenario per thing that could leak the process into a run: resets and
# replays, sync computations on lab threads under shuffled callbacks, a
# durable journal, nested runtimes
_DIGESTS = """
import sys
from rsc.lab import load_scenario, run_seed
for name, seed, shuffle in (("lossy_retries", 3, False), ("happy_path", 4, True),
                            ("durable_restart", 5, False), ("nested_tree", 6, False)):
    report = run_seed(load_scenario(f"{sys.argv[1]}/{name}.py"), seed, shuffle=shuffle or None)
    assert report.ok, report.format()
    print(name, report.digest)
"""


def _digests(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", _DIGESTS, str(REPO / "examples" / "lab")],
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 4
    return out.stdout


def test_a_digest_does_not_depend_on_hash_seed_or_on_the_twins() -> None:
    a = _digests({"PYTHONHASHSEED": "1"})
    b = _digests({"PYTHONHASHSEED": "2"})
    c = _digests({"PYTHONHASHSEED": "3", "RSC_NO_EXTENSIONS": "1"})
    assert a == b == c


def test_a_slow_node_clock_renews_too_late_and_the_origin_sees_the_lease_lapse() -> None:
    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry)
        rt = await lab.start_origin("o1")
        ok = spawn_remote(rt.cx(), "n1", "nap", 3.0, lease=1.0)
        assert await ok.join() == 3.0  # renewed in time at the normal rate
        lab.skew("n1", 0.2)  # renewals every lease/3 of ITS clock: 1.7 s of real time
        slow = spawn_remote(rt.cx(), "n1", "nap", 3.0, lease=1.0)
        with pytest.raises(rsc.LeaseExpired):
            await slow.join()
        lab.skew("n1", 1.0)

    report = Lab(2).run(scenario)
    assert report.ok, report.format()


@pytest.mark.parametrize("network", ["wan", "congested"])
def test_the_slow_presets_still_deliver_every_outcome(network: str) -> None:
    async def scenario(lab: Lab) -> None:
        await lab.start_node("n1", registry)
        rt = await lab.start_origin("o1")
        hs = [spawn_remote(rt.cx(), "n1", "nap", 0.1 * i, lease=5.0) for i in range(10)]
        assert [await h.join() for h in hs] == [0.1 * i for i in range(10)]

    for seed in range(3):
        report = Lab(seed, network=network).run(scenario)
        assert report.ok, report.format()
        assert report.figures["virtual_s"] > 0.9
