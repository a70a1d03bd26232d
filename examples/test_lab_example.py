"""How a project tests its own computations in a simulated cluster with rsc's
pytest plugin.

``rsc_lab(scenario)`` runs ``async def scenario(lab)`` over seeds: real rsc
code (the origin runtime, the node server with your registry) in one process,
in virtual time, over a simulated network with the faults the scenario
schedules; after every run rsc's guarantees are checked. A failure names the
seed that replays it. Run: ``python -m pytest examples/test_lab_example.py``
(``--rsc-lab-seeds=500`` for a longer search).
"""

import asyncio

import pytest

import rsc


@pytest.mark.rsc_lab(registry="examples.demo_registry:registry", seeds=30, network="lan")
def test_squares_survive_a_partition_by_retrying_elsewhere(rsc_lab) -> None:
    async def scenario(lab):
        for n in ("n1", "n2"):
            await lab.start_node(n, rsc_lab.registry)
        rt = await lab.start_origin("o1")
        cut = lab.random.uniform(0.0, 0.3)
        lab.at(cut, lab.partition, ["n1"], ["o1", "n2"])
        lab.at(cut + lab.random.uniform(0.5, 3.0), lab.heal)
        async with rsc.region(rt.cx(seed=lab.seed)) as r:
            hs = [rsc.spawn_remote(r.cx, "n1", "slow_sum", 50 + i, lease=1.0,
                                   on_lease_expired=rsc.lease.retry(2, nodes=["n2"]))
                  for i in range(10)]
            for i, h in enumerate(hs):
                assert await h.join() == sum(range(50 + i))

    reports = rsc_lab(scenario)
    assert len(reports) == 30
    assert all(r.figures["faults"] >= 1 for r in reports)  # every seed cut the network


@pytest.mark.rsc_lab(registry="examples.demo_registry:registry")
def test_a_failed_expectation_names_the_seed_that_replays_it(rsc_lab) -> None:
    async def scenario(lab):
        await lab.start_node("n1", rsc_lab.registry)
        rt = await lab.start_origin("o1")
        x = lab.random.randrange(10)
        await asyncio.sleep(3600)  # an hour of virtual time: no wall time
        assert await rsc.spawn_remote(rt.cx(seed=lab.seed), "n1", "square", x).join() != 49

    with pytest.raises(pytest.fail.Exception, match=r"seeds=\[\d+\]") as failed:
        rsc_lab(scenario, seeds=100)
    seed = int(str(failed.value).split("seeds=[")[1].split("]")[0])
    with pytest.raises(pytest.fail.Exception, match="VIOLATION run"):
        rsc_lab(scenario, seeds=[seed])  # the same failure again
