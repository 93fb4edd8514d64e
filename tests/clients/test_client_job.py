"""Job: status transitions, results and errors, and its Future behaviour (no scheduler needed)."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import cloudpickle
import pytest

from fairpool import Job, JobStatus
from fairpool.clients import leanfuture
from fairpool.clients.errors import JobAbandoned, JobCancelled, JobFailed
from fairpool.messages import JobResult

REMOTE_TB = 'Traceback (most recent call last):\n  File "job.py", line 3, in compute\nKeyError: \'k\'\n'


def new_job(*args: object, **kwargs: object) -> Job:
    job = Job(args, kwargs, time.time())
    job.uid = "c1.1"
    return job


def finished(value: object, **fields: object) -> JobResult:
    return JobResult("c1.1", "FINISHED", cloudpickle.dumps(value), **fields)  # type: ignore[arg-type]


def test_new_job_is_created_and_pending() -> None:
    job = new_job(1, k=2)
    assert job.status is JobStatus.CREATED
    assert (job.args, job.kwargs, job.id, job.provisional) == ((1,), {"k": 2}, None, None)
    assert not job.done()


def test_a_final_result_fills_in_the_record_and_settles() -> None:
    job = new_job()
    job.mark_started("node-a", 100.0)
    assert job.resolve(finished(5, node="node-a", started_at=100.0, finished_at=101.0, stdout="out", stderr="err"))
    assert job.status is JobStatus.FINISHED and job.phase is JobStatus.FINISHED
    assert job.result() == 5
    assert (job.node, job.started_at, job.finished_at, job.stdout, job.stderr) == ("node-a", 100.0, 101.0, "out", "err")


def test_a_late_start_never_changes_an_ended_job() -> None:
    job = new_job()
    job.mark_started("n", 1.0)
    job.resolve(finished(1))
    job.mark_started("other", 2.0)
    assert job.status is JobStatus.FINISHED and job.node == "n"


def test_failed_job_raises_the_remote_exception_with_its_traceback() -> None:
    job = new_job()
    job.resolve(JobResult("c1.1", "FAILED", cloudpickle.dumps(KeyError("k")), traceback=REMOTE_TB, reason="KeyError('k')", node="n1"))
    assert job.status is JobStatus.FAILED
    with pytest.raises(KeyError) as raised:
        job.result()
    assert job.traceback == REMOTE_TB
    assert any("line 3, in compute" in note for note in raised.value.__notes__)


def test_calling_a_failed_job_returns_none() -> None:
    job = new_job()
    job.resolve(JobResult("c1.1", "FAILED", cloudpickle.dumps(ValueError("bad"))))
    assert job() is None


def test_calling_a_finished_job_returns_its_result() -> None:
    job = new_job()
    job.resolve(finished({"a": 1}))
    assert job() == {"a": 1}


def test_failure_without_exception_payload_names_the_reason() -> None:
    job = new_job()
    job.resolve(JobResult("c1.1", "FAILED", b"", reason="worker killed by signal 9", traceback="signal 9"))
    with pytest.raises(JobFailed, match="worker killed by signal 9"):
        job.result()


def test_abandoned_and_cancelled_jobs_raise_errors_naming_the_reason() -> None:
    abandoned, cancelled = new_job(), new_job()
    abandoned.resolve(JobResult("c1.1", "ABANDONED", reason="node n2 lost"))
    cancelled.resolve(JobResult("c1.1", "CANCELLED", reason="cancelled by admin"))
    assert abandoned.status is JobStatus.ABANDONED and cancelled.status is JobStatus.CANCELLED
    with pytest.raises(JobAbandoned, match="node n2 lost"):
        abandoned.result()
    with pytest.raises(cf.CancelledError, match="cancelled by admin"):
        cancelled.result()
    with pytest.raises(JobCancelled, match="cancelled by admin"):
        cancelled.exception()
    assert cancelled.cancelled() and cancelled.done()
    assert cancelled() is None  # dispy style: no value


def test_a_cancelled_job_counts_as_done_for_wait_and_as_completed() -> None:
    job = new_job()
    waiting = threading.Thread(target=lambda: cf.wait([job], timeout=10))
    waiting.start()
    job.resolve(JobResult("c1.1", "CANCELLED", reason="cancelled"))
    waiting.join(10)
    assert not waiting.is_alive()
    done, not_done = cf.wait([job], timeout=0)
    assert done == {job} and not not_done
    assert list(cf.as_completed([job], timeout=1)) == [job]


def test_result_that_cannot_be_unpickled_fails_the_job_clearly() -> None:
    job = new_job()
    job.resolve(JobResult("c1.1", "FINISHED", b"not a pickle"))
    assert job.status is JobStatus.FAILED
    with pytest.raises(JobFailed, match="could not be unpickled"):
        job.result()


def test_program_result_without_payload_is_its_exit_code() -> None:
    job = new_job()
    job.resolve(JobResult("c1.1", "FINISHED", b"", exit_code=3, stdout="hello\n"))
    assert job.result() == 3 and job.exit_code == 3 and job.stdout == "hello\n"


def test_duplicate_result_is_ignored() -> None:
    job = new_job()
    assert job.resolve(finished(1))
    assert not job.resolve(finished(2))
    assert job.result() == 1


def test_cancel_of_a_job_of_no_cluster_does_nothing() -> None:
    job = new_job()
    assert job.cancel() is False
    assert not job.done() and not job.cancelled()


def test_cancel_asks_the_jobs_cluster_and_does_not_settle_it() -> None:
    job = new_job()
    asked: list[Job] = []
    job.canceller = lambda j: asked.append(j) or True
    assert job.cancel() is True
    assert asked == [job]
    assert not job.done()  # only the scheduler's answer ends it


def test_result_with_timeout_raises_timeout_while_pending() -> None:
    job = new_job()
    with pytest.raises(TimeoutError):
        job.result(timeout=0.01)
    with pytest.raises(TimeoutError):
        job(timeout=0.01)


def test_abort_settles_with_the_error_and_keeps_the_known_status() -> None:
    job = new_job()
    job.status = job.phase = JobStatus.QUEUED
    assert job.abort(RuntimeError("cluster closed"))
    assert job.status is JobStatus.QUEUED
    with pytest.raises(RuntimeError, match="cluster closed"):
        job.result()


def test_jobs_work_with_concurrent_futures_wait_as_completed_and_callbacks() -> None:
    jobs = [new_job(i) for i in range(50)]
    called: list[int] = []
    for job in jobs:
        job.add_done_callback(lambda j: called.append(j.result()))
    go = threading.Event()

    def resolver() -> None:
        go.wait(10)
        for i, job in enumerate(jobs):
            job.resolve(finished(i))

    thread = threading.Thread(target=resolver)
    thread.start()
    go.set()
    done, not_done = cf.wait(jobs, timeout=10)
    thread.join(10)
    assert not not_done and len(done) == 50
    assert sorted(j.result() for j in cf.as_completed(jobs, timeout=10)) == list(range(50))
    assert sorted(called) == list(range(50))


def test_a_result_wakes_a_thread_blocked_in_result() -> None:
    job = new_job()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(job.result(timeout=10)))
    waiter.start()
    deadline = time.monotonic() + 10
    while not job._condition._sleepers:  # until the waiter is really blocked
        assert time.monotonic() < deadline, "the waiter never blocked"
        time.sleep(0.001)
    job.resolve(finished("late"))
    waiter.join(10)
    assert got == ["late"]


def test_jobs_use_the_lean_future_on_this_python() -> None:
    assert leanfuture._COMPATIBLE
    assert isinstance(new_job()._condition, leanfuture.LeanCondition)
