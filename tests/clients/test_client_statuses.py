"""Status changes as users see them: the full sequence, on one callback thread, in order."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest

from fairpool import Job, JobStatus
from fairpool.clients.notify import CallbackThread
from fairpool.clients.session import ClusterSession
from fairpool.clients.statuses import NodeInfo, StatusFeed
from fairpool.messages import (
    CancelJobs,
    Error,
    JobProvisional,
    JobResult,
    JobStarted,
    JobsUpdate,
    NodeEvent,
    Queued,
)

S = JobStatus


def finished(uid: str, value: object = None, **fields: Any) -> JobResult:
    return JobResult(uid, "FINISHED", cloudpickle.dumps(value), **fields)


def provisional(uid: str, value: object) -> JobProvisional:
    return JobProvisional(uid, cloudpickle.dumps(value), time.time())


class Recorder:
    """A job_status callback that records (uid, status it read, thread) and can misbehave."""

    def __init__(self, raise_on: JobStatus | None = None, delay: float = 0.0) -> None:
        self.seen: list[tuple[str, JobStatus]] = []
        self.threads: set[str] = set()
        self.raise_on = raise_on
        self.delay = delay
        self.inside = 0
        self.overlapped = False

    def __call__(self, job: Job) -> None:
        self.inside += 1
        self.overlapped = self.overlapped or self.inside > 1
        try:
            time.sleep(self.delay)
            self.seen.append((job.uid, job.status))
            self.threads.add(threading.current_thread().name)
            if job.status is self.raise_on:
                raise RuntimeError(f"callback failure on {job.status.value}")
        finally:
            self.inside -= 1

    def of(self, uid: str) -> list[JobStatus]:
        return [status for u, status in self.seen if u == uid]


def session_with(job_status: Callable[[Job], Any] | None = None,
                 cluster_status: Callable[..., Any] | None = None) -> tuple[ClusterSession, CallbackThread]:
    callbacks = CallbackThread("test-callbacks")

    def feed(on_settled: Callable[[int], None]) -> StatusFeed:
        return StatusFeed("cid", on_settled, job_status=job_status, cluster_status=cluster_status, callbacks=callbacks)

    return ClusterSession("cid", feed=feed), callbacks


def add(session: ClusterSession, count: int) -> list[Job]:
    jobs = [Job((i,), {}, time.time()) for i in range(count)]
    for job in jobs:
        session.add(job, b"p")
    session.take_new()
    return jobs


def test_without_a_callback_statuses_change_at_once() -> None:
    session = ClusterSession("cid")
    (job,) = add(session, 1)
    seen = [job.status]
    session.apply(Queued("cid", ["cid.1"], 1.0))
    seen.append(job.status)
    session.apply(JobsUpdate([JobStarted("cid.1", "n", 1.0)], []))
    seen.append(job.status)
    session.apply(JobsUpdate([], [finished("cid.1", 5, node="n", started_at=1.0)]))
    seen.append(job.status)
    assert seen == [S.CREATED, S.QUEUED, S.RUNNING, S.FINISHED]
    assert job.result() == 5


def test_a_late_queued_or_started_never_moves_a_job_backwards() -> None:
    session = ClusterSession("cid")
    (job,) = add(session, 1)
    session.apply(JobsUpdate([JobStarted("cid.1", "n", 1.0)], []))
    session.apply(Queued("cid", ["cid.1"], 1.0))
    assert job.status is S.RUNNING
    session.apply(JobsUpdate([], [finished("cid.1", 1, node="n")]))
    session.apply(JobsUpdate([JobStarted("cid.1", "other", 2.0)], []))
    assert job.status is S.FINISHED and job.node == "n"


def test_the_callback_sees_every_status_in_order_with_the_status_it_is_called_for() -> None:
    recorder = Recorder(delay=0.001)  # slow: the connection side runs far ahead of it
    session, callbacks = session_with(recorder)
    a, b = add(session, 2)
    session.apply(Queued("cid", ["cid.1", "cid.2"], 1.0))
    session.apply(JobsUpdate([JobStarted("cid.1", "n", 1.0)], [], [provisional("cid.1", 1), provisional("cid.1", 2)]))
    session.apply(JobsUpdate([], [finished("cid.1", "a", node="n", started_at=1.0),
                                  JobResult("cid.2", "CANCELLED", reason="cancelled by you")]))
    assert callbacks.drain(10)
    assert recorder.of("cid.1") == [S.QUEUED, S.RUNNING, S.PROVISIONAL, S.PROVISIONAL, S.FINISHED]
    assert recorder.of("cid.2") == [S.QUEUED, S.CANCELLED]
    assert recorder.threads == {"test-callbacks"} and not recorder.overlapped
    assert a.result() == "a" and a.provisional == 2 and b.cancelled()


def test_running_is_shown_for_a_job_that_started_and_ended_in_one_batch() -> None:
    recorder = Recorder()
    session, callbacks = session_with(recorder)
    add(session, 2)
    # no Queued, no started: results straight away (e.g. Queued came after a quick job)
    session.apply(JobsUpdate([], [finished("cid.1", 1, node="n", started_at=1.0),
                                  JobResult("cid.2", "FAILED", cloudpickle.dumps(ValueError("x")), node="n",
                                            started_at=1.0)]))
    assert callbacks.drain(10)
    assert recorder.of("cid.1") == [S.QUEUED, S.RUNNING, S.FINISHED]
    assert recorder.of("cid.2") == [S.QUEUED, S.RUNNING, S.FAILED]


def test_a_job_refused_by_the_scheduler_never_shows_running() -> None:
    recorder = Recorder()
    session, callbacks = session_with(recorder)
    add(session, 1)
    session.apply(Error("quota exceeded", ref="cid.1"))
    assert callbacks.drain(10)
    assert recorder.of("cid.1") == [S.FAILED]


def test_the_future_settles_just_before_the_final_callback(caplog: pytest.LogCaptureFixture) -> None:
    states: list[tuple[JobStatus, bool]] = []
    session, callbacks = session_with(lambda job: states.append((job.status, job.done())))
    (job,) = add(session, 1)
    session.apply(JobsUpdate([JobStarted("cid.1", "n", 1.0)], [finished("cid.1", 3, node="n")]))
    assert job.result(timeout=10) == 3
    assert callbacks.drain(10)
    assert states == [(S.QUEUED, False), (S.RUNNING, False), (S.FINISHED, True)]
    assert session.wait(0)


def test_a_raising_callback_is_logged_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(raise_on=S.RUNNING)
    session, callbacks = session_with(recorder)
    (job,) = add(session, 1)
    with caplog.at_level(logging.ERROR, logger="fairpool.clients"):
        session.apply(JobsUpdate([JobStarted("cid.1", "n", 1.0)], [finished("cid.1", 7, node="n")]))
        assert job.result(timeout=10) == 7
        assert callbacks.drain(10)
    assert recorder.of("cid.1") == [S.QUEUED, S.RUNNING, S.FINISHED]
    (record,) = [r for r in caplog.records if "job_status callback raised" in r.getMessage()]
    assert record.exc_info is not None and "callback failure on RUNNING" in str(record.exc_info[1])


def test_node_events_reach_cluster_status_with_the_node_and_no_job() -> None:
    events: list[tuple[str, str, int, object]] = []
    session, callbacks = session_with(cluster_status=lambda e, node, job: events.append((e, node, node.cpus, job)))
    assert session.apply(NodeEvent("joined", "n1", 4))
    assert session.apply(NodeEvent("failed", "n1", 4))
    assert callbacks.drain(10)
    assert events == [("joined", "n1", 4, None), ("failed", "n1", 4, None)]
    assert isinstance(NodeInfo("n2", 2), str) and NodeInfo("n2", 2) == "n2"


def test_provisional_results_are_kept_on_the_job() -> None:
    session = ClusterSession("cid")
    (job,) = add(session, 1)
    session.apply(JobsUpdate([], [], [provisional("cid.1", {"step": 1})]))
    assert (job.status, job.provisional) == (S.PROVISIONAL, {"step": 1})
    session.apply(JobsUpdate([], [finished("cid.1", "done", node="n")]))
    session.apply(JobsUpdate([], [], [provisional("cid.1", "late")]))  # after the end: ignored
    assert (job.status, job.provisional, job.result()) == (S.FINISHED, {"step": 1}, "done")


def test_a_job_registered_after_the_submits_were_taken_keeps_its_cancel_until_its_own_submit() -> None:
    session = ClusterSession("cid", canceller=lambda job: True)
    first, second = Job((1,), {}, 0.0), Job((2,), {}, 0.0)
    session.add(first, b"p")
    session.take_new()  # a flush has taken the first Submit...
    session.add(second, b"p")  # ...when another job and both cancellations arrive
    session.request_cancel(first)
    session.request_cancel(second)
    assert session.take_cancels() == CancelJobs(["cid.1"])  # cid.2's would overtake its Submit
    (submit,) = session.take_new()
    assert [j.uid for j in submit.jobs] == ["cid.2"]
    assert session.take_cancels() == CancelJobs(["cid.2"])


def test_cancels_follow_their_submits_and_are_sent_again_until_the_job_ends() -> None:
    session = ClusterSession("cid", canceller=lambda job: True)
    jobs = [Job((i,), {}, 0.0) for i in range(3)]
    for job in jobs:
        session.add(job, b"p")
    assert session.request_cancel(jobs[1]) == (True, False)  # a flush is already due for the submits
    (submit,) = session.take_new()
    assert session.take_cancels() == CancelJobs(["cid.2"])
    assert session.take_cancels() is None
    assert session.recancels() == CancelJobs(["cid.2"])  # after a reconnect
    session.apply(JobsUpdate([], [JobResult("cid.2", "CANCELLED", reason="cancelled")]))
    assert session.recancels() is None
    assert jobs[1].cancelled()
    assert session.request_cancel(jobs[1]) == (False, False)  # ended: nothing to cancel
    assert session.request_cancel(Job((), {}, 0.0)) == (False, False)  # not this session's


def test_callbacks_run_on_one_thread_that_survives_sys_exit(caplog: pytest.LogCaptureFixture) -> None:
    thread = CallbackThread("cb")
    ran: list[int] = []

    def bad() -> None:
        raise SystemExit(3)

    with caplog.at_level(logging.ERROR, logger="fairpool.clients"):
        thread.post(bad)
        thread.post(ran.append, 1)
        assert thread.drain(10)
    assert ran == [1]
    thread.stop(10)
    thread.post(ran.append, 2)  # stopped: dropped
    assert ran == [1]


def test_file_chunks_of_an_ended_job_are_ignored(tmp_path) -> None:
    from fairpool.clients.files import FileReceiver
    from fairpool.messages import FileChunk

    session = ClusterSession("cid", files=FileReceiver(tmp_path))
    (job,) = add(session, 1)
    session.apply(JobsUpdate([], [finished("cid.1", 1, node="n")], [], [FileChunk("cid.1", "f.txt", 0, b"v1", True)]))
    assert (tmp_path / "f.txt").read_bytes() == b"v1"  # files of an update go before its results
    (tmp_path / "f.txt").write_bytes(b"the user's now")
    session.apply(JobsUpdate([], [], [], [FileChunk("cid.1", "f.txt", 0, b"v1", True)]))  # resent later
    assert (tmp_path / "f.txt").read_bytes() == b"the user's now"
