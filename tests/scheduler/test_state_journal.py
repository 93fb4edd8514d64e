"""What SchedulerState asks to journal for each change, and which sends wait for it (durable)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairpool.messages import (
    AckResults,
    CloseCluster,
    Heartbeat,
    JobSubmit,
    OpenCluster,
    Queued,
    Submit,
)
from fairpool.scheduler.events import Persist, Send
from fairpool.scheduler.journalrecords import (
    RAcked,
    RAssigned,
    RClusterClosed,
    RClusterOpened,
    RJobsQueued,
    RResults,
)

if TYPE_CHECKING:
    from conftest import StateDriver


def test_opening_a_cluster_journals_it(driver: StateDriver) -> None:
    conn = driver.client("alice")
    out = driver.send(conn, OpenCluster("c1", "name", b"spec", reentrant=True, priority=4))
    assert out.persisted() == [RClusterOpened("c1", "alice", "name", b"spec", True, 4, driver.now)]


def test_reattaching_to_a_cluster_journals_nothing(driver: StateDriver) -> None:
    driver.open_cluster("c1")
    again = driver.client("alice")
    assert driver.send(again, OpenCluster("c1", "test", b"")).persisted() == []


def test_submit_journals_the_new_jobs_with_their_sequences_before_the_durable_queued(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", ["c1.a"])
    out = driver.send(alice, Submit("c1", [JobSubmit("c1.a", b"x"), JobSubmit("c1.b", b"args")]))
    (record,) = out.persisted()
    assert record == RJobsQueued("c1", [JobSubmit("c1.b", b"args")], [2], driver.now)
    (queued,) = out.durable()
    assert queued == Send(alice, Queued("c1", ["c1.a", "c1.b"], driver.now), durable=True)
    assert out.index(Persist(record)) < out.index(queued)


def test_resubmitting_known_jobs_journals_nothing_but_is_acknowledged_durably(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", ["c1.a"])
    out = driver.submit(alice, "c1", ["c1.a"])
    assert out.persisted() == []
    assert [s.message for s in out.durable()] == [Queued("c1", ["c1.a"], driver.now)]


def test_refused_submit_journals_nothing(driver: StateDriver) -> None:
    bob = driver.client("bob")
    driver.open_cluster("c1", "alice")
    out = driver.submit(bob, "c1", 1)
    assert out.persisted() == [] and out.durable() == []


def test_dispatch_journals_the_assignment_and_does_not_wait_for_it(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=1, session="s1")
    out = driver.submit(alice, "c1", 3)
    assert RAssigned("n1", "s1", ["c1.0", "c1.1"]) in out.persisted()
    assert out.dispatched(node) == ["c1.0", "c1.1"]
    assert [type(s.message) for s in out.durable()] == [Queued]  # the Dispatch goes at once


def test_results_of_one_node_message_are_journaled_as_one_record(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=2)
    driver.submit(alice, "c1", 2)
    out = driver.finish(node, "c1.0", "c1.1")
    (record,) = [r for r in out.persisted() if isinstance(r, RResults)]
    assert [(r.uid, r.status, r.node) for r in record.results] == [("c1.0", "FINISHED", "n1"),
                                                                     ("c1.1", "FINISHED", "n1")]
    assert record.results == out.results(alice)  # the journal holds what the client was told


def test_ack_journals_only_what_it_forgets(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=2)
    driver.submit(alice, "c1", 2)
    driver.finish(node, "c1.0")
    out = driver.send(alice, AckResults(["c1.0", "c1.1", "c1.nope"]))
    assert out.persisted() == [RAcked(["c1.0"])]
    assert driver.send(alice, AckResults(["c1.1"])).persisted() == []


def test_close_journals_the_close_and_the_cancellations(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 2)
    out = driver.send(alice, CloseCluster("c1"))
    records = out.persisted()
    assert records[0] == RClusterClosed("c1")
    assert [(r.uid, r.status) for rec in records[1:] if isinstance(rec, RResults) for r in rec.results] == [
        ("c1.0", "CANCELLED"), ("c1.1", "CANCELLED")]


def test_only_a_nodes_heartbeat_is_echoed_and_the_echo_is_durable(driver: StateDriver) -> None:
    node, _ = driver.node("n1")
    alice = driver.client("alice")
    assert driver.send(node, Heartbeat(driver.now)).durable() == [Send(node, Heartbeat(driver.now), durable=True)]
    assert driver.send(alice, Heartbeat(driver.now)) == []


def test_everything_journaled_is_also_kept_by_the_driver_in_order(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 1)
    driver.finish(node, "c1.0")
    assert [type(r) for r in driver.records] == [RClusterOpened, RJobsQueued, RAssigned, RResults]
