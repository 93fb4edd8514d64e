"""SchedulerState and its clients: clusters, submits, results, acknowledgements, tenants."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairpool.messages import (
    AckResults,
    CloseCluster,
    ClusterClosed,
    ClusterOpened,
    Error,
    JobResult,
    JobsUpdate,
    NodeProgress,
    OpenCluster,
    Queued,
    ReleaseCluster,
)
from fairpool.newsbatch import NEWS_BUDGET
from fairpool.scheduler.events import Send

if TYPE_CHECKING:
    from conftest import StateDriver

NOT_FOUND = "no such cluster"


# --- opening and submitting ---------------------------------------------------------


def test_open_cluster_answers_cluster_opened(driver: StateDriver) -> None:
    conn = driver.client()
    out = driver.send(conn, OpenCluster("c1", "my computation", b"spec"))
    assert out.messages(conn, ClusterOpened) == [ClusterOpened("c1")]


def test_submit_answers_queued_with_every_uid(driver: StateDriver) -> None:
    conn = driver.open_cluster("c1")
    out = driver.submit(conn, "c1", 3)
    assert out.messages(conn, Queued) == [Queued("c1", ["c1.0", "c1.1", "c1.2"], driver.now)]
    assert driver.queued() == ["c1.0", "c1.1", "c1.2"]


def test_resubmitted_uid_is_acknowledged_again_but_not_queued_twice(driver: StateDriver) -> None:
    conn = driver.open_cluster("c1")
    driver.submit(conn, "c1", ["c1.a", "c1.b"])
    out = driver.submit(conn, "c1", ["c1.b", "c1.c"])
    assert out.messages(conn, Queued)[0].uids == ["c1.b", "c1.c"]
    assert driver.queued() == ["c1.a", "c1.b", "c1.c"]


def test_resubmitting_a_finished_uid_does_not_run_it_again(driver: StateDriver) -> None:
    conn = driver.open_cluster("c1")
    node, _ = driver.node()
    driver.submit(conn, "c1", ["c1.a"])
    driver.finish(node, "c1.a")
    out = driver.submit(conn, "c1", ["c1.a"])
    assert out.messages(conn, Queued)[0].uids == ["c1.a"]
    assert out.dispatched(node) == []
    assert driver.queued() == []


def test_uid_not_prefixed_by_the_cluster_id_is_refused(driver: StateDriver) -> None:
    conn = driver.open_cluster("c1")
    out = driver.submit(conn, "c1", ["c1.ok", "c2.x", "c1x.y", "plain"])
    refused = [(e.reason, e.ref) for e in out.messages(conn, Error)]
    assert [ref for _, ref in refused] == ["c2.x", "c1x.y", "plain"]
    assert all("must start with 'c1.'" in reason for reason, _ in refused)
    assert out.messages(conn, Queued)[0].uids == ["c1.ok"]
    assert driver.queued() == ["c1.ok"]


def test_submit_to_a_nonexistent_cluster_is_refused(driver: StateDriver) -> None:
    conn = driver.client()
    out = driver.submit(conn, "nope", 1)
    assert out.messages(conn, Error) == [Error(NOT_FOUND, "nope")]
    assert driver.queued() == []


# --- tenants ------------------------------------------------------------------------


def test_another_tenant_cannot_submit_to_a_cluster(driver: StateDriver) -> None:
    driver.open_cluster("c1", "alice")
    bob = driver.client("bob")
    out = driver.submit(bob, "c1", 1)
    assert out.errors(bob) == [NOT_FOUND]  # the same words as for a cluster that does not exist
    assert out.messages(bob, Queued) == []
    assert driver.queued() == []


def test_another_tenant_cannot_reopen_a_cluster(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", "alice")
    bob = driver.client("bob")
    out = driver.send(bob, OpenCluster("c1", "stolen", b"other spec"))
    assert out.errors(bob) == [NOT_FOUND]
    assert out.messages(bob, ClusterOpened) == []
    node, _ = driver.node()
    driver.submit(alice, "c1", 1)
    out = driver.finish(node, "c1.0")
    assert [r.uid for r in out.results(alice)] == ["c1.0"]
    assert bob not in out.sent_to()


def test_another_tenant_cannot_close_a_cluster(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", "alice")
    driver.submit(alice, "c1", 2)
    bob = driver.client("bob")
    out = driver.send(bob, CloseCluster("c1"))
    assert out.errors(bob) == [NOT_FOUND]
    assert driver.queued() == ["c1.0", "c1.1"]


def test_another_tenants_ack_does_not_forget_results(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1", "alice")
    node, _ = driver.node()
    driver.submit(alice, "c1", 1)
    driver.finish(node, "c1.0")
    bob = driver.client("bob")
    driver.send(bob, AckResults(["c1.0"]))
    again = driver.client("alice")
    out = driver.send(again, OpenCluster("c1", "test", b""))
    assert [r.uid for r in out.results(again)] == ["c1.0"]


def test_results_reach_only_the_owning_client(driver: StateDriver) -> None:
    alice = driver.open_cluster("a1", "alice")
    bob = driver.open_cluster("b1", "bob")
    node, _ = driver.node(cpus=4)
    driver.submit(alice, "a1", 2)
    driver.submit(bob, "b1", 2)
    started = driver.start(node, "a1.0", "b1.0")
    out = driver.finish(node, "a1.0", "a1.1", "b1.0", "b1.1")
    assert [s.uid for s in started.started(alice)] == ["a1.0"]
    assert [s.uid for s in started.started(bob)] == ["b1.0"]
    assert [r.uid for r in out.results(alice)] == ["a1.0", "a1.1"]
    assert [r.uid for r in out.results(bob)] == ["b1.0", "b1.1"]


def test_results_of_one_handle_call_reach_the_client_as_one_update(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=4)
    driver.submit(alice, "c1", 3)
    out = driver.finish(node, "c1.0", "c1.1", "c1.2")
    assert len(out.messages(alice, JobsUpdate)) == 1


# --- acknowledgements, detach and re-attach -------------------------------------------


def test_ack_results_forgets_the_jobs(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node()
    driver.submit(alice, "c1", 1)
    driver.finish(node, "c1.0")
    driver.send(alice, AckResults(["c1.0"]))
    assert "c1.0" not in driver.state.jobs
    again = driver.client()
    out = driver.send(again, OpenCluster("c1", "test", b""))
    assert out.results(again) == []


def test_ack_of_an_unfinished_job_is_ignored(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node()
    driver.submit(alice, "c1", 1)
    driver.send(alice, AckResults(["c1.0", "c1.unknown"]))
    out = driver.finish(node, "c1.0")
    assert [r.uid for r in out.results(alice)] == ["c1.0"]


def test_reopening_from_a_new_connection_resends_unacknowledged_results_and_running_jobs(
    driver: StateDriver,
) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=2)  # room for 4 jobs
    driver.submit(alice, "c1", 5)
    driver.start(node, "c1.0", "c1.1", "c1.2", "c1.3")
    driver.finish(node, "c1.0", "c1.1")
    driver.send(alice, AckResults(["c1.0"]))
    driver.disconnect(alice)
    driver.finish(node, "c1.2")  # while nobody listens
    again = driver.client()
    out = driver.send(again, OpenCluster("c1", "test", b""))
    assert out.messages(again, ClusterOpened) == [ClusterOpened("c1")]
    assert sorted(r.uid for r in out.results(again)) == ["c1.1", "c1.2"]
    assert [(s.uid, s.node) for s in out.started(again)] == [("c1.3", "n1")]
    sends = [i.message for i in out if isinstance(i, Send)]
    assert sends.index(ClusterOpened("c1")) < next(n for n, m in enumerate(sends) if isinstance(m, JobsUpdate))


def test_reopened_cluster_news_go_to_the_new_connection(driver: StateDriver) -> None:
    first = driver.open_cluster("c1")
    node, _ = driver.node()
    driver.submit(first, "c1", 1)
    second = driver.client()
    driver.send(second, OpenCluster("c1", "test", b""))
    out = driver.finish(node, "c1.0")
    assert [r.uid for r in out.results(second)] == ["c1.0"]
    assert first not in out.sent_to()


def test_client_disconnect_keeps_jobs_running_and_results_retained(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 2)
    driver.disconnect(alice)
    node, joined = driver.node()  # the jobs still go out after their client left
    assert joined.dispatched(node) == ["c1.0", "c1.1"]
    out = driver.finish(node, "c1.0", "c1.1")
    assert out.sent_to() == set()
    assert all(driver.state.jobs[uid].result is not None for uid in ("c1.0", "c1.1"))


# --- closing ----------------------------------------------------------------------------


def test_close_cluster_cancels_its_queued_jobs(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 3)
    out = driver.send(alice, CloseCluster("c1"))
    assert out.messages(alice, ClusterClosed) == [ClusterClosed("c1")]
    assert [(r.uid, r.status, r.reason) for r in out.results(alice)] == [
        (f"c1.{i}", "CANCELLED", "cluster closed") for i in range(3)
    ]
    assert driver.queued() == []


def test_submit_to_a_closed_cluster_is_refused(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", ["c1.0"])
    driver.send(alice, CloseCluster("c1"))  # kept while c1.0's result is unacknowledged
    out = driver.submit(alice, "c1", ["c1.1"])
    assert out.errors(alice) == ["cluster is closed"]
    assert out.messages(alice, Queued) == []


def test_close_cluster_releases_nodes_once_its_running_jobs_end(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    n1, _ = driver.node("n1", cpus=1)
    driver.submit(alice, "c1", 1)
    driver.start(n1, "c1.0")
    n2, _ = driver.node("n2", cpus=1)  # never got c1's ClusterDef
    out = driver.send(alice, CloseCluster("c1"))
    assert out.messages(n1, ReleaseCluster) == []  # c1.0 still runs there
    out = driver.finish(n1, "c1.0")
    assert out.messages(n1, ReleaseCluster) == [ReleaseCluster("c1")]
    assert out.messages(n2, ReleaseCluster) == []
    assert [r.status for r in out.results(alice)] == ["FINISHED"]


def test_closed_cluster_is_forgotten_once_every_result_is_acknowledged(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    driver.submit(alice, "c1", 2)
    driver.send(alice, CloseCluster("c1"))
    driver.send(alice, AckResults(["c1.0", "c1.1"]))
    assert driver.state.clusters == {}
    assert driver.state.jobs == {}




def test_close_cluster_does_not_release_a_node_still_holding_its_jobs(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1)
    driver.submit(alice, "c1", 1)  # dispatched, not started
    out = driver.send(alice, CloseCluster("c1"))
    assert out.messages(node, ReleaseCluster) == []


def test_job_dispatched_before_close_gets_exactly_one_final_result(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1)
    driver.submit(alice, "c1", 1)
    first = driver.send(alice, CloseCluster("c1"))
    second = driver.finish(node, "c1.0")
    assert len(first.results(alice) + second.results(alice)) == 1


def test_node_result_after_close_and_ack_does_not_crash(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=1)
    driver.submit(alice, "c1", 1)
    out = driver.send(alice, CloseCluster("c1"))
    driver.send(alice, AckResults([r.uid for r in out.results(alice)]))
    driver.finish(node, "c1.0")


def test_submit_cannot_take_over_a_uid_of_a_cluster_whose_id_extends_its_own(driver: StateDriver) -> None:
    alice = driver.open_cluster("a.b", "alice")
    driver.submit(alice, "a.b", ["a.b.1"])
    mallory = driver.open_cluster("a", "mallory")
    driver.submit(mallory, "a", ["a.b.1"])
    assert driver.state.jobs["a.b.1"].tenant == "alice"
    assert driver.queued() == ["a.b.1"]


def test_a_reattaching_client_is_told_many_large_results_in_messages_of_bounded_size(driver: StateDriver) -> None:
    alice = driver.open_cluster("c1")
    node, _ = driver.node(cpus=4)
    driver.submit(alice, "c1", 4)
    driver.start(node, "c1.0", "c1.1", "c1.2", "c1.3")
    driver.disconnect(alice)
    big = NEWS_BUDGET // 2 + 1  # two never share a message
    results = [JobResult(f"c1.{n}", "FINISHED", bytes([n]) * big, started_at=driver.now - 1.0,
                         finished_at=driver.now, node="n1") for n in range(4)]
    driver.send(node, NodeProgress([], results))  # while nobody listens
    again = driver.client()
    out = driver.send(again, OpenCluster("c1", "test", b""))
    updates = out.messages(again, JobsUpdate)
    assert [[r.uid for r in u.results] for u in updates] == [["c1.0"], ["c1.1"], ["c1.2"], ["c1.3"]]
    assert [r.payload for u in updates for r in u.results] == [r.payload for r in results]
