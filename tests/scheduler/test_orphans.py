"""Jobs of a node whose connection dropped: held for it, reclaimed, adopted, or settled at the deadline."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fairpool.jobstatus import JobStatus
from fairpool.messages import CancelJobs, CancelTasks, CloseCluster, Heartbeat, NodeEvent
from fairpool.scheduler.journalrecords import RAssigned, RRequeued, RResults
from fairpool.scheduler.orphans import Orphans
from fairpool.scheduler.records import JobRecord

if TYPE_CHECKING:
    from conftest import StateDriver

STALE = "unknown to the scheduler"


def two_jobs_on_n1(driver: StateDriver, *, reentrant: bool = False) -> tuple[int, int]:
    """A client, and node n1 (session s1) holding c1.0 (started) and c1.1 (not yet); c1.2 queued."""
    alice = driver.open_cluster("c1", reentrant=reentrant)
    node, _ = driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 3)
    driver.start(node, "c1.0")
    return alice, node


# --- held until the deadline ---------------------------------------------------------------------


def test_dropped_nodes_jobs_are_held_for_it_not_requeued(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    out = driver.disconnect(node)
    assert out.results(alice) == [] and out.persisted() == []
    assert driver.orphans() == {"n1": ["c1.0", "c1.1"]}
    assert driver.queued() == ["c1.2"]
    assert driver.state.jobs["c1.0"].status is JobStatus.RUNNING


def test_held_jobs_are_not_dispatched_to_another_node(driver: StateDriver) -> None:
    _, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    n2, joined = driver.node("n2", cpus=1)
    assert joined.dispatched(n2) == ["c1.2"]


def test_held_jobs_are_settled_exactly_one_heartbeat_timeout_after_the_drop(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver, reentrant=True)
    dropped_at = driver.now
    driver.disconnect(node)
    driver.now = dropped_at + driver.state.heartbeat_timeout - 0.01
    driver.send(alice, Heartbeat(driver.now))  # the client stays
    assert driver.tick().persisted() == []
    assert driver.orphans() == {"n1": ["c1.0", "c1.1"]}
    driver.now = dropped_at + driver.state.heartbeat_timeout
    out = driver.tick()
    assert out.persisted() == [RRequeued(["c1.0", "c1.1"])]
    assert driver.orphans() == {} and driver.queued() == ["c1.0", "c1.1", "c1.2"]


def test_abandoned_jobs_at_the_deadline_are_journaled(driver: StateDriver) -> None:
    _, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    records = driver.expire().persisted()
    abandoned = [(res.uid, res.status) for r in records if isinstance(r, RResults) for res in r.results]
    # c1.1 was only dispatched, but it may have started unheard of: not reentrant, so not rerun
    assert abandoned == [("c1.0", "ABANDONED"), ("c1.1", "ABANDONED")]
    assert [r for r in records if isinstance(r, RRequeued)] == []


def test_requeued_jobs_at_the_deadline_are_journaled(driver: StateDriver) -> None:
    _, node = two_jobs_on_n1(driver, reentrant=True)
    driver.disconnect(node)
    records = driver.expire().persisted()
    assert [r for r in records if isinstance(r, RRequeued)] == [RRequeued(["c1.0", "c1.1"])]


def test_node_dropping_with_jobs_is_a_failure_to_clients_and_without_jobs_a_departure(
    driver: StateDriver,
) -> None:
    alice, node = two_jobs_on_n1(driver)
    idle, _ = driver.node("n2", cpus=1)
    driver.start(idle, "c1.2")
    driver.finish(idle, "c1.2")
    assert driver.disconnect(node).messages(alice, NodeEvent) == [NodeEvent("failed", "n1", 1)]
    assert driver.disconnect(idle).messages(alice, NodeEvent) == [NodeEvent("left", "n2", 1)]


# --- the same node comes back ----------------------------------------------------------------------


def test_node_back_with_the_same_session_reclaims_what_it_holds(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    again, out = driver.node("n1", cpus=1, session="s1", held=["c1.0", "c1.1"])
    assert out.dispatched(again) == []  # it has them already
    assert driver.assigned(again) == ["c1.0", "c1.1"] and driver.orphans() == {}
    assert driver.state.jobs["c1.0"].status is JobStatus.RUNNING
    assert [(type(r), sorted(r.uids)) for r in out.persisted()] == [(RAssigned, ["c1.0", "c1.1"])]
    assert out.messages(alice, NodeEvent) == [NodeEvent("joined", "n1", 1)]


def test_results_of_reclaimed_jobs_reach_the_client(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    again, _ = driver.node("n1", cpus=1, session="s1", held=["c1.0", "c1.1"])
    out = driver.finish(again, "c1.0")
    assert [(r.uid, r.status, r.node) for r in out.results(alice)] == [("c1.0", "FINISHED", "n1")]


def test_reclaimed_jobs_are_not_settled_at_the_old_deadline(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    again, _ = driver.node("n1", cpus=1, session="s1", held=["c1.0", "c1.1"])
    out = driver.expire()
    assert out.results(alice) == [] and out.persisted() == []
    assert driver.assigned(again) == ["c1.0", "c1.1"]
    assert driver.state.jobs["c1.0"].status is JobStatus.RUNNING


def test_jobs_the_returning_node_does_not_hold_go_back_to_the_queue(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    again, out = driver.node("n1", cpus=1, session="s1", held=["c1.0"])
    assert out.results(alice) == []
    assert driver.assigned(again) == ["c1.0", "c1.1"]  # c1.1 requeued, then dispatched again at once
    assert out.dispatched(again) == ["c1.1"]
    assert RRequeued(["c1.1"]) in out.persisted()


def test_a_started_job_the_node_no_longer_holds_is_requeued_even_if_not_reentrant(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    driver.node("n1", cpus=1, session="s1", held=["c1.1"])
    assert driver.state.jobs["c1.0"].result is None
    assert driver.state.jobs["c1.0"].status is JobStatus.QUEUED


def test_node_back_with_a_new_session_loses_what_it_ran(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    again, out = driver.node("n1", cpus=1, session="s2")
    result, prefetched = out.results(alice)
    assert (result.uid, result.status) == ("c1.0", "ABANDONED")
    assert "n1" in result.reason and "restarted" in result.reason
    assert (prefetched.uid, prefetched.status) == ("c1.1", "ABANDONED")  # it may have started too
    assert driver.orphans() == {}
    assert out.dispatched(again) == ["c1.2"]


def test_node_back_with_a_new_session_requeues_started_jobs_of_a_reentrant_cluster(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver, reentrant=True)
    driver.disconnect(node)
    again, out = driver.node("n1", cpus=1, session="s2")
    assert out.results(alice) == []
    assert out.dispatched(again) == ["c1.0", "c1.1"]


def test_another_node_cannot_take_what_is_held_for_a_lost_one(driver: StateDriver) -> None:
    _, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    n2, out = driver.node("n2", cpus=1, session="x", held=["c1.0"])
    assert out.messages(n2, CancelTasks) == [CancelTasks(["c1.0"], STALE)]
    assert driver.orphans() == {"n1": ["c1.0", "c1.1"]}
    assert driver.assigned(n2) == ["c1.2"]


# --- what a joining node says it holds -------------------------------------------------------------


def test_node_adopts_a_queued_job_it_says_it_holds(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 2)  # no node yet: both queued
    node, out = driver.node("n1", cpus=1, session="s1", held=["c1.1"])
    assert driver.assigned(node) == ["c1.0", "c1.1"]
    assert out.dispatched(node) == ["c1.0"]  # c1.1 is not sent again
    assert RAssigned("n1", "s1", ["c1.1"]) in out.persisted()
    assert driver.queued() == []
    assert driver.finish(node, "c1.1").results(alice)[0].uid == "c1.1"


def test_held_uids_that_are_unknown_or_over_are_cancelled_on_the_node(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    n1, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 1)
    driver.finish(n1, "c1.0")
    n2, out = driver.node("n2", cpus=1, held=["c1.0", "zz.9"])
    (cancel,) = out.messages(n2, CancelTasks)
    assert (sorted(cancel.uids), cancel.reason) == (["c1.0", "zz.9"], STALE)
    assert driver.assigned(n2) == []
    assert driver.state.jobs["c1.0"].status is JobStatus.FINISHED


def test_held_uid_running_on_another_node_is_cancelled_on_the_newcomer(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    n1, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 1)
    n2, out = driver.node("n2", cpus=1, held=["c1.0"])
    assert out.messages(n2, CancelTasks) == [CancelTasks(["c1.0"], STALE)]
    assert driver.assigned(n1) == ["c1.0"]


# --- cancellation and closing while a node is away -----------------------------------------------


def test_cancelling_a_held_job_ends_it_and_the_returning_node_is_told_to_drop_it(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    out = driver.send(alice, CancelJobs(["c1.0"]))
    assert [(r.uid, r.status) for r in out.results(alice)] == [("c1.0", "CANCELLED")]
    assert driver.orphans() == {"n1": ["c1.1"]}
    again, out = driver.node("n1", cpus=1, session="s1", held=["c1.0", "c1.1"])
    assert out.messages(again, CancelTasks) == [CancelTasks(["c1.0"], STALE)]
    assert driver.assigned(again) == ["c1.1", "c1.2"]


def test_reclaimed_job_whose_cancel_was_asked_is_cancelled_again_on_the_node(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.send(alice, CancelJobs(["c1.0"]))
    driver.disconnect(node)  # the CancelTasks may have been lost with the connection
    again, out = driver.node("n1", cpus=1, session="s1", held=["c1.0", "c1.1"])
    assert out.messages(again, CancelTasks) == [CancelTasks(["c1.0"], "cancelled by the client")]
    out = driver.finish(again, "c1.0", status="FAILED")
    assert [r.status for r in out.results(alice)] == ["CANCELLED"]


def test_job_whose_cancel_was_asked_ends_cancelled_when_its_node_is_lost(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver, reentrant=True)
    driver.send(alice, CancelJobs(["c1.0"]))
    driver.disconnect(node)
    out = driver.expire()
    assert [(r.uid, r.status) for r in out.results(alice)] == [("c1.0", "CANCELLED")]
    assert "c1.0" not in driver.queued()


def test_closing_a_cluster_cancels_held_jobs_that_never_started(driver: StateDriver) -> None:
    alice, node = two_jobs_on_n1(driver)
    driver.disconnect(node)
    out = driver.send(alice, CloseCluster("c1"))
    assert sorted((r.uid, r.status) for r in out.results(alice)) == [("c1.1", "CANCELLED"), ("c1.2", "CANCELLED")]
    assert driver.orphans() == {"n1": ["c1.0"]}  # it may still be running: its node decides


def test_node_reconnecting_before_its_old_connection_is_noticed_dead_keeps_its_jobs(driver: StateDriver) -> None:
    _, old = two_jobs_on_n1(driver)
    new, out = driver.node("n1", cpus=1, session="s1", held=["c1.0", "c1.1"])
    assert out.messages(new, CancelTasks) == []
    assert driver.assigned(new) == ["c1.0", "c1.1"]


# --- Orphans itself --------------------------------------------------------------------------------


def job(uid: str) -> JobRecord:
    return JobRecord(uid, "c1", "alice", b"", 1, 0, 0.0)


def test_orphans_claim_gives_the_same_session_and_loses_the_others() -> None:
    orphans = Orphans()
    orphans.hold("n1", "s1", 10.0, [job("c1.0")], "reset")
    orphans.hold("n1", "s0", 10.0, [job("c1.1")], "reset")
    orphans.hold("n2", "s1", 10.0, [job("c1.2")], "reset")
    mine, lost = orphans.claim("n1", "s1")
    assert list(mine) == ["c1.0"]
    assert [(session, [j.uid for j in jobs], reason) for session, jobs, reason in lost] == [
        ("s0", ["c1.1"], "the node restarted")]
    assert [(n, s, [j.uid for j in jobs]) for n, s, jobs in orphans.by_node()] == [("n2", "s1", ["c1.2"])]


def test_orphans_expire_at_the_deadline_and_holding_again_extends_it() -> None:
    orphans = Orphans()
    orphans.hold("n1", "s1", 10.0, [job("c1.0")], "reset")
    orphans.hold("n1", "s1", 12.0, [job("c1.1")], "reset")
    assert orphans.expire(11.9) == []
    ((name, session, jobs, reason),) = orphans.expire(12.0)
    assert (name, session, sorted(j.uid for j in jobs), reason) == ("n1", "s1", ["c1.0", "c1.1"], "reset")
    assert len(orphans) == 0


def test_orphans_release_takes_one_job_out() -> None:
    orphans = Orphans()
    held = job("c1.0")
    orphans.hold("n1", "s1", 10.0, [held, job("c1.1")], "reset")
    assert orphans.release(held) is True
    assert orphans.release(held) is False
    assert len(orphans) == 1


def test_orphans_set_deadlines_only_fills_unset_ones() -> None:
    orphans = Orphans()
    orphans.hold("n1", "s1", math.inf, [job("c1.0")], "restart")
    orphans.hold("n2", "s1", 5.0, [job("c1.1")], "reset")
    orphans.set_deadlines(20.0)
    assert [n for n, _, _, _ in orphans.expire(5.0)] == ["n2"]
    assert [n for n, _, _, _ in orphans.expire(20.0)] == ["n1"]
