"""A node's durable idempotency journal (``rsc node --state-dir DIR``).

With a journal, what makes a resend safe on one node outlives the node's
process: idempotency records (key, fingerprint, origin, task id), their
finished outcomes (the results a resend is answered with) and tombstones
(with their cancel reasons) are appended to ``DIR/journal.log``, and a node
restarted on the same directory starts from them. What a caller may rely on:

- **At most once per key on one node, across restarts.** A record is on disk
  before the task starts and before its SPAWN_ACK leaves; an outcome is on
  disk before its RESULT_DELIVERY leaves (``NodeServer`` syncs the journal,
  one ``fsync`` per loop turn that wrote to it, before it carries out that
  turn's sends and starts). A task that was running when the node died is
  answered, after the restart, as cancelled with reason ``shutdown`` "node
  restarted while it ran": it may have had effects, so it is not run again.
- **Crash-safe format.** Each entry is ``u32be length | u32be crc32(body) |
  body`` (body: a msgpack array). Replay stops at the first entry that is
  short or fails its checksum (a write torn by the crash) and drops it and
  everything after it; entries before it are whole, because each sync ends
  with an fsync.
- **Readable after an upgrade.** The head entry names the format. Format 2
  writes fingerprints with their algorithm's tag (17 bytes); a format-1
  journal, written by an older rsc, is read too, its 16-byte fingerprints
  taken as the BLAKE2b they were (``legacy_fingerprint``), so a resend after
  the upgrade is still recognised as the same request.
  A record of a key its origin drew (``DRAWN_FINGERPRINT``, tag 3, nothing
  hashed) is written like any other: the tag and the owner's origin are all
  its rules need (owner-only), so they hold after a restart. An older rsc
  reads tag 3 as an unknown algorithm, which matches nothing: it refuses a
  resend of such a key rather than running it again.
- **Bounded.** Expired entries are dropped on replay (expiries are written as
  wall-clock times, so a TTL keeps counting while the node is down), and the
  file is rewritten from the live state at start and whenever it holds
  ``COMPACT_FACTOR`` times more entries than are live (at least
  ``COMPACT_MIN``): written to a temporary file, fsynced, renamed over. A
  running node writes the live state a step per loop turn (a few hundred
  records each, so no turn is held for long however many records it keeps)
  and syncs the file in a thread (``begin_compaction`` / ``start_snapshot``,
  ``Snapshot.add``, ``Snapshot.seal`` / ``finish_compaction``). What changes
  while it is written is in the journal's tail too, appended after the
  snapshot, so the rewritten file replays to the same state.
- **One node per directory.** The directory is created 0700 if missing; an
  existing one must belong to this user and not be writable by group or
  others, or the node refuses it (``StateDirError``). An exclusive ``flock``
  on ``DIR/lock`` is held for the node's life, so a second node on the same
  directory is refused instead of interleaving its writes.

The journal has a random 16-byte id, made with the directory and kept by every
compaction: the node advertises it in WELCOME (``features["journal"]``), so an
origin can tell a restarted node that kept its records from one that did not
(PROTOCOL.md section 5).

Every file operation goes through one object, :class:`PosixFiles` by
default; a simulation gives the journal its own (``Journal(files=...)``), with
the same calls and the same durability contract: what ``datasync``/``fsync``
returned from survives a crash, a ``replace`` survives once ``sync_dir`` has.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import msgpack

from rsc._core import idemtable as _idem
from rsc._engine.node import kept_result_bytes
from rsc.logs import get_logger
from rsc.errors import InvalidArgument
from rsc.value_codec import Segmented

log = get_logger("rsc.node")

JOURNAL_FILE = "journal.log"
LOCK_FILE = "lock"
FORMAT_VERSION = 2  # 2: fingerprints carry their algorithm's tag (17 bytes)
READABLE_VERSIONS = (1, 2)  # 1: an older rsc's, whose fingerprints are 16 untagged bytes (BLAKE2b)
COMPACT_MIN = 65_536  # entries appended before a compaction is considered
COMPACT_FACTOR = 4  # ... and then only when the file holds this many times the live entries
_HEADER = struct.Struct(">II")  # body length, crc32(body)
MAX_ENTRY_BYTES = 1 << 30  # a length above this is corruption, not an entry

# entry kinds (the first element of each body)
J_HEAD, J_RECORD, J_DONE, J_TOMB, J_UNTOMB = 0, 1, 2, 3, 4

Record = tuple  # (key, fingerprint, origin, task_id, outcome | None, remaining_ns | None)
Tombstone = tuple  # (origin, task_id, reason, remaining_ns)


class StateDirError(InvalidArgument):
    """The state directory cannot be used (unsafe, in use, unreadable); the message says why."""


class PosixFiles:
    """The journal's file operations on the real file system (see the module docstring)."""

    @staticmethod
    def prepare(path: str) -> None:
        """Create ``path`` 0700 (and missing parents, 0700 too), or accept an
        existing directory only if it is safe; never changes an existing one."""
        try:
            os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
            os.mkdir(path, 0o700)
            return
        except FileExistsError:
            pass
        except OSError as exc:
            raise StateDirError(f"cannot create state directory {path}: {exc.strerror}") from exc
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise StateDirError(f"state directory {path} exists and is not a directory")
        if st.st_uid != os.geteuid():
            raise StateDirError(f"state directory {path} belongs to uid {st.st_uid}, not this user "
                                f"({os.geteuid()}); use a directory of your own")
        if st.st_mode & 0o022:
            raise StateDirError(f"state directory {path} is writable by group or others (mode "
                                f"{stat.S_IMODE(st.st_mode):o}); use a private one (chmod 700)")

    @staticmethod
    def lock(path: str) -> int:
        """Take the directory's exclusive lock for this process's life (its descriptor)."""
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirError(f"state directory {path} is in use by another node "
                                    f"(pid {holder}); give each node its own") from None
            raise StateDirError(f"cannot lock state directory {path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    @staticmethod
    def open_read(path: str) -> BinaryIO | None:
        """``path`` open for reading from its start (None if it does not exist)."""
        try:
            return open(path, "rb")
        except FileNotFoundError:
            return None

    @staticmethod
    def create(path: str) -> int:
        """A new empty file (truncated if it exists), open for writing."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    @staticmethod
    def append(fd: int, data: bytes) -> None:
        """Write ``data`` at the end of the open file ``fd``, all of it."""
        _write_all(fd, data)

    datasync = staticmethod(os.fdatasync)
    fsync = staticmethod(os.fsync)
    close = staticmethod(os.close)
    replace = staticmethod(os.replace)

    @staticmethod
    def sync_dir(path: str) -> None:
        """Make the directory's entries (a rename) durable."""
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def unlink(path: str) -> None:
        """Remove ``path``; a file that is already gone is not an error."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    @staticmethod
    def wall_ns() -> int:
        """The wall clock in nanoseconds since the epoch (record expiries)."""
        return time.time_ns()

    @staticmethod
    def new_id() -> bytes:
        """A fresh random journal id (16 bytes)."""
        return secrets.token_bytes(16)


POSIX = PosixFiles()


def _entry(body: list) -> bytes:
    data = msgpack.packb(body, use_bin_type=True)
    return _HEADER.pack(len(data), zlib.crc32(data)) + data


class Snapshot:
    """A compaction's temporary file while the live state is written to it
    (``Journal.start_snapshot``). Each ``add`` converts the remaining times it
    is given to wall-clock expiries at that moment, so the state may be taken
    and added a step at a time."""

    def __init__(self, files: Any, fd: int) -> None:
        self._files = files
        self.fd = fd
        self.entries = 0
        self.sealing = False  # seal() has started: the file is no longer this object's to close
        self.closed = False

    def append(self, parts: list[bytes]) -> None:
        """Append entries already encoded (each a header and a body)."""
        if parts:
            self._files.append(self.fd, b"".join(parts))
            self.entries += len(parts)

    def add(self, records: Iterable[Record], tombstones: Iterable[Tombstone] = ()) -> None:
        """Append records and tombstones (``Journal.load``'s form: each with the
        time it has left)."""
        now_wall = self._files.wall_ns()
        parts = []
        for key, fp, origin, rtid, outcome, remaining in records:
            parts.append(_entry([J_RECORD, key, fp, origin, rtid]))
            if outcome is not None:
                parts.append(_entry([J_DONE, key, rtid, outcome[0], _stored(outcome[1]), outcome[2],
                                     now_wall + remaining]))
        for origin, rtid, reason, remaining in tombstones:
            parts.append(_entry([J_TOMB, origin, rtid, reason, now_wall + remaining]))
        self.append(parts)

    def seal(self) -> tuple[int, int]:
        """fsync the file; its descriptor and entry count, for
        ``Journal.finish_compaction``. The descriptor is closed if this fails."""
        self.sealing = True
        try:
            self._files.fsync(self.fd)
        except BaseException:
            self.closed = True
            self._files.close(self.fd)
            raise
        return self.fd, self.entries

    def discard(self) -> None:
        """Close the file without using it (the caller aborts the compaction);
        once closed, nothing (so a journal's close and its node's next step
        may both discard it)."""
        if not self.closed:
            self.closed = True
            self._files.close(self.fd)


class _Entries:
    """The whole entries at the start of the open file ``f``, read one at a
    time (``end``: the offset after the last one read), so a replay holds one
    entry's bytes at a time however large the file."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.end = 0

    def __iter__(self) -> Iterator[list]:
        f, header = self._f, _HEADER.size
        while True:
            head = f.read(header)
            if len(head) < header:
                return
            length, crc = _HEADER.unpack(head)
            if length > MAX_ENTRY_BYTES:
                return
            body = f.read(length)
            if len(body) < length or zlib.crc32(body) != crc:
                return
            try:
                entry = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=False)
            except Exception:  # a checksum collision on garbage: treat as the torn tail
                return
            if not isinstance(entry, list) or not entry:
                return
            self.end += header + length
            yield entry


