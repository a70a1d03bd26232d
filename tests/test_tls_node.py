"""A keyed node process over TCP with mutual TLS (issue 15): the cluster
key's handshake holds on top of TLS. Proofs are HMACs over both sides'
fresh nonces, so an AUTH recorded on one connection fails on another."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tests.pki import Pki
from tests.rawclient import RawClient

NODE = "worker-1"


def test_a_replayed_auth_fails_over_tls(cluster: Callable[..., Any], pki: Pki,
                                        tmp_path: Any) -> None:
    """A keyed node over TCP+TLS: the AUTH of one connection, replayed on
    another with the same HELLO nonce, fails (the node's nonce is fresh per
    connection), as do a wrong key and no proof; the right key gets in."""
    from tests.rawclient import AUTH, E_AUTH_FAILED, ERROR, HELLO, WELCOME, origin_proof

    key = os.urandom(32)
    key_file = tmp_path / "cluster.key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    c = cluster(1, tcp_host="127.0.0.1", tls=pki.nodes, key_file=str(key_file))

    def client(name: str) -> RawClient:
        return RawClient(c.nodes[NODE], name, tls=pki.origin.client_context(),
                         server_hostname=NODE)

    with client("o") as first:
        welcome = first.handshake(key=key)
        recorded_auth = origin_proof(key, welcome[4], first.nonce_o)  # what went on the wire
        first.ping(1)
        assert first.recv(5)[3] == 1
        with client("o") as replay:
            replay.send(HELLO, 1, "origin", first.nonce_o, {})
            second = replay.recv(5)
            assert second[0] == WELCOME and second[4] != welcome[4]  # a fresh node nonce
            replay.send(AUTH, recorded_auth)
            err = replay.recv(5)
            assert err[0] == ERROR and err[3] == E_AUTH_FAILED, err
    for proof in (origin_proof(os.urandom(32), b"x" * 32, b"y" * 32), None):
        with client("o") as wrong:
            wrong.hello()
            assert wrong.recv(5)[0] == WELCOME
            wrong.send(AUTH, proof)
            err = wrong.recv(5)
            assert err[0] == ERROR and err[3] == E_AUTH_FAILED, err


def test_every_bad_frame_over_tls_closes_only_its_connection(cluster: Callable[..., Any],
                                                             pki: Pki) -> None:
    """The conformance suite's bad frames (tests/test_wire_conformance.py),
    each on its own TCP+TLS connection, after the handshake and some before
    it: each draws its ERROR and a close, while a task on another
    connection runs on and completes, and the node answers afterwards."""
    import msgpack

    from tests.rawclient import SUCCESS
    from tests.test_wire_conformance import BAD_CASES, _bad

    c = cluster(1, tcp_host="127.0.0.1", tls=pki.nodes)

    def client(name: str, handshake: bool = True) -> RawClient:
        rc = RawClient(c.nodes[NODE], name, tls=pki.origin.client_context(), server_hostname=NODE)
        if handshake:
            rc.handshake()
        return rc

    with client("bystander") as bystander:
        bystander.spawn(5, "sleep_ms", msgpack.packb(1500))
        assert bystander.recv_ack(5)[4] == 0
        before = {"zero-length", "not-msgpack", "too-large", "trailing-bytes", "sender-empty",
                  "time-str"}
        for case in BAD_CASES + [f"pre:{b}" for b in sorted(before)]:
            name = case.removeprefix("pre:")
            with client("x", handshake=not case.startswith("pre:")) as rc:
                data, code = _bad("x")[name]
                rc.send_raw(data)
                err = rc.recv_error(5)
                assert err[3] == code, (case, err)
                assert rc.expect_closed(5), case
        res = bystander.recv_result(5, 30)
        assert (res[4], msgpack.unpackb(res[5])) == (SUCCESS, 1500), res
        bystander.ping(7)
        assert bystander.recv_kind(17, 5)[3] == 7
