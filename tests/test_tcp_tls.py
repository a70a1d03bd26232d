"""TCP with mutual TLS (issue 15): addresses, the TLS configuration's checks,
who a node lets listen where, and a node and an origin in one process over
real TCP+TLS sockets (IPv4 and IPv6): a spawn goes through, a node whose
certificate does not name it is refused, a client without the cluster's
certificate is refused, and a TLS handshake that never finishes is closed.

Certificates come from ``trustme`` (tests/pki.py), made afresh for each run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

import pytest

from rsc import Runtime, spawn_remote
from rsc.errors import InvalidArgument, NodeUnreachable, UnsafePath
from rsc.node.server import NodeServer
from rsc.transport.address import Address
from rsc.transport.tcp import InsecureListen, TcpTransport, check_exposure, is_loopback
from rsc.transport.tls import TlsConfig
from tests.pki import Pki
from tests.registries import basic

KEY = b"k" * 32


def have_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ----------------------------------------------------------------- addresses


@pytest.mark.parametrize("text, host, port, back", [
    ("tcp:127.0.0.1:7000", "127.0.0.1", 7000, "tcp:127.0.0.1:7000"),
    ("tcp:[::1]:7000", "::1", 7000, "tcp:[::1]:7000"),
    ("tcp:node-1.rsc.svc:7000", "node-1.rsc.svc", 7000, "tcp:node-1.rsc.svc:7000"),
    ("tcp:0.0.0.0:0", "0.0.0.0", 0, "tcp:0.0.0.0:0"),
])
def test_tcp_addresses_parse_and_print_back(text: str, host: str, port: int, back: str) -> None:
    a = Address.parse(text)
    assert (a.scheme, a.host, a.port, str(a)) == ("tcp", host, port, back)
    assert Address.parse(str(a)) == a


@pytest.mark.parametrize("text", ["tcp:127.0.0.1", "tcp::7000", "tcp:h:70000", "tcp:[::1:7000",
                                  "tcp:h:-1"])
def test_bad_tcp_addresses_say_the_form(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"tcp:(HOST|\[::1\]):PORT"):
        Address.parse(text)


def test_a_cluster_file_holds_tcp_addresses(tmp_path: Path) -> None:
    from rsc.cluster_file import load_cluster, write_cluster_file

    path = str(tmp_path / "cluster.json")
    write_cluster_file(path, {"rsc-node-0": "tcp:rsc-node-0.rsc-nodes.prod.svc.cluster.local:7000",
                              "v6": "tcp:[::1]:7001", "local": f"unix:{tmp_path}/l.sock"},
                       {"rsc-node-0": 0, "v6": 0, "local": 0})
    cluster = load_cluster(path)
    assert cluster["rsc-node-0"] == Address("tcp", host="rsc-node-0.rsc-nodes.prod.svc.cluster.local",
                                            port=7000)
    assert cluster["v6"] == Address("tcp", host="::1", port=7001)
    assert cluster["local"].scheme == "unix"


# ------------------------------------------------------------ the TLS config


def test_tls_config_names_what_to_fix(pki: Pki, tmp_path: Path) -> None:
    good = pki.nodes
    with pytest.raises(InvalidArgument, match="--tls-ca .*missing.pem.*readable PEM"):
        TlsConfig(good.cert, good.key, str(tmp_path / "missing.pem"))
    loose = tmp_path / "loose.key"
    loose.write_bytes(Path(good.key).read_bytes())
    loose.chmod(0o644)
    with pytest.raises(UnsafePath, match="chmod 600"):
        TlsConfig(good.cert, str(loose), good.ca)
    with pytest.raises(InvalidArgument, match="do not load as a certificate and its private key"):
        TlsConfig(good.cert, pki.origin.key, good.ca)  # another certificate's key
    with pytest.raises(InvalidArgument, match="does not load as PEM CA"):
        TlsConfig(good.cert, good.key, good.key)
    with pytest.raises(InvalidArgument, match="missing --tls-key, --tls-ca"):
        TlsConfig.from_args(good.cert, None, "")
    assert TlsConfig.from_args(None, None, None) is None
    assert TlsConfig.from_args(good.cert, good.key, good.ca) == good
    ctx = good.client_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and ctx.check_hostname
    assert good.server_context().verify_mode == ssl.CERT_REQUIRED


def test_a_secret_root_shares_with_our_group_only_is_private(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubernetes mounts a Secret with fsGroup as root:GROUP 0440: accepted
    when GROUP is this process's own non-root group, refused otherwise."""
    from rsc.localfs import check_private_file

    def st(mode: int, uid: int, gid: int) -> os.stat_result:
        return os.stat_result((0o100000 | mode, 1, 1, 1, uid, gid, 32, 0, 0, 0))

    monkeypatch.setattr(os, "getegid", lambda: 10001)
    check_private_file("k", st(0o440, 0, 10001), "--tls-key", "x")
    check_private_file("k", st(0o640, 0, 10001), "--tls-key", "x")
    check_private_file("k", st(0o600, 10001, 10001), "--tls-key", "x")
    for mode, uid, gid in ((0o440, 10001, 10001), (0o440, 0, 10002), (0o444, 0, 10001),
                           (0o460, 0, 10001), (0o640, 5, 10001)):
        with pytest.raises(UnsafePath, match="chmod 600"):
            check_private_file("k", st(mode, uid, gid), "--tls-key", "x")
    monkeypatch.setattr(os, "getegid", lambda: 0)  # a root process shares with nobody
    with pytest.raises(UnsafePath):
        check_private_file("k", st(0o440, 0, 0), "--tls-key", "x")


