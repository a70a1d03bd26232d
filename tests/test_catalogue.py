"""The computation catalogue on real nodes (PROTOCOL.md section 5, "Computation
catalogue"): what a node publishes in its WELCOME and STATUS_REPLY, what
``Runtime.computations`` returns, and the spawns an origin refuses with it,
before and after the node's WELCOME, from a service and from a node's own
computations."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import msgpack
import pytest

from rsc import InvalidInput, RemoteInput, Runtime, UnknownComputation, spawn_remote
from rsc._core.messages import HANDSHAKE_MAX_FRAME_BYTES, STATUS_REPLY, STATUS_REQUEST
from rsc.catalogue import CATALOGUE_MAX_BYTES_WELCOME, ComputationInfo
from rsc.errors import CatalogueUnavailable, CodecMismatch, ComputationNotServed
from rsc.launch import LocalCluster
from tests.cluster import REPO_ROOT
from tests.rawclient import RawClient
from tests.test_e2e_runtime import settled

GREETER = "tests.registries_catalogue:greeter"
BIG = "tests.registries_catalogue:big"


@pytest.fixture(scope="module")
def greeters(module_cluster: Any) -> LocalCluster:
    return module_cluster(1, registry=GREETER)


def _socket(c: LocalCluster, node: str) -> str:
    return c.nodes[node][len("unix:"):]


async def _accepted(rt: Runtime, node: str) -> int:
    return int((await rt.status(node))["accepted"])


def test_the_welcome_lists_every_computation_in_registration_order(greeters: LocalCluster) -> None:
    with RawClient(_socket(greeters, "worker-1")) as rc:
        features = rc.handshake()[6]
    assert features["computations_total"] == 5
    assert features["computations"] == [
        ["greet", "msgpack", "sync", "thread", "Say hello to ``name``."],
        ["shout", "raw", "async", "loop", "Upper-case raw bytes."],
        ["checksum", "msgpack", "inline", "loop", "The sum of the bytes of a msgpack bin value."],
        ["undocumented", "raw", "sync", "thread", ""],
        ["relay", "msgpack", "async", "loop",
         'Spawn req["computation"] on req["node"] with req["input"]; its output or the error.'],
    ]
    # its limits and identity are still there, as before catalogues
    assert {"instance", "max_input_bytes", "max_frame_bytes"} <= set(features)


def test_status_reply_carries_no_catalogue_when_the_welcome_holds_it_all(
        greeters: LocalCluster) -> None:
    with RawClient(_socket(greeters, "worker-1")) as rc:
        rc.handshake()
        rc.send(STATUS_REQUEST)
        stats = rc.recv_kind(STATUS_REPLY)[3]
    assert "computations" not in stats and stats["node"] == "worker-1"


def test_runtime_computations_returns_frozen_entries(greeters: LocalCluster) -> None:
    async def main() -> tuple[ComputationInfo, ...]:
        async with Runtime(greeters.nodes) as rt:
            first = await rt.computations("worker-1")
            assert await rt.computations("worker-1") is first  # the handshake's, kept
            return first

    got = asyncio.run(main())
    assert type(got) is tuple and all(type(c) is ComputationInfo for c in got)
    assert got[0] == ComputationInfo("greet", "msgpack", "sync", "thread", "Say hello to ``name``.")
    assert [c.name for c in got] == ["greet", "shout", "checksum", "undocumented", "relay"]
    with pytest.raises(AttributeError):
        got[0].codec = "raw"  # type: ignore[misc]


def test_values_reach_a_msgpack_computation_and_bytes_a_raw_one(greeters: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(greeters.nodes) as rt:
            cx = rt.cx()
            # the first spawn leaves before the WELCOME: encoded the same way
            assert await spawn_remote(cx, "worker-1", "greet", "bob").join() == "hello bob"
            assert await spawn_remote(cx, "worker-1", "greet", "ann").join() == "hello ann"
            assert await spawn_remote(cx, "worker-1", "shout", b"abc").join() == b"ABC"
            assert await spawn_remote(cx, "worker-1", "shout", bytearray(b"x")).join() == b"X"
            # bytes as a msgpack value, and pre-encoded msgpack, to a msgpack computation
            assert await spawn_remote(cx, "worker-1", "checksum", b"\x01\x02",
                                      codec="msgpack").join() == 3
            pre = RemoteInput.pack(b"\x05")
            assert await spawn_remote(cx, "worker-1", "checksum", pre).join() == msgpack.packb(5)
            assert await spawn_remote(cx, "worker-1", "checksum", pre, codec="msgpack").join() == 5
            # a RemoteInput of raw bytes to a raw computation
            assert await spawn_remote(cx, "worker-1", "shout", RemoteInput(b"q")).join() == b"Q"
            await settled(rt)

    asyncio.run(main())


def test_a_value_for_a_raw_computation_is_refused_at_spawn(greeters: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(greeters.nodes) as rt:
            cx = rt.cx()
            await rt.computations("worker-1")  # the catalogue is known from here on
            before = await _accepted(rt, "worker-1")
            for value in ("bob", 7, [b"x"], None):
                with pytest.raises(CodecMismatch) as e:
                    spawn_remote(cx, "worker-1", "shout", value)
                assert isinstance(e.value, InvalidInput) and e.value.code == 4
                assert e.value.codec == "raw" and e.value.sent == "msgpack"
                assert "takes raw bytes (codec 'raw')" in str(e.value)
                assert f"a {type(value).__name__}" in str(e.value)
            with pytest.raises(CodecMismatch, match="takes raw bytes"):
                spawn_remote(cx, "worker-1", "shout", b"abc", codec="msgpack")
            # bytes for a msgpack computation: say how to send them
            with pytest.raises(CodecMismatch) as e2:
                spawn_remote(cx, "worker-1", "greet", b"bob")
            assert e2.value.codec == "msgpack" and e2.value.sent == "raw"
            assert "codec='msgpack'" in str(e2.value) and "RemoteInput" in str(e2.value)
            assert await _accepted(rt, "worker-1") == before  # nothing reached the node
            assert rt.debug_counts() == dict(handles=0, tasks=0, leases=0)

    asyncio.run(main())


def test_a_spawn_made_before_the_welcome_is_refused_when_it_arrives(greeters: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(greeters.nodes) as rt:
            cx = rt.cx()
            wrong = spawn_remote(cx, "worker-1", "shout", "bob")  # no catalogue yet: queued
            unknown = spawn_remote(cx, "worker-1", "gret", "bob")
            fine = spawn_remote(cx, "worker-1", "greet", "bob")
            with pytest.raises(CodecMismatch, match="'shout' takes raw bytes"):
                await wrong.join()
            with pytest.raises(ComputationNotServed, match="did you mean 'greet'"):
                await unknown.join()
            assert await fine.join() == "hello bob"
            st = await rt.status("worker-1")
            assert st["rejected"] == 0  # the node never saw the two refused spawns
            await settled(rt)

    asyncio.run(main())


def test_an_unknown_name_is_refused_with_what_the_node_serves(greeters: LocalCluster) -> None:
    async def main() -> None:
        async with Runtime(greeters.nodes) as rt:
            await rt.computations("worker-1")
            with pytest.raises(UnknownComputation) as e:  # an existing except clause still works
                spawn_remote(rt.cx(), "worker-1", "shuot", b"x")
            err = e.value
            assert type(err) is ComputationNotServed and err.code == 1
            assert err.suggestions == ("shout",) and err.node == "worker-1"
            assert err.served == ("greet", "shout", "checksum", "undocumented", "relay")
            assert "did you mean 'shout'?" in str(err)
            assert "it serves: greet, shout, checksum, undocumented, relay" in str(err)
            with pytest.raises(ComputationNotServed) as e2:
                spawn_remote(rt.cx(), "worker-1", "zzzzzz", b"x")
            assert e2.value.suggestions == () and "did you mean" not in str(e2.value)

    asyncio.run(main())


def test_nested_spawns_from_a_node_are_checked_the_same_way(cluster: Any, tmp_path: Any) -> None:
    peers = str(tmp_path / "peers.json")
    c = cluster(2, registry=GREETER, directory=str(tmp_path / "s"), cluster_file=peers,
                extra_args=["--peers", peers])

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            # worker-1's own runtime spawns on worker-2: the first before its
            # WELCOME (refused when it arrives), the second at spawn time
            got = await spawn_remote(cx, "worker-1", "relay", dict(
                node="worker-2", computation="shout", input="bob", times=2)).join()
            assert [g[0] for g in got] == ["CodecMismatch", "CodecMismatch"], got
            assert "takes raw bytes" in got[1][1]
            got = await spawn_remote(cx, "worker-1", "relay", dict(
                node="worker-2", computation="greeet", input="ann")).join()
            assert got[0][0] == "ComputationNotServed" and "did you mean 'greet'" in got[0][1]
            got = await spawn_remote(cx, "worker-1", "relay", dict(
                node="worker-2", computation="greet", input="ann")).join()
            assert got == [["ok", "hello ann"]]
            assert (await rt.status("worker-2"))["rejected"] == 0

    asyncio.run(main())


def test_a_registry_too_big_for_the_handshake(cluster: Any) -> None:
    c = cluster(1, registry=BIG)
    with RawClient(_socket(c, "worker-1")) as rc:
        welcome = rc.handshake()
        features = welcome[6]
        rc.send(STATUS_REQUEST)
        stats = rc.recv_kind(STATUS_REPLY)[3]
    part = features["computations"]
    assert features["computations_total"] == 401 and 60 < len(part) < 401
    assert len(msgpack.packb(part)) <= CATALOGUE_MAX_BYTES_WELCOME + 5
    # the rest of the WELCOME (nonce, identity, limits, other features) is
    # small beside the catalogue's budget, and the whole far below the cap
    assert len(msgpack.packb(welcome)) - len(msgpack.packb(part)) < 1024
    assert len(msgpack.packb(welcome)) < HANDSHAKE_MAX_FRAME_BYTES * 3 // 5
    assert all(len(e[4].encode()) <= 240 and e[4].endswith("…") for e in part)
    # the STATUS_REPLY carries all of it, the WELCOME's part first
    assert stats["computations_total"] == 401 and len(stats["computations"]) == 401
    assert stats["computations"][:len(part)] == part
    assert stats["computations"][-1][:2] == ["last_square", "msgpack"]

    async def main() -> None:
        async with Runtime(c.nodes) as rt:
            cx = rt.cx()
            # spawned before the WELCOME, checked against its partial list when
            # it comes: a name outside it may be served, so the node decides
            h = spawn_remote(cx, "worker-1", "no_such_op", b"x")
            with pytest.raises(UnknownComputation) as e:
                await h.join()
            assert type(e.value) is UnknownComputation  # the node's rejection
            # the origin asked for the rest right after its AUTH: all known now
            with pytest.raises(ComputationNotServed):
                spawn_remote(cx, "worker-1", "no_such_op", b"x")
            with pytest.raises(CodecMismatch, match="'last_square' takes msgpack"):
                spawn_remote(cx, "worker-1", "last_square", b"\x03")
            assert await spawn_remote(cx, "worker-1", "last_square", 3).join() == 9
            assert await spawn_remote(cx, "worker-1", "op_0000_" + "n" * 60, b"a").join() == b"a"
            all_of_it = await rt.computations("worker-1")
            assert len(all_of_it) == 401 and all_of_it[-1].name == "last_square"
            assert all_of_it[-1].doc == ("Square ``x``: the last computation of a registry too "
                                         "big for the handshake.")
            await settled(rt)

    asyncio.run(main())


def test_the_cli_prints_a_nodes_computations(greeters: LocalCluster, tmp_path: Any) -> None:
    cmd = [sys.executable, "-m", "rsc", "status", "--cluster", greeters.cluster_file, "--node",
           "worker-1", "--computations"]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "worker-1: 5 computations"
    assert lines[1].split() == ["NAME", "CODEC", "KIND", "ISOLATION", "DESCRIPTION"]
    assert lines[2].split(None, 4) == ["greet", "msgpack", "sync", "thread", "Say hello to ``name``."]
    assert lines[3].split(None, 4) == ["shout", "raw", "async", "loop", "Upper-case raw bytes."]
    assert lines[5].split() == ["undocumented", "raw", "sync", "thread"]
    as_json = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=60, env=env,
                             cwd=REPO_ROOT)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["nodes"]["worker-1"]["computations"][2] == dict(
        name="checksum", codec="msgpack", kind="inline", isolation="loop",
        doc="The sum of the bytes of a msgpack bin value.")
    missing = subprocess.run(cmd[:-3] + ["--node", "worker-9", "--computations"],
                             capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT)
    assert missing.returncode == 2 and "no node 'worker-9'" in missing.stderr


def test_an_older_node_without_a_catalogue_is_used_as_before(old_node: Any) -> None:
    """A node that sends no catalogue: nothing is checked or refused at the
    origin, and inputs are encoded exactly as before catalogues."""

    async def main() -> None:
        async with Runtime({"old-1": "unix:" + old_node.path}) as rt:
            cx = rt.cx()
            # a str to what may well be a raw computation: packed, as it always was
            assert await spawn_remote(cx, "old-1", "shout", "bob").join() == "bob"
            assert old_node.inputs[-1] == ("shout", msgpack.packb("bob"))
            assert await spawn_remote(cx, "old-1", "shout", b"raw").join() == b"raw"
            assert old_node.inputs[-1] == ("shout", b"raw")
            # any name goes to the node, which decides
            assert await spawn_remote(cx, "old-1", "gret", b"x").join() == b"x"
            with pytest.raises(CatalogueUnavailable, match="publishes no computation catalogue"):
                await rt.computations("old-1")
            await settled(rt)

    asyncio.run(main())


class _OldNode:
    """A node written from the wire spec that knows nothing of catalogues: it
    answers HELLO with a WELCOME whose features hold only an instance id,
    accepts every spawn and returns its input as the output."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.inputs: list[tuple[str, bytes]] = []
        self.time = 0

    def _msg(self, kind: int, *fields: Any) -> bytes:
        self.time += 1
        body = msgpack.packb([kind, "old-1", self.time, *fields], use_bin_type=True)
        return len(body).to_bytes(4, "big") + body

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                msg = msgpack.unpackb(await reader.readexactly(size), raw=False)
                kind = msg[0]
                if kind == 0:  # HELLO -> WELCOME, no catalogue
                    writer.write(self._msg(1, 1, os.urandom(32), None, {"instance": "0" * 16}))
                elif kind == 10:  # SPAWN_REQUEST -> accepted, then its input back
                    rtid, computation, data = msg[3], msg[4], msg[5]
                    self.inputs.append((computation, data))
                    writer.write(self._msg(11, rtid, 0, 0, "", "old-1"))
                    writer.write(self._msg(13, rtid, 0, data, 0))
                elif kind == 16:  # PING -> PONG
                    writer.write(self._msg(17, msg[3]))
                elif kind == 18:  # STATUS_REQUEST -> STATUS_REPLY
                    writer.write(self._msg(19, {"node": "old-1", "accepted": len(self.inputs)}))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def old_node(tmp_path: Any) -> Any:
    import tempfile
    import threading

    short = tempfile.mkdtemp(prefix="rsc-old-")  # a Unix socket path must stay short
    node = _OldNode(os.path.join(short, "old.sock"))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: list[asyncio.AbstractServer] = []

    async def start() -> None:
        server.append(await asyncio.start_unix_server(node.serve, node.path))
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()),
                              daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield node
    finally:
        async def stop() -> None:
            server[0].close()
            await server[0].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        os.unlink(node.path) if os.path.exists(node.path) else None
        os.rmdir(short)


