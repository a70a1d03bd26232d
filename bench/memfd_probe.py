"""Would passing large payloads as memfds (SCM_RIGHTS) beat the Unix socket?

An echo of SIZE-byte payloads between two processes on one host, each side
ending with the payload in a fresh buffer of its own (as a decoded message
holds its input or output), one payload in flight:

``socket``
    the payload written to a Unix stream socket and read into a fresh buffer
    (``recv_into``): the kernel copies it twice (into the socket's buffers and
    out), no copy in user space.
``memfd``
    the payload written into a fresh ``memfd_create`` file, the descriptor
    passed with SCM_RIGHTS beside an 8-byte length, and read by the receiver
    into a fresh buffer (``readv``): also two kernel copies (into the file's
    pages, out of them), plus a file and its pages per payload.

Prints MB/s of payload moved both ways, the median of ROUNDS rounds::

    python bench/memfd_probe.py                 # 1 MiB and 16 MiB
    python bench/memfd_probe.py 4194304 20      # SIZE, round trips per round

A memfd path is only worth building in rsc if it is clearly ahead here.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import time

ROUNDS = 5


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise EOFError
        got += k
    return buf


def _send_socket(sock: socket.socket, data: bytes | bytearray) -> None:
    sock.sendall(len(data).to_bytes(8, "big"))
    sock.sendall(data)


def _recv_socket(sock: socket.socket) -> bytearray:
    return _recv_exact(sock, int.from_bytes(_recv_exact(sock, 8), "big"))


def _send_memfd(sock: socket.socket, data: bytes | bytearray) -> None:
    fd = os.memfd_create("rsc-payload", os.MFD_CLOEXEC)
    try:
        view, done = memoryview(data), 0
        while done < len(data):
            done += os.write(fd, view[done:])
        socket.send_fds(sock, [len(data).to_bytes(8, "big")], [fd])
    finally:
        os.close(fd)


def _recv_memfd(sock: socket.socket) -> bytearray:
    msg, fds, _flags, _addr = socket.recv_fds(sock, 8, 1)
    if len(msg) != 8 or len(fds) != 1:
        raise EOFError
    fd, n = fds[0], int.from_bytes(msg, "big")
    try:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            got += os.preadv(fd, [view[got:]], got)
        return buf
    finally:
        os.close(fd)


WAYS = {"socket": (_send_socket, _recv_socket), "memfd": (_send_memfd, _recv_memfd)}


def _echo_child(sock: socket.socket, way: str) -> None:
    send, recv = WAYS[way]
    try:
        while True:
            send(sock, recv(sock))
    except (EOFError, ConnectionError, OSError):
        pass


def measure(way: str, size: int, trips: int) -> float:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the echo side
        parent.close()
        _echo_child(child, way)
        os._exit(0)
    child.close()
    send, recv = WAYS[way]
    data = bytes(range(256)) * (size // 256)
    try:
        send(parent, data)
        assert recv(parent) == data
        rates = []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            for _ in range(trips):
                send(parent, data)
                recv(parent)
            rates.append(2 * size * trips / (time.perf_counter() - t) / 1e6)
        return statistics.median(rates)
    finally:
        parent.close()
        os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    sizes = [int(argv[0])] if argv else [1 << 20, 16 << 20]
    for size in sizes:
        trips = int(argv[1]) if len(argv) > 1 else max(4, (256 << 20) // size)
        # the socket measured before and after the memfd (the later figure kept)
        rates = {way: measure(way, size, trips) for way in ("socket", "memfd", "socket")}
        print(f"{size:>10} B: socket {rates['socket']:8,.0f} MB/s, memfd {rates['memfd']:8,.0f} MB/s "
              f"(memfd / socket {rates['memfd'] / rates['socket']:.2f}), load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