def test_runtime_and_node_refuse_a_tls_that_is_not_a_tls_config(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="TlsConfig"):
        Runtime({"worker-1": "tcp:127.0.0.1:7000"}, tls=("cert", "key", "ca"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="TlsConfig"):
        NodeServer("worker-1", "tcp:127.0.0.1:0", basic, tls="x")  # type: ignore[arg-type]


# ------------------------------------------------------- who listens where


def test_loopback_is_told_from_the_network() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.3.4.5") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.7")
    assert not is_loopback("no-such-host.invalid")


def test_a_node_on_the_network_needs_tls_and_a_key(pki: Pki, tmp_path: Path) -> None:
    wide = Address.parse("tcp:0.0.0.0:7000")
    for tls, key, lacking in ((None, None, "no TLS .* and no cluster key"),
                              (pki.nodes, None, "no cluster key"),
                              (None, KEY, "no TLS")):
        with pytest.raises(InsecureListen, match=f"refusing to listen on tcp:0.0.0.0:7000.*{lacking}"):
            check_exposure(wide, tls, key)
        check_exposure(wide, tls, key, insecure=True)
    check_exposure(wide, pki.nodes, KEY)
    check_exposure(Address.parse("tcp:127.0.0.1:7000"), None, None)
    check_exposure(Address.parse("unix:/tmp/x.sock"), None, None)
    with pytest.raises(InsecureListen, match="--insecure"):
        NodeServer("worker-1", "tcp:[::]:0", basic)
    with pytest.raises(InvalidArgument, match="TLS is for tcp: addresses"):
        NodeServer("worker-1", f"unix:{tmp_path}/w.sock", basic, tls=pki.nodes)


# ------------------------------------------------- a node and an origin, TLS


class Served:
    """A NodeServer in this process's loop, stopped at the end."""

    def __init__(self, node: NodeServer) -> None:
        self.node = node

    @property
    def address(self) -> str:
        return str(self.node.address)


async def serve(name: str, listen: str, tls: TlsConfig | None, **kw: object) -> Served:
    node = NodeServer(name, listen, basic, tls=tls, grace_s=0.5, **kw)  # type: ignore[arg-type]
    await node.start()
    return Served(node)


HOSTS = ["127.0.0.1", pytest.param("[::1]", marks=pytest.mark.skipif(
    not have_ipv6(), reason="this machine has no IPv6 loopback"))]


@pytest.mark.parametrize("host", HOSTS)
def test_spawn_over_mutual_tls(pki: Pki, host: str) -> None:
    async def main() -> None:
        s = await serve("worker-1", f"tcp:{host}:0", pki.nodes, key=KEY)
        try:
            assert s.node.address.port != 0
            async with Runtime({"worker-1": s.address}, tls=pki.origin, key=KEY) as rt:
                assert await spawn_remote(rt.cx(), "worker-1", "square", 12).join() == 144
                stats = await rt.status("worker-1")
                assert stats["node"] == "worker-1"
        finally:
            await s.node.shutdown()

    asyncio.run(main())


