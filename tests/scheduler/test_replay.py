"""Journal replay and snapshots: a restarted scheduler comes back to the state it journaled.

``replay(fresh, records, now)`` must rebuild what the live state had, as it
would look once every connection dropped (nodes' jobs held for them, clients
detached); ``snapshot(state)`` must replay to the same. Hypothesis drives the
live state with ``statemodel``'s traffic and compares the two.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from statemodel import TIMEOUT, Model, run

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    CloseCluster,
    JobOptions,
    JobSubmit,
    OpenCluster,
    ReleaseCluster,
    Reply,
    Request,
    Submit,
)
from fairpool.policies.fifo import FifoPolicy
from fairpool.policies.registry import make_policy
from fairpool.scheduler.journalrecords import (
    JournalRecord,
    RAssigned,
    RClusterOpened,
    RJobsQueued,
    RPolicy,
    RPolicyState,
    RResults,
    decode_record,
    encode_record,
)
from fairpool.scheduler.replay import replay, restart_grace, snapshot
from fairpool.scheduler.state import SchedulerState

if TYPE_CHECKING:
    from conftest import Outcome, StateDriver


def expire_after_restart(driver: StateDriver) -> None:
    """Let the restart grace pass (the nodes' time to come back for their jobs), then tick."""
    driver.now += restart_grace(driver.state.heartbeat_timeout)
    driver.tick()


def restart(driver: StateDriver, records: list[JournalRecord] | None = None) -> StateDriver:
    """A new driver whose state was replayed from ``records`` (default: everything journaled)."""
    again = type(driver)(heartbeat_timeout=driver.state.heartbeat_timeout,
                         result_retention=driver.state.result_retention,
                         first_conn=1000)  # connection ids are not reused across the restart
    again.now = driver.now
    replay(again.state, driver.records if records is None else records, driver.now)
    return again


def drop_everyone(driver: StateDriver) -> None:
    for conn in sorted(driver.state.conns):
        driver.disconnect(conn, "scheduler restart")


def view(state: SchedulerState) -> dict[str, Any]:
    """What a restart must keep. RUNNING reads as QUEUED: starts are not journaled (see the xfail below)."""
    return {
        "clusters": {cid: (c.tenant, c.name, c.spec, c.reentrant, c.priority, c.closed, sorted(c.jobs))
                     for cid, c in state.clusters.items()},
        "jobs": {uid: (j.cluster_id, j.tenant, j.payload, j.seq, j.priority, j.cpus, j.memory, j.gpus, j.timeout,
                       j.pin, JobStatus.QUEUED if j.status is JobStatus.RUNNING else j.status, j.result)
                 for uid, j in state.jobs.items()},
        "queue": [job.uid for job in state.policy.order()],
        "running": sorted(job.uid for job in state.dispatcher.running()),  # what the policy charges
        "policy": state.policy.name,
        "tenants": sorted(state.dispatcher.tenants.items()),
        "orphans": sorted((name, session, sorted(j.uid for j in jobs)) for name, session, jobs in state.orphans.by_node()
                          if jobs),
    }


def replayed(records: list[JournalRecord], now: float) -> SchedulerState:
    state = SchedulerState(FifoPolicy(), heartbeat_timeout=TIMEOUT)
    replay(state, [decode_record(encode_record(r)) for r in records], now)  # through the on-disk encoding
    return state


# --- what comes back ------------------------------------------------------------------------


def test_replay_reopens_clusters_detached_with_their_definition(driver: StateDriver) -> None:
    alice = driver.client("alice")
    driver.send(alice, OpenCluster("c1", "my computation", b"spec", reentrant=True, priority=3))
    state = restart(driver).state
    cluster = state.clusters["c1"]
    assert (cluster.tenant, cluster.name, cluster.spec, cluster.reentrant, cluster.priority, cluster.closed,
            cluster.conn) == ("alice", "my computation", b"spec", True, 3, False, None)


def test_replayed_queued_jobs_keep_their_fifo_order_across_clusters(driver: StateDriver) -> None:
    alice = driver.open_cluster("a1", "alice")
    bob = driver.open_cluster("b1", "bob")
    driver.submit(alice, "a1", ["a1.0", "a1.1"])
    driver.submit(bob, "b1", ["b1.0"])
    driver.submit(alice, "a1", ["a1.2"])
    assert restart(driver).queued() == ["a1.0", "a1.1", "b1.0", "a1.2"]


def test_submits_after_a_replay_queue_behind_the_replayed_jobs(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", ["c1.0", "c1.1"])
    again = restart(driver)
    old = max(job.seq for job in again.state.jobs.values())
    conn = again.client("alice")
    again.send(conn, OpenCluster("c1", "test", b""))
    again.submit(conn, "c1", ["c1.2"])
    assert again.state.jobs["c1.2"].seq > old
    assert again.queued() == ["c1.0", "c1.1", "c1.2"]


def test_submits_after_replaying_a_snapshot_get_higher_sequences(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", ["c1.0", "c1.1", "c1.2"])
    highest = driver.state.jobs["c1.2"].seq
    again = restart(driver, snapshot(driver.state))
    conn = again.client("alice")
    again.send(conn, OpenCluster("c1", "test", b""))
    again.submit(conn, "c1", ["c1.3"])
    assert again.state.jobs["c1.3"].seq > highest
    assert again.queued() == ["c1.0", "c1.1", "c1.2", "c1.3"]


def test_replay_restores_job_options(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    options = JobOptions(cpus=2.0, memory=1 << 30, gpus=1, timeout=60.0, priority=5, node="big")
    driver.send(alice, Submit("c1", [JobSubmit("c1.0", b"args", options)]))
    for records in (driver.records, snapshot(driver.state)):
        job = restart(driver, records).state.jobs["c1.0"]
        assert (job.cpus, job.memory, job.gpus, job.timeout, job.priority, job.pin, job.payload) == (
            2.0, 1 << 30, 1, 60.0, 5, "big", b"args")


def test_replayed_results_reach_the_client_that_reattaches(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=2)
    driver.submit(alice, "c1", 3)
    driver.finish(node, "c1.0", "c1.1")
    driver.send(alice, AckResults(["c1.0"]))
    again = restart(driver)
    assert "c1.0" not in again.state.jobs
    conn = again.client("alice")
    out = again.send(conn, OpenCluster("c1", "test", b""))
    assert [(r.uid, r.status, r.payload) for r in out.results(conn)] == [("c1.1", "FINISHED", b"result:c1.1")]


def test_replayed_closed_cluster_refuses_submits(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 1)
    driver.send(alice, CloseCluster("c1"))
    again = restart(driver)
    assert again.queued() == []
    assert again.state.jobs["c1.0"].status is JobStatus.CANCELLED
    conn = again.client("alice")
    again.send(conn, OpenCluster("c1", "test", b""))
    assert again.submit(conn, "c1", ["c1.1"]).errors(conn) == ["cluster is closed"]


def test_replay_forgets_a_closed_cluster_once_every_result_is_acknowledged(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 2)
    driver.send(alice, CloseCluster("c1"))
    driver.send(alice, AckResults(["c1.0", "c1.1"]))
    state = restart(driver).state
    assert (state.clusters, state.jobs) == ({}, {})


def test_a_policy_switch_is_journaled_and_survives_a_restart_and_a_snapshot(driver: StateDriver) -> None:
    admin = driver.connect("admin", "", "operator")
    out = driver.send(admin, Request(1, "policy.set", {"name": "round-robin"}))
    assert out.messages(admin, Reply)[0].ok and RPolicy("round-robin") in out.persisted()
    assert restart(driver).state.policy.name == "round-robin"
    assert restart(driver, snapshot(driver.state)).state.policy.name == "round-robin"


def test_tenant_settings_changed_live_survive_a_restart_and_a_snapshot(driver: StateDriver) -> None:
    admin = driver.connect("admin", "", "operator")
    driver.send(admin, Request(1, "tenants.set", {"name": "alice", "weight": 3.0, "max_running": 2}))
    driver.send(admin, Request(2, "tenants.set", {"name": "bob", "weight": 2.0}))
    out = driver.send(admin, Request(3, "tenants.remove", {"name": "bob"}))
    assert [r.ok for r in out.messages(admin, Reply)] == [True]
    for records in (driver.records, snapshot(driver.state)):
        tenants = restart(driver, records).state.dispatcher.tenants
        assert sorted(tenants) == ["alice"]
        assert (tenants["alice"].weight, tenants["alice"].max_running) == (3.0, 2)


def test_a_journaled_policy_that_no_longer_exists_leaves_the_configured_one(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 2)
    again = restart(driver, [RPolicy("gone-plugin"), *driver.records])
    assert again.state.policy.name == "fifo"
    assert again.queued() == ["c1.0", "c1.1"]


# --- jobs that were on nodes -------------------------------------------------------------------


def test_replayed_jobs_that_were_on_a_node_are_held_for_it_until_a_deadline(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=True)
    driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 3)
    again = restart(driver)
    assert again.orphans() == {"n1": ["c1.0", "c1.1"]}
    assert again.queued() == ["c1.2"]
    again.now += restart_grace(TIMEOUT) - 0.5
    again.tick()
    assert again.orphans() == {"n1": ["c1.0", "c1.1"]}
    again.now += 0.5  # the restart grace after the replay (a node's reconnect backoff included)
    again.tick()
    assert again.orphans() == {} and again.queued() == ["c1.0", "c1.1", "c1.2"]


def test_node_reclaims_its_jobs_after_a_restart_and_its_results_are_taken(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 2)
    again = restart(driver)
    node, out = again.node("n1", cpus=1, session="s1", held=["c1.0", "c1.1"])
    assert out.dispatched(node) == []  # it has them already
    assert again.assigned(node) == ["c1.0", "c1.1"] and again.orphans() == {}
    assert [(type(r), sorted(r.uids)) for r in out.persisted()] == [(RAssigned, ["c1.0", "c1.1"])]
    again.finish(node, "c1.0", "c1.1")
    assert [again.state.jobs[u].status for u in ("c1.0", "c1.1")] == [JobStatus.FINISHED] * 2


def test_jobs_of_a_node_that_does_not_come_back_after_a_restart_requeue_if_reentrant(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=True)
    driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 2)  # dispatched, never started
    again = restart(driver)
    expire_after_restart(again)
    assert again.queued() == ["c1.0", "c1.1"] and again.orphans() == {}


def test_jobs_of_a_node_that_does_not_come_back_after_a_restart_are_abandoned_if_not_reentrant(
    driver: StateDriver,
) -> None:
    """Starts are not journaled: any of them may have run, so none may run again."""
    alice = driver.open_cluster("c1", reentrant=False)
    driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 2)
    again = restart(driver)
    expire_after_restart(again)
    assert {again.state.jobs[u].status for u in ("c1.0", "c1.1")} == {JobStatus.ABANDONED}
    assert again.queued() == [] and again.orphans() == {}


def test_started_job_of_a_non_reentrant_cluster_is_abandoned_if_its_node_is_lost_across_a_restart(
    driver: StateDriver,
) -> None:
    alice = driver.open_cluster("c1", reentrant=False)
    node, _ = driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 1)
    driver.start(node, "c1.0")
    again = restart(driver)
    expire_after_restart(again)
    assert again.state.jobs["c1.0"].status is JobStatus.ABANDONED
    assert again.queued() == []


