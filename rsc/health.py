"""``rsc probe``: is this one node ready, or alive? For orchestrators.

A readiness or liveness probe must depend on the node alone, not on other
nodes or origins. ``rsc probe`` therefore talks to one node, as an origin
would (its handshake, with the key and TLS the node requires), and asks it
for its stats:

* ``--live``: the node's event loop answered the handshake and a
  STATUS_REQUEST within ``--timeout`` seconds (a draining node is alive);
* ``--ready`` (the default): the same, and the node is not draining. A node
  answers only once its registry is loaded and its listener is up, so an
  answer means both.

Exit 0 when the check passes, 1 when it fails (the reason on stderr), 2 on
bad arguments. Every option also comes from the environment under the same
``RSC_*`` names as ``rsc node``'s (``RSC_NAME``, ``RSC_LISTEN``,
``RSC_KEY_FILE``, ``RSC_TLS_CERT``...), so in a container the probe is just
``rsc probe --ready`` beside the node it checks.
"""

from __future__ import annotations

import argparse
import sys

from rsc.errors import InvalidArgument
from rsc.localfs import read_key_file
from rsc.node.main import EnvOptions, node_name
from rsc.probe import probe
from rsc.transport.address import Address
from rsc.transport.tls import TlsConfig

__all__ = ["add_arguments", "check", "run"]

#: A wildcard listener is probed on the loopback address of its family.
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``rsc probe``'s options (each may also come from its ``RSC_*`` environment
    variable)."""
    opt = EnvOptions(p)
    opt("--name", required=True, type=node_name,
        help="the node's NodeId (its TLS certificate must name it)")
    opt("--listen", required=True, help="the node's address: unix:PATH or tcp:HOST:PORT")
    opt("--key-file", default=None, help="cluster key file (mode 600), for a keyed node")
    opt("--tls-cert", default=None, help="PEM client certificate from the node's CA")
    opt("--tls-key", default=None, help="PEM private key of --tls-cert (mode 600)")
    opt("--tls-ca", default=None, help="PEM CA that issued the node's certificate")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--ready", action="store_true",
                       help="pass when the node answers and is not draining (the default)")
    which.add_argument("--live", action="store_true",
                       help="pass when the node's loop answers within --timeout, draining or not")
    p.add_argument("--timeout", type=float, default=3.0,
                   help="seconds the node has to answer")


def probe_address(listen: str) -> str:
    """Where to dial a node that listens on ``listen``: a wildcard TCP host
    becomes the loopback address of its family."""
    address = Address.parse(listen)
    if address.scheme == "tcp" and address.host in _WILDCARD_TO_LOOPBACK:
        address = Address("tcp", host=_WILDCARD_TO_LOOPBACK[address.host], port=address.port)
    return str(address)


def check(name: str, listen: str, *, live: bool, timeout_s: float, key: bytes | None = None,
          tls: TlsConfig | None = None) -> str | None:
    """None when the node passes the check, else why it does not."""
    got = probe({name: probe_address(listen)}, timeout_s, key=key, tls=tls)[name]
    if isinstance(got, BaseException):
        return f"no answer within {timeout_s:g} s: {type(got).__name__}: {got}"
    if not live and got.get("draining"):
        return "the node is draining (shutting down): it takes no new work"
    return None


def run(args: argparse.Namespace) -> int:
    """``rsc probe``: exit status 0 if the node is ready (``--ready``) or alive
    (``--live``), 1 if not (the reason on stderr), 2 for bad arguments."""
    try:
        key = read_key_file(args.key_file) if args.key_file else None
        tls = TlsConfig.from_args(args.tls_cert, args.tls_key, args.tls_ca)
        why = check(args.name, args.listen, live=args.live, timeout_s=args.timeout, key=key, tls=tls)
    except InvalidArgument as exc:
        print(f"rsc probe: {exc}", file=sys.stderr)
        return 2
    what = "live" if args.live else "ready"
    if why is not None:
        print(f"rsc probe: node {args.name} is not {what}: {why}", file=sys.stderr)
        return 1
    print(f"node {args.name} is {what}")
    return 0