def _as_reason(value: Any) -> tuple:
    return (value[0], value[1])  # msgpack gives lists; the codec and the engine use tuples


def _stored(payload: Any) -> Any:
    """An outcome's payload as the journal stores it: a segmented output
    (``rsc.value_codec.Segmented``) joined into plain msgpack bytes, so a
    restarted node answers a duplicate with the whole result."""
    return payload.joined() if type(payload) is Segmented else payload


def _outcome(kind: int, payload: Any, exec_ns: int) -> tuple:
    return (kind, _as_reason(payload) if isinstance(payload, list) else payload, exec_ns)


class Journal:
    """The open journal of one state directory (see the module docstring).

    The engine appends through ``admitted``/``finished``/``tombstone``/
    ``untombstone`` (buffered in memory: no I/O); its driver calls ``sync()``
    before it lets anything those entries stand for leave the process.
    """

    def __init__(self, path: str, ttl_ns: int, files: Any = None) -> None:
        self._files = files = POSIX if files is None else files
        self.path = os.path.abspath(path)
        self.ttl_ns = ttl_ns
        files.prepare(self.path)
        self._lock_fd = files.lock(self.path)
        self._file = os.path.join(self.path, JOURNAL_FILE)
        self._buf: list[bytes] = []
        self._fd = -1
        self.journal_id = b""
        self.entries = 0  # entries in the file (whole ones), for compaction
        self.live = 0  # live entries at the last compaction
        self.torn_bytes = 0  # bytes dropped from the tail at open (a torn write)
        self._tail: list[bytes] | None = None  # synced during a compaction (begin..finish)
        self._tail_entries = 0
        self._snapshot: Snapshot | None = None  # a compaction's file while it is written

    # ------------------------------------------------------------------ files
    def load(self, now_wall_ns: int | None = None, *, max_kept_bytes: int | None = None,
             dropped_outcome: tuple | None = None) -> tuple[list[Record], list[Tombstone]]:
        """Replay the file: the live records and tombstones, each with the time
        it has left (None for a record whose task was running).

        The file is read one entry at a time. With ``max_kept_bytes`` (the
        node's kept-result budget), results are dropped oldest first as the
        replay goes, their records keeping ``dropped_outcome`` instead, so a
        replay holds at most the budget of results, as the running node did,
        whatever the file holds."""
        now_wall = self._files.wall_ns() if now_wall_ns is None else now_wall_ns
        records: dict[bytes, list] = {}
        tombs: dict[tuple[str, int], list] = {}
        kept: dict[bytes, int] = {}  # key -> bytes its result counts, oldest first
        kept_total = 0
        read = 0
        if max_kept_bytes is not None and dropped_outcome is None:
            raise InvalidArgument("Journal.load: max_kept_bytes needs the dropped_outcome its "
                                  "dropped results are replaced by")
        f = self._files.open_read(self._file)
        entries = _Entries(f) if f is not None else None
        try:
            for e in entries if entries is not None else ():
                read += 1
                kind = e[0]
                if kind == J_RECORD:
                    _, key, fp, origin, rtid = e
                    kept_total -= kept.pop(key, 0)
                    records[key] = [key, _idem.legacy_fingerprint(fp), origin, rtid, None, None]
                elif kind == J_DONE:
                    _, key, _rtid, okind, payload, exec_ns, expires = e
                    rec = records.get(key)
                    if rec is None:
                        continue
                    outcome = _outcome(okind, payload, exec_ns)
                    rec[4], rec[5] = outcome, expires - now_wall
                    kept_total -= kept.pop(key, 0)
                    size = kept_result_bytes(outcome)
                    if max_kept_bytes is None or not size:
                        continue
                    kept[key] = size
                    kept_total += size
                    while kept_total > max_kept_bytes:
                        oldest = next(iter(kept))
                        kept_total -= kept.pop(oldest)
                        records[oldest][4] = dropped_outcome
                elif kind == J_TOMB:
                    _, origin, rtid, reason, expires = e
                    tombs[(origin, rtid)] = [origin, rtid, _as_reason(reason), expires - now_wall]
                elif kind == J_UNTOMB:
                    tombs.pop((e[1], e[2]), None)
                elif kind == J_HEAD:
                    if len(e) < 3 or e[1] not in READABLE_VERSIONS or not isinstance(e[2], bytes):
                        raise StateDirError(f"journal {self._file} is in format {e[1:2]!r}, not one of "
                                            f"{READABLE_VERSIONS}; it was written by another rsc version")
                    self.journal_id = e[2]
            if f is not None and entries is not None:
                self.torn_bytes = f.seek(0, os.SEEK_END) - entries.end
        finally:
            if f is not None:
                f.close()
        if self.torn_bytes:
            log.warning("journal %s: dropped a torn or corrupt tail of %d bytes after %d whole entries",
                        self._file, self.torn_bytes, read)
        if not self.journal_id:
            self.journal_id = self._files.new_id()
        live_recs = [tuple(r) for r in records.values() if r[5] is None or r[5] > 0]
        live_tombs = [tuple(t) for t in tombs.values() if t[3] > 0]
        return live_recs, live_tombs

    def compact(self, records: list[Record], tombstones: list[Tombstone]) -> None:
        """Rewrite the file from the live state (what ``load`` returns, or the
        engine's ``durable_state`` taken after ``begin_compaction``), all at once."""
        self.begin_compaction()
        self.finish_compaction(*self.write_snapshot(records, tombstones))

    # A compaction in three steps: begin (on the loop, before the live state
    # is taken), write the snapshot (start_snapshot, then Snapshot.add as often
    # as the caller likes, then Snapshot.seal, which may run in a thread: it
    # touches only its own file), finish (on the loop). Entries synced from
    # begin on go to the old file as usual and are appended to the new one
    # before it replaces the old. The state may be taken a step at a time while
    # the table changes: every change made after begin is in those entries,
    # which replay after the snapshot, so a record the snapshot caught before
    # or after a change ends in the state the change left (a record evicted
    # meanwhile had expired, and replay drops what has expired).

    def begin_compaction(self) -> None:
        """Start rewriting the journal as the live state only (called when
        ``needs_compaction``)."""
        if self._fd >= 0:
            self.sync()  # what is buffered reaches the old file first
        else:
            self._buf = []  # at open: the state about to be taken already holds it
        self._tail = []
        self._tail_entries = 0

    def write_snapshot(self, records: list[Record], tombstones: list[Tombstone]) -> tuple[int, int]:
        """Write the live state to a temporary file and fsync it; returns its
        open descriptor and how many entries it holds (for ``finish_compaction``)."""
        snap = self.start_snapshot()
        try:
            snap.add(records, tombstones)
        except BaseException:
            snap.discard()
            raise
        return snap.seal()

    def start_snapshot(self) -> Snapshot:
        """The temporary file of a compaction, its head entry written: the live
        state goes in with ``Snapshot.add`` (in as many steps as the caller
        likes), then ``Snapshot.seal`` (anywhere: it touches only its own file)."""
        files = self._files
        fd = files.create(self._file + ".tmp")
        snap = Snapshot(files, fd)
        try:
            snap.append([_entry([J_HEAD, FORMAT_VERSION, self.journal_id])])
        except BaseException:
            snap.discard()
            raise
        self._snapshot = snap
        return snap

    def finish_compaction(self, fd: int, n_entries: int) -> None:
        """Append what was synced since ``begin_compaction``, then put the new
        file in the old one's place (rename, fsync the directory) and write to it."""
        files = self._files
        tail, self._tail = self._tail, None
        self._snapshot = None
        if self._lock_fd < 0 or tail is None:  # closed (or aborted) meanwhile
            files.close(fd)
            self.abort_compaction()
            return
        try:
            if tail:
                files.append(fd, b"".join(tail))
                files.datasync(fd)
            files.replace(self._file + ".tmp", self._file)
            files.sync_dir(self.path)
        except BaseException:
            files.close(fd)
            self.abort_compaction()
            raise
        if self._fd >= 0:
            files.close(self._fd)
        self._fd = fd  # positioned at its end: appends continue there
        self.live = n_entries
        self.entries = n_entries + self._tail_entries

    def abort_compaction(self) -> None:
        """Forget a compaction that failed or was overtaken; the old file stays."""
        self._tail = None
        self._snapshot = None
        self._files.unlink(self._file + ".tmp")

    def needs_compaction(self) -> bool:
        """Whether the journal holds enough dead entries to be worth rewriting."""
        return self.entries >= COMPACT_MIN and self.entries >= COMPACT_FACTOR * self.live

    # ------------------------------------------------------ appends (no I/O)
    @property
    def dirty(self) -> bool:
        """Entries are buffered that ``sync()`` has not written yet."""
        return bool(self._buf)

    def admitted(self, key: bytes, fingerprint: bytes, origin: str, rtid: int) -> None:
        """Append: the task ``rtid`` of ``origin`` was admitted under ``key`` (written at
        the next ``sync``)."""
        self._buf.append(_entry([J_RECORD, key, fingerprint, origin, rtid]))

    def finished(self, key: bytes, rtid: int, outcome: tuple) -> None:
        """Append: the task under ``key`` ended with ``outcome``, kept for the TTL."""
        kind, payload, exec_ns = outcome
        self._buf.append(_entry([J_DONE, key, rtid, kind, _stored(payload), exec_ns,
                                 self._files.wall_ns() + self.ttl_ns]))

    def tombstone(self, origin: str, rtid: int, reason: tuple) -> None:
        """Append: the task ``rtid`` of ``origin`` was cancelled before it arrived, with
        ``reason``."""
        self._buf.append(_entry([J_TOMB, origin, rtid, reason, self._files.wall_ns() + self.ttl_ns]))

    def untombstone(self, origin: str, rtid: int) -> None:
        """Append: the tombstone of ``(origin, rtid)`` is gone."""
        self._buf.append(_entry([J_UNTOMB, origin, rtid]))

    # -------------------------------------------------------------------- I/O
    def sync(self) -> None:
        """Write what was appended and fsync it (fdatasync): after this returns
        it survives a crash of the process or the machine."""
        if not self._buf:
            return
        data = b"".join(self._buf)
        self.entries += len(self._buf)
        if self._tail is not None:  # a compaction is under way: the new file needs these too
            self._tail.append(data)
            self._tail_entries += len(self._buf)
        self._buf = []
        self._files.append(self._fd, data)
        self._files.datasync(self._fd)

    def close(self) -> None:
        """Sync, close the file and release the directory's lock. A snapshot
        still being written is discarded (its file removed); one being sealed
        is left to ``finish_compaction``, which then finds the journal closed."""
        snap = self._snapshot
        if snap is not None and not snap.sealing:
            snap.discard()
            self.abort_compaction()
        try:
            if self._fd >= 0:
                self.sync()
                self._files.close(self._fd)
        finally:
            self._fd = -1
            if self._lock_fd >= 0:
                self._files.close(self._lock_fd)  # closing the descriptor releases the lock
                self._lock_fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def open_journal(path: str, engine: Any, now_ns: int, files: Any = None) -> Journal:
    """Open (or create) the journal in ``path`` (on ``files``, default the real
    file system), give the engine the state it holds, and start a fresh
    compacted file; the engine then writes to it."""
    journal = Journal(path, engine.ttl_ns, files)
    try:
        records, tombstones = journal.load(max_kept_bytes=engine.max_kept_result_bytes,
                                           dropped_outcome=engine.dropped_outcome)
        engine.restore(records, tombstones, now_ns, journal)
        journal.compact(*engine.durable_state(now_ns))
    except BaseException:
        journal.close()
        raise
    log.info("journal %s: %d records and %d tombstones restored", journal.path, len(records),
             len(tombstones))
    return journal
