"""The pieces the policies share: charges, the tenant tree, queues, estimates."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from policysim import SimJob, job

from fairpool.policies.estimates import Overrun, RuntimeEstimates
from fairpool.policies.queues import TenantQueue
from fairpool.policies.resources import Resources, charge, dominant_share
from fairpool.policies.tenants import TenantConfig, TenantTree

GB = 1 << 30


def test_a_slot_of_an_m_slot_pool_costs_one_mth() -> None:
    assert charge(job("a", 1), Resources(8.0)) == 1 / 8


def test_charge_adds_every_resource_over_its_capacity() -> None:
    assert charge(job("a", 1, cpus=2.0, memory=4 * GB, gpus=1), Resources(8.0, 16 * GB, 4)) == 0.25 + 0.25 + 0.25


def test_charge_on_an_empty_pool_is_the_cpus() -> None:
    assert charge(job("a", 1, cpus=3.0), Resources()) == 3.0


def test_dominant_share_is_the_largest_fraction() -> None:
    assert dominant_share(Resources(1.0, 4 * GB), Resources(9.0, 18 * GB)) == 4 / 18


def test_an_undeclared_tenant_has_weight_one_and_changes_no_other_weight() -> None:
    tree = TenantTree({"alice": TenantConfig("alice", 3)})
    assert tree.weight("bob") == 1.0
    assert tree.weight("alice") == 3.0
    assert tree.share("alice") == 0.75


def test_a_groups_members_split_its_weight() -> None:
    tree = TenantTree({"lab": TenantConfig("lab", 2), "ann": TenantConfig("ann", 1, parent="lab"),
                       "ben": TenantConfig("ben", 3, parent="lab"), "solo": TenantConfig("solo", 2)})
    assert (tree.weight("ann"), tree.weight("ben"), tree.weight("solo")) == (0.5, 1.5, 2.0)
    assert math.isclose(tree.share("ann") + tree.share("ben") + tree.share("solo"), 1.0)
    assert tree.path("ben") == ("lab", "ben")


def test_a_tenants_jobs_go_by_priority_then_submit_order() -> None:
    queue = TenantQueue()
    for j in (job("a", 1), job("a", 2, priority=5), job("a", 3), job("a", 4, priority=5)):
        queue.push(j)
    assert [j.seq for j in queue.jobs()] == [2, 4, 1, 3]
    assert queue.head() is not None and queue.head().seq == 2  # type: ignore[union-attr]


def test_fifo_queues_ignore_priority() -> None:
    queue = TenantQueue(by_priority=False)
    for j in (job("a", 1), job("a", 2, priority=5)):
        queue.push(j)
    assert [j.seq for j in queue.jobs()] == [1, 2]


def test_a_job_set_aside_comes_back_at_its_place() -> None:
    queue = TenantQueue()
    for s in (1, 2, 3):
        queue.push(job("a", s))
    queue.set_aside_head()
    assert [j.seq for j in queue.jobs()] == [1, 2, 3]
    assert queue.head() is not None and queue.head().seq == 2  # type: ignore[union-attr]
    queue.restore_aside()
    assert queue.head() is not None and queue.head().seq == 1  # type: ignore[union-attr]


_queue_ops = st.lists(st.tuples(st.sampled_from(["push", "remove", "aside", "restore"]),
                                st.integers(0, 30), st.integers(0, 2)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops=_queue_ops)
def test_queue_lists_exactly_its_live_jobs_in_order(ops: list[tuple[str, int, int]]) -> None:
    queue = TenantQueue()
    live: dict[int, SimJob] = {}
    aside: set[int] = set()
    for op, seq, priority in ops:
        if op == "push" and seq not in live:
            live[seq] = job("a", seq, priority=priority)
            queue.push(live[seq])
        elif op == "remove" and seq in live:
            queue.remove(live.pop(seq).uid)
            aside.discard(seq)
        elif op == "aside":
            head = queue.head()
            if head is not None:
                aside.add(head.seq)
            queue.set_aside_head()
        elif op == "restore":
            queue.restore_aside()
            aside.clear()
        expected = sorted(live.values(), key=lambda j: (-j.priority, j.seq))
        assert list(queue.jobs()) == expected
        can_go = [j for j in expected if j.seq not in aside]
        assert queue.head() is (can_go[0] if can_go else None)
        assert len(queue) == len(live)
        if expected:
            assert queue.ahead_of(expected[-1]) == len(expected) - 1


@settings(max_examples=200, deadline=None)
@given(jobs=st.lists(st.tuples(st.floats(0.01, 1.0), st.floats(0.0, 10.0)), max_size=10),
       removed=st.sets(st.integers(0, 9)), times=st.lists(st.floats(0.0, 20.0), min_size=1, max_size=5))
def test_overrun_is_the_charge_of_the_time_past_each_estimate(
        jobs: list[tuple[float, float]], removed: set[int], times: list[float]) -> None:
    overrun = Overrun()
    for i, (c, threshold) in enumerate(jobs):
        overrun.add(f"j{i}", i, c, threshold)
    for i in removed:
        overrun.remove(f"j{i}")
    for now in sorted(times):
        expected = sum(c * max(0.0, now - thr) for i, (c, thr) in enumerate(jobs) if i not in removed)
        assert math.isclose(overrun.value(now), expected, rel_tol=1e-9, abs_tol=1e-9)


def test_estimates_start_at_the_default_then_follow_the_runtimes() -> None:
    estimates = RuntimeEstimates(initial=1.0)
    assert estimates.get("a") == 1.0
    estimates.observe("a", 10.0)
    assert estimates.get("a") == 10.0
    estimates.observe("a", 0.0)
    assert estimates.get("a") == 8.0
    assert estimates.get("newcomer") == 8.0  # the pool's average
