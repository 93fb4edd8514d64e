"""priority: strict tiers, fair-share inside a tier, min guarantees first, max never exceeded."""

from __future__ import annotations

from policysim import Sim

from fairpool.policies.priority import PriorityPolicy
from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig


def test_the_highest_tier_takes_the_pool_while_it_is_backlogged() -> None:
    tenants = {"urgent": TenantConfig("urgent", tier=1), "batch": TenantConfig("batch", weight=10)}
    sim = Sim(PriorityPolicy(), slots=4, tenants=tenants)
    sim.jobs("batch", 1.0, 100)
    sim.jobs("urgent", 1.0, 40, at=5.0)
    sim.run(30)
    assert sim.shares(6, 15) == {"urgent": 1.0}
    assert sim.shares(16, 30) == {"batch": 1.0}


def test_inside_a_tier_tenants_share_by_weight() -> None:
    tenants = {"a": TenantConfig("a", weight=1, tier=2), "b": TenantConfig("b", weight=3, tier=2),
               "low": TenantConfig("low")}
    sim = Sim(PriorityPolicy(), slots=4, tenants=tenants)
    for tenant in ("a", "b", "low"):
        sim.jobs(tenant, 1.0, 200)
    sim.run(40)
    shares = sim.shares(5, 40)
    assert abs(shares["a"] - 0.25) <= 0.02 and abs(shares["b"] - 0.75) <= 0.02
    assert "low" not in shares


def test_a_min_guarantee_is_served_before_any_tier() -> None:
    tenants = {"urgent": TenantConfig("urgent", tier=5),
               "kept": TenantConfig("kept", min=Resources(cpus=2.0))}
    sim = Sim(PriorityPolicy(), slots=8, tenants=tenants)
    sim.jobs("urgent", 1.0, 200)
    sim.jobs("kept", 1.0, 200)
    sim.run(20)
    assert abs(sim.shares(2, 20)["kept"] - 2 / 8) <= 0.01


def test_a_max_cap_is_never_exceeded() -> None:
    tenants = {"capped": TenantConfig("capped", tier=1, max=Resources(cpus=3.0))}
    sim = Sim(PriorityPolicy(), slots=8, tenants=tenants)
    sim.jobs("capped", 1.0, 100)
    sim.jobs("other", 1.0, 100)
    most = 0
    for step in range(1, 21):
        sim.run(float(step))
        most = max(most, sim.running("capped"))
    assert most == 3
    assert abs(sim.shares(1, 20)["capped"] - 3 / 8) <= 0.01


def test_explain_says_which_tier_goes_first() -> None:
    tenants = {"urgent": TenantConfig("urgent", tier=1)}
    sim = Sim(PriorityPolicy(), slots=1, tenants=tenants)
    sim.jobs("urgent", 10.0, 3)
    low = sim.job("low", 1.0)
    sim.run(1)
    explanation = sim.dispatcher.explain(low, 1.0)
    assert "tier 0, waits for tier 1" in explanation.reason
    assert explanation.entitlement == 0.0
