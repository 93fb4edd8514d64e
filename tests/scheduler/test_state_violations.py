"""SchedulerState and peers that break the protocol: Error + Close, and no other change."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    Error,
    Heartbeat,
    JobResult,
    JobStarted,
    JobSubmit,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Submit,
)
from fairpool.scheduler.events import Send

if TYPE_CHECKING:
    from conftest import Outcome, StateDriver


def busy(driver: StateDriver) -> tuple[int, int]:
    """A client with queued and running jobs, and a node holding some: state worth protecting."""
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 4)
    driver.start(node, "c1.0")
    return alice, node


def assert_refused(driver: StateDriver, conn: int, out: Outcome, reason: str) -> None:
    (error,) = out.messages(conn, Error)
    assert error.reason.startswith("protocol violation: ") and reason in error.reason
    assert out.closed() == [conn]
    assert conn not in driver.state.conns
    assert out.persisted() == []  # nothing of it reached the journal


def test_client_sending_node_progress_is_refused_and_changes_nothing(driver: StateDriver) -> None:
    alice, _ = busy(driver)
    before = driver.snapshot()
    out = driver.send(alice, NodeProgress([JobStarted("c1.1", "n1", 0.0)], [JobResult("c1.0", "FINISHED")]))
    assert_refused(driver, alice, out, "NodeProgress is not a client request")
    assert driver.snapshot() == before


def test_client_sending_node_ready_does_not_become_a_node(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 1)
    out = driver.send(alice, NodeReady("sneaky", 64))
    assert_refused(driver, alice, out, "NodeReady is not a client request")
    assert driver.state.nodes == {}
    assert out.dispatched(alice) == []


def test_node_sending_submit_is_refused_and_changes_nothing(driver: StateDriver) -> None:
    busy(driver)
    intruder = driver.node_conn("n2")
    before = driver.snapshot()
    out = driver.send(intruder, Submit("c1", [JobSubmit("c1.9", b"")]))
    assert_refused(driver, intruder, out, "Submit is not a node request")
    assert driver.snapshot() == before


def test_node_sending_open_cluster_creates_no_cluster(driver: StateDriver) -> None:
    node, _ = driver.node("n1")
    out = driver.send(node, OpenCluster("n.c", "x", b""))
    assert_refused(driver, node, out, "OpenCluster is not a node request")
    assert driver.state.clusters == {}


def test_admin_sending_submit_is_refused(driver: StateDriver) -> None:
    driver.open_cluster("c1")
    admin = driver.connect("admin", "", "operator")
    out = driver.send(admin, Submit("c1", [JobSubmit("c1.9", b"")]))
    assert_refused(driver, admin, out, "Submit is not a")
    assert driver.queued() == []


def test_node_progress_before_node_ready_is_refused(driver: StateDriver) -> None:
    busy(driver)
    early = driver.node_conn("n2")
    before = driver.snapshot()
    out = driver.send(early, NodeProgress([JobStarted("c1.1", "n2", 0.0)], []))
    assert_refused(driver, early, out, "NodeProgress before NodeReady")
    assert driver.snapshot() == before


@pytest.mark.parametrize("status", ["BOGUS", "CANCELLED", "ABANDONED", "RUNNING"])
def test_node_reporting_a_status_nodes_cannot_report_is_refused(driver: StateDriver, status: str) -> None:
    alice, node = busy(driver)
    out = driver.send(node, NodeProgress([], [JobResult("c1.1", status)]))
    assert_refused(driver, node, out, f"job status {status!r} from a node")
    assert out.results(alice) == []
    assert driver.state.jobs["c1.1"].result is None
    assert driver.orphans() == {"n1": ["c1.0", "c1.1"]}  # handled as a lost node: held for it
    driver.expire()
    # c1.1 was dispatched: it may have started unheard of, and the cluster is not reentrant
    assert driver.state.jobs["c1.1"].status is JobStatus.ABANDONED
    assert driver.queued() == ["c1.2", "c1.3"]


def test_refused_node_progress_is_not_half_applied(driver: StateDriver) -> None:
    alice, node = busy(driver)  # c1.0 running, c1.1 dispatched to n1
    out = driver.send(node, NodeProgress([JobStarted("c1.1", "n1", driver.now)],
                                         [JobResult("c1.0", "FINISHED"), JobResult("c1.1", "BOGUS")]))
    assert out.started(alice) == [] and out.results(alice) == []
    assert driver.state.jobs["c1.1"].status is JobStatus.QUEUED
    out = driver.expire()  # c1.0's FINISHED was not taken: it is lost with the node, and c1.1 with it
    assert [(r.uid, r.status) for r in out.results(alice)] == [("c1.0", "ABANDONED"), ("c1.1", "ABANDONED")]
    assert driver.queued() == ["c1.2", "c1.3"]


def test_node_ready_twice_is_refused(driver: StateDriver) -> None:
    node, _ = driver.node("n1", cpus=1)
    out = driver.send(node, NodeReady("n1", 8))
    assert_refused(driver, node, out, "NodeReady sent twice")
    assert driver.state.nodes == {}


@pytest.mark.parametrize("cpus", [0, -1])
def test_node_without_cpus_is_refused(driver: StateDriver, cpus: int) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 1)
    node = driver.node_conn("n1")
    out = driver.send(node, NodeReady("n1", cpus))
    assert_refused(driver, node, out, f"node advertises {cpus} cpus")
    assert driver.state.nodes == {}
    assert driver.queued() == ["c1.0"]


def test_messages_after_a_violation_in_the_same_batch_are_ignored(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    out = driver.send(alice, NodeReady("x", 1), Submit("c1", []), OpenCluster("c2", "x", b""))
    assert "c2" not in driver.state.clusters
    assert out.closed() == [alice]


def test_violation_is_logged_as_a_warning(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    out = driver.send(alice, NodeReady("x", 1))
    assert [(log.level, log.event) for log in out.logs()] == [("warning", "protocol violation")]


def test_messages_from_an_unknown_connection_are_ignored(driver: StateDriver) -> None:
    busy(driver)
    before = driver.snapshot()
    assert driver.send(999, Submit("c1", []), Heartbeat(0.0)) == []
    assert driver.snapshot() == before


def test_heartbeat_is_accepted_from_every_role(driver: StateDriver) -> None:
    conns = [driver.client(), driver.connect("admin", "", "op")]
    for conn in conns:
        assert driver.send(conn, Heartbeat(driver.now)) == []


def test_node_heartbeat_is_echoed_to_acknowledge_what_came_before(driver: StateDriver) -> None:
    node = driver.node("n1")[0]
    beat = Heartbeat(driver.now)
    assert driver.send(node, beat) == [Send(node, beat, durable=True)]
