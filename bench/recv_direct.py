"""CPU per large frame received, read straight into the message's bytes or not.

One process: a raw Unix-socket sender writes ``N`` RESULT frames whose
payload is ``SIZE`` bytes (as parts, as rsc writes them), and a
``FramedConnection`` receives them, with reading through the stand-in
protocol (``LargeFrameReceiver``) on or off (``_receive_direct``). Prints the
process's user + system CPU per frame (both ends) and the wall time.

    python bench/recv_direct.py SIZE N on|off [uvloop|asyncio] [--keep-freed-memory]
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import uvloop

from rsc._core import envelope
from rsc._core import messages as m
from rsc.heap import keep_freed_memory
from rsc.transport.connection import FramedConnection


async def receive(size: int, n: int, direct: bool) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    parts = envelope.encode_frame_parts(m.ResultDelivery("node-1", 4, 7, 0, os.urandom(size), 10))
    a, b = socket.socketpair()
    done = loop.create_future()
    got = 0

    def on_messages(conn: FramedConnection, msgs: list) -> None:
        nonlocal got
        got += len(msgs)
        if got == n and not done.done():
            done.set_result(None)

    conn = FramedConnection(on_messages=on_messages, on_protocol_error=lambda c, e: done.set_exception(e),
                            on_close=lambda c, e: None)
    conn._receive_direct = direct
    await loop.create_unix_connection(lambda: conn, sock=a)
    sender, _ = await loop.create_unix_connection(asyncio.Protocol, sock=b)
    t0, w0 = os.times(), time.perf_counter()
    for _ in range(n):
        sender.writelines(parts if isinstance(parts, tuple) else (parts,))
        while sender.get_write_buffer_size() > 64 * 1024 * 1024:
            await asyncio.sleep(0)
    await done
    t1, w1 = os.times(), time.perf_counter()
    sender.close()
    conn.abort()
    return (t1[0] + t1[1] - t0[0] - t0[1]) / n, (w1 - w0) / n


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--keep-freed-memory"]
    if len(args) < 3 or args[2] not in ("on", "off"):
        sys.exit(__doc__)
    if "--keep-freed-memory" in sys.argv:
        keep_freed_memory()
    size, n, direct = int(args[0]), int(args[1]), args[2] == "on"
    kind = args[3] if len(args) > 3 else "uvloop"
    runner = uvloop.run if kind == "uvloop" else asyncio.run
    cpu, wall = runner(receive(size, n, direct))
    print(f"{size} bytes, direct {args[2]}, {kind}, keep freed memory "
          f"{'--keep-freed-memory' in sys.argv}: CPU {cpu * 1e3:.3f} ms/frame, wall {wall * 1e3:.3f} ms/frame")


if __name__ == "__main__":
    main()