def test_an_origin_refuses_a_node_whose_certificate_names_another(pki: Pki) -> None:
    """The node at the address presents a valid certificate from the cluster's
    CA, but for worker-2: the origin dialling worker-1 refuses it, and the
    task fails NodeUnreachable naming the certificate check."""
    async def main() -> None:
        s = await serve("worker-1", "tcp:127.0.0.1:0", pki.worker2_only)
        try:
            async with Runtime({"worker-1": s.address}, tls=pki.origin,
                               connect_timeout_s=0.5) as rt:
                h = spawn_remote(rt.cx(), "worker-1", "square", 3)
                with pytest.raises(NodeUnreachable, match="(?i)certificate"):
                    await asyncio.wait_for(h.join(), 30)
            assert s.node.engine.stats()["accepted"] == 0
        finally:
            await s.node.shutdown()

    asyncio.run(main())


def test_a_node_refuses_clients_without_the_clusters_certificate(pki: Pki) -> None:
    """A client whose certificate another CA issued, and one that sends no
    certificate, never get a WELCOME; the cluster's origin still does."""
    async def main() -> None:
        s = await serve("worker-1", "tcp:127.0.0.1:0", pki.nodes)
        try:
            async with Runtime({"worker-1": s.address}, tls=pki.stranger,
                               connect_timeout_s=0.5) as rt:
                with pytest.raises((NodeUnreachable, asyncio.TimeoutError)):
                    await rt.status("worker-1", timeout_s=1.0)
            address = s.node.address
            no_cert = ssl.create_default_context(cafile=pki.nodes.ca)
            reader, writer = await asyncio.open_connection(address.host, address.port, ssl=no_cert,
                                                           server_hostname="worker-1")
            writer.write(b"\x00\x00\x00\x01\x90")  # any frame: the node must not read it
            with pytest.raises((ssl.SSLError, ConnectionError)):
                got = await asyncio.wait_for(reader.read(), 10)
                if not got:  # closed without a TLS alert reaching us: as refused
                    raise ConnectionResetError("closed")
            writer.close()
            assert s.node.engine.stats()["accepted"] == 0
            async with Runtime({"worker-1": s.address}, tls=pki.origin) as rt:
                assert await spawn_remote(rt.cx(), "worker-1", "echo", b"ok").join() == b"ok"
        finally:
            await s.node.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                                  b"\x00\x00\x00\x05plain"],
                         ids=["silent", "half-client-hello", "plain-frame"])
def test_a_tls_handshake_that_never_finishes_is_closed(pki: Pki, sent: bytes) -> None:
    """A TCP client that opens a connection and never completes TLS (silent, a
    ClientHello cut short, or plain frames): the node closes it once its
    handshake timeout is over, and goes on serving."""
    async def main() -> None:
        s = await serve("worker-1", "tcp:127.0.0.1:0", pki.nodes, handshake_timeout_s=0.5)
        try:
            address = s.node.address
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(sent)
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(), 20)  # b"" (or an alert) then EOF
            assert reader.at_eof(), closed
            writer.close()
            assert s.node.engine.stats()["connections"] == 0
            async with Runtime({"worker-1": s.address}, tls=pki.origin) as rt:
                assert await spawn_remote(rt.cx(), "worker-1", "square", 5).join() == 25
        finally:
            await s.node.shutdown()

    asyncio.run(main())


def test_tcp_transport_as_a_transport(pki: Pki) -> None:
    """TcpTransport is a rsc.transport.base.Transport: a node listens through
    it and a runtime dials through it."""
    from rsc.transport.base import Transport

    async def main() -> None:
        server_side = TcpTransport(pki.nodes)
        assert isinstance(server_side, Transport)
        port = free_port()
        node = NodeServer("localhost", f"tcp:127.0.0.1:{port}", basic, transport=server_side,
                          grace_s=0.5)
        await node.start()
        try:
            # the server name defaults to the host: the certificate names "localhost"
            async with Runtime({"localhost": f"tcp:localhost:{port}"},
                               transport=TcpTransport(pki.origin)) as rt:
                assert await spawn_remote(rt.cx(), "localhost", "square", 4).join() == 16
        finally:
            await node.shutdown()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

