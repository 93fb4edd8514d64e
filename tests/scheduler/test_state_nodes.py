"""SchedulerState and its nodes: dispatch order and capacity, progress, lost nodes, heartbeats."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fairpool.messages import (
    ClusterDef,
    Dispatch,
    Heartbeat,
    JobResult,
    JobSubmit,
    NodeProgress,
    NodeReady,
    Queued,
    Submit,
)
from fairpool.scheduler.events import Received
from fairpool.scheduler.records import MAX_PREFETCH, NodeRecord

if TYPE_CHECKING:
    from conftest import StateDriver


# --- dispatch -----------------------------------------------------------------------------


def test_jobs_wait_until_a_node_is_ready(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    out = driver.submit(alice, "c1", 2)
    node = driver.node_conn("n1")
    assert out.dispatched(node) == []
    out = driver.send(node, NodeReady("n1", 1))
    assert out.dispatched(node) == ["c1.0", "c1.1"]


def test_jobs_are_dispatched_in_fifo_order_across_clusters(driver: StateDriver) -> None:
    alice = driver.open_cluster("a1", "alice")
    bob = driver.open_cluster("b1", "bob")
    driver.submit(alice, "a1", ["a1.0", "a1.1"])
    driver.submit(bob, "b1", ["b1.0", "b1.1"])
    driver.submit(alice, "a1", ["a1.2", "a1.3"])
    node, out = driver.node(cpus=3)  # room for 6 while runtimes are unknown
    assert out.dispatched(node) == ["a1.0", "a1.1", "b1.0", "b1.1", "a1.2", "a1.3"]


def test_later_dispatches_keep_fifo_order(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1)
    order = driver.submit(alice, "c1", 6).dispatched(node)
    for done in range(6):
        order += driver.finish(node, order[done]).dispatched(node)
    assert order == [f"c1.{i}" for i in range(6)]


def test_a_burst_of_stimuli_is_dispatched_in_one_pass(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=2)
    out = driver.burst(*(Received(alice, (Submit("c1", [JobSubmit(f"c1.{i}", b"")]),), driver.now)
                         for i in range(3)))
    assert len(out.messages(alice, Queued)) == 3
    assert [d.tasks[0].uid for d in out.messages(node, Dispatch)] == ["c1.0"]  # one Dispatch ...
    assert out.dispatched(node) == ["c1.0", "c1.1", "c1.2"]  # ... with every job, in order


def test_cluster_def_is_sent_once_per_node(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    n1, _ = driver.node("n1", cpus=1)
    first = driver.submit(alice, "c1", 4)
    later = driver.finish(n1, "c1.0", "c1.1")
    n2, joined = driver.node("n2", cpus=1)
    assert first.messages(n1, Dispatch)[0].clusters == [ClusterDef("c1", b"spec:c1", "alice")]
    assert later.dispatched(n1) and later.cluster_defs(n1) == []
    assert joined.dispatched(n2) and joined.cluster_defs(n2) == ["c1"]


def test_cluster_def_comes_in_the_same_dispatch_as_its_first_task(driver: StateDriver) -> None:
    alice = driver.open_cluster("a1", "alice")
    bob = driver.open_cluster("b1", "bob")
    node, _ = driver.node(cpus=2)
    driver.submit(alice, "a1", 1)
    out = driver.submit(bob, "b1", 1)
    (dispatch,) = out.messages(node, Dispatch)
    assert [c.cluster_id for c in dispatch.clusters] == ["b1"]
    assert [t.cluster_id for t in dispatch.tasks] == ["b1"]


def test_task_carries_the_submitted_payload_untouched(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node()
    out = driver.submit(alice, "c1", ["c1.x"])
    (dispatch,) = out.messages(node, Dispatch)
    assert [(t.uid, t.cluster_id, t.payload) for t in dispatch.tasks] == [("c1.x", "c1", b"args:c1.x")]


def test_node_never_gets_more_than_its_capacity(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=2)
    out = driver.submit(alice, "c1", 20)
    record = driver.state.nodes[node]
    assert len(out.dispatched(node)) == record.capacity() == 4  # unknown runtime: twice the cpus
    held = out.dispatched(node)
    while held:
        out = driver.finish(node, held.pop(0))  # 1 s jobs: capacity drops to the cpus alone
        held += out.dispatched(node)
        assert len(record.assigned) <= record.capacity() or not out.dispatched(node)
        assert len(held) == len(record.assigned)


def test_jobs_go_to_the_emptiest_node_first(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    n1, _ = driver.node("n1", cpus=1)
    n2, _ = driver.node("n2", cpus=1)
    out = driver.submit(alice, "c1", 2)
    assert out.dispatched(n1) == ["c1.0"]
    assert out.dispatched(n2) == ["c1.1"]


@pytest.mark.parametrize(
    ("runtime", "capacity"),
    [(None, 8), (1.0, 4), (0.01, 4 + 8), (0.0, 4 + MAX_PREFETCH)],
    ids=["unknown", "long jobs", "short jobs", "instant jobs"],
)
def test_capacity_follows_the_observed_runtime(runtime: float | None, capacity: int) -> None:
    node = NodeRecord(1, "n1", cpus=4, memory=0, gpus=0, now=0.0)
    if runtime is not None:
        node.observe_runtime(runtime)
    assert node.capacity() == capacity


def test_a_node_not_up_has_no_capacity() -> None:
    node = NodeRecord(1, "n1", cpus=4, memory=0, gpus=0, now=0.0)
    node.state = "draining"
    assert node.capacity() == 0


# --- progress -------------------------------------------------------------------------------


def test_job_started_is_forwarded_to_the_client_with_the_node_name(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    out = driver.start(node, "c1.0")
    assert [(s.uid, s.node, s.started_at) for s in out.started(alice)] == [("c1.0", "n1", driver.now)]


def test_result_is_forwarded_with_the_node_name_filled_in(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    out = driver.send(node, NodeProgress([], [JobResult("c1.0", "FAILED", b"exc", traceback="boom")]))
    (result,) = out.results(alice)
    assert (result.uid, result.status, result.payload, result.traceback, result.node) == (
        "c1.0", "FAILED", b"exc", "boom", "n1")


def test_result_for_a_job_assigned_to_another_node_is_ignored(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    n1, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    n2, _ = driver.node("n2")
    out = driver.finish(n2, "c1.0")
    assert out.results(alice) == []
    assert list(driver.state.nodes[n1].assigned) == ["c1.0"]


def test_duplicate_result_is_ignored(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node()
    driver.submit(alice, "c1", 1)
    driver.finish(node, "c1.0")
    out = driver.finish(node, "c1.0")
    assert out.results(alice) == []
    assert driver.state.statistics()["finished"] == 1


# --- lost nodes (held for them until a deadline: test_orphans.py has the rest) ------------------


def test_lost_node_requeues_every_job_of_a_reentrant_cluster_at_its_deadline(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=True)
    n1, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 3)
    driver.start(n1, "c1.0", "c1.1")
    out = driver.disconnect(n1)
    assert out.results(alice) == []
    assert driver.queued() == ["c1.2"]  # c1.0 and c1.1 wait for n1 to come back
    out = driver.expire()
    assert out.results(alice) == []
    assert driver.queued() == ["c1.0", "c1.1", "c1.2"]  # back in front, in submit order
    n2, joined = driver.node("n2", cpus=1)
    assert joined.dispatched(n2) == ["c1.0", "c1.1"]


def test_lost_node_abandons_dispatched_non_reentrant_jobs_not_heard_to_start(driver: StateDriver) -> None:
    """A node cut off runs its queue on: a job it got may have run though we never heard it start."""
    alice = driver.open_cluster("c1", reentrant=False)
    n1, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 3)
    assert set(driver.state.nodes[n1].assigned) == {"c1.0", "c1.1"}  # the second one prefetched
    driver.disconnect(n1)
    out = driver.expire()
    assert [(r.uid, r.status) for r in out.results(alice)] == [("c1.0", "ABANDONED"), ("c1.1", "ABANDONED")]
    assert driver.queued() == ["c1.2"]  # never dispatched: safe to run


def test_lost_node_requeues_dispatched_jobs_of_a_reentrant_cluster(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=True)
    n1, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 3)
    driver.disconnect(n1)
    out = driver.expire()
    assert out.results(alice) == []
    assert driver.queued() == ["c1.0", "c1.1", "c1.2"]


def test_lost_node_abandons_started_jobs_of_a_non_reentrant_cluster_at_its_deadline(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=False)
    n1, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 2)
    driver.start(n1, "c1.0")
    assert driver.disconnect(n1, "connection reset").results(alice) == []
    out = driver.expire()
    result, prefetched = out.results(alice)
    assert (result.uid, result.status, result.node, result.finished_at) == ("c1.0", "ABANDONED", "n1", driver.now)
    assert "n1" in result.reason and "connection reset" in result.reason
    assert (prefetched.uid, prefetched.status) == ("c1.1", "ABANDONED")
    assert driver.queued() == []


def test_lost_node_is_logged_with_the_jobs_it_held(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=True)
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 1)
    out = driver.disconnect(node, "connection reset")
    assert [(log.level, log.event, dict(log.fields)) for log in out.logs()] == [
        ("warning", "node disconnected", {"node": "n1", "reason": "connection reset", "jobs": 1})]
    out = driver.expire()
    assert [(log.level, log.event, dict(log.fields)) for log in out.logs()] == [
        ("info", "jobs requeued", {"node": "n1", "jobs": 1})]


def test_requeued_jobs_bring_their_cluster_def_to_the_next_node(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=True)
    n1, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 1)
    driver.disconnect(n1)
    driver.expire()
    n2, joined = driver.node("n2", cpus=1)
    assert joined.cluster_defs(n2) == ["c1"]


# --- heartbeats ---------------------------------------------------------------------------------


def test_tick_past_the_heartbeat_timeout_closes_a_silent_node_as_lost(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1")
    driver.submit(alice, "c1", 2)
    driver.start(node, "c1.0")
    driver.now += 8
    driver.send(alice, Heartbeat(driver.now))
    driver.now += 2.5  # node silent for 10.5 s, client for 2.5 s
    out = driver.tick()
    assert out.closed() == [node]
    assert out.results(alice) == []
    assert driver.orphans() == {"n1": ["c1.0", "c1.1"]}
    assert driver.state.statistics()["nodes"] == 0
    driver.now += 7.5
    driver.send(alice, Heartbeat(driver.now))
    driver.now += 2.5  # one heartbeat timeout after the node was closed
    out = driver.tick()
    assert [(r.uid, r.status) for r in out.results(alice)] == [("c1.0", "ABANDONED"), ("c1.1", "ABANDONED")]
    assert "no heartbeat for 10.5s" in out.results(alice)[0].reason
    assert driver.queued() == []


def test_tick_within_the_heartbeat_timeout_closes_nothing(driver: StateDriver) -> None:
    driver.open_cluster("c1")
    driver.node("n1")
    driver.now += 10.0
    assert driver.tick().closed() == []


def test_heartbeats_keep_a_node_alive(driver: StateDriver) -> None:
    node, _ = driver.node("n1")
    for _ in range(5):
        driver.now += 6
        driver.send(node, Heartbeat(driver.now))
        assert driver.tick().closed() == []
    assert driver.state.statistics()["nodes"] == 1
