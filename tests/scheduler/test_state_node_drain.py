"""SchedulerState and NodeDrain: a node stops taking jobs (stop, --serve N, service hours) or hands them back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairpool.jobstatus import JobStatus
from fairpool.messages import NodeDrain, NodeReady

if TYPE_CHECKING:
    from conftest import StateDriver


def test_a_draining_node_gets_no_new_jobs(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1)
    driver.send(node, NodeDrain(True, "outside service hours"))
    assert driver.submit(alice, "c1", 2).dispatched(node) == []
    assert driver.state.nodes[node].state == "drained"
    assert driver.queued() == ["c1.0", "c1.1"]


def test_a_node_that_takes_jobs_again_gets_the_queued_ones(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1)
    driver.send(node, NodeDrain(True, "outside service hours"))
    driver.submit(alice, "c1", 1)
    out = driver.send(node, NodeDrain(False, "service hours began"))
    assert out.dispatched(node) == ["c1.0"]
    assert driver.state.nodes[node].state == "up"


def test_a_draining_node_keeps_its_running_jobs_and_is_drained_when_they_end(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1)
    driver.submit(alice, "c1", 1)
    driver.start(node, "c1.0")
    driver.send(node, NodeDrain(True, "stopping"))
    assert driver.state.nodes[node].state == "draining"
    out = driver.finish(node, "c1.0")
    assert [r.status for r in out.results(alice)] == ["FINISHED"]
    assert driver.state.nodes[node].state == "drained"


def test_jobs_handed_back_that_never_started_are_queued_again(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1)
    driver.submit(alice, "c1", 2)
    driver.send(node, NodeDrain(True, "stopping", ["c1.0", "c1.1"]))
    assert driver.queued() == ["c1.0", "c1.1"]
    assert driver.assigned(node) == []
    other, out = driver.node("n2", cpus=1)
    assert out.dispatched(other) == ["c1.0", "c1.1"]


def test_a_started_job_handed_back_ends_abandoned_unless_reentrant(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    bob = driver.open_cluster("r1", "bob", reentrant=True)
    node, _ = driver.node(cpus=2)
    driver.submit(alice, "c1", 1)
    driver.submit(bob, "r1", 1)
    driver.start(node, "c1.0", "r1.0")
    out = driver.send(node, NodeDrain(True, "stopping", ["c1.0", "r1.0"]))
    (abandoned,) = out.results(alice)
    assert abandoned.status == JobStatus.ABANDONED.value and "handed back" in abandoned.reason
    assert driver.queued() == ["r1.0"]


def test_a_node_cannot_lift_an_admins_drain(driver: StateDriver) -> None:
    node, _ = driver.node(cpus=1)
    driver.state.drained.add("n1")
    driver.state.nodes[node].state = "drained"
    driver.send(node, NodeDrain(False, "service hours began"))
    assert driver.state.nodes[node].state == "drained"


def test_node_drain_before_node_ready_is_a_protocol_violation(driver: StateDriver) -> None:
    conn = driver.node_conn("n1")
    out = driver.send(conn, NodeDrain(True))
    assert out.closed() == [conn]
    assert any("NodeDrain before NodeReady" in e for e in out.errors(conn))


def test_a_node_that_reconnects_takes_jobs_until_it_says_otherwise(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1, session="s1")
    driver.send(node, NodeDrain(True, "outside service hours"))
    driver.disconnect(node)
    again = driver.node_conn("n1")
    out = driver.send(again, NodeReady("n1", 1, session="s1"), NodeDrain(True, "outside service hours"))
    assert driver.submit(alice, "c1", 1).dispatched(again) == [] and out.dispatched(again) == []
