"""The Dispatcher: the decision round the scheduler calls, limits and placement included."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Set
from typing import Any

import pytest
from policysim import SimJob, job, weights

from fairpool.policies.base import NO_FIT_SKIP_TENANT, Explanation, QueuedJob
from fairpool.policies.decayed import DecayedUsagePolicy
from fairpool.policies.dispatcher import Dispatcher, Placement
from fairpool.policies.fairshare import FairSharePolicy
from fairpool.policies.fifo import FifoPolicy
from fairpool.policies.registry import make_policy
from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig


def fill(dispatcher: Dispatcher, *jobs: SimJob) -> None:
    for j in jobs:
        dispatcher.enqueue(j)


def room_for(n: int) -> Callable[[QueuedJob], Placement]:
    left = [n]

    def place(j: QueuedJob) -> Placement:
        if left[0] <= 0:
            return Placement.FULL
        left[0] -= 1
        return Placement.PLACED

    return place


def test_next_jobs_starts_jobs_in_policy_order_until_the_pool_is_full() -> None:
    d = Dispatcher(FifoPolicy(), capacity=Resources(2.0))
    fill(d, job("a", 1), job("b", 2), job("a", 3))
    assert [j.uid for j in d.next_jobs(0.0, room_for(2))] == ["a.1", "b.2"]
    assert len(d) == 1


def test_limit_caps_the_number_of_jobs_per_round() -> None:
    d = Dispatcher(FifoPolicy(), capacity=Resources(8.0))
    fill(d, *(job("a", s) for s in range(5)))
    assert len(d.next_jobs(0.0, room_for(8), limit=3)) == 3


def test_a_held_tenant_sits_out_and_explain_names_the_limit() -> None:
    d = Dispatcher(FairSharePolicy(), {"a": TenantConfig("a", max_running=1)}, Resources(4.0))
    held = job("a", 2)
    fill(d, job("a", 1), held, job("b", 3), job("b", 4))
    started = d.next_jobs(0.0, room_for(4))
    assert sorted(j.uid for j in started) == ["a.1", "b.3", "b.4"]
    assert str(d.explain(held, 0.0)).startswith("fair-share: job a.2 of tenant a: held: tenant a is at max_running=1")


def test_strict_fifo_ends_the_round_at_a_job_that_fits_nowhere() -> None:
    d = Dispatcher(FifoPolicy("strict"), capacity=Resources(4.0))
    fill(d, job("a", 1, cpus=8.0), job("b", 2))
    assert d.next_jobs(0.0, lambda j: Placement.NO_FIT if j.cpus > 4 else Placement.PLACED) == []


def test_skip_fifo_passes_over_it_and_tries_it_again_next_round() -> None:
    d = Dispatcher(FifoPolicy("skip"), capacity=Resources(4.0))
    big = job("a", 1, cpus=8.0)
    fill(d, big, job("a", 2), job("b", 3))
    first = d.next_jobs(0.0, lambda j: Placement.NO_FIT if j.cpus > 4 else Placement.PLACED)
    assert [j.uid for j in first] == ["a.2", "b.3"]
    assert d.next_jobs(1.0, room_for(1)) == [big]


def test_the_round_stops_after_max_no_fit_jobs_tried_in_vain() -> None:
    d = Dispatcher(make_policy("fair-share"), capacity=Resources(4.0), max_no_fit=3)
    fill(d, *(job(f"t{i}", i) for i in range(10)))
    tried: list[str] = []

    def never(j: QueuedJob) -> Placement:
        tried.append(j.uid)
        return Placement.NO_FIT

    assert d.next_jobs(0.0, never) == []
    assert len(tried) == 3


def test_admit_refuses_beyond_max_queued() -> None:
    d = Dispatcher(FifoPolicy(), {"a": TenantConfig("a", max_queued=1)})
    first = job("a", 1)
    assert d.admit(first) is None
    d.enqueue(first)
    assert d.admit(job("a", 2)) == "tenant a is at max_queued=1"


def test_a_finished_job_frees_its_tenants_place() -> None:
    d = Dispatcher(FifoPolicy(), {"a": TenantConfig("a", max_running=1)}, Resources(4.0))
    first, second = job("a", 1), job("a", 2)
    fill(d, first, second)
    assert d.next_jobs(0.0, room_for(4)) == [first]
    d.finished(first, 1.0, 1.0)
    assert d.next_jobs(1.0, room_for(4)) == [second]


def test_finished_for_a_job_never_started_is_ignored() -> None:
    d = Dispatcher(FifoPolicy())
    d.finished(job("a", 1), 1.0)
    assert len(d) == 0


def test_resumed_jobs_count_against_the_limits_after_a_restart() -> None:
    d = Dispatcher(FairSharePolicy(), {"a": TenantConfig("a", max_running=1)}, Resources(2.0))
    d.resume(job("a", 1), 0.0)
    fill(d, job("a", 2))
    assert d.next_jobs(5.0, room_for(2)) == []


def test_replace_policy_keeps_every_queued_and_running_job() -> None:
    d = Dispatcher(FifoPolicy(), weights(a=1, b=3), Resources(2.0))
    fill(d, job("a", 1), job("a", 2), job("b", 3), job("b", 4))
    d.next_jobs(0.0, room_for(1))
    d.replace_policy(FairSharePolicy(), 1.0)
    assert d.name == "fair-share"
    assert sorted(j.uid for j in d.order()) == ["a.2", "b.3", "b.4"]
    assert [j.uid for j in d.running()] == ["a.1"]
    assert [j.uid for j in d.next_jobs(1.0, room_for(1))] == ["b.3"]


def test_reconfiguring_applies_new_limits_to_jobs_already_running() -> None:
    d = Dispatcher(FifoPolicy(), capacity=Resources(4.0))
    fill(d, job("a", 1), job("a", 2))
    d.next_jobs(0.0, room_for(1))
    d.configure({"a": TenantConfig("a", max_running=1)})
    assert d.next_jobs(1.0, room_for(4)) == []


def test_new_options_for_the_same_policy_keep_its_state() -> None:
    d = Dispatcher(DecayedUsagePolicy(half_life=100.0), capacity=Resources(1.0))
    ran = job("a", 1)
    fill(d, ran, job("a", 2))
    d.next_jobs(0.0, room_for(1))
    d.finished(ran, 10.0, 10.0)
    before = d.snapshot()["usage"]["a"]
    d.replace_policy(DecayedUsagePolicy(half_life=200.0), 10.0)
    assert d.snapshot()["usage"]["a"] == before
    assert d.snapshot()["half_life"] == 200.0
    assert len(d) == 1


class LastInFirstOut:
    """A third party's policy written from scratch to the ``Policy`` protocol, no PolicyBase."""

    name = "lifo"
    no_fit = NO_FIT_SKIP_TENANT

    def __init__(self) -> None:
        self.queued: list[QueuedJob] = []
        self.running: set[str] = set()
        self.calls: list[str] = []

    def configure(self, tenants: Mapping[str, TenantConfig] | None = None,
                  capacity: Resources | None = None) -> None:
        pass

    def enqueue(self, job: QueuedJob) -> None:
        self.queued.append(job)

    def dequeue(self, job: QueuedJob) -> None:
        self.queued.remove(job)

    def on_start(self, job: QueuedJob, now: float, *, resumed: bool = False) -> None:
        self.calls.append(f"start {job.uid}")
        if job in self.queued:
            self.queued.remove(job)
        self.running.add(job.uid)

    def on_finish(self, job: QueuedJob, now: float, runtime: float | None = None) -> None:
        self.calls.append(f"finish {job.uid}")
        self.running.discard(job.uid)

    def begin_round(self, now: float) -> None:
        self.calls.append("round")

    def next_tenant(self, skip: Set[str]) -> str | None:
        return next((j.tenant for j in reversed(self.queued) if j.tenant not in skip), None)

    def pick_job(self, tenant: str) -> QueuedJob | None:
        return next((j for j in reversed(self.queued) if j.tenant == tenant), None)

    def pass_over(self, job: QueuedJob) -> None:
        pass

    def hold(self, tenant: str) -> None:
        pass

    def explain(self, job: QueuedJob, now: float | None = None) -> Explanation:
        return Explanation(self.name, job.uid, job.tenant, job in self.queued, None, 0, 0, None, None, "")

    def snapshot(self) -> dict[str, Any]:
        return {"policy": self.name}

    def restore(self, state: Mapping[str, Any], now: float) -> bool:
        return False

    def order(self) -> Iterator[QueuedJob]:
        return reversed(list(self.queued))

    def __len__(self) -> int:
        return len(self.queued)


