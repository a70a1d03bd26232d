"""Nodes on other hosts (issue 15): two network namespaces joined to this one
by veth pairs stand for two machines. A node runs in each, on its own
address (10.S.N.2, S a subnet this run claims), over TCP with mutual TLS and a cluster key; the origin
is this test process. Real processes, stopped by pid.

What is shown:

* work spawned across both hosts comes back;
* a node without TLS (or without a key) on such an address refuses to start;
* a link taken down under a running task: its lease lapses, the policy moves
  it to the other host, and the first host serves again once the link is up;
* a node killed and started again (a new incarnation, ``features.instance``
  in WELCOME): the origin learns it on reconnecting and applies the task's
  policy at once, without waiting for the lease;
* a node killed and started again on its durable journal (``--state-dir``,
  ``features.journal``): the origin resends its in-flight work with the same
  keys, the task that was running is answered Cancelled ("node restarted
  while it ran"), and a finished one's key is answered from the journal, not
  run again.

Needs root and ``ip netns``; skips, saying why, where the machine does not
allow them. Traffic stays on this machine: the namespaces have no route but
their own link, and a blackhole route for 10.S.0.0/16 here keeps packets
for a host whose link is down from ever taking the default route. Adding
that route is also how a run claims its subnet: runs at once on one machine
(or anything else using a 10.S address) never share one.
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
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rsc import Runtime, spawn_remote
from rsc.errors import LeaseExpired, RemoteCancelled
from rsc.types import IdempotencyKey
from rsc.lease import retry
from tests.cluster import REPO_ROOT
from tests.pki import Pki

TAG = f"r{os.getpid() % 100000}"
HOSTS = {"worker-1": 1, "worker-2": 2}
PORT = 7000
SUBNETS = range(200, 250)  # the 10.S.0.0/16 a run may claim
pytestmark = pytest.mark.slow


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def host_of(name: str, subnet: int | None = None) -> str:
    return f"10.{CLAIMED[0] if subnet is None else subnet}.{HOSTS[name]}.2"


CLAIMED = [0]  # the module's hosts' subnet, once built


def claim_subnet() -> int:
    """A 10.S.0.0/16 that no address or route here uses, claimed by adding
    the blackhole route for it (which fails if another run added it first)."""
    used = ip("-o", "addr").stdout + ip("route").stdout
    start = os.getpid() % len(SUBNETS)
    for i in range(len(SUBNETS)):
        s = SUBNETS[(start + i) % len(SUBNETS)]
        if re.search(rf"\b10\.{s}\.", used):
            continue
        if ip("route", "add", "blackhole", f"10.{s}.0.0/16", check=False).returncode == 0:
            return s
    raise RuntimeError(f"no free 10.S.0.0/16 for S in {SUBNETS.start}..{SUBNETS.stop - 1}")


class Hosts:
    """The namespaces, their links, and the node processes in them."""

    def __init__(self, tag: str = TAG) -> None:
        self.tag = tag
        self.subnet: int | None = None  # claimed by build()
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.procs: dict[str, subprocess.Popen] = {}

    def ns(self, name: str) -> str:
        return f"{self.tag}{HOSTS[name]}"

    def outer(self, name: str) -> str:
        return f"{self.tag}o{HOSTS[name]}"

    def inner(self, name: str) -> str:
        return f"{self.tag}i{HOSTS[name]}"

    def build(self) -> None:
        self.subnet = s = claim_subnet()
        for name, n in HOSTS.items():
            ns, outer, inner = self.ns(name), self.outer(name), self.inner(name)
            ip("netns", "add", ns)
            self.namespaces.append(ns)
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            self.links.append(outer)
            ip("link", "set", inner, "netns", ns)
            ip("addr", "add", f"10.{s}.{n}.1/24", "dev", outer)
            ip("link", "set", outer, "up")
            ip("addr", "add", f"10.{s}.{n}.2/24", "dev", inner, ns=ns)
            ip("link", "set", inner, "up", ns=ns)
            ip("link", "set", "lo", "up", ns=ns)

    def link(self, name: str, up: bool) -> None:
        """Take the host's end of its link down (or up again): its packets are lost."""
        ip("link", "set", self.inner(name), "up" if up else "down", ns=self.ns(name))

    def start(self, name: str, argv_tail: list[str], wait_ready: bool = True) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(name), sys.executable, "-m", "rsc", "node",
             "--name", name, "--registry", "tests.registries:basic", *argv_tail],
            cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        if wait_ready:
            self.procs[name] = proc
            assert proc.stdout is not None
            line = proc.stdout.readline()  # READY NAME PID ADDRESS, or EOF if it died
            assert line.startswith(f"READY {name} "), (line, stop(proc))
        return proc

    def teardown(self) -> None:
        for proc in self.procs.values():
            stop(proc)
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        for link in self.links:
            ip("link", "del", link, check=False)  # gone with its peer's namespace, usually
        if self.subnet is not None:
            ip("route", "del", "blackhole", f"10.{self.subnet}.0.0/16", check=False)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    """Stop a node by pid (``ip netns exec`` execs it: the pid is the node's);
    its stderr."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    _out, err = proc.communicate(timeout=5)
    return err or ""


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"{TAG}probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"this machine does not allow network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("key") / "cluster.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("state") / "worker-2")


@pytest.fixture(scope="module")
def hosts(pki: Pki, key_file: str, state_dir: str) -> Iterator[Hosts]:
    why = netns_unavailable()
    if why is not None:
        pytest.skip(why)
    h = Hosts()
    try:
        h.build()
        CLAIMED[0] = h.subnet
        h.start("worker-1", node_args("worker-1", pki, key_file))
        h.start("worker-2", node_args("worker-2", pki, key_file) + ["--state-dir", state_dir])
        yield h
    finally:
        h.teardown()


def node_args(name: str, pki: Pki, key_file: str, port: int = PORT) -> list[str]:
    c = pki.nodes
    return ["--listen", f"tcp:{host_of(name)}:{port}", "--tls-cert", c.cert, "--tls-key", c.key,
            "--tls-ca", c.ca, "--key-file", key_file, "--grace", "1", "--lifeline-stdin"]


def run(main: Any) -> None:
    """``asyncio.run(main())`` in a thread of its own (the nodes' stdout is
    not read meanwhile, and nothing here needs this thread's loop)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # carried to the test
            failure.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join(300)
    assert not t.is_alive(), "the scenario did not finish within 300 s"
    if failure:
        raise failure[0]


def runtime(pki: Pki, key_file: str) -> Runtime:
    with open(key_file, "rb") as f:
        key = f.read()
    return Runtime({name: f"tcp:{host_of(name)}:{PORT}" for name in HOSTS}, tls=pki.origin,
                   key=key, connect_timeout_s=3.0)


def test_spawn_across_hosts(hosts: Hosts, pki: Pki, key_file: str) -> None:
    async def main() -> None:
        async with runtime(pki, key_file) as rt:
            hs = [spawn_remote(rt.cx(), name, "square", i) for i in range(20) for name in HOSTS]
            assert [await h.join() for h in hs] == [i * i for i in range(20) for _ in HOSTS]
            for name in HOSTS:
                assert (await rt.status(name))["node"] == name

    run(main)


@pytest.mark.parametrize("drop", ["--tls-cert", "--key-file"])
def test_a_node_on_the_network_without_tls_and_key_refuses_to_start(
        hosts: Hosts, pki: Pki, key_file: str, drop: str) -> None:
    args = node_args("worker-1", pki, key_file, port=PORT + 1)
    i = args.index(drop)
    del args[i:i + 2]
    if drop == "--tls-cert":  # no TLS at all
        for flag in ("--tls-key", "--tls-ca"):
            j = args.index(flag)
            del args[j:j + 2]
    proc = hosts.start("worker-1", args, wait_ready=False)
    try:
        _out, err = proc.communicate(timeout=60)  # it exits by itself
    finally:
        stop(proc)
    assert proc.returncode == 2, err
    assert f"refusing to listen on tcp:{host_of('worker-1')}:{PORT + 1}" in err, err
    assert "--insecure" in err


def test_a_link_down_mid_task_escalates_and_recovers(hosts: Hosts, pki: Pki,
                                                     key_file: str) -> None:
    async def main() -> None:
        async with runtime(pki, key_file) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", 4000, lease=1.0,
                             on_lease_expired=retry(1, nodes=["worker-2"]))
            while h.state.name != "RUNNING":  # accepted by worker-1
                await asyncio.sleep(0.02)
            hosts.link("worker-1", up=False)
            try:
                assert await asyncio.wait_for(h.join(), 120) == 4000
                assert [node for node, _ in h.attempts] == ["worker-1", "worker-2"]
            finally:
                hosts.link("worker-1", up=True)
            # worker-1 is reachable again: the same runtime gets work done there
            assert await asyncio.wait_for(
                spawn_remote(rt.cx(), "worker-1", "square", 9).join(), 120) == 81
            # and worker-1 cancelled the task whose origin fell silent
            stats = await rt.status("worker-1")
            assert stats["cancelled"] >= 1, stats

    run(main)


