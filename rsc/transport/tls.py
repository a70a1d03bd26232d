"""Mutual TLS for rsc's TCP connections: one small, checked configuration.

A :class:`TlsConfig` names three PEM files: this process's certificate
(``cert``, its chain), its private key (``key``) and the cluster's CA
(``ca``), the one authority whose certificates this process trusts. Both ends
present a certificate and both check the other's, over TLS 1.3 only.

What each side checks (docs/TLS.md):

* **An origin dialling a node** requires the node's certificate to chain to
  the CA *and* to name, as a DNS subjectAltName, the NodeId the origin dialled
  (``worker-1``): the standard hostname check, with the NodeId as the server
  name. A certificate for another node, or an address taken over by someone
  else, fails the handshake (``ssl.SSLCertVerificationError``), and the
  origin's tasks for that node fail ``NodeUnreachable`` saying so.
* **A node accepting a connection** requires a client certificate that chains
  to the CA. Origins are per-process (their default name carries a pid and a
  random suffix), so an origin's certificate is not tied to the name in its
  HELLO: holding a certificate from the cluster's CA *is* the membership.
  Issue origin certificates from a CA used for nothing else. A node's own
  certificate serves as its client certificate when its computations spawn
  on peers (``rsc node --peers``).

Construction checks everything it can at once, so a mistake shows at start,
not at the first connection: every file exists and is readable, the key file
is private (as for ``--key-file``: ``rsc.localfs.check_private_file``),
and the certificate, key and CA load and belong together. Each failure is an
:class:`~rsc.errors.InvalidArgument` (``UnsafePath`` for the key's mode) that
names the flag, the file and what to do.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from rsc.errors import InvalidArgument
from rsc.localfs import check_private_file

__all__ = ["TlsConfig"]


@dataclass(frozen=True)
class TlsConfig:
    """PEM files for mutual TLS: ``cert`` (this process's certificate chain),
    ``key`` (its private key, mode 600) and ``ca`` (the cluster's CA)."""

    cert: str
    key: str
    ca: str

    def __post_init__(self) -> None:
        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca)):
            if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
                raise InvalidArgument(f"{flag} must name a PEM file, got {path!r}")
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
            except OSError as exc:
                raise InvalidArgument(f"cannot read {flag} {path}: {exc.strerror}; give the path of "
                                      "a readable PEM file") from exc
            if flag == "--tls-key":
                check_private_file(os.fspath(path), st, flag,
                                   "anyone holding it can pose as this process")
        self.server_context()  # loads all three: a mismatch shows now

    @classmethod
    def from_args(cls, cert: str | None, key: str | None, ca: str | None) -> TlsConfig | None:
        """The config of ``--tls-cert/--tls-key/--tls-ca``: None when none is
        given, InvalidArgument naming the missing ones when only some are."""
        given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
        if not any(given.values()):
            return None
        missing = [flag for flag, v in given.items() if not v]
        if missing:
            raise InvalidArgument(f"mutual TLS needs --tls-cert, --tls-key and --tls-ca together; "
                                  f"missing {', '.join(missing)}")
        return cls(cert, key, ca)  # type: ignore[arg-type]

    def _context(self, purpose: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as exc:
            raise InvalidArgument(f"--tls-cert {self.cert} and --tls-key {self.key} do not load as a "
                                  f"certificate and its private key ({exc.reason or exc}); give the "
                                  "PEM certificate and the key it was issued for") from exc
        try:
            ctx.load_verify_locations(cafile=self.ca)
        except ssl.SSLError as exc:
            raise InvalidArgument(f"--tls-ca {self.ca} does not load as PEM CA certificates "
                                  f"({exc.reason or exc})") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """A node's context: TLS 1.3, requires a client certificate from the CA."""
        return self._context(ssl.PROTOCOL_TLS_SERVER)

    def client_context(self) -> ssl.SSLContext:
        """An origin's context: TLS 1.3, presents ``cert``, and checks that the
        node's certificate is from the CA and names the server name it is given
        (the NodeId dialled)."""
        ctx = self._context(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = True
        return ctx

    def __repr__(self) -> str:
        return f"TlsConfig(cert={self.cert!r}, key={self.key!r}, ca={self.ca!r})"