def test_node_that_reclaims_a_closed_clusters_job_after_a_restart_is_released(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 1)
    driver.send(alice, CloseCluster("c1"))  # c1.0 is on n1: it runs to its end
    again = restart(driver)
    node, _ = again.node("n1", cpus=1, session="s1", held=["c1.0"])
    out = again.finish(node, "c1.0")
    assert out.messages(node, ReleaseCluster) == [ReleaseCluster("c1")]


def test_node_adopts_a_job_dispatched_just_before_the_crash(driver: StateDriver) -> None:
    """The Dispatch left before its RAssigned was durable: the replayed job is QUEUED, the node has it."""
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 2)
    durable = [r for r in driver.records if not isinstance(r, RAssigned)]
    again = restart(driver, durable)
    assert again.queued() == ["c1.0", "c1.1"]
    node, out = again.node("n1", cpus=1, session="s1", held=["c1.1"])
    assert again.assigned(node) == ["c1.0", "c1.1"]  # c1.1 adopted, c1.0 dispatched
    assert out.dispatched(node) == ["c1.0"]
    assert again.queued() == []


# --- snapshots ----------------------------------------------------------------------------------


def test_snapshot_leaves_out_what_was_acknowledged(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node("n1", cpus=2)
    driver.submit(alice, "c1", 2)
    driver.finish(node, "c1.0", "c1.1")
    driver.send(alice, AckResults(["c1.0"]))
    records = snapshot(driver.state)
    assert [type(r) for r in records] == [RPolicy, RPolicyState, RClusterOpened, RJobsQueued, RResults]
    assert [spec.uid for r in records if isinstance(r, RJobsQueued) for spec in r.jobs] == ["c1.1"]
    assert [res.uid for r in records if isinstance(r, RResults) for res in r.results] == ["c1.1"]


def test_snapshot_keeps_a_job_requeued_after_its_cluster_closed(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=True)
    node, _ = driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 1)
    driver.send(alice, CloseCluster("c1"))  # c1.0 is on n1: not cancelled
    driver.disconnect(node)
    driver.expire()  # reentrant: back in the queue
    assert driver.queued() == ["c1.0"]
    assert view(replayed(snapshot(driver.state), driver.now))["queue"] == ["c1.0"]