def test_a_policy_written_to_the_protocol_without_policybase_is_called_for_every_event() -> None:
    lifo = LastInFirstOut()
    d = Dispatcher(lifo, capacity=Resources(2.0))
    first, second, third = job("a", 1), job("b", 2), job("a", 3)
    fill(d, first, second, third)
    d.dequeue(second)
    assert d.next_jobs(0.0, room_for(1)) == [third]
    d.finished(third, 1.0, 1.0)
    assert d.next_jobs(1.0, room_for(1)) == [first]
    assert lifo.calls == ["round", "start a.3", "finish a.3", "round", "start a.1"]
    assert d.policy is lifo and len(d) == 0


@pytest.mark.parametrize("name", ["fifo", "round-robin", "fair-share", "decayed-usage", "drf", "priority"])
def test_every_policy_decides_on_wall_clock_times_after_being_asked_before_its_first_event(name: str) -> None:
    # The scheduler configures its policy and may list tenants (their figures) before any job
    # event; the times that follow are seconds since 1970.
    d = Dispatcher(make_policy(name), weights(a=1, b=2), Resources(2.0))
    policy = d.policy
    figures = getattr(policy, "tenant_figures", None)
    if figures is not None:
        figures("a")
    now = 1.8e9
    fill(d, *(job(t, s) for s, t in enumerate("abab")))
    for _ in range(3):
        started = d.next_jobs(now, room_for(2))
        now += 3600.0
        for j in started:
            d.finished(j, now, 3600.0)
    assert len(d) == 0
    if name == "decayed-usage":
        assert 0 < policy.usage("a") < 2 * 3600  # type: ignore[attr-defined]
