"""fair-share (start-time fair queuing): long-run shares are the weights, memory makes it so.

The POLICIES.md case: weights 1:2:3 on 8 slots with equal jobs. A memoryless
comparator ("running slots / weight") locks onto whole slots and gives
0.25/0.375/0.375; the virtual tags give 1/6, 2/6, 3/6 of the slot-time.
"""

from __future__ import annotations

import pytest
from policysim import Sim, job, restarted_midway, weights

from fairpool.policies.core import PolicyBase
from fairpool.policies.fairshare import FairSharePolicy
from fairpool.policies.heap import Key
from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig


class RunningSlotsPerWeight(PolicyBase):
    """The naive comparator: fewest running slots per unit of weight goes first, no memory."""

    name = "naive"

    def _key(self, tenant: str) -> Key:
        return (self.running_rate(tenant) / self.tree.weight(tenant), *self.head_order(tenant))


def one_two_three(policy: PolicyBase) -> dict[str, float]:
    sim = Sim(policy, slots=8, tenants=weights(a=1, b=2, c=3))
    for tenant in "abc":
        sim.jobs(tenant, 1.0, 400)
    sim.run(100)
    return sim.shares(20, 100)


def close(got: dict[str, float], want: dict[str, float], tolerance: float = 0.01) -> bool:
    return got.keys() == want.keys() and all(abs(got[k] - want[k]) <= tolerance for k in want)


def test_weights_one_two_three_on_eight_slots_give_one_two_three_sixths() -> None:
    assert close(one_two_three(FairSharePolicy()), {"a": 1 / 6, "b": 2 / 6, "c": 3 / 6})


def test_the_memoryless_running_slots_per_weight_comparator_locks_onto_whole_slots() -> None:
    assert close(one_two_three(RunningSlotsPerWeight()), {"a": 0.25, "b": 0.375, "c": 0.375})


def test_short_and_long_jobs_share_slot_time_by_weight() -> None:
    sim = Sim(FairSharePolicy(), slots=4, tenants=weights(short=1, long=3))
    sim.jobs("short", 0.01, 30000)
    sim.jobs("long", 1.0, 300)
    sim.run(60)
    assert close(sim.shares(10, 60), {"long": 0.75, "short": 0.25}, 0.02)


class ChargedOnlyAtDispatchAndEnd(FairSharePolicy):
    """fair-share without charging the time a job runs past its estimate."""

    def tag(self, tenant: str) -> float:
        account = self._accounts.get(tenant)
        return account.tag if account is not None else 0.0

    def _key(self, tenant: str) -> tuple[float, ...]:  # the real one reads the excess inline
        return (self.tag(tenant), *self.head_order(tenant))


def long_jobs_estimated_short(policy: FairSharePolicy) -> float:
    # The long tenant's jobs are estimated at 1 s until the first ends at 100 s.
    sim = Sim(policy, slots=8)
    sim.jobs("long", 100.0, 20)
    sim.jobs("short", 1.0, 1000)
    sim.run(90)
    return sim.shares(20, 90).get("long", 0.0)


def test_a_tenant_whose_jobs_outlive_their_estimate_is_charged_while_they_run() -> None:
    # Charged as it accrues, the excess stops the long tenant from taking more slots once
    # its jobs pass their estimate (it keeps what it took while the estimate held: 3/4).
    assert long_jobs_estimated_short(FairSharePolicy(initial_estimate=1.0)) <= 0.75
    # Charged only when they end, it takes every slot that frees for 100 s.
    assert long_jobs_estimated_short(ChargedOnlyAtDispatchAndEnd(initial_estimate=1.0)) == 1.0


def test_idle_time_earns_no_credit() -> None:
    sim = Sim(FairSharePolicy(), slots=4)
    sim.jobs("busy", 1.0, 1000)
    sim.job("back", 1.0)  # one job now, then idle until 100 s
    sim.jobs("back", 1.0, 200, at=100.0)
    sim.run(120)
    assert abs(sim.shares(101, 120)["back"] - 0.5) <= 0.06


def test_a_newcomer_gets_its_share_at_once_not_a_burst() -> None:
    sim = Sim(FairSharePolicy(), slots=4, tenants=weights(old=1, new=1))
    sim.jobs("old", 1.0, 1000)
    sim.jobs("new", 1.0, 200, at=50.0)
    sim.run(70)
    assert abs(sim.shares(51, 70)["new"] - 0.5) <= 0.06


def test_requeued_job_restores_its_tenant_head() -> None:
    policy = FairSharePolicy()
    policy.configure(capacity=Resources(2.0))
    first, second = job("a", 1), job("a", 2)
    policy.enqueue(first)
    policy.enqueue(second)
    policy.begin_round(0.0)
    assert policy.next_tenant(set()) == "a"
    policy.on_start(first, 0.0)
    policy.on_finish(first, 1.0, None)  # node lost
    policy.enqueue(first)
    policy.begin_round(1.0)
    assert policy.next_tenant(set()) == "a"
    assert policy.pick_job("a") is first


def test_explain_gives_rank_entitlement_and_the_tag() -> None:
    policy = FairSharePolicy()
    policy.configure(weights(a=1, b=3), Resources(4.0))
    jobs = [job("a", 1), job("b", 2), job("b", 3)]
    for j in jobs:
        policy.enqueue(j)
    policy.begin_round(0.0)
    policy.on_start(jobs[1], 0.0)
    explanation = policy.explain(jobs[2], 0.0)
    assert explanation.rank == 2 and explanation.tenants == 2
    assert explanation.entitlement == 0.75
    assert explanation.received == 0.25
    assert "virtual tag" in explanation.reason
    assert "\n" not in str(explanation)


def test_snapshot_and_restore_keep_the_tags() -> None:
    sim = Sim(FairSharePolicy(), slots=2)
    sim.jobs("a", 1.0, 30)
    sim.jobs("b", 2.0, 30)
    sim.run(10)
    state = sim.dispatcher.snapshot()
    fresh = FairSharePolicy()
    assert fresh.restore(state, 10.0)
    assert fresh.snapshot()["tags"] == state["tags"]


@pytest.mark.parametrize("at", [0.5, 10.0], ids=["within-its-estimate", "past-its-estimate"])
def test_a_job_running_across_a_restore_is_charged_once_for_its_whole_runtime(at: float) -> None:
    through, restored = restarted_midway(FairSharePolicy, "tags", at)
    assert through["a"] == pytest.approx(20.4 * 0.5)  # 20.4 s of half the pool, weight 1
    assert restored == pytest.approx(through)


def test_restore_ignores_another_policys_snapshot() -> None:
    assert not FairSharePolicy().restore({"policy": "drf", "version": 1}, 0.0)


def test_time_held_at_its_own_max_running_banks_no_credit() -> None:
    # "big" (weight 3) is capped at one slot of four for 50 s, then the cap is lifted: it
    # must get its 3/4 from then on, not every slot until its tag catches up.
    capped = {"big": TenantConfig("big", weight=3, max_running=1)}
    sim = Sim(FairSharePolicy(), slots=4, tenants=capped)
    sim.jobs("big", 1.0, 1000)
    sim.jobs("small", 1.0, 1000)
    sim.run(50)
    sim.dispatcher.configure(weights(big=3))
    sim.run(70)
    assert abs(sim.shares(51, 70)["big"] - 0.75) <= 0.05
