"""Registries the catalogue tests serve on real nodes
(``tests.registries_catalogue:greeter`` and ``:big``).

Node processes import this module by name, so keep it free of test-only
imports: only ``rsc`` and the standard library.
"""

from __future__ import annotations

from typing import Any

from rsc import Registry

greeter = Registry()


@greeter.computation("greet", codec="msgpack")
def greet(cx: Any, name: str) -> str:
    """Say hello to ``name``.

    Only the first line of this docstring is in the catalogue.
    """
    return f"hello {name}"


@greeter.computation("shout")
async def shout(cx: Any, data: bytes) -> bytes:
    """Upper-case raw bytes."""
    return data.upper()


@greeter.computation("checksum", codec="msgpack", inline=True)
def checksum(cx: Any, data: bytes) -> int:
    """The sum of the bytes of a msgpack bin value."""
    return sum(data)


@greeter.computation("undocumented")
def undocumented(cx: Any, data: bytes) -> bytes:
    return data


@greeter.computation("relay", codec="msgpack")
async def relay(cx: Any, req: dict) -> list:
    """Spawn req["computation"] on req["node"] with req["input"]; its output or the error."""
    import rsc

    out: list = []
    for _ in range(req.get("times", 1)):
        try:
            out.append(["ok", await rsc.spawn_remote(cx, req["node"], req["computation"],
                                                     req["input"]).join()])
        except rsc.SpawnRejected as exc:
            out.append([type(exc).__name__, str(exc)])
    return out


# More computations than a WELCOME's 32 KiB of catalogue holds: long names
# and long docstrings, then one msgpack computation at the very end.
big = Registry()


def _make_op(i: int) -> Any:
    def op(cx: Any, data: bytes) -> bytes:
        return data

    op.__doc__ = f"Operation {i}: " + "d" * 400  # cut to 240 bytes in the catalogue
    return op


for _i in range(400):
    big.register(f"op_{_i:04d}_" + "n" * 60, _make_op(_i))


@big.computation("last_square", codec="msgpack")
def last_square(cx: Any, x: int) -> int:
    """Square ``x``: the last computation of a registry too big for the handshake."""
    return x * x
