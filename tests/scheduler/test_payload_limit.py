"""max_payload_size and other values no handler may take: refused with a clear reason, nothing changed.

Jobs, cluster specs and results over the limit; job options that are NaN,
infinite or negative; nodes reporting timestamps that are not finite or
resources below zero. Each used to be taken as it came (some crashed the
state: a job asking for -inf cpus, a result with a NaN timestamp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fairpool.messages import (
    Error,
    JobOptions,
    JobProvisional,
    JobResult,
    JobStarted,
    JobSubmit,
    JobsUpdate,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Queued,
    Submit,
)

if TYPE_CHECKING:
    from conftest import StateDriver

LIMIT = 100


@pytest.fixture
def limited(driver: StateDriver) -> StateDriver:
    driver.state.max_payload = LIMIT
    return driver


def test_a_job_payload_over_the_limit_is_refused_and_not_queued(limited: StateDriver) -> None:
    alice = limited.open_cluster("c1")
    out = limited.send(alice, Submit("c1", [JobSubmit("c1.0", b"x" * LIMIT), JobSubmit("c1.1", b"x" * (LIMIT + 1))]))
    assert out.errors(alice) == [f"job c1.1: its payload is {LIMIT + 1} bytes, over the scheduler's limit of "
                                 f"{LIMIT} bytes (max_payload_size)"]
    assert out.messages(alice, Error)[0].ref == "c1.1"  # the client fails that job with the reason
    assert [q.uids for q in out.messages(alice, Queued)] == [["c1.0"]]
    assert limited.queued() == ["c1.0"]
    assert "c1.1" not in limited.state.jobs
    assert all("c1.1" not in repr(record) for record in out.persisted())  # nothing of it journaled


def test_a_cluster_spec_over_the_limit_opens_no_cluster(limited: StateDriver) -> None:
    alice = limited.client()
    out = limited.send(alice, OpenCluster("c1", "big", b"s" * (LIMIT + 1)))
    (error,) = out.messages(alice, Error)
    assert error.ref == "c1"
    assert error.reason == (f"cluster c1: its spec (computation and depends) is {LIMIT + 1} bytes, over the "
                            f"scheduler's limit of {LIMIT} bytes (max_payload_size)")
    assert limited.state.clusters == {} and out.persisted() == []


def test_reattaching_to_an_open_cluster_is_not_refused_for_its_spec(limited: StateDriver) -> None:
    limited.open_cluster("c1")
    again = limited.client()
    out = limited.send(again, OpenCluster("c1", "test", b"s" * (LIMIT + 1)))  # the spec is not taken again
    assert out.errors(again) == []


def test_a_result_over_the_limit_ends_the_job_failed_saying_why(limited: StateDriver) -> None:
    alice = limited.open_cluster("c1")
    node, _ = limited.node("n1")
    limited.submit(alice, "c1", 1)
    out = limited.send(node, NodeProgress([], [JobResult("c1.0", "FINISHED", b"r" * (LIMIT + 1), node="n1")]))
    (result,) = out.results(alice)
    assert (result.status, result.payload) == ("FAILED", b"")
    assert result.reason == (f"the job's result is {LIMIT + 1} bytes, over the scheduler's limit of {LIMIT} bytes "
                             "(max_payload_size)")
    assert limited.state.jobs["c1.0"].result == result  # what is kept and journaled is the small one
    assert all(b"r" * (LIMIT + 1) not in repr(r).encode() for r in out.persisted())


def test_a_provisional_result_over_the_limit_is_dropped(limited: StateDriver) -> None:
    alice = limited.open_cluster("c1")
    node, _ = limited.node("n1")
    limited.submit(alice, "c1", 1)
    out = limited.send(node, NodeProgress([], [], [JobProvisional("c1.0", b"p" * (LIMIT + 1), 1.0),
                                                   JobProvisional("c1.0", b"small", 2.0)]))
    assert [p.payload for u in out.messages(alice, JobsUpdate) for p in u.provisional] == [b"small"]
    assert any(log.event == "provisional result dropped" for log in out.logs())


def test_no_limit_when_zero(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.send(alice, Submit("c1", [JobSubmit("c1.0", b"x" * 1_000_000)]))
    assert driver.queued() == ["c1.0"]


@pytest.mark.parametrize(("options", "reason"), [
    (JobOptions(cpus=float("-inf")), "cpus must be a finite number >= 0, not -inf"),
    (JobOptions(cpus=float("nan")), "cpus must be a finite number >= 0, not nan"),
    (JobOptions(cpus=-2.0), "cpus must be a finite number >= 0, not -2.0"),
    (JobOptions(timeout=float("inf")), "timeout must be a finite number >= 0, not inf"),
    (JobOptions(memory=-1), "memory must be >= 0, not -1"),
    (JobOptions(gpus=-1), "gpus must be >= 0, not -1"),
])
def test_job_options_no_node_could_honour_are_refused(driver: StateDriver, options: JobOptions, reason: str) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=4)
    out = driver.send(alice, Submit("c1", [JobSubmit("c1.0", b"a", options), JobSubmit("c1.1", b"a")]))
    assert out.errors(alice) == [f"job c1.0: bad options: {reason}"]
    assert "c1.0" not in driver.state.jobs
    assert out.dispatched(node) == ["c1.1"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["started_at", "finished_at", "start event", "provisional"])
def test_a_node_reporting_a_timestamp_that_is_not_finite_is_refused(driver: StateDriver, bad: float,
                                                                    where: str) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 3)
    before = driver.snapshot()
    match where:
        case "started_at" | "finished_at":
            progress = NodeProgress([], [JobResult("c1.0", "FINISHED", b"r", **{where: bad}, node="n1")])
        case "start event":
            progress = NodeProgress([JobStarted("c1.0", "n1", bad)], [])
        case _:
            progress = NodeProgress([], [], [JobProvisional("c1.0", b"p", bad)])
    out = driver.send(node, progress)
    assert out.errors(node) == ["protocol violation: a timestamp that is not a finite number, from a node"]
    assert out.closed() == [node] and out.persisted() == []
    assert driver.state.jobs["c1.0"].result is None
    driver.node("n2", cpus=1)  # the state still schedules (a NaN runtime used to crash it here)
    assert before["jobs"].keys() == driver.snapshot()["jobs"].keys()


@pytest.mark.parametrize(("memory", "gpus"), [(-1, 0), (0, -1)])
def test_a_node_advertising_negative_resources_is_refused(driver: StateDriver, memory: int, gpus: int) -> None:
    node = driver.node_conn("n1")
    out = driver.send(node, NodeReady("n1", 2, memory, gpus))
    assert out.errors(node) == [f"protocol violation: node advertises {memory} bytes of memory and {gpus} gpus"]
    assert driver.state.nodes == {}
