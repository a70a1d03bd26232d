"""The cluster file: which nodes a cluster has and where they listen.

``rsc launch`` writes it; ``Runtime(path)``, ``rsc status`` and your own tools
read it. It is JSON, written atomically with mode 0600::

    {
      "version": 1,
      "launcher_pid": 4242,
      "nodes": {
        "worker-1": {"address": "unix:/tmp/rsc-x/worker-1.sock", "pid": 4243},
        "worker-2": "unix:/tmp/rsc-x/worker-2.sock"
      }
    }

A node's entry is either an object with ``address`` (required) and ``pid``
(optional, an int or null) or just its address as a string, so a cluster file
can be written by hand. ``version`` is the file format's version: this rsc
writes and reads version 1. A file without ``version`` is read as version 1
(a hand-written file may leave it out); any other version is refused, since
rsc cannot know what a newer format means.

:func:`read_cluster_file` is the one parser: every problem it finds (the file
is missing or not JSON, the version is unknown, a field is missing or of the
wrong type, no nodes are listed) raises :class:`InvalidClusterFile`, which
names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from rsc.errors import InvalidArgument
from rsc.transport.address import Address
from rsc.types import NodeId, check_node_name

__all__ = ["CLUSTER_FILE_VERSION", "InvalidClusterFile", "default_cluster_file", "gone_launcher",
           "load_cluster", "read_cluster_file", "remove_cluster_file", "write_cluster_file"]

#: The cluster file format this rsc writes and reads.
CLUSTER_FILE_VERSION = 1


class InvalidClusterFile(InvalidArgument):
    """A cluster file rsc cannot use. ``path`` is the file, ``problem`` what is
    wrong with it; the message says both."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"cluster file {self.path}: {problem}")


def read_cluster_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``name -> {"address": str, "pid": int | None}`` for every node of the
    cluster file at ``path``, in the file's order. Raises
    :class:`InvalidClusterFile` if the file cannot be read or is not a cluster
    file of a version this rsc reads (see the module docstring). Addresses are
    checked to be non-empty strings only; ``Address.parse`` judges their form."""
    data = _read_json(path)
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        raise InvalidClusterFile(path, "has no 'nodes' object")
    if not nodes:
        raise InvalidClusterFile(path, "lists no nodes")
    return {name: _entry(path, name, entry) for name, entry in nodes.items()}


def gone_launcher(path: str | os.PathLike[str]) -> int | None:
    """The ``launcher_pid`` of the cluster file at ``path`` when that process
    is gone (the file is stale: whoever wrote it died without removing it),
    else None (the launcher runs, or the file names none). A process that
    started after the file was last written is not its launcher (its pid was
    reused), so it counts as gone too. Raises :class:`InvalidClusterFile`
    like :func:`read_cluster_file`."""
    import psutil

    pid = _read_json(path).get("launcher_pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        started = psutil.Process(pid).create_time()
        written = os.stat(path).st_mtime
    except psutil.NoSuchProcess:
        return pid
    except (psutil.Error, OSError):
        return None  # cannot tell: not stale as far as we know
    return pid if started > written + 1.0 else None


def remove_cluster_file(path: str | os.PathLike[str]) -> bool:
    """Remove the cluster file at ``path`` if this process wrote it (its
    ``launcher_pid`` is ours); True if removed. Another launcher may have
    taken the path over since (the default cluster file): its file stays."""
    try:
        if _read_json(path).get("launcher_pid") != os.getpid():
            return False
        os.unlink(path)
    except (InvalidClusterFile, FileNotFoundError):
        return False
    return True


def default_cluster_file() -> str:
    """Where ``rsc launch`` writes its cluster file when given neither
    ``--dir`` nor ``--cluster-file``, and where ``rsc status`` looks without
    ``--cluster``: ``$RSC_CLUSTER_FILE`` when set, else ``rsc/cluster.json``
    in ``$XDG_RUNTIME_DIR`` (the user's private runtime directory), else in
    ``/tmp/rsc-UID``."""
    explicit = os.environ.get("RSC_CLUSTER_FILE")
    if explicit:
        return os.path.abspath(explicit)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime_dir, "rsc") if runtime_dir else f"/tmp/rsc-{os.geteuid()}"
    return os.path.join(base, "cluster.json")


def _read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The cluster file's JSON object, of a version this rsc reads."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise InvalidClusterFile(path, exc.strerror or str(exc)) from exc
    except ValueError as exc:  # not JSON, or not UTF-8
        raise InvalidClusterFile(path, f"is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidClusterFile(path, f"holds a JSON {type(data).__name__}, not an object")
    version = data.get("version", CLUSTER_FILE_VERSION)
    if version != CLUSTER_FILE_VERSION or isinstance(version, bool):
        raise InvalidClusterFile(path, f"has version {version!r}; this rsc reads version "
                                       f"{CLUSTER_FILE_VERSION} only")
    return data


def _entry(path: str | os.PathLike[str], name: str, entry: Any) -> dict[str, Any]:
    """One node's entry as ``{"address": ..., "pid": ...}``."""
    try:
        check_node_name(name)
    except InvalidArgument as exc:
        raise InvalidClusterFile(path, str(exc)) from None
    if isinstance(entry, str):
        address, pid = entry, None
    elif isinstance(entry, dict):
        if "address" not in entry:
            raise InvalidClusterFile(path, f"node {name!r} has no 'address'")
        address, pid = entry["address"], entry.get("pid")
    else:
        raise InvalidClusterFile(path, f"node {name!r} is a JSON {type(entry).__name__}; expected "
                                       "an address string or an object with 'address'")
    if not isinstance(address, str) or not address:
        raise InvalidClusterFile(path, f"node {name!r} has address {address!r}; expected a "
                                       "non-empty string like 'unix:/path/to/node.sock'")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
        raise InvalidClusterFile(path, f"node {name!r} has pid {pid!r}; expected an int or null")
    return {"address": address, "pid": pid}


def write_cluster_file(path: str, nodes: Mapping[str, str], pids: Mapping[str, int],
                       launcher_pid: int | None = None) -> None:
    """Write a version-1 cluster file for ``nodes`` (name -> address) and their
    ``pids`` atomically (temporary file in the same directory, fsync, rename),
    mode 0600. ``launcher_pid`` defaults to this process."""
    data = {
        "version": CLUSTER_FILE_VERSION,
        "launcher_pid": os.getpid() if launcher_pid is None else launcher_pid,
        "nodes": {name: {"address": nodes[name], "pid": pids[name]} for name in nodes},
    }
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".cluster-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_cluster(cluster: Mapping[str, str] | str | os.PathLike) -> dict[NodeId, Address]:
    """NodeId -> Address from a mapping or a cluster file (read by
    :func:`read_cluster_file`, whose ``InvalidClusterFile`` it raises)."""
    if isinstance(cluster, (str, os.PathLike)) and not isinstance(cluster, Mapping):
        cluster = {name: entry["address"] for name, entry in read_cluster_file(cluster).items()}
    if not isinstance(cluster, Mapping) or not cluster:
        raise InvalidArgument("a cluster is a non-empty mapping NodeId -> 'unix:PATH' or a cluster file path")
    return {NodeId(k): Address.parse(v) for k, v in cluster.items()}
