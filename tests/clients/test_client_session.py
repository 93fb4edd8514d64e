"""ClusterSession, the client's sans-IO cluster state: batching, resends, results, acks."""

from __future__ import annotations

import time

import cloudpickle
import pytest

from fairpool import Job, JobStatus
from fairpool.clients import session as session_module
from fairpool.clients.session import ClusterSession
from fairpool.messages import AckResults, Error, JobResult, JobStarted, JobsUpdate, Queued, Submit


def add_jobs(session: ClusterSession, count: int) -> list[Job]:
    jobs = [Job((i,), {}, time.time()) for i in range(count)]
    for job in jobs:
        session.add(job, cloudpickle.dumps(((job.args), {})))
    return jobs


def result(uid: str, value: object) -> JobResult:
    return JobResult(uid, "FINISHED", cloudpickle.dumps(value))


def test_uids_are_cluster_id_dot_counter_from_one() -> None:
    session = ClusterSession("cid")
    assert [job.uid for job in add_jobs(session, 3)] == ["cid.1", "cid.2", "cid.3"]


def test_only_the_first_submit_of_a_burst_asks_for_a_flush() -> None:
    session = ClusterSession("cid")
    job = Job((), {}, 0.0)
    assert session.add(job, b"p") is True
    assert [session.add(Job((), {}, 0.0), b"p") for _ in range(5)] == [False] * 5
    session.take_new()
    assert session.add(Job((), {}, 0.0), b"p") is True


def test_a_burst_becomes_one_submit_message() -> None:
    session = ClusterSession("cid")
    add_jobs(session, 1000)
    (submit,) = session.take_new()
    assert isinstance(submit, Submit) and len(submit.jobs) == 1000
    assert session.take_new() == []


def test_huge_bursts_are_split_by_job_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "MAX_SUBMIT_JOBS", 4)
    monkeypatch.setattr(session_module, "MAX_SUBMIT_BYTES", 250)
    session = ClusterSession("cid")
    for _ in range(10):
        session.add(Job((), {}, 0.0), b"x" * 100)
    sizes = [len(s.jobs) for s in session.take_new()]
    assert sizes == [2, 2, 2, 2, 2]


def test_resubmits_hold_exactly_the_jobs_not_yet_queued_with_the_same_uids() -> None:
    session = ClusterSession("cid")
    add_jobs(session, 5)
    (first,) = session.take_new()
    session.apply(Queued("cid", ["cid.1", "cid.3"], 1.0))
    resent = [item for submit in session.resubmits() for item in submit.jobs]
    assert [item.uid for item in resent] == ["cid.2", "cid.4", "cid.5"]
    original = {item.uid: item.payload for item in first.jobs}
    assert all(original[item.uid] == item.payload for item in resent)


def test_queued_marks_jobs_queued() -> None:
    session = ClusterSession("cid")
    jobs = add_jobs(session, 2)
    session.take_new()
    session.apply(Queued("cid", ["cid.2"], 1.0))
    assert [job.status for job in jobs] == [JobStatus.CREATED, JobStatus.QUEUED]


def test_results_settle_jobs_and_are_acknowledged_in_one_batch() -> None:
    session = ClusterSession("cid")
    jobs = add_jobs(session, 3)
    session.take_new()
    session.apply(JobsUpdate([JobStarted("cid.1", "n", 1.0)], [result("cid.1", "a"), result("cid.2", "b")]))
    assert jobs[0].result() == "a" and jobs[1].result() == "b" and not jobs[2].done()
    assert session.take_acks() == AckResults(["cid.1", "cid.2"])
    assert session.take_acks() is None
    assert session.outstanding == 1 and session.unqueued == 1


def test_a_duplicate_result_is_acknowledged_again_but_settles_nothing() -> None:
    session = ClusterSession("cid")
    (job,) = add_jobs(session, 1)
    session.apply(JobsUpdate([], [result("cid.1", 1)]))
    session.take_acks()
    session.apply(JobsUpdate([], [result("cid.1", 2)]))
    assert session.take_acks() == AckResults(["cid.1"])
    assert job.result() == 1 and session.outstanding == 0


def test_results_for_unknown_uids_are_left_to_the_scheduler() -> None:
    session = ClusterSession("cid")
    session.apply(JobsUpdate([], [result("other.7", 1)]))
    assert session.take_acks() is None


def test_an_error_about_a_job_fails_that_job() -> None:
    session = ClusterSession("cid")
    jobs = add_jobs(session, 2)
    session.take_new()
    assert session.apply(Error("quota exceeded", ref="cid.2"))
    assert jobs[1].status is JobStatus.FAILED
    assert "quota exceeded" in str(jobs[1].exception())
    assert [item.uid for s in session.resubmits() for item in s.jobs] == ["cid.1"]


def test_wait_returns_false_on_timeout_and_true_once_all_settled() -> None:
    session = ClusterSession("cid")
    add_jobs(session, 2)
    assert session.wait(timeout=0.01) is False
    session.apply(JobsUpdate([], [result("cid.1", 1), result("cid.2", 2)]))
    assert session.wait(timeout=0) is True
    assert session.all_received()


def test_abort_all_settles_pending_jobs_and_marks_results_missing() -> None:
    session = ClusterSession("cid")
    jobs = add_jobs(session, 2)
    session.apply(JobsUpdate([], [result("cid.1", 1)]))
    assert session.abort_all(RuntimeError("closed")) == 1
    assert isinstance(jobs[1].exception(), RuntimeError)
    assert session.wait(timeout=0) and not session.all_received()
