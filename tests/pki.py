"""Test certificates for mutual TLS, made with ``trustme`` in a temporary
directory for each run (no key material lives in the repository).

``make_pki(directory)`` writes a cluster CA and a few certificates issued by
it, plus a CA nobody trusts with a certificate of its own, and returns their
``TlsConfig``s:

* ``nodes``: one certificate naming ``worker-1``..``worker-3`` (and
  ``localhost``), as a node presents it;
* ``origin``: a client certificate (DNS ``origin``) from the same CA;
* ``worker2_only``: a certificate that names ``worker-2`` only;
* ``stranger``: a certificate for ``worker-1`` from another CA.

``client_context(cfg)`` is an ``ssl.SSLContext`` for ``tests.rawclient``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

import trustme

from rsc.transport.tls import TlsConfig

NODE_NAMES = ("worker-1", "worker-2", "worker-3")


@dataclass(frozen=True)
class Pki:
    nodes: TlsConfig
    origin: TlsConfig
    worker2_only: TlsConfig
    stranger: TlsConfig
    directory: str


def _write(directory: str, stem: str, ca: trustme.CA, cert: trustme.LeafCert,
           ca_file: str) -> TlsConfig:
    cert_path = os.path.join(directory, f"{stem}.pem")
    key_path = os.path.join(directory, f"{stem}.key")
    with open(cert_path, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert.private_key_pem.bytes())
    return TlsConfig(cert_path, key_path, ca_file)


def make_pki(directory: str) -> Pki:
    os.makedirs(directory, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    ca_file = os.path.join(directory, "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    other_file = os.path.join(directory, "other-ca.pem")
    other.cert_pem.write_to_path(other_file)
    return Pki(
        nodes=_write(directory, "nodes", ca, ca.issue_cert(*NODE_NAMES, "localhost"), ca_file),
        origin=_write(directory, "origin", ca, ca.issue_cert("origin"), ca_file),
        worker2_only=_write(directory, "worker2", ca, ca.issue_cert("worker-2"), ca_file),
        # trusts the cluster CA, but its own certificate comes from another one
        stranger=_write(directory, "stranger", other, other.issue_cert("worker-1"), ca_file),
        directory=directory,
    )


def client_context(cfg: TlsConfig) -> ssl.SSLContext:
    return cfg.client_context()
