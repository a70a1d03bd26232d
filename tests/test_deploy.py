"""deploy/: the Kubernetes manifests and the systemd unit, checked offline
(no cluster runs here).

* Every Kubernetes manifest validates against the Kubernetes API's own
  schemas (``kubernetes-validate``, which ships them: no network), strictly
  (an unknown field is an error).
* The choices docs/DEPLOY.md promises hold: a headless Service the
  StatefulSet names, the node's name from the pod's, a grace period at least
  the lease and the node's shutdown bound, probes that are ``rsc probe``,
  a journal volume per pod under ``RSC_STATE_DIR``, private Secret mounts and
  no ``fsGroup``, a PodDisruptionBudget over the same pods.
* The ConfigMap's variables are options ``rsc node`` reads.
* The systemd unit parses (``systemd-analyze verify`` when installed) and
  restarts on failure, with a stop timeout over the node's bound.
"""

from __future__ import annotations

import argparse
import configparser
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rsc.node.server import shutdown_bound_s
from tests.cluster import REPO_ROOT

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = Path(REPO_ROOT) / "deploy" / "kubernetes"
UNIT = Path(REPO_ROOT) / "deploy" / "systemd" / "rsc-node@.service"
DEFAULT_LEASE_S = 30
#: the oldest Kubernetes minor version the manifests are meant for
K8S_VERSION = "1.28.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    found = [doc for _name, doc in documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    docs = documents()
    assert {doc["kind"] for _n, doc in docs} >= {"StatefulSet", "Service", "ConfigMap",
                                                 "PodDisruptionBudget", "Secret"}
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_the_statefulset_keeps_what_deploy_md_promises() -> None:
    sts, svc, pdb = by_kind("StatefulSet"), by_kind("Service"), by_kind("PodDisruptionBudget")
    config = by_kind("ConfigMap")["data"]
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    # stable names through a headless Service over the same pods
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (node,) = pod["spec"]["containers"]
    # the node's name is the pod's
    name = env_of(node)["RSC_NAME"]
    assert name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert [ref["configMapRef"]["name"] for ref in node["envFrom"]] == [
        by_kind("ConfigMap")["metadata"]["name"]]
    # SIGTERM drains within the node's bound, and the lease, before SIGKILL
    grace = float(config["RSC_GRACE"])
    period = pod["spec"]["terminationGracePeriodSeconds"]
    assert period >= DEFAULT_LEASE_S and period >= shutdown_bound_s(grace), period
    # probes ask this node only
    assert node["readinessProbe"]["exec"]["command"][:3] == ["rsc", "probe", "--ready"]
    assert node["livenessProbe"]["exec"]["command"][:3] == ["rsc", "probe", "--live"]
    # one journal volume per pod, and RSC_STATE_DIR inside it
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in node["volumeMounts"]}
    assert config["RSC_STATE_DIR"].startswith(mounts[claim["metadata"]["name"]] + "/")
    # the Secrets are readable by the node's own group only (rsc.localfs:
    # root's file, group-read for this process's group), and the kubelet
    # never reopens the journal directory rsc made 0700
    secrets = {v["name"]: v["secret"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert secrets and all(s["defaultMode"] == 0o440 for s in secrets.values())
    security = pod["spec"]["securityContext"]
    assert security["fsGroup"] == security["runAsGroup"] != 0
    assert security["fsGroupChangePolicy"] == "OnRootMismatch"
    assert security["runAsNonRoot"] and security["runAsUser"] != 0
    for var in ("RSC_TLS_CERT", "RSC_TLS_KEY", "RSC_TLS_CA", "RSC_KEY_FILE"):
        assert any(config[var].startswith(mounts[v] + "/") for v in secrets), var
    assert config["RSC_LISTEN"].startswith("tcp:")
    assert svc["spec"]["ports"][0]["port"] == int(config["RSC_LISTEN"].rsplit(":", 1)[1])


def test_the_configmap_configures_rsc_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable of the ConfigMap is an ``rsc node`` option: with them
    (and RSC_NAME) in the environment, ``rsc node`` needs no argument."""
    from rsc.node.main import add_arguments

    config = by_kind("ConfigMap")["data"]
    monkeypatch.setenv("RSC_NAME", "rsc-node-0")
    for var, value in config.items():
        monkeypatch.setenv(var, value)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    for var, value in config.items():
        dest = var[len("RSC_"):].lower()
        assert hasattr(args, dest), f"{var} is not an option of rsc node"
        assert str(getattr(args, dest)) == value or float(getattr(args, dest)) == float(value)
    assert args.name == "rsc-node-0"
    assert parser.parse_args(["--name", "other"]).name == "other"  # the command line wins


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text(encoding="utf-8"))
    return cp


def test_the_systemd_unit_restarts_and_drains() -> None:
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["ExecStart"].split()[-2:] == ["rsc", "node"]
    assert "RSC_NAME=%i" in service["Environment"] or "RSC_NAME=%i" in UNIT.read_text()
    assert float(service["TimeoutStopSec"]) >= shutdown_bound_s(30.0)
    assert "rsc probe --ready" in service["ExecStartPost"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_finds_nothing_wrong(tmp_path: Path) -> None:
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8"), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", f"{tmp_path}/rsc-node@worker-1.service"],
                          capture_output=True, text=True, timeout=60)
    # it reports problems of the unit file on lines naming it, whatever its exit code
    problems = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
