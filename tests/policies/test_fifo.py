"""The fifo policy (fairpool.policies.fifo): submit order, requeues keep their place."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from fairpool.policies.fifo import FifoPolicy


@dataclass(frozen=True)
class FakeJob:
    uid: str
    tenant: str
    seq: int
    priority: int = 0


def jobs(*seqs: int, tenant: str = "alice") -> list[FakeJob]:
    return [FakeJob(f"c.{s}", tenant, s) for s in seqs]


def queued(policy: FifoPolicy) -> list[int]:
    return [job.seq for job in policy.order()]


def filled(*seqs: int) -> tuple[FifoPolicy, dict[int, FakeJob]]:
    policy = FifoPolicy()
    by_seq = {job.seq: job for job in jobs(*seqs)}
    for job in by_seq.values():
        policy.enqueue(job)
    return policy, by_seq


def test_order_is_submit_order_whatever_the_tenant() -> None:
    policy = FifoPolicy()
    for job in [FakeJob("a.1", "alice", 1), FakeJob("b.2", "bob", 2, priority=9), FakeJob("a.3", "alice", 3)]:
        policy.enqueue(job)
    assert [job.uid for job in policy.order()] == ["a.1", "b.2", "a.3"]
    assert len(policy) == 3


def test_empty_policy_orders_nothing() -> None:
    assert queued(FifoPolicy()) == []
    assert len(FifoPolicy()) == 0


def test_requeued_older_job_goes_back_in_front_of_newer_ones() -> None:
    policy, by_seq = filled(1, 2, 3, 4)
    policy.dequeue(by_seq[1])
    policy.dequeue(by_seq[2])  # both dispatched; then their node is lost
    policy.enqueue(FakeJob("c.5", "alice", 5))
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


def test_dequeue_of_a_requeued_job_removes_it() -> None:
    policy, by_seq = filled(1, 2, 3)
    policy.dequeue(by_seq[1])
    policy.enqueue(by_seq[1])
    policy.dequeue(by_seq[1])
    assert queued(policy) == [2, 3]


def test_dequeue_of_a_job_not_queued_is_harmless() -> None:
    policy, _ = filled(1, 2)
    policy.dequeue(FakeJob("c.9", "alice", 9))
    assert queued(policy) == [1, 2]


def test_explain_says_how_many_jobs_are_ahead() -> None:
    policy, by_seq = filled(1, 2, 3, 4)
    policy.dequeue(by_seq[2])
    assert policy.explain(by_seq[1]) == "fifo: 0 job(s) submitted earlier are still queued"
    assert policy.explain(by_seq[4]) == "fifo: 2 job(s) submitted earlier are still queued"


def test_explain_says_when_a_job_is_not_queued() -> None:
    policy, by_seq = filled(1)
    policy.dequeue(by_seq[1])
    assert policy.explain(by_seq[1]) == "fifo: not queued"


def test_policy_is_named_fifo() -> None:
    assert FifoPolicy.name == "fifo"


# Each step: submit a new job, dispatch the head (or the n-th) job, or requeue a dispatched one.
_steps = st.lists(st.tuples(st.sampled_from(["submit", "dispatch", "requeue"]), st.integers(0, 50)),
                  max_size=60)


@settings(max_examples=200, deadline=None)
@given(steps=_steps)
def test_order_always_equals_the_queued_jobs_sorted_by_sequence(steps: list[tuple[str, int]]) -> None:
    policy = FifoPolicy()
    model: dict[int, FakeJob] = {}  # what is queued
    out: list[FakeJob] = []  # dispatched, may come back
    next_seq = 1
    for action, n in steps:
        if action == "submit":
            job = FakeJob(f"c.{next_seq}", "alice", next_seq)
            next_seq += 1
            policy.enqueue(job)
            model[job.seq] = job
        elif action == "dispatch" and model:
            job = list(policy.order())[n % len(model)]
            policy.dequeue(job)
            del model[job.seq]
            out.append(job)
        elif action == "requeue" and out:
            job = out.pop(n % len(out))
            policy.enqueue(job)
            model[job.seq] = job
        assert queued(policy) == sorted(model)
        assert len(policy) == len(model)
