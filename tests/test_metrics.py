"""Seeing a running system: ``Runtime.stats()`` counting what happened, a
node's figures, and the Prometheus exposition scraped over real HTTP from a
real node process and from an origin's registry.

Node processes are stopped by pid (tests.cluster, ``terminate``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import rsc.lease
import rsc.metrics
from rsc import Runtime, spawn_remote
from rsc.errors import UnknownComputation
from tests.cluster import REPO_ROOT, terminate

DOCS = Path(REPO_ROOT) / "docs" / "OPERATING.md"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def retry_after_a_lapse(cx: Any, pid: int) -> None:
    """A task on worker-1 (``pid``) whose lease lapses while that node is
    stopped (SIGSTOP), retried on worker-2 by its policy, where it finishes."""
    h = spawn_remote(cx, "worker-1", "sleep_ms", 1500, lease=0.5,
                     on_lease_expired=rsc.lease.retry(1, nodes=["worker-2"]))
    await asyncio.sleep(0.2)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert await asyncio.wait_for(h.join(), 20) == 1500
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_node_serves_its_figures_on_metrics_port(tmp_path: Path) -> None:
    sock = tmp_path / "w1.sock"
    with subprocess.Popen([sys.executable, "-m", "rsc", "node", "--name", "w1", "--listen",
                           f"unix:{sock}", "--registry", "tests.registries:basic",
                           "--metrics-port", "0", "--no-catalogue"], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        _scrape_a_node(p, sock)
    assert p.returncode == 0


def _scrape_a_node(p: subprocess.Popen, sock: Path) -> None:
    try:
        assert p.stdout is not None
        metrics_line = p.stdout.readline()
        assert re.fullmatch(r"METRICS http://127\.0\.0\.1:\d+/metrics\n", metrics_line), metrics_line
        url = metrics_line.split()[1]
        assert p.stdout.readline().startswith("READY w1 ")

        async def work() -> None:
            async with Runtime({"w1": f"unix:{sock}"}) as rt:
                cx = rt.cx()
                assert await asyncio.gather(*(spawn_remote(cx, "w1", "square", i).join()
                                              for i in range(30))) == [i * i for i in range(30)]
                with pytest.raises(UnknownComputation):
                    await spawn_remote(cx, "w1", "nope", 1).join()

        asyncio.run(work())
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
        got = samples(text)
        node = (("node", "w1"),)
        assert got[("rsc_node_tasks_accepted_total", node)] == 30
        assert got[("rsc_node_tasks_finished_total", (("node", "w1"), ("outcome", "completed")))] == 30
        assert got[("rsc_node_tasks_finished_total", (("node", "w1"), ("outcome", "failed")))] == 0
        assert got[("rsc_node_tasks_rejected_total", node)] == 1
        assert got[("rsc_node_tasks_running", node)] == 0
        assert got[("rsc_node_capacity", node)] == 16384
        assert got[("rsc_node_resident_memory_bytes", node)] > 1 << 20
        assert got[("rsc_node_info", (("isolation", "thread"), ("node", "w1"),
                                      ("version", rsc.__version__)))] == 1
        assert got[("process_resident_memory_bytes", ())] > 1 << 20  # the process's own
        assert not any(name.startswith("rsc_node_worker") for name, _ in got)  # no pool here
    finally:
        terminate(p)


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "rsc", "node", "--name", "w1", "--listen",
                              f"unix:{tmp_path}/w1.sock", "--registry", "tests.registries:basic",
                              "--metrics-port", str(port)], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
    assert not (tmp_path / "w1.sock").exists()


def test_runtime_stats_count_what_happened_and_export_to_prometheus(cluster) -> None:
    c = cluster(2)
    registry = CollectorRegistry()

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            rsc.metrics.register(rt, registry=registry)
            cx = rt.cx()
            s = rt.stats()
            assert (s["tasks"], s["handles"], s["leases"], s["connections"]) == (0, 0, 0, 0)
            assert (s["reconnects"], s["escalations"], s["retries"]) == (0, 0, 0)

            slow = spawn_remote(cx, "worker-2", "sleep_ms", 5000)
            while slow.state.name != "RUNNING":
                await asyncio.sleep(0.01)
            s = rt.stats()
            assert s["tasks"] == 1 and s["tasks_by_state"] == {"running": 1}, s
            assert s["leases"] == 1 and s["handles"] == 1 and s["connections"] == 1
            slow.abort()
            with pytest.raises(Exception):
                await slow.join()

            await retry_after_a_lapse(cx, c.pids["worker-1"])  # one escalation, one retry
            s = rt.stats()
            assert (s["escalations"], s["retries"]) == (1, 1), s

            # a node restarted: the next spawn there reconnects
            before = rt.stats()["reconnects"]
            await asyncio.to_thread(c.restart, "worker-2")
            cluster.track(c)
            assert await asyncio.wait_for(spawn_remote(cx, "worker-2", "square", 6).join(), 20) == 36
            s = rt.stats()
            assert s["reconnects"] == before + 1, s
            assert s["tasks"] == 0 and s["tasks_by_state"] == {} and s["handles"] == 0

            got = samples(generate_latest(registry).decode())
            me = (("origin", str(rt.name)),)
            assert got[("rsc_origin_escalations_total", me)] == 1
            assert got[("rsc_origin_retries_total", me)] == 1
            assert got[("rsc_origin_reconnects_total", me)] == s["reconnects"]
            assert got[("rsc_origin_tasks", (("origin", str(rt.name)), ("state", "running")))] == 0
            assert got[("rsc_origin_protocol_errors_total", me)] == 0
            rsc.metrics.unregister(rt, registry=registry)
            assert b"rsc_origin_tasks{" not in generate_latest(registry)

    asyncio.run(main())


def test_every_metric_and_figure_is_documented(cluster) -> None:
    doc = DOCS.read_text()
    for spec in rsc.metrics.NODE_METRICS + rsc.metrics.ORIGIN_METRICS:
        name = spec.name + ("_total" if spec.kind == "counter" else "")
        assert f"`{name}" in doc, f"{name} is not in {DOCS.name}"
    c = cluster(1, extra_args=["--isolation", "process", "--workers", "1"],
                registry="tests.registries_iso:iso")
    node_stats = c.status()["worker-1"]
    assert isinstance(node_stats, dict)

    async def origin_stats() -> dict:
        async with Runtime(c.nodes) as rt:
            return rt.stats()

    for key in list(node_stats) + list(asyncio.run(origin_stats())):
        assert f"`{key}`" in doc, f"figure {key!r} is not in {DOCS.name}"
