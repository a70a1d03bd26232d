"""The cluster file's one parser (rsc.cluster_file): what it accepts, what it
refuses and how it says so, and that Runtime(path) and ``rsc status`` use it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rsc import Runtime
from rsc.cluster_file import (CLUSTER_FILE_VERSION, InvalidClusterFile, read_cluster_file,
                              write_cluster_file)
from rsc.errors import InvalidArgument
from rsc.remote import load_cluster
from rsc.transport.address import Address
from tests.cluster import REPO_ROOT


def write(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "cluster.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_written_file_reads_back_with_version_and_mode_0600(tmp_path: Path) -> None:
    path = str(tmp_path / "c.json")
    write_cluster_file(path, {"w-1": "unix:/r/w-1.sock", "w-2": "unix:/r/w-2.sock"}, {"w-1": 10, "w-2": 11},
                       launcher_pid=9)
    data = json.loads(Path(path).read_text())
    assert data["version"] == CLUSTER_FILE_VERSION == 1 and data["launcher_pid"] == 9
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_cluster_file(path) == {"w-1": {"address": "unix:/r/w-1.sock", "pid": 10},
                                       "w-2": {"address": "unix:/r/w-2.sock", "pid": 11}}
    assert [p for p in os.listdir(tmp_path) if p.startswith(".cluster-")] == []  # no temporary left


def test_a_file_without_version_is_version_1_and_entries_may_be_bare_addresses(tmp_path: Path) -> None:
    path = write(tmp_path, {"nodes": {"a": "unix:/r/a.sock", "b": {"address": "unix:/r/b.sock"}}})
    assert read_cluster_file(path) == {"a": {"address": "unix:/r/a.sock", "pid": None},
                                       "b": {"address": "unix:/r/b.sock", "pid": None}}


@pytest.mark.parametrize("data, problem", [
    ("{not json", "is not JSON"),
    ([1, 2], "holds a JSON list, not an object"),
    ({"version": 2, "nodes": {"a": "unix:/a"}}, "has version 2; this rsc reads version 1 only"),
    ({"version": "1", "nodes": {"a": "unix:/a"}}, "has version '1'"),
    ({"version": True, "nodes": {"a": "unix:/a"}}, "has version True"),
    ({"version": 1}, "has no 'nodes' object"),
    ({"version": 1, "nodes": ["unix:/a"]}, "has no 'nodes' object"),
    ({"version": 1, "nodes": {}}, "lists no nodes"),
    ({"version": 1, "nodes": {"a": {"pid": 3}}}, "node 'a' has no 'address'"),
    ({"version": 1, "nodes": {"a": {"address": 7}}}, "node 'a' has address 7"),
    ({"version": 1, "nodes": {"a": ""}}, "node 'a' has address ''"),
    ({"version": 1, "nodes": {"a": 5}}, "node 'a' is a JSON int"),
    ({"version": 1, "nodes": {"a": {"address": "unix:/a", "pid": "12"}}}, "node 'a' has pid '12'"),
])
def test_malformed_files_raise_one_typed_error_naming_the_file(tmp_path: Path, data: Any, problem: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(InvalidClusterFile) as info:
        read_cluster_file(path)
    err = info.value
    assert isinstance(err, InvalidArgument) and isinstance(err, ValueError)
    assert err.path == path and problem in err.problem
    assert str(err).startswith(f"cluster file {path}: ")
    with pytest.raises(InvalidClusterFile, match="cluster file"):  # Runtime's reader is the same
        load_cluster(path)


def test_a_missing_file_is_the_same_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidClusterFile, match="No such file"):
        read_cluster_file(tmp_path / "nope.json")


def test_runtime_reads_a_cluster_file_through_the_parser(tmp_path: Path) -> None:
    path = write(tmp_path, {"version": 1, "nodes": {"a": {"address": "unix:/r/a.sock", "pid": 4}}})
    assert load_cluster(path) == {"a": Address.parse("unix:/r/a.sock")}
    assert Runtime(path).cluster == {"a": Address.parse("unix:/r/a.sock")}
    with pytest.raises(InvalidClusterFile, match="has version 3"):
        Runtime(write(tmp_path, {"version": 3, "nodes": {"a": "unix:/r/a.sock"}}))


def test_rsc_status_refuses_an_unknown_version_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, {"version": 2, "nodes": {"a": "unix:/r/a.sock"}})
    out = subprocess.run([sys.executable, "-m", "rsc", "status", "--cluster", path], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"cannot read cluster file {path}: has version 2; this rsc reads version 1 only" in out.stderr
