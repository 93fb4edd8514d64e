"""Quotas and limits (fairpool.policies.limits): a filter shared by every policy, with reasons that name the limit."""

from __future__ import annotations

from policysim import job

from fairpool.policies.limits import Limits
from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig

GB = 1 << 30


def limits(**configs: TenantConfig) -> Limits:
    return Limits(configs)


def test_max_running_holds_the_next_job_and_names_the_limit() -> None:
    lim = limits(alice=TenantConfig("alice", max_running=2))
    for seq in (1, 2):
        lim.started(job("alice", seq))
    assert lim.hold(job("alice", 3)) == "tenant alice is at max_running=2"


def test_a_finished_job_frees_its_place_under_max_running() -> None:
    lim = limits(alice=TenantConfig("alice", max_running=1))
    running = job("alice", 1)
    lim.started(running)
    lim.finished(running)
    assert lim.hold(job("alice", 2)) is None


def test_max_queued_refuses_a_new_job_and_names_the_limit() -> None:
    lim = limits(alice=TenantConfig("alice", max_queued=2))
    for seq in (1, 2):
        assert lim.admit(job("alice", seq)) is None
        lim.queued(job("alice", seq))
    assert lim.admit(job("alice", 3)) == "tenant alice is at max_queued=2"
    lim.unqueued(job("alice", 1))
    assert lim.admit(job("alice", 3)) is None


def test_max_resources_hold_a_job_that_would_go_beyond() -> None:
    lim = limits(alice=TenantConfig("alice", max=Resources(cpus=4.0, memory=8 * GB)))
    lim.started(job("alice", 1, cpus=3.0))
    assert lim.hold(job("alice", 2, cpus=1.0)) is None
    assert lim.hold(job("alice", 3, cpus=2.0)) == (
        "tenant alice would exceed max cpus=4 (holds 3, job alice.3 asks for 2)")
    assert "max memory=8589934592" in (lim.hold(job("alice", 4, cpus=0.5, memory=9 * GB)) or "")


def test_a_job_bigger_than_the_max_on_its_own_is_refused_at_submit() -> None:
    lim = limits(alice=TenantConfig("alice", max=Resources(gpus=1)))
    assert lim.admit(job("alice", 1, gpus=2)) == (
        "job alice.1 asks for 2 gpus, more than tenant alice's max gpus=1")


def test_a_groups_limits_bound_the_sum_over_its_members() -> None:
    lim = limits(lab=TenantConfig("lab", max_running=3), ann=TenantConfig("ann", parent="lab"),
                 ben=TenantConfig("ben", parent="lab"))
    for seq, tenant in enumerate(("ann", "ann", "ben")):
        lim.started(job(tenant, seq))
    assert lim.hold(job("ben", 9)) == "group lab (of tenant ben) is at max_running=3"


def test_a_tenant_without_limits_is_never_held() -> None:
    lim = limits(alice=TenantConfig("alice", max_running=1))
    for seq in range(100):
        lim.started(job("bob", seq))
    assert lim.hold(job("bob", 100)) is None
    assert lim.admit(job("bob", 100)) is None


def test_reset_recounts_from_the_jobs_under_new_settings() -> None:
    lim = limits()
    running = [job("alice", 1), job("alice", 2)]
    for j in running:
        lim.started(j)
    lim.reset({"alice": TenantConfig("alice", max_running=2)}, [job("alice", 3)], running)
    assert lim.hold(job("alice", 3)) == "tenant alice is at max_running=2"
