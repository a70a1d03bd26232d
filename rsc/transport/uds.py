"""The Unix-domain-socket transport, with the protocol's permissions: the
socket is 0600 in a directory that is rsc's own (created 0700) or safe (see
:mod:`rsc.localfs`), it never takes over a path something still answers on,
and it serves only once ready.

:class:`UnixTransport` is this module as a :class:`rsc.transport.base.Transport`;
the functions below are its parts."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
import sys
from typing import Any, Callable

from rsc.logs import get_logger
from rsc.errors import InvalidArgument, PathInUse
from rsc.localfs import ensure_private_dir
from rsc.transport.address import Address
from rsc.transport.base import P, StreamProtocol

log = get_logger("rsc.transport")

# From CPython 3.13 on, asyncio's (and uvloop's) Unix server unlinks its socket
# file when it closes. rsc keeps that rule in one place, remove_socket (which
# unlinks only the file this listener bound), so it asks them not to; 3.11
# and 3.12 never unlink and do not take the argument.
_NO_CLEANUP: dict[str, Any] = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}

#: (st_dev, st_ino) of the socket file a listener created.
SocketId = tuple[int, int]


def dead_socket_error(path: str, timeout_s: float = 1.0) -> OSError | None:
    """The error of connecting to ``path`` when nobody can be listening there
    (no such file, or connection refused); None when something accepted the
    connection or may be there (a full backlog, a timeout, no permission)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        return exc
    except OSError:
        return None
    finally:
        sock.close()
    return None


def prepare_socket_path(path: str) -> None:
    """Make ``path`` free to bind: its directory exists and is safe (created
    0700 when missing, an existing one's mode untouched), and a stale socket
    there (nobody answers on it) is removed.

    Raises :class:`UnsafePath` for an unsafe directory, :class:`PathInUse`
    when something answers on ``path``, :class:`InvalidArgument` when ``path``
    is a file that is not a socket."""
    ensure_private_dir(os.path.dirname(os.path.abspath(path)), "socket directory")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise InvalidArgument(f"{path} exists and is not a socket; refusing to replace it")
    if dead_socket_error(path) is None:
        raise PathInUse(f"{path} is in use: a process (another node?) accepts connections on it; "
                        "stop it first, or listen on another path")
    log.info("replacing stale socket %s (nobody answers on it)", path)
    os.unlink(path)


async def listen_unix(path: str, factory: Callable[[], StreamProtocol]
                      ) -> tuple[asyncio.AbstractServer, SocketId]:
    """Bind ``path`` (see :func:`prepare_socket_path`), make the socket 0600,
    then start serving. Returns the server and the socket file's identity, for
    :func:`remove_socket`."""
    prepare_socket_path(path)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(factory, path, start_serving=False, **_NO_CLEANUP)  # type: ignore[arg-type]  # asyncio calls only StreamProtocol's methods
    st = os.lstat(path)
    os.chmod(path, 0o600)
    await server.start_serving()
    return server, (st.st_dev, st.st_ino)


def remove_socket(path: str, ident: SocketId | None) -> bool:
    """Unlink ``path`` only if it is still the socket file ``ident`` names (a
    later listener may have replaced a stale one); True if it was removed."""
    if ident is None:
        return False
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) != ident:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


async def connect_unix(path: str, factory: Callable[[], P]) -> P:
    """Connect to the Unix socket ``path``; the protocol made by ``factory``."""
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_unix_connection(factory, path)  # type: ignore[type-var]  # asyncio calls only StreamProtocol's methods
    return protocol


def peer_uid(transport: asyncio.BaseTransport | None) -> int | None:
    """The uid of the process at the other end of a Unix-socket connection
    (SO_PEERCRED: the kernel's record of who connected), or None where the
    platform or the transport cannot tell."""
    sock = None if transport is None else transport.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class UnixListener:
    """A listening Unix socket (a :class:`rsc.transport.base.Listener`).
    ``remove_socket()`` unlinks its socket file if it is still this listener's."""

    def __init__(self, path: str, server: asyncio.AbstractServer, ident: SocketId) -> None:
        self.path = path
        self.server = server
        self.socket_id = ident

    def close(self) -> None:
        """Stop accepting connections."""
        self.server.close()

    async def wait_closed(self) -> None:
        """Wait until the server has closed."""
        await self.server.wait_closed()

    def remove_socket(self) -> bool:
        """See :func:`remove_socket`."""
        return remove_socket(self.path, self.socket_id)


class UnixTransport:
    """Unix domain sockets as a :class:`rsc.transport.base.Transport`: ``unix:``
    addresses only (anything else is an :class:`InvalidArgument`)."""

    #: The address schemes it dials and serves (``Runtime`` refuses others at once).
    schemes = ("unix",)

    async def connect(self, address: Address, protocol_factory: Callable[[], P]) -> P:
        """Connect to a ``unix:PATH`` address; the protocol made by ``protocol_factory``."""
        return await connect_unix(_unix_path(address), protocol_factory)

    async def listen(self, address: Address, protocol_factory: Callable[[], StreamProtocol]
                     ) -> UnixListener:
        """Serve a ``unix:PATH`` address (socket mode 0600), each connection with a
        protocol made by ``protocol_factory``."""
        path = _unix_path(address)
        server, ident = await listen_unix(path, protocol_factory)
        return UnixListener(path, server, ident)

    def __repr__(self) -> str:
        return "UnixTransport()"


def _unix_path(address: Address) -> str:
    if address.scheme != "unix":
        raise InvalidArgument(f"the Unix transport serves unix: addresses only, not {address}")
    return address.path
