"""The fifo policy (fairpool.policies.fifo): submit order, requeues keep their place, strict and skip modes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policysim import Sim, SimJob, job

from fairpool.policies.fifo import FifoPolicy
from fairpool.policies.tenants import TenantConfig


def queued(policy: FifoPolicy) -> list[int]:
    return [j.seq for j in policy.order()]


def filled(*seqs: int) -> tuple[FifoPolicy, dict[int, SimJob]]:
    policy = FifoPolicy()
    by_seq = {s: job("alice", s) for s in seqs}
    for j in by_seq.values():
        policy.enqueue(j)
    return policy, by_seq


def test_order_is_submit_order_whatever_the_tenant_and_priority() -> None:
    policy = FifoPolicy()
    for j in [job("alice", 1), job("bob", 2, priority=9), job("alice", 3, priority=5)]:
        policy.enqueue(j)
    assert [j.uid for j in policy.order()] == ["alice.1", "bob.2", "alice.3"]
    assert len(policy) == 3


def test_decisions_follow_submit_order_across_tenants() -> None:
    sim = Sim(FifoPolicy(), slots=1)
    sim.job("bob", 1.0)
    sim.job("alice", 1.0)
    sim.job("bob", 1.0)
    sim.run(10)
    assert [uid for _, uid in sim.starts] == ["bob.1", "alice.2", "bob.3"]


def test_empty_policy_orders_nothing() -> None:
    assert queued(FifoPolicy()) == []
    assert len(FifoPolicy()) == 0


def test_requeued_older_job_goes_back_in_front_of_newer_ones() -> None:
    policy, by_seq = filled(1, 2, 3, 4)
    policy.on_start(by_seq[1], 0.0)
    policy.on_start(by_seq[2], 0.0)
    policy.on_finish(by_seq[1], 1.0)  # their node is lost: they end, and come back
    policy.on_finish(by_seq[2], 1.0)
    policy.enqueue(job("alice", 5))
    policy.enqueue(by_seq[2])
    policy.enqueue(by_seq[1])
    assert queued(policy) == [1, 2, 3, 4, 5]


def test_requeued_newest_job_stays_last() -> None:
    policy, by_seq = filled(1, 2, 3)
    policy.dequeue(by_seq[3])
    policy.enqueue(by_seq[3])
    assert queued(policy) == [1, 2, 3]


def test_dequeue_removes_a_job_from_the_middle() -> None:
    policy, by_seq = filled(1, 2, 3)
    policy.dequeue(by_seq[2])
    assert queued(policy) == [1, 3]
    assert len(policy) == 2


def test_dequeue_of_a_job_not_queued_is_harmless() -> None:
    policy, _ = filled(1, 2)
    policy.dequeue(job("alice", 9))
    assert queued(policy) == [1, 2]


def test_enqueue_of_a_job_already_queued_is_ignored() -> None:
    policy, by_seq = filled(1, 2)
    policy.enqueue(by_seq[1])
    assert queued(policy) == [1, 2]
    assert len(policy) == 2


def test_explain_says_how_many_jobs_are_ahead() -> None:
    policy, by_seq = filled(1, 2, 3, 4)
    policy.dequeue(by_seq[2])
    assert policy.explain(by_seq[1]).reason == "0 job(s) submitted earlier are still queued"
    assert str(policy.explain(by_seq[4])) == (
        "fifo: job alice.4 of tenant alice: 2 job(s) submitted earlier are still queued (rank 3 of 3)")


def test_explain_says_when_a_job_is_not_queued() -> None:
    policy, by_seq = filled(1)
    policy.dequeue(by_seq[1])
    assert policy.explain(by_seq[1]).reason == "not queued"
    assert not policy.explain(by_seq[1]).queued


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="strict, skip"):
        FifoPolicy(mode="lifo")


def _big_job_behind_a_running_one(mode: str) -> Sim:
    """3 cpus; a 2-cpu job runs 10 s; then a 2-cpu job (fits at 10 s) and a 1-cpu one (fits now)."""
    sim = Sim(FifoPolicy(mode=mode), nodes=[(3.0, 0, 0)])
    sim.job("alice", 10.0, cpus=2.0)
    sim.job("bob", 5.0, at=1.0, cpus=2.0)
    sim.job("carol", 5.0, at=1.0)
    sim.run(30)
    return sim


def test_strict_mode_lets_nothing_overtake_a_job_that_does_not_fit_yet() -> None:
    sim = _big_job_behind_a_running_one("strict")
    assert dict((uid, t) for t, uid in sim.starts) == {"alice.1": 0.0, "bob.2": 10.0, "carol.3": 10.0}


def test_skip_mode_starts_a_younger_job_that_fits() -> None:
    sim = _big_job_behind_a_running_one("skip")
    assert dict((uid, t) for t, uid in sim.starts) == {"alice.1": 0.0, "carol.3": 1.0, "bob.2": 10.0}


@pytest.mark.parametrize("mode", ["strict", "skip"])
def test_a_tenant_held_by_its_own_cap_blocks_nobody(mode: str) -> None:
    sim = Sim(FifoPolicy(mode=mode), slots=3, tenants={"alice": TenantConfig("alice", max_running=1)})
    sim.jobs("alice", 10.0, 3)
    sim.job("bob", 10.0)
    sim.run(5)
    assert sorted(uid for _, uid in sim.starts) == ["alice.1", "bob.4"]


# Each step: submit a new job, dispatch the n-th queued job, or requeue a dispatched one.
_steps = st.lists(st.tuples(st.sampled_from(["submit", "dispatch", "requeue"]), st.integers(0, 50)),
                  max_size=60)


@settings(max_examples=200, deadline=None)
@given(steps=_steps)
def test_order_always_equals_the_queued_jobs_sorted_by_sequence(steps: list[tuple[str, int]]) -> None:
    policy = FifoPolicy()
    model: dict[int, SimJob] = {}  # what is queued
    out: list[SimJob] = []  # dispatched, may come back
    next_seq = 1
    for now, (action, n) in enumerate(steps):
        if action == "submit":
            new = job(["alice", "bob"][n % 2], next_seq)
            next_seq += 1
            policy.enqueue(new)
            model[new.seq] = new
        elif action == "dispatch" and model:
            picked = list(policy.order())[n % len(model)]
            policy.on_start(picked, float(now))
            del model[picked.seq]
            out.append(picked)
        elif action == "requeue" and out:
            back = out.pop(n % len(out))
            policy.on_finish(back, float(now))
            policy.enqueue(back)
            model[back.seq] = back
        assert queued(policy) == sorted(model)
        assert len(policy) == len(model)
