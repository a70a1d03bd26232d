"""``rsc probe --ready/--live`` (issue 15): an orchestrator's probes of one
node, over TCP with mutual TLS, configured by flags or by the same ``RSC_*``
environment as ``rsc node``. A draining node (SIGTERM with work still
running) is alive but not ready; nothing listening is neither.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack

from tests.cluster import REPO_ROOT
from tests.pki import Pki
from tests.rawclient import RawClient

NODE = "worker-1"


def rsc_probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RSC_") or k in (
        "RSC_NO_EXTENSIONS", "RSC_NO_UVLOOP")}
    full.update(env or {}, PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "rsc", "probe", *args], capture_output=True,
                          text=True, env=full, cwd=REPO_ROOT, timeout=60)


def tls_flags(pki: Pki) -> list[str]:
    c = pki.origin
    return ["--tls-cert", c.cert, "--tls-key", c.key, "--tls-ca", c.ca]


def test_probe_ready_and_live_over_tls(cluster: Callable[..., Any], pki: Pki) -> None:
    c = cluster(1, tcp_host="127.0.0.1", tls=pki.nodes, grace=30.0)
    address = c.nodes[NODE]
    ready = rsc_probe("--ready", "--name", NODE, "--listen", address, *tls_flags(pki))
    assert ready.returncode == 0 and f"node {NODE} is ready" in ready.stdout, ready.stderr
    # the same from the environment, as beside a node in a container
    env = {"RSC_NAME": NODE, "RSC_LISTEN": address, "RSC_TLS_CERT": pki.origin.cert,
           "RSC_TLS_KEY": pki.origin.key, "RSC_TLS_CA": pki.origin.ca}
    live = rsc_probe("--live", env=env)
    assert live.returncode == 0 and f"node {NODE} is live" in live.stdout, live.stderr
    # without a certificate from the CA the node does not answer: not ready
    no_cert = rsc_probe("--ready", "--timeout", "1", "--name", NODE, "--listen", address)
    assert no_cert.returncode == 1 and "not ready" in no_cert.stderr, no_cert.stderr

    # draining: SIGTERM while a task runs
    with RawClient(address, "prober", tls=pki.origin.client_context(),
                   server_hostname=NODE) as rc:
        rc.handshake()
        rc.spawn(1, "sleep_ms", msgpack.packb(60_000))
        assert rc.recv_ack(1)[4] == 0
        c.kill(NODE, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while True:
            drained = rsc_probe("--ready", env=env)
            if drained.returncode == 1:
                break
            assert time.monotonic() < deadline, "the node never reported draining"
            time.sleep(0.1)
        assert "is draining" in drained.stderr, drained.stderr
        live = rsc_probe("--live", env=env)
        assert live.returncode == 0, live.stderr
        rc.cancel(1)  # let it finish its drain now
        rc.recv_result(1, 30)
    c.process(NODE).proc.wait(30)


def test_probe_of_nothing_fails_and_bad_flags_say_so(tmp_path: Any, pki: Pki) -> None:
    down = rsc_probe("--ready", "--timeout", "1", "--name", NODE, "--listen",
                     f"unix:{tmp_path}/nobody.sock")
    assert down.returncode == 1 and "no answer" in down.stderr, down.stderr
    partial = rsc_probe("--live", "--name", NODE, "--listen", "tcp:127.0.0.1:9",
                        "--tls-cert", pki.origin.cert)
    assert partial.returncode == 2 and "missing --tls-key, --tls-ca" in partial.stderr

