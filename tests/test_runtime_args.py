"""A Runtime's and a Cx's seconds are checked where they are given: a bad
one is an ``InvalidArgument`` naming it, never a silent default (a lease of
0 s fell back to the runtime's 30 s) and never a value that breaks later
(NaN or infinite seconds in a timer)."""

from __future__ import annotations

import math

import pytest

from rsc import Runtime
from rsc.cx import RemoteCap
from rsc.errors import InvalidArgument

CLUSTER = {"w1": "unix:/nonexistent/w1.sock"}
BAD = [0, -1, 0.0, math.nan, math.inf, 10**400, True, "5", None]


@pytest.mark.parametrize("name", ["default_lease_s", "connect_timeout_s", "backoff_max_s"])
@pytest.mark.parametrize("bad", BAD)
def test_a_runtime_refuses_seconds_that_are_not_positive_and_finite(name: str, bad: object) -> None:
    with pytest.raises(InvalidArgument, match=f"{name} must be a positive, finite number of seconds"):
        Runtime(CLUSTER, **{name: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [b for b in BAD if b is not None])
def test_a_cx_refuses_a_default_lease_that_is_not_positive_and_finite(bad: object) -> None:
    rt = Runtime(CLUSTER)
    with pytest.raises(InvalidArgument, match="default_lease_s must be a positive, finite number"):
        rt.cx(default_lease_s=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="default_lease_s must be a positive, finite number"):
        RemoteCap(rt, default_lease_s=bad)  # type: ignore[arg-type]


def test_given_seconds_are_kept_and_none_takes_the_runtimes() -> None:
    rt = Runtime(CLUSTER, default_lease_s=12, connect_timeout_s=0.5, backoff_max_s=3)
    assert (rt.default_lease_s, rt.connect_timeout_s, rt.backoff_max_s) == (12.0, 0.5, 3.0)
    assert rt.cx().remote_cap.default_lease_s == 12.0
    assert rt.cx(default_lease_s=0.25).remote_cap.default_lease_s == 0.25
