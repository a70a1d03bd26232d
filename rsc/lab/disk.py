"""A node's disk in the lab: what its durable journal writes, and what a crash keeps.

A lab node started with ``durable=True`` keeps its idempotency journal
(``rsc.node.journal``, the production code: what ``rsc node --state-dir``
runs) on a :class:`SimDisk` of its own, kept by the lab under the node's
name, so a restarted node finds what its previous incarnation made durable.
The journal reaches the disk only through the file operations of
``rsc.node.journal.PosixFiles``; :class:`SimFiles` gives it the same calls,
on memory, with the durability contract the journal relies on:

* a write lands in the file (what a running process reads) at once, and
  survives a crash only once ``datasync`` / ``fsync`` on it has returned;
* a new name (a created file, a ``replace``) survives a crash only once
  ``sync_dir`` has returned: before that, a crash brings back the old entry
  (a compaction's renamed file, not yet made durable, is lost and the old
  journal is replayed);
* a crash ends the process's use of the disk: its lock is released, and
  whatever the dead process still does (a sync queued on its loop, a
  compaction finishing) no longer reaches the disk.

The journal's wall-clock expiries read the node's clock (virtual time from a
fixed epoch) and its id is drawn from the seed, so a durable node's run is
decided by the lab's seed like any other.
"""

from __future__ import annotations

import io
import itertools
import random
from typing import Any

from rsc.lab.loop import EPOCH_NS
from rsc.node.journal import StateDirError

__all__ = ["SimDisk", "SimFiles"]


class _Inode:
    __slots__ = ("data", "synced")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = 0  # bytes that survive a crash


class SimDisk:
    """One node's disk (module docstring). ``crashes``, ``syncs``,
    ``renames`` and ``lost_bytes`` count what happened to it."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.names: dict[str, _Inode] = {}  # what a running process sees
        self._durable: dict[str, _Inode] = {}  # the entries a crash keeps
        self._dirs: set[str] = set()
        self._mount: SimFiles | None = None  # the live process's, while it runs
        self.crashes = self.syncs = self.renames = self.lost_bytes = 0

    def mount(self, clock: Any) -> SimFiles:
        """The file operations of the process that starts now (``clock``: its
        clock, for the journal's wall-clock expiries)."""
        return SimFiles(self, clock, self._rng)

    def crash(self) -> None:
        """The process died: unsynced bytes and undurable names are gone."""
        self.crashes += 1
        self._mount = None
        inodes = {id(i): i for i in [*self.names.values(), *self._durable.values()]}
        for ino in inodes.values():
            self.lost_bytes += len(ino.data) - ino.synced
            del ino.data[ino.synced:]
        self.names = dict(self._durable)

    def file(self, path: str) -> bytes:
        """What the file at ``path`` holds now (empty if there is none)."""
        ino = self.names.get(path)
        return b"" if ino is None else bytes(ino.data)


class SimFiles:
    """``rsc.node.journal.PosixFiles`` on a :class:`SimDisk`, for one process."""

    def __init__(self, disk: SimDisk, clock: Any, rng: random.Random) -> None:
        self._disk = disk
        self._clock = clock
        self._rng = rng
        self._fds: dict[int, _Inode] = {}
        self._next_fd = itertools.count(3)
        self._lock_fd = -1

    def _live(self) -> bool:
        """Whether this process may still touch the disk (it has not crashed)."""
        return self._disk._mount is self

    def prepare(self, path: str) -> None:
        """Create the state directory ``path`` on the simulated disk."""
        self._disk._dirs.add(path)

    def lock(self, path: str) -> int:
        """Take the state directory's lock (a simulated descriptor)."""
        if self._disk._mount is not None:
            raise StateDirError(f"state directory {path} is in use by another node (the lab's)")
        self._disk._mount = self
        self._lock_fd = next(self._next_fd)
        return self._lock_fd

    def open_read(self, path: str) -> io.BytesIO:
        """The durable bytes of ``path``, open for reading (empty if it does not exist)."""
        return io.BytesIO(self._disk.file(path))

    def create(self, path: str) -> int:
        """Create (or truncate) ``path``; its descriptor."""
        fd = next(self._next_fd)
        if self._live():
            ino = self._disk.names[path] = _Inode()
            self._fds[fd] = ino
        return fd

    def append(self, fd: int, data: bytes) -> None:
        """Append ``data`` to ``fd``; it survives a crash only once synced."""
        ino = self._fds.get(fd)
        if ino is not None and self._live():
            ino.data += data

    def datasync(self, fd: int) -> None:
        """Make what was appended to ``fd`` survive a crash (``fsync`` too)."""
        ino = self._fds.get(fd)
        if ino is not None and self._live():
            ino.synced = len(ino.data)
            self._disk.syncs += 1

    fsync = datasync

    def close(self, fd: int) -> None:
        """Close ``fd``."""
        self._fds.pop(fd, None)
        if fd == self._lock_fd:
            self._lock_fd = -1
            if self._live():
                self._disk._mount = None

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst``; durable once the directory is synced."""
        if self._live():
            names = self._disk.names
            if src not in names:
                raise FileNotFoundError(src)
            names[dst] = names.pop(src)
            self._disk.renames += 1

    def sync_dir(self, path: str) -> None:
        """Make the renames and removals in ``path`` survive a crash."""
        if self._live():
            self._disk._durable = dict(self._disk.names)

    def unlink(self, path: str) -> None:
        """Remove ``path`` (nothing if it is gone)."""
        if self._live():
            self._disk.names.pop(path, None)

    def wall_ns(self) -> int:
        """The node's wall clock: virtual time from the lab's fixed epoch."""
        return EPOCH_NS + self._clock.now_ns()

    def new_id(self) -> bytes:
        """A journal id drawn from the lab's seed."""
        return self._rng.getrandbits(128).to_bytes(16, "big")