def test_a_restarted_node_is_handled_at_once(hosts: Hosts, pki: Pki, key_file: str) -> None:
    """worker-1 (no journal) is killed under a task with a 300 s lease and
    started again on the same address: the origin sees the new incarnation on
    reconnecting and settles the task by its policy (fail: LeaseExpired
    naming the restart), long before the lease could lapse."""
    async def main() -> None:
        async with runtime(pki, key_file) as rt:
            h = spawn_remote(rt.cx(), "worker-1", "sleep_ms", 600_000, lease=300.0)
            while h.state.name != "RUNNING":
                await asyncio.sleep(0.02)
            await asyncio.to_thread(stop, hosts.procs["worker-1"], signal.SIGKILL)
            await asyncio.to_thread(hosts.start, "worker-1", node_args("worker-1", pki, key_file))
            with pytest.raises(LeaseExpired, match="restarted while the task was in flight"):
                await asyncio.wait_for(h.join(), 120)
            assert await spawn_remote(rt.cx(), "worker-1", "square", 3).join() == 9

    run(main)


def test_a_node_restarted_on_its_journal_answers_from_it(hosts: Hosts, pki: Pki, key_file: str,
                                                         state_dir: str, tmp_path: Any) -> None:
    """worker-2 keeps a journal. A task finished before the crash is not run
    again when its key comes back; the one running at the crash is resent
    with its key by the origin and answered Cancelled from the journal."""
    ran = str(tmp_path / "ran.txt")
    key = IdempotencyKey.from_bytes(os.urandom(16))
    request = {"token": "once", "path": ran}

    async def main() -> None:
        async with runtime(pki, key_file) as rt:
            assert await spawn_remote(rt.cx(), "worker-2", "count", request,
                                      idempotency_key=key).join() == "once"
            h = spawn_remote(rt.cx(), "worker-2", "sleep_ms", 600_000, lease=300.0)
            while h.state.name != "RUNNING":
                await asyncio.sleep(0.02)
            await asyncio.to_thread(stop, hosts.procs["worker-2"], signal.SIGKILL)
            await asyncio.to_thread(hosts.start, "worker-2",
                                    node_args("worker-2", pki, key_file) + ["--state-dir", state_dir])
            with pytest.raises(RemoteCancelled, match="node restarted while it ran"):
                await asyncio.wait_for(h.join(), 120)
            assert await spawn_remote(rt.cx(), "worker-2", "count", request,
                                      idempotency_key=key).join() == "once"

    run(main)
    with open(ran, encoding="utf-8") as f:
        assert f.read() == "once\n"  # ran once, before the crash


