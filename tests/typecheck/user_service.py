"""A user's service, as ``mypy --strict`` sees it after ``pip install rsc``
(checked by tests/test_typing.py; never imported or run)."""

from __future__ import annotations

from typing import Any

import rsc
from rsc import Registry, Runtime, spawn_remote

registry = Registry()


@registry.computation("square", codec="msgpack")
def square(cx: rsc.Cx, x: int) -> int:
    return x * x


@registry.computation
async def greet(cx: rsc.Cx, name: str) -> str:
    return f"hi {name}"


async def main() -> int:
    async with Runtime({"w1": "unix:/tmp/w1.sock"}) as rt:
        async with rsc.region(rt.cx()) as r:
            h: rsc.RemoteHandle = spawn_remote(r.cx, "w1", "square", 7, on_lease_expired=rsc.lease.retry(2))
            out: Any = await h.join()
            lease: rsc.Lease = h.lease
            state: rsc.LeaseState = lease.state
            try:
                await h.join()
            except rsc.CapabilityDenied as exc:
                print(exc.denied_by)
            except rsc.RemoteFailed as exc:
                print(exc.message)
            print(out, state, square(r.cx, 3) + 1, await greet(r.cx, "x"))
    return 0


reveal_type(spawn_remote)  # noqa: F821 - mypy's own
reveal_type(square)  # noqa: F821
reveal_type(rsc.Budget)  # noqa: F821