def _with_node(registry: Any, body: Any, **kw: Any) -> None:
    """Run ``body(address)`` against a NodeServer serving ``registry`` in this
    process, on a real Unix socket, and stop it afterwards."""
    import tempfile

    from rsc.node.server import NodeServer

    short = tempfile.mkdtemp(prefix="rsc-cat-")  # a Unix socket path must stay short
    address = "unix:" + os.path.join(short, "n.sock")

    async def main() -> None:
        node = NodeServer("n1", address, registry, **kw)
        await node.start()
        try:
            await body(address)
        finally:
            await node.shutdown()

    try:
        asyncio.run(main())
    finally:
        os.rmdir(short)


def test_a_node_republishes_for_new_connections_when_its_registry_grows() -> None:
    """Computations registered after the node started are served, and listed
    to every origin that connects after that (one that was connected before
    keeps the catalogue of its handshake until it reconnects)."""
    from rsc import Registry
    from tests.registries_catalogue import _make_op

    reg = Registry()
    reg.register("first", _make_op(1))

    async def body(address: str) -> None:
        async with Runtime({"n1": address}) as rt:
            assert [c.name for c in await rt.computations("n1")] == ["first"]
        reg.register("later", _make_op(2))
        async with Runtime({"n1": address}) as rt:
            assert [c.name for c in await rt.computations("n1")] == ["first", "later"]
            assert await spawn_remote(rt.cx(), "n1", "later", b"z").join() == b"z"

    _with_node(reg, body)


def test_a_node_without_its_catalogue_is_treated_as_an_older_one() -> None:
    from tests.registries_catalogue import greeter

    async def body(address: str) -> None:
        async with Runtime({"n1": address}) as rt:
            with pytest.raises(CatalogueUnavailable):
                await rt.computations("n1")
            # nothing is refused at the origin: the node decides, as before
            h = spawn_remote(rt.cx(), "n1", "gret", "bob")
            with pytest.raises(UnknownComputation) as e:
                await h.join()
            assert type(e.value) is UnknownComputation
            # a str to a raw computation arrives packed, as before catalogues
            # (its packed bytes upper-cased still unpack, as "BOB")
            assert await spawn_remote(rt.cx(), "n1", "shout", "bob").join() == "BOB"

    _with_node(greeter, body, catalogue=False)
