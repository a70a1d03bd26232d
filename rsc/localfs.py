"""What rsc creates and trusts on the local file system.

The rules, kept here and nowhere else:

* **Directories.** A directory rsc creates (a socket's directory, a launcher's
  ``--dir``) is made mode 0700. A directory that already exists keeps its mode:
  rsc never changes the mode of anything it did not create. It uses an existing
  directory only if it is safe: owned by this user (or root), and, when group or
  others may write it, sticky (like ``/tmp``), so that nobody else can remove or
  replace what rsc puts there. Anything else is :class:`~rsc.errors.UnsafePath`.
* **Key files** (the cluster key, a TLS private key) must be private: no
  permission bit for group or others (``chmod 600``), else
  :class:`~rsc.errors.UnsafePath`. One exception, for orchestrators that mount
  secrets owned by root and readable by the service's group (Kubernetes'
  ``fsGroup``): a file owned by root whose group is this process's own
  (non-root) group may also be group-readable (``0440``/``0640``), and no more.
* **Launcher directories** are locked (``flock`` on ``DIR/.rsc-launch.lock``)
  for as long as their cluster runs; a second launcher gets
  :class:`~rsc.errors.PathInUse`.
"""

from __future__ import annotations

import fcntl
import os
import stat

from rsc.errors import InvalidArgument, PathInUse, UnsafePath

__all__ = ["DirLock", "check_private_file", "ensure_private_dir", "read_key_file"]

MIN_KEY_BYTES = 16


def ensure_private_dir(path: str, what: str = "directory") -> bool:
    """Make ``path`` a directory rsc may put sockets and files in; True when
    this call created it (mode 0700), False when it already existed (its mode
    untouched). ``what`` names it in error messages (e.g. ``"--dir"``).

    Raises :class:`UnsafePath` for an existing path that is not a directory,
    belongs to another user, or is writable by group/others without the sticky
    bit."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        check_dir_is_safe(path, what)
        return False
    os.chmod(path, 0o700)  # ours: the umask may have taken bits mkdir asked for
    return True


def check_dir_is_safe(path: str, what: str = "directory") -> None:
    """Raise :class:`UnsafePath` unless ``path`` is a directory owned by this
    user (or root) that group/others cannot write, or can write only with the
    sticky bit set."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{what} {path} exists and is not a directory")
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise UnsafePath(f"{what} {path} belongs to uid {st.st_uid}, not to you (uid {me}): "
                         "its owner could replace rsc's sockets in it; use a directory you own, "
                         "or a path that does not exist yet (rsc then creates it 0700)")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        who = "group and others" if mode & 0o022 == 0o022 else "group" if mode & 0o020 else "others"
        raise UnsafePath(f"{what} {path} has mode {mode:04o}: writable by {who} without the sticky "
                         "bit, so anyone could replace rsc's sockets in it; use a private directory "
                         f"(chmod go-w {path}) or a path that does not exist yet (rsc then creates "
                         "it 0700)")


def check_private_file(path: str, st: os.stat_result, flag: str, what: str) -> None:
    """Raise :class:`UnsafePath` unless the file ``st`` describes is private
    (see the module docstring: no bit for group or others, or, owned by root,
    at most group-read for this process's own non-root group). ``flag``
    names it in the message (``--key-file``), ``what`` says what someone
    reading it could do."""
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return
    gid = os.getegid()
    if (not mode & 0o037 and st.st_uid == 0 and gid != 0 and st.st_gid == gid):
        return  # root's secret, readable by this service's own group only
    raise UnsafePath(f"{flag} {path} has mode {mode:04o}: group or others may read it, and "
                     f"{what}; run: chmod 600 {path}")


def read_key_file(path: str, flag: str = "--key-file",
                  holder_can: str = "join the cluster") -> bytes:
    """A key: the bytes of ``path`` (at least 16), which must be private
    (``check_private_file``; the cluster key by default, ``flag`` and
    ``holder_can`` name another key in the errors). Raises
    :class:`InvalidArgument` when it cannot be read or is too short,
    :class:`UnsafePath` when group or others may read it (the error says
    ``chmod 600``)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = f.read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {flag} {path}: {exc.strerror}") from exc
    check_private_file(path, st, flag, f"anyone holding the key can {holder_can}")
    if len(key) < MIN_KEY_BYTES:
        raise InvalidArgument(f"{flag} {path} holds {len(key)} bytes; a key needs at "
                              f"least {MIN_KEY_BYTES}")
    return key


class DirLock:
    """An exclusive, non-blocking ``flock`` on ``DIR/.rsc-launch.lock``.

    Held from :meth:`acquire` until :meth:`release` (or until the process
    dies: the kernel drops the lock, so a launcher killed with SIGKILL leaves
    no stale lock). The file holds the holder's pid, for the error message."""

    NAME = ".rsc-launch.lock"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, self.NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`PathInUse` naming the holder's pid."""
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise PathInUse(f"{self.directory} is in use by another rsc launcher (pid {holder}) "
                                "whose cluster is still running; stop it first, or use another "
                                "--dir") from None
            # A holder releasing the lock unlinks the file first: if the path
            # no longer names the file we locked, lock the new one instead.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: see acquire
        except FileNotFoundError:
            pass
        os.close(fd)
