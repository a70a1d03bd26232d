"""A cancel racing a completion: each task is aborted at a moment drawn
around its own end. Whichever wins, the handle gets exactly one outcome
(its value or Cancelled), and the node's books balance.
Run: rsc lab run examples/lab/cancel_race.py --seed 1
"""

import asyncio

import rsc
from rsc import spawn_remote

from lab_registry import registry

LAB = dict(network="lan", shuffle=True)


async def scenario(lab):
    await lab.start_node("n1", registry)
    rt = await lab.start_origin("o1")
    cx = rt.cx(seed=lab.seed)
    runs = []
    for i in range(30):
        d = lab.random.uniform(0.01, 0.2)
        h = spawn_remote(cx, "n1", "work", [i, d])
        lab.loop.call_later(d + lab.random.uniform(-0.002, 0.002), h.abort)
        runs.append((i, h))
    for i, h in runs:
        out = await h.outcome()
        if out.is_success:
            assert rsc.types.unpack_value(out.unwrap()) == 2 * i
        else:
            assert out.kind is rsc.types.OutcomeKind.CANCELLED, out
    await asyncio.sleep(1)
