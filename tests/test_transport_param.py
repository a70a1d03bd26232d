"""A Runtime and a NodeServer handed the same in-memory transport: a whole
origin-node pair in one event loop, with no socket and no file, as a user's
unit test would run it (docs/DESIGN.md, "Transports")."""

from __future__ import annotations

import asyncio
import os

import pytest

import rsc
from rsc import Runtime, spawn_remote
from rsc.node.server import NodeServer
from rsc.transport.memory import MemoryTransport
from tests.registries import basic


def test_a_runtime_and_a_node_over_an_in_memory_transport() -> None:
    async def main() -> None:
        net = MemoryTransport(record=True)
        node = NodeServer("worker-1", "unix:/nowhere/worker-1.sock", basic, transport=net)
        await node.start()
        try:
            async with Runtime({"worker-1": "unix:/nowhere/worker-1.sock"}, transport=net) as rt:
                assert await spawn_remote(rt.cx(), "worker-1", "square", 12).join() == 144
                assert await spawn_remote(rt.cx(), "worker-1", "echo", b"hi").join() == b"hi"
        finally:
            await node.shutdown(0.5)
        assert net.records  # every chunk both ways was recorded
        assert not os.path.exists("/nowhere")

    asyncio.run(main())


def test_nothing_listening_on_the_transport_is_node_unreachable() -> None:
    async def main() -> None:
        rt = Runtime({"worker-1": "unix:/nowhere/w.sock"}, transport=MemoryTransport(),
                     connect_timeout_s=0.2)
        async with rt:
            with pytest.raises(rsc.NodeUnreachable):
                await asyncio.wait_for(spawn_remote(rt.cx(), "worker-1", "square", 1).join(), 10)

    asyncio.run(main())


def test_a_transport_that_is_not_one_is_refused() -> None:
    with pytest.raises(rsc.InvalidArgument, match="transport"):
        Runtime({"worker-1": "unix:/x.sock"}, transport=object())  # type: ignore[arg-type]
