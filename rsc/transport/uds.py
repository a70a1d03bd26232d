"""Unix-domain-socket listener with the protocol's permissions: the socket's
directory is 0700, the socket 0600, and it serves only once ready."""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Callable

from rsc.errors import InvalidArgument


def prepare_socket_path(path: str) -> None:
    """Create the socket's directory (0700) and remove a stale socket file."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise InvalidArgument(f"{path} exists and is not a socket; refusing to replace it")
    os.unlink(path)


async def listen_unix(path: str, factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer:
    prepare_socket_path(path)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(factory, path, start_serving=False)
    os.chmod(path, 0o600)
    await server.start_serving()
    return server


async def connect_unix(path: str, factory: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_unix_connection(factory, path)
    return protocol
