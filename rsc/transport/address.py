"""Node addresses: ``unix:/path/to/socket`` (default) or ``tcp:HOST:PORT``
(IPv6 hosts in brackets: ``tcp:[::1]:7000``; port 0 asks a listener for any
free port)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from rsc.errors import InvalidArgument

#: The longest Unix socket path the kernel takes, in bytes: ``sun_path`` is
#: 108 bytes on Linux (104 on macOS and the BSDs), its final NUL included.
MAX_UNIX_PATH_BYTES = 103 if sys.platform == "darwin" else 107


def check_unix_path(path: str) -> str:
    """``path`` if a Unix socket can be bound or dialled there, else
    ``InvalidArgument`` saying its length and the limit."""
    n = len(os.fsencode(path))
    if n > MAX_UNIX_PATH_BYTES:
        raise InvalidArgument(
            f"Unix socket path {path!r} is {n} bytes; the kernel takes at most "
            f"{MAX_UNIX_PATH_BYTES}. Use a shorter directory (e.g. under /tmp or "
            "$XDG_RUNTIME_DIR) or a shorter node name")
    return path


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str  # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Address:
        """The address of ``unix:PATH``, ``tcp:HOST:PORT`` or ``tcp:[IPV6]:PORT``;
        InvalidArgument saying what is wrong otherwise."""
        if not isinstance(text, str) or not text:
            raise InvalidArgument(f"an address must be a non-empty str like 'unix:/run/rsc/w1.sock', got {text!r}")
        if text.startswith("unix:"):
            path = text[5:]
            if not path:
                raise InvalidArgument(f"address {text!r} names no socket path")
            return cls("unix", path=check_unix_path(path))
        if text.startswith("tcp:"):
            host, sep, port = text[4:].rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise InvalidArgument(f"address {text!r} must look like tcp:HOST:PORT "
                                      "(tcp:[ADDR]:PORT for IPv6), with a port from 0 to 65535")
            if host.startswith("[") != host.endswith("]"):
                raise InvalidArgument(f"address {text!r} has an unbalanced bracket; write IPv6 "
                                      "hosts as tcp:[::1]:PORT")
            return cls("tcp", host=host.strip("[]"), port=int(port))
        if text.startswith("/") or text.startswith("."):
            return cls("unix", path=check_unix_path(text))
        raise InvalidArgument(f"address {text!r} must start with 'unix:' or 'tcp:'")

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"
