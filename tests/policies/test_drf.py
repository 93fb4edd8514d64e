"""drf: Dominant Resource Fairness with progressive filling (Ghodsi et al., NSDI 2011)."""

from __future__ import annotations

from policysim import Sim, job, weights

from fairpool.policies.drf import DrfPolicy
from fairpool.policies.resources import Resources

GB = 1 << 30


def test_the_papers_example_a_runs_three_tasks_b_runs_two() -> None:
    # 9 CPUs, 18 GB; A's tasks <1 CPU, 4 GB>, B's <3 CPU, 1 GB>.
    sim = Sim(DrfPolicy(), nodes=[(9.0, 18 * GB, 0)])
    sim.jobs("A", 100.0, 10, cpus=1.0, memory=4 * GB)
    sim.jobs("B", 100.0, 10, cpus=3.0, memory=1 * GB)
    sim.run(1)
    assert (sim.running("A"), sim.running("B")) == (3, 2)


def test_dominant_shares_end_equal_in_the_papers_example() -> None:
    policy = DrfPolicy()
    sim = Sim(policy, nodes=[(9.0, 18 * GB, 0)])
    sim.jobs("A", 100.0, 10, cpus=1.0, memory=4 * GB)
    sim.jobs("B", 100.0, 10, cpus=3.0, memory=1 * GB)
    sim.run(1)
    assert abs(policy.dominant("A") - 2 / 3) < 1e-9 and abs(policy.dominant("B") - 2 / 3) < 1e-9


def test_weights_divide_the_dominant_share() -> None:
    sim = Sim(DrfPolicy(), slots=6, tenants=weights(a=1, b=2))
    sim.jobs("a", 100.0, 10)
    sim.jobs("b", 100.0, 10)
    sim.run(1)
    assert (sim.running("a"), sim.running("b")) == (2, 4)


def test_a_tenant_whose_job_fits_nowhere_sits_the_round_out() -> None:
    # A (smallest share) wants 4 cpus and only 3 are left: B's 1-cpu jobs go meanwhile.
    sim = Sim(DrfPolicy(), nodes=[(4.0, 0, 0)])
    sim.job("A", 100.0, cpus=1.0)
    sim.job("A", 100.0, at=1.0, cpus=4.0)
    sim.jobs("B", 100.0, 3, at=1.0)
    sim.run(2)
    assert (sim.running("A"), sim.running("B")) == (1, 3)


def test_a_freed_slot_goes_to_the_smallest_dominant_share() -> None:
    sim = Sim(DrfPolicy(), slots=4)
    sim.jobs("a", 10.0, 2)
    sim.jobs("b", 100.0, 10)
    sim.jobs("a", 10.0, 5, at=5.0)
    sim.run(10)
    assert sim.running("a") == 2 and sim.running("b") == 2


def test_ties_go_to_the_tenant_served_least_recently_so_none_starves_on_one_slot() -> None:
    sim = Sim(DrfPolicy(), slots=1)
    sim.jobs("first", 1.0, 50)  # all of its jobs were submitted before the others'
    sim.jobs("second", 1.0, 50)
    sim.jobs("third", 1.0, 50)
    sim.run(30)
    shares = sim.shares(0, 30)
    assert all(abs(shares[t] - 1 / 3) <= 0.05 for t in ("first", "second", "third"))


def test_explain_shows_the_dominant_share() -> None:
    policy = DrfPolicy()
    policy.configure(capacity=Resources(9.0, 18 * GB))
    running, waiting = job("A", 1, memory=4 * GB), job("A", 2, memory=4 * GB)
    policy.enqueue(running)
    policy.enqueue(waiting)
    policy.begin_round(0.0)
    policy.on_start(running, 0.0)
    explanation = policy.explain(waiting, 0.0)
    assert "dominant share 0.222" in explanation.reason
    assert explanation.received is not None and abs(explanation.received - 2 / 9) < 1e-9