def test_snapshot_of_a_replayed_state_replays_to_the_same_state(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", reentrant=True)
    n1, _ = driver.node("n1", cpus=1, session="s1")
    driver.submit(alice, "c1", 5)
    driver.finish(n1, "c1.0")
    driver.send(alice, CloseCluster("c1"))
    first = replayed(driver.records, driver.now)
    second = replayed(snapshot(first), driver.now)
    assert view(second) == view(first)


# --- random traffic -----------------------------------------------------------------------------

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class JournalChecked(Model):
    """After every step: a restart now, from the journal or from a snapshot, would rebuild this state."""

    def __init__(self, driver: StateDriver, data: st.DataObject, allow_close: bool, source: str) -> None:
        self.source = source
        super().__init__(driver, data, allow_close)

    def absorb(self, out: Outcome) -> None:
        super().absorb(out)
        live = copy.copy(self.d)
        live.state = copy.deepcopy(self.d.state)  # the records are immutable: shared
        live.records = list(self.d.records)
        taken = snapshot(live.state)  # with its connections up: what is on nodes is in it too
        drop_everyone(live)
        expected = view(live.state)
        if self.source == "journal":
            assert view(replayed(live.records, live.now)) == expected
            return
        # Jobs requeued into a closed cluster are lost by a snapshot: pinned by the xfail test above.
        gap = {uid for uid in expected["queue"] if live.state.clusters[live.state.jobs[uid].cluster_id].closed}
        for records in (taken, snapshot(live.state)):
            got = view(replayed(records, live.now))
            assert [u for u in got["queue"] if u not in gap] == [u for u in expected["queue"] if u not in gap]
            assert {**got, "queue": None} == {**expected, "queue": None}


@_SETTINGS
@given(data=st.data(), steps=st.integers(1, 60), allow_close=st.booleans())
def test_replaying_the_journal_rebuilds_the_live_state(
    make_driver: Callable[..., StateDriver], data: st.DataObject, steps: int, allow_close: bool
) -> None:
    run(JournalChecked(make_driver(heartbeat_timeout=TIMEOUT), data, allow_close, "journal"), steps)


@_SETTINGS
@given(data=st.data(), steps=st.integers(1, 60), allow_close=st.booleans())
def test_replaying_a_snapshot_rebuilds_the_live_state(
    make_driver: Callable[..., StateDriver], data: st.DataObject, steps: int, allow_close: bool
) -> None:
    run(JournalChecked(make_driver(heartbeat_timeout=TIMEOUT), data, allow_close, "snapshot"), steps)


def test_a_drained_node_stays_drained_after_a_restart(driver: StateDriver) -> None:
    from fairpool.messages import Request
    from fairpool.scheduler.journalrecords import RNodeDrained

    admin = driver.connect("admin", "", "op")
    driver.node("n1", cpus=1, session="s1")
    out = driver.send(admin, Request(1, "nodes.drain", {"name": "n1"}))
    assert RNodeDrained("n1", True) in out.persisted()
    for records in (driver.records, snapshot(driver.state)):
        again = restart(driver, list(records))
        assert again.state.drained == {"n1"}
        node, _ = again.node("n1", cpus=1, session="s2")
        assert again.state.nodes[node].state == "drained"


@pytest.mark.parametrize("policy", ["decayed-usage", "fair-share", "round-robin"])
def test_what_the_policy_charged_survives_a_compaction_and_a_restart(driver: StateDriver, policy: str) -> None:
    admin = driver.connect("admin", "", "operator")
    driver.send(admin, Request(1, "policy.set", {"name": policy}))
    alice = driver.open_cluster("c1", "alice")
    node, _ = driver.node("n1", cpus=2)
    driver.submit(alice, "c1", 4)
    driver.now += 1.0
    driver.finish(node, "c1.0", "c1.1")
    driver.now += 1.0
    driver.finish(node, "c1.2", "c1.3")
    driver.send(alice, AckResults(["c1.0", "c1.1", "c1.2", "c1.3"]))  # the jobs are forgotten
    books = driver.state.dispatcher.snapshot()
    compacted = snapshot(driver.state)
    assert any(isinstance(r, RPolicyState) for r in compacted)
    again = restart(driver, [decode_record(encode_record(r)) for r in compacted])
    replayed_books = again.state.dispatcher.snapshot()
    assert replayed_books["policy"] == policy
    for entry in ("usage", "tags", "deficits", "estimates"):
        assert replayed_books.get(entry) == pytest.approx(books.get(entry)), entry
    assert any(books.get(entry) for entry in ("usage", "tags", "deficits"))  # alice was charged
    admin = again.connect("admin", "", "operator")
    listed = again.send(admin, Request(2, "tenants.list", {})).messages(admin, Reply)[0].body
    assert [view["name"] for view in listed] == ["alice"]  # no jobs left: listed for its history


def test_a_policy_state_the_policy_cannot_read_is_ignored(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", "alice")
    driver.submit(alice, "c1", 2)
    records = [*snapshot(driver.state), RPolicyState({"policy": "fifo", "version": 99})]
    assert restart(driver, records).queued() == ["c1.0", "c1.1"]


NUMBER = st.one_of(st.floats(), st.integers(-2**70, 2**70), st.sampled_from([2**1100, -2**1100]))  # (too big for a float)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(books=st.dictionaries(st.sampled_from(["at", "tags", "vtime", "running", "estimates", "usage", "deficits",
                                              "half_life", "policy", "version"]),
                             st.one_of(NUMBER, st.text(max_size=3),
                                       st.dictionaries(st.text(max_size=2), st.one_of(NUMBER, st.text(max_size=2)),
                                                       max_size=3))))
def test_policy_books_of_any_shape_replay_without_error(driver: StateDriver, books: dict[str, Any]) -> None:
    for policy in ("fair-share", "decayed-usage", "round-robin"):
        state = SchedulerState(make_policy(policy), heartbeat_timeout=TIMEOUT)
        replay(state, [RPolicy(policy), RPolicyState({**books, "policy": policy, "version": 1})], driver.now)
        assert state.policy.name == policy
