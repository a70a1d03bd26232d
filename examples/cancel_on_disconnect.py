#!/usr/bin/env python3
"""A web-style service that cancels remote work when its client goes away.

A plain asyncio streams server (no web framework) on 127.0.0.1: a client
sends one line, the number of seconds of work it wants; the server runs
that work as ``crunch`` on a node of a 1-node local cluster and writes the
answer back. Each request runs in a region of its own; while the work runs
the server also watches the client's connection, and when the client hangs
up first it cancels the region: the cancel reaches the node, the computation
stops at its next ``cx.checkpoint()``, and the node answers Cancelled.

The program plays both sides: one client that waits for its answer, then one
that hangs up after 0.3 s of a 30 s job.
Run: python examples/cancel_on_disconnect.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import rsc  # noqa: E402
from rsc.launch import LocalCluster  # noqa: E402

NODE = "worker-1"


class Service:
    """Serves one request per connection; ``log`` holds what happened to each."""

    def __init__(self, rt: rsc.Runtime) -> None:
        self.rt = rt
        self.log: asyncio.Queue[str] = asyncio.Queue()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seconds = float((await reader.readline()).decode())
        slices = None
        async with rsc.region(self.rt.cx()) as r:
            h = rsc.spawn_remote(r.cx, NODE, "crunch", seconds)
            r.spawn(self.watch_client, reader, r)  # a local task: cancels the region on hang-up
            slices = await h.join()
            r.cancel()  # the answer is in: stop watching the client
        # A region cancelled from inside exits quietly, after its remote work
        # has ended on the node: here slices is None if the client went away.
        if slices is None:
            outcome = await h.outcome()
            await self.log.put(f"client went away: the node answered {outcome.kind.name.lower()} "
                               f"({outcome.value})")
        else:
            writer.write(f"{slices}\n".encode())
            await writer.drain()
            await self.log.put(f"answered a {seconds:g} s job")
        writer.close()

    async def watch_client(self, cx: rsc.Cx, reader: asyncio.StreamReader, r: rsc.Region) -> None:
        await reader.read()  # returns b"" when the client closes its end
        r.cancel(rsc.CancelReason(rsc.CancelKind.USER, "client disconnected"))


async def clients(port: int, service: Service) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"0.05\n")
    answer = (await reader.readline()).decode().strip()
    writer.close()
    print(f"client 1 got {'an answer' if answer.isdigit() else repr(answer)}")
    print(f"server: {await service.log.get()}")

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"30\n")
    await asyncio.sleep(0.3)
    writer.close()  # the client goes away
    hung_up = time.monotonic()
    print("client 2 hung up after 0.3 s of a 30 s job")
    print(f"server: {await service.log.get()}")
    # crunch checks for a cancel every 5 ms: it stops well within the node's
    # 2 s --cancel-grace, after which a plain function is interrupted anyway
    print(f"the node stopped the work {time.monotonic() - hung_up:.2f} s after the hang-up")


async def serve(nodes: dict[str, str]) -> None:
    async with rsc.Runtime(nodes) as rt:
        service = Service(rt)
        server = await asyncio.start_server(service.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await clients(port, service)


def main() -> int:
    with LocalCluster(1, "examples.guide_registry:registry", cwd=ROOT) as cluster:
        asyncio.run(serve(cluster.nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
