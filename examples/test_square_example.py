"""How a project tests its own computations with rsc's pytest plugin.

rsc installs a pytest plugin: ``rsc_cluster`` starts real nodes serving your
registry for one test (and stops them by pid after it), ``rsc_run`` runs an
``async def main(rt)`` with a Runtime open on them. Run:
``python -m pytest examples/test_square_example.py``.
"""

import pytest

import rsc


@pytest.mark.rsc_cluster(registry="examples.demo_registry:registry", nodes=2)
def test_square_on_every_node(rsc_cluster, rsc_run) -> None:
    async def main(rt: rsc.Runtime) -> list[int]:
        cx = rt.cx()
        return [await rsc.spawn_remote(cx, node, "square", 12).join() for node in rsc_cluster.nodes]

    assert rsc_run(main) == [144, 144]


@pytest.mark.rsc_cluster(registry="examples.demo_registry:registry", nodes=1)
def test_an_unknown_computation_is_refused(rsc_run) -> None:
    async def main(rt: rsc.Runtime) -> None:
        with pytest.raises(rsc.UnknownComputation):
            await rsc.spawn_remote(rt.cx(), "worker-1", "no_such_thing", 1).join()

    rsc_run(main)