def test_two_runs_at_once_claim_different_subnets() -> None:
    """Another run of this module on the same machine (another checkout's CI,
    a second session) builds its hosts while these exist: each claims its own
    subnet, neither's build fails, and each tears down only its own."""
    why = netns_unavailable()
    if why is not None:
        pytest.skip(why)
    first, second = Hosts(tag=f"{TAG}a"), Hosts(tag=f"{TAG}b")
    try:
        first.build()
        second.build()
        assert first.subnet != second.subnet
        for h in (first, second):
            ns = h.ns("worker-1")
            addrs = ip("-o", "addr", "show", "dev", h.inner("worker-1"), ns=ns).stdout
            assert f"{host_of('worker-1', h.subnet)}/24" in addrs
            # from inside its namespace the host reaches this side of its own link
            with socket.create_server((f"10.{h.subnet}.1.1", 0)) as server:
                port = server.getsockname()[1]
                dial = subprocess.run(
                    ["ip", "netns", "exec", ns, sys.executable, "-c",
                     f"import socket; socket.create_connection(('10.{h.subnet}.1.1', {port}), 5)"],
                    capture_output=True, text=True, timeout=30)
                assert dial.returncode == 0, dial.stderr
                server.accept()[0].close()
    finally:
        second.teardown()
        first.teardown()
    routes = ip("route").stdout
    assert f"10.{first.subnet}.0.0/16" not in routes
    assert f"10.{second.subnet}.0.0/16" not in routes
    assert not ({first.ns("worker-1"), second.ns("worker-1")} & set(ip("netns", "list").stdout.split()))
