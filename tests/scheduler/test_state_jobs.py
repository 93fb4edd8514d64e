"""SchedulerState and per-job options: resources, pinning, timeouts, cancellation, progress, node events,
and how long results wait for a client that went away."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    CancelJobs,
    CancelTasks,
    Dispatch,
    FileChunk,
    Heartbeat,
    JobOptions,
    JobProvisional,
    JobSubmit,
    JobsUpdate,
    NodeEvent,
    NodeProgress,
    OpenCluster,
    Queued,
    Submit,
)
from fairpool.scheduler.journalrecords import RAcked, RClusterClosed, RJobsQueued, RResults
from fairpool.scheduler.replay import replay

if TYPE_CHECKING:
    from conftest import Outcome, StateDriver

GB = 1 << 30
DAY = 24 * 3600.0


def submit(driver: StateDriver, conn: int, uid: str, **options: object) -> Outcome:
    return driver.send(conn, Submit(uid.split(".")[0], [JobSubmit(uid, b"args", JobOptions(**options))]))  # type: ignore[arg-type]


# --- resources and placement ---------------------------------------------------------------------


def test_a_job_goes_only_to_a_node_with_the_cpus_it_asks_for(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    small, _ = driver.node("small", cpus=1)
    big, _ = driver.node("big", cpus=4)
    out = submit(driver, alice, "c1.0", cpus=3.0)
    assert out.dispatched(big) == ["c1.0"] and out.dispatched(small) == []


def test_jobs_needing_memory_do_not_share_a_node_that_cannot_hold_both(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=4, memory=10 * GB)
    first = submit(driver, alice, "c1.0", memory=6 * GB)
    second = submit(driver, alice, "c1.1", memory=6 * GB)
    assert first.dispatched(node) == ["c1.0"] and second.dispatched(node) == []
    assert driver.queued() == ["c1.1"]
    assert driver.finish(node, "c1.0").dispatched(node) == ["c1.1"]


def test_a_job_needing_gpus_waits_for_a_free_gpu(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=4, gpus=1)
    assert submit(driver, alice, "c1.0", gpus=1).dispatched(node) == ["c1.0"]
    assert submit(driver, alice, "c1.1", gpus=1).dispatched(node) == []


def test_only_plain_jobs_are_prefetched_beyond_the_cpus(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=1, memory=8 * GB)
    out = driver.submit(alice, "c1", 2)
    assert out.dispatched(node) == ["c1.0", "c1.1"]  # one runs, one waits on the node
    driver.finish(node, "c1.0", "c1.1")
    submit(driver, alice, "c1.2", memory=GB)
    out = submit(driver, alice, "c1.3", memory=GB)
    assert driver.assigned(node) == ["c1.2"] and out.dispatched(node) == []


def test_a_job_no_node_could_ever_run_is_refused_at_once_with_the_reason(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.node("n1", cpus=2, memory=4 * GB)
    out = driver.send(alice, Submit("c1", [JobSubmit("c1.0", b"", JobOptions(cpus=8.0)), JobSubmit("c1.1", b"")]))
    assert out.messages(alice, Queued) == [Queued("c1", ["c1.1"], driver.now)]  # never QUEUED ...
    (result,) = out.results(alice)
    assert (result.uid, result.status) == ("c1.0", "FAILED")
    assert result.reason.startswith("refused: no node can run this job")
    assert "8 cpus" in result.reason and "n1" in result.reason
    assert [spec.uid for r in out.persisted() if isinstance(r, RJobsQueued) for spec in r.jobs] == ["c1.1"]
    assert "c1.0" not in driver.state.jobs  # ... so nothing of it is kept or journaled


def test_a_big_job_waits_while_the_pool_has_no_nodes(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    out = submit(driver, alice, "c1.0", cpus=64.0)
    assert out.results(alice) == [] and driver.queued() == ["c1.0"]


def test_a_pinned_job_runs_only_on_its_node(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    other, _ = driver.node("other", cpus=4)
    out = submit(driver, alice, "c1.0", node="chosen")
    assert out.results(alice) == [] and out.dispatched(other) == []  # the named node may still join
    chosen, joined = driver.node("chosen", cpus=1)
    assert joined.dispatched(chosen) == ["c1.0"]


def test_the_task_carries_the_jobs_timeout(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1")
    out = submit(driver, alice, "c1.0", timeout=2.5)
    (dispatch,) = out.messages(node, Dispatch)
    assert [(t.uid, t.timeout) for t in dispatch.tasks] == [("c1.0", 2.5)]


def test_a_jobs_priority_option_overrides_its_clusters(driver: StateDriver) -> None:
    alice = driver.client("alice")
    driver.send(alice, OpenCluster("c1", "test", b"", priority=1))
    submit(driver, alice, "c1.0", priority=7)
    driver.submit(alice, "c1", ["c1.1"])
    assert [driver.state.jobs[u].priority for u in ("c1.0", "c1.1")] == [7, 1]


# --- cancellation --------------------------------------------------------------------------------


def test_cancelling_a_queued_job_ends_it_cancelled(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 2)
    out = driver.send(alice, CancelJobs(["c1.1"]))
    assert [(r.uid, r.status) for r in out.results(alice)] == [("c1.1", "CANCELLED")]
    assert [type(r) for r in out.persisted()] == [RResults]
    assert driver.queued() == ["c1.0"]


def test_cancelling_a_running_job_asks_its_node_once(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    out = driver.send(alice, CancelJobs(["c1.0"]))
    assert out.messages(node, CancelTasks) == [CancelTasks(["c1.0"], "cancelled by the client")]
    assert out.results(alice) == []
    assert driver.send(alice, CancelJobs(["c1.0"])).messages(node, CancelTasks) == []


def test_the_nodes_failure_of_a_cancelled_job_reads_as_cancelled(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    driver.send(alice, CancelJobs(["c1.0"]))
    out = driver.finish(node, "c1.0", status="FAILED")
    assert [r.status for r in out.results(alice)] == ["CANCELLED"]
    assert driver.state.jobs["c1.0"].status is JobStatus.CANCELLED


def test_a_cancelled_job_that_finished_first_stays_finished(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    driver.send(alice, CancelJobs(["c1.0"]))
    assert [r.status for r in driver.finish(node, "c1.0").results(alice)] == ["FINISHED"]


def test_another_tenant_cannot_cancel_a_job(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", "alice")
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 2)
    bob = driver.client("bob")
    assert driver.send(bob, CancelJobs(["c1.0", "c1.1"])) == []  # not even an error: "not yours" looks like nothing
    assert driver.assigned(node) == ["c1.0", "c1.1"]


# --- progress forwarded --------------------------------------------------------------------------


def test_provisional_results_and_files_reach_the_owning_client(driver: StateDriver) -> None:
    alice = driver.open_cluster("a1", "alice")
    bob = driver.open_cluster("b1", "bob")
    node, _ = driver.node("n1", cpus=2)
    driver.submit(alice, "a1", 1)
    driver.submit(bob, "b1", 1)
    value = JobProvisional("a1.0", b"partial", driver.now)
    chunk = FileChunk("b1.0", "out/plot.png", 0, b"\x89PNG", last=True)
    out = driver.send(node, NodeProgress([], [], [value], [chunk]))
    assert out.messages(alice, JobsUpdate) == [JobsUpdate([], [], [value], [])]
    assert out.messages(bob, JobsUpdate) == [JobsUpdate([], [], [], [chunk])]
    assert out.persisted() == []  # provisional: nothing to keep


def test_progress_for_a_job_the_node_does_not_hold_is_dropped(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    n1, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    n2, _ = driver.node("n2")
    out = driver.send(n2, NodeProgress([], [], [JobProvisional("c1.0", b"x", 0.0)], []))
    assert out.messages(alice, JobsUpdate) == []


# --- node events ---------------------------------------------------------------------------------


def test_clients_with_an_open_cluster_hear_that_a_node_joined(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    idle = driver.client("bob")  # no cluster: nothing to tell it
    node, out = driver.node("n1", cpus=3)
    assert out.messages(alice, NodeEvent) == [NodeEvent("joined", "n1", 3)]
    assert out.messages(idle, NodeEvent) == [] and out.messages(node, NodeEvent) == []


# --- result retention ----------------------------------------------------------------------------


def finished_and_detached(driver: StateDriver, cluster_id: str = "c1", tenant: str = "alice") -> int:
    """A cluster with one finished result whose client went away; returns the node."""
    conn = driver.open_cluster(cluster_id, tenant)
    node, _ = driver.node(f"node-{cluster_id}")
    driver.submit(conn, cluster_id, 1)
    driver.finish(node, f"{cluster_id}.0")
    driver.disconnect(conn)
    return node


def test_results_of_a_detached_cluster_are_purged_after_the_retention_time_and_logged(
    make_driver: type[StateDriver],
) -> None:
    driver = make_driver(result_retention=DAY)
    node = finished_and_detached(driver)
    driver.now += DAY + 1
    driver.send(node, Heartbeat(driver.now))
    out = driver.tick()
    assert "c1.0" not in driver.state.jobs
    assert out.persisted() == [RAcked(["c1.0"]), RClusterClosed("c1")]  # emptied and detached: forgotten
    (log,) = out.logs()
    assert (log.level, log.event) == ("warning", "results purged after the retention time")
    assert dict(log.fields) == {"cluster": "c1", "tenant": "alice", "jobs": 1, "retention_s": DAY}


def test_results_younger_than_the_retention_time_are_kept(make_driver: type[StateDriver]) -> None:
    driver = make_driver(result_retention=DAY)
    node = finished_and_detached(driver)
    driver.now += DAY - 1
    driver.send(node, Heartbeat(driver.now))
    assert driver.tick().persisted() == []
    assert driver.state.jobs["c1.0"].result is not None


def test_results_of_an_attached_cluster_are_never_purged(make_driver: type[StateDriver]) -> None:
    driver = make_driver(result_retention=DAY)
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    driver.finish(node, "c1.0")
    driver.now += 2 * DAY
    driver.send(alice, Heartbeat(driver.now))
    driver.send(node, Heartbeat(driver.now))
    assert driver.tick().persisted() == []
    driver.send(alice, AckResults(["c1.0"]))  # still there to acknowledge
    assert "c1.0" not in driver.state.jobs


def test_cancelled_results_of_a_detached_cluster_are_purged_too(make_driver: type[StateDriver]) -> None:
    driver = make_driver(result_retention=DAY)
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 1)
    driver.send(alice, CancelJobs(["c1.0"]))
    driver.disconnect(alice)
    driver.now += DAY + 1
    driver.tick()
    assert "c1.0" not in driver.state.jobs


def test_a_cluster_forgotten_by_the_purge_stays_forgotten_after_a_restart(make_driver: type[StateDriver]) -> None:
    driver = make_driver(result_retention=DAY)
    node = finished_and_detached(driver)
    driver.now += DAY + 1
    driver.send(node, Heartbeat(driver.now))
    driver.tick()
    assert driver.state.clusters == {}
    fresh = make_driver(result_retention=DAY)
    replay(fresh.state, driver.records, driver.now)
    assert fresh.state.clusters == {}
