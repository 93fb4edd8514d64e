"""round-robin (deficit round robin over slot-seconds): shares follow weights, not job lengths."""

from __future__ import annotations

import pytest
from policysim import Sim, job, restarted_midway, weights

from fairpool.policies.core import PolicyBase
from fairpool.policies.heap import Key
from fairpool.policies.resources import Resources
from fairpool.policies.roundrobin import RoundRobinPolicy
from fairpool.policies.running import RunningJob


class OneJobPerTurn(PolicyBase):
    """dispy's fair_cluster_scheduler: tenants take turns, one job each, whatever its length."""

    name = "one-job-per-turn"

    def __init__(self) -> None:
        super().__init__()
        self.turns: dict[str, int] = {}

    def _key(self, tenant: str) -> Key:
        return (self.turns.get(tenant, 0), *self.head_order(tenant))

    def _on_started(self, run: RunningJob, resumed: bool) -> None:
        self.turns[run.tenant] = self.turns.get(run.tenant, 0) + 1


def ten_ms_against_one_s(policy: PolicyBase, **tenant_weights: float) -> dict[str, float]:
    sim = Sim(policy, slots=4, tenants=weights(**tenant_weights) if tenant_weights else None)
    sim.jobs("short", 0.01, 25000)
    sim.jobs("long", 1.0, 300)
    sim.run(60)
    return sim.shares(10, 60)


def test_ten_ms_jobs_get_half_the_slot_time_against_one_second_jobs() -> None:
    assert abs(ten_ms_against_one_s(RoundRobinPolicy())["short"] - 0.5) <= 0.02


def test_slot_time_follows_the_weights_whatever_the_job_lengths() -> None:
    shares = ten_ms_against_one_s(RoundRobinPolicy(), short=3, long=1)
    assert abs(shares["short"] - 0.75) <= 0.02


def test_one_job_per_turn_gives_ten_ms_jobs_about_one_percent() -> None:
    assert ten_ms_against_one_s(OneJobPerTurn())["short"] < 0.02


def test_weights_one_two_three_on_eight_slots() -> None:
    sim = Sim(RoundRobinPolicy(), slots=8, tenants=weights(a=1, b=2, c=3))
    for tenant in "abc":
        sim.jobs(tenant, 1.0, 400)
    sim.run(100)
    shares = sim.shares(20, 100)
    assert all(abs(shares[t] - w / 6) <= 0.01 for t, w in [("a", 1), ("b", 2), ("c", 3)])


def test_tenants_backlogged_at_the_same_time_join_the_ring_in_submit_order() -> None:
    first, second = job("zed", 1), job("amy", 2)
    for arrival in ([first, second], [second, first]):
        policy = RoundRobinPolicy()
        policy.configure(capacity=Resources(1.0))
        for j in arrival:
            policy.enqueue(j)
        policy.begin_round(0.0)
        assert policy.next_tenant(set()) == "zed"


def test_a_tenant_in_debt_waits_its_turns_but_comes_back() -> None:
    # One 10 s job against 1 s jobs on one slot: after its long job, the other tenant
    # gets about ten seconds of turns before the long one goes again.
    sim = Sim(RoundRobinPolicy(quantum=1.0), slots=1)
    sim.jobs("long", 10.0, 5)
    sim.jobs("short", 1.0, 100)
    sim.run(60)
    assert abs(sim.shares(0, 60)["long"] - 0.5) <= 0.1
    long_starts = [t for t, uid in sim.starts if uid.startswith("long")]
    assert len(long_starts) >= 2


def test_an_idle_tenant_keeps_no_credit() -> None:
    sim = Sim(RoundRobinPolicy(), slots=4)
    sim.jobs("busy", 1.0, 1000)
    sim.job("back", 1.0)
    sim.jobs("back", 1.0, 200, at=100.0)
    sim.run(120)
    assert abs(sim.shares(101, 120)["back"] - 0.5) <= 0.06


def test_a_skipped_tenant_keeps_its_place_in_the_ring() -> None:
    policy = RoundRobinPolicy()
    policy.configure(capacity=Resources(4.0))
    for j in [job("a", 1), job("b", 2), job("c", 3)]:
        policy.enqueue(j)
    policy.begin_round(0.0)
    assert policy.next_tenant({"a"}) == "b"
    policy.begin_round(1.0)
    assert policy.next_tenant(set()) == "a"


def test_explain_shows_the_deficit() -> None:
    policy = RoundRobinPolicy()
    policy.configure(capacity=Resources(2.0))
    waiting = job("a", 1)
    policy.enqueue(waiting)
    assert "deficit" in policy.explain(waiting, 0.0).reason


def test_snapshot_and_restore_keep_the_deficits() -> None:
    sim = Sim(RoundRobinPolicy(), slots=2)
    sim.jobs("a", 1.0, 30)
    sim.jobs("b", 3.0, 30)
    sim.run(10)
    state = sim.dispatcher.snapshot()
    fresh = RoundRobinPolicy()
    assert fresh.restore(state, 10.0)
    assert fresh.snapshot()["deficits"] == state["deficits"]


@pytest.mark.parametrize("at", [0.5, 10.0], ids=["within-its-estimate", "past-its-estimate"])
def test_a_job_running_across_a_restore_is_charged_once_for_its_whole_runtime(at: float) -> None:
    through, restored = restarted_midway(RoundRobinPolicy, "deficits", at)
    assert restored == pytest.approx(through)
