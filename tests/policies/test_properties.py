"""Properties every policy keeps, checked with Hypothesis on the discrete-event driver.

- Deterministic: events that happen at the same time (submits, job ends) may
  reach the policy in any order; the decisions are the same.
- No starvation in the fair policies: a tenant that stays backlogged starts a
  job within a bounded time, again and again, and (except under drf, which
  looks only at what runs now) gets at least half its entitlement over time.
- Snapshots are plain data (JSON), and a restored policy decides like the original.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policysim import Sim, shuffler, weights

from fairpool.policies.core import PolicyBase
from fairpool.policies.dispatcher import Dispatcher
from fairpool.policies.registry import make_policy

ALL = ["fifo", "round-robin", "fair-share", "decayed-usage", "drf", "priority"]
FAIR = ["round-robin", "fair-share", "decayed-usage", "drf", "priority"]
TENANTS = ["ann", "bob", "cat", "dan"]

# (tenant index, runtime, submit time, cpus): coarse values so that many events coincide
_jobs = st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.5, 1.0, 2.0]), st.integers(0, 8),
                           st.sampled_from([1.0, 1.0, 2.0])), min_size=1, max_size=40)
_weights = st.lists(st.integers(1, 4), min_size=4, max_size=4)


def _run(name: str, jobs: list[tuple[int, float, int, float]], tenant_weights: list[int],
         nodes: int, seed: int | None) -> list[tuple[float, str]]:
    sim = Sim(make_policy(name), nodes=[(2.0, 0, 0)] * nodes,
              tenants=weights(**dict(zip(TENANTS, map(float, tenant_weights), strict=True))),
              shuffle=shuffler(seed) if seed is not None else None)
    for tenant, runtime, at, cpus in jobs:
        sim.job(TENANTS[tenant], runtime, float(at), cpus=cpus)
    sim.run(1000)
    return sim.starts


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs=_jobs, tenant_weights=_weights, nodes=st.integers(1, 3), seed=st.integers(0, 2**32))
def test_decisions_do_not_depend_on_the_order_of_simultaneous_events(
        name: str, jobs: list[tuple[int, float, int, float]], tenant_weights: list[int], nodes: int,
        seed: int) -> None:
    assert _run(name, jobs, tenant_weights, nodes, seed) == _run(name, jobs, tenant_weights, nodes, None)


@pytest.mark.parametrize("name", FAIR)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(2, 4), tenant_weights=_weights, slots=st.integers(1, 6),
       runtimes=st.lists(st.sampled_from([0.25, 0.5, 1.0, 3.0]), min_size=4, max_size=4))
def test_a_backlogged_tenant_is_never_starved(name: str, count: int, tenant_weights: list[int],
                                              slots: int, runtimes: list[float]) -> None:
    horizon = 200.0
    names = TENANTS[:count]
    sim = Sim(make_policy(name), slots=slots,
              tenants=weights(**{t: float(w) for t, w in zip(names, tenant_weights, strict=False)}))
    for tenant, runtime in zip(names, runtimes, strict=False):
        sim.jobs(tenant, runtime, math.ceil(horizon * slots / runtime) + 10)
    sim.run(horizon)
    for tenant in names:
        starts = [0.0] + [t for t, uid in sim.starts if uid.startswith(tenant + ".")] + [horizon]
        longest_wait = max(b - a for a, b in zip(starts, starts[1:], strict=False))
        assert longest_wait <= 40.0, f"{tenant} waited {longest_wait} s"
    if name != "drf":
        shares = sim.shares(50, horizon)
        total = sum(tenant_weights[:count])
        for i, tenant in enumerate(names):
            assert shares.get(tenant, 0.0) >= 0.5 * tenant_weights[i] / total, (tenant, shares)


def _busy(name: str) -> Sim:
    sim = Sim(make_policy(name), slots=3, tenants=weights(ann=1, bob=2, cat=1))
    for tenant, runtime in (("ann", 1.0), ("bob", 2.5), ("cat", 0.5)):
        sim.jobs(tenant, runtime, 200)
    sim.run(20.25)
    return sim


@pytest.mark.parametrize("name", ALL)
def test_a_snapshot_is_plain_json(name: str) -> None:
    state = _busy(name).dispatcher.snapshot()
    assert json.loads(json.dumps(state)) == state
    assert state["policy"] == name


@pytest.mark.parametrize("name", ["fair-share", "decayed-usage", "priority"])
def test_a_policy_restored_from_its_snapshot_ranks_tenants_as_before(name: str) -> None:
    sim = _busy(name)
    original = sim.dispatcher.policy
    state = json.loads(json.dumps(sim.dispatcher.snapshot()))
    restored = Dispatcher(make_policy(name), weights(ann=1, bob=2, cat=1), sim.capacity)
    assert restored.restore(state, sim.now)
    for job, started in sim.running_jobs():
        restored.resume(job, started)
    for job in sim.dispatcher.order():
        restored.enqueue(job)
    assert isinstance(original, PolicyBase) and isinstance(restored.policy, PolicyBase)
    assert restored.policy.ranking() == original.ranking()
    assert len(restored) == len(sim.dispatcher)
