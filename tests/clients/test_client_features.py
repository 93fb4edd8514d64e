"""SharedJobCluster's callbacks, cancellation, provisional results, files and options, over the fake."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

import cloudpickle
import pytest
from clientfake import FakeScheduler
from conftest import wait_for
from jobfunctions import double

from fairpool import Job, JobStatus, SharedJobCluster
from fairpool.clients.errors import ClientConfigError, JobCancelled
from fairpool.messages import CancelJobs, FileChunk, JobProvisional, JobsUpdate, NodeEvent, Submit
from fairpool.messages import JobOptions as WireOptions

S = JobStatus


def open_cluster(fake: FakeScheduler, secret_file: Path, **options) -> SharedJobCluster:
    return SharedJobCluster(double, scheduler=fake.address, secret_file=secret_file, **options)


# The fake scheduler answers at once: poll often, give up after 10 s.
until = partial(wait_for, timeout=10.0, interval=0.005)


def sent_jobs(fake: FakeScheduler) -> list:
    return [job for s in fake.received(Submit) for job in s.jobs]


class StatusLog:
    def __init__(self) -> None:
        self.seen: list[tuple[str, JobStatus]] = []
        self.threads: set[threading.Thread] = set()

    def __call__(self, job: Job) -> None:
        self.seen.append((job.uid, job.status))
        self.threads.add(threading.current_thread())

    def of(self, job: Job) -> list[JobStatus]:
        return [status for uid, status in self.seen if uid == job.uid]


def test_job_status_sees_queued_running_provisional_finished_on_its_own_thread(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    log = StatusLog()
    with open_cluster(fake, secret_file, job_status=log) as cluster:
        job = cluster.submit(4)
        until(lambda: log.of(job) == [S.QUEUED], message="QUEUED reported")
        fake.start_held()
        until(lambda: log.of(job)[-1:] == [S.RUNNING], message="RUNNING reported")
        fake.push(cluster.cluster_id, JobsUpdate([], [], [JobProvisional(job.uid, cloudpickle.dumps("half"), 1.0)]))
        until(lambda: log.of(job)[-1:] == [S.PROVISIONAL], message="PROVISIONAL reported")
        assert job.provisional == "half" and job.status is S.PROVISIONAL
        fake.release()
        assert job.result(timeout=10) == 8
    assert log.of(job) == [S.QUEUED, S.RUNNING, S.PROVISIONAL, S.FINISHED]
    (thread,) = log.threads
    assert thread is not threading.current_thread() and thread.name.startswith("fairpool-callbacks")


def test_every_final_callback_has_run_when_close_returns(fake, secret_file) -> None:
    log = StatusLog()
    cluster = open_cluster(fake, secret_file, job_status=log)
    jobs = [cluster.submit(i) for i in range(50)]
    cluster.close()
    assert all(log.of(job) == [S.QUEUED, S.RUNNING, S.FINISHED] for job in jobs)


def test_cluster_status_hears_node_events(fake, secret_file) -> None:
    events: list[tuple[str, str, int, object]] = []
    with open_cluster(fake, secret_file, cluster_status=lambda e, n, j: events.append((e, n, n.cpus, j))) as cluster:
        fake.push(cluster.cluster_id, NodeEvent("joined", "n1", 8), NodeEvent("left", "n1", 8))
        until(lambda: len(events) == 2, message="two node events")
    assert events == [("joined", "n1", 8, None), ("left", "n1", 8, None)]


def test_cancelling_a_queued_job_ends_it_cancelled(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    log = StatusLog()
    with open_cluster(fake, secret_file, job_status=log) as cluster:
        job, other = cluster.submit(1), cluster.submit(2)
        until(lambda: len(fake.held_uids()) == 2, message="jobs held")
        assert job.cancel() is True
        with pytest.raises(JobCancelled, match="cancelled by the client"):
            job.result(timeout=10)
        assert job.cancelled() and job.status is S.CANCELLED
        assert [m.uids for m in fake.received(CancelJobs)] == [[job.uid]]
        fake.release()
        assert other.result(timeout=10) == 4
    assert log.of(job) == [S.QUEUED, S.CANCELLED]


def test_cluster_cancel_is_job_cancel_and_an_ended_job_cannot_be_cancelled(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    with open_cluster(fake, secret_file) as cluster:
        job = cluster.submit(1)
        until(lambda: fake.held_uids() == [job.uid], message="job held")
        assert cluster.cancel(job) is True
        until(job.done, message="job cancelled")
        assert cluster.cancel(job) is False and job.cancel() is False
        fake.release()
    assert len(fake.received(CancelJobs)) == 1


def test_a_job_cancelled_right_after_submit_is_cancelled_after_its_submit(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    with open_cluster(fake, secret_file) as cluster:
        job = cluster.submit(1)
        assert job.cancel() is True  # possibly before the Submit went out: it follows it
        with pytest.raises(JobCancelled):
            job.result(timeout=10)
    kinds = [type(m).__name__ for _, m in fake.messages if isinstance(m, Submit | CancelJobs)]
    assert kinds == ["Submit", "CancelJobs"]


def test_files_a_job_sent_are_in_dest_path_when_its_result_is(make_fake, secret_file, tmp_path) -> None:
    fake = make_fake(hold_jobs=True)
    dest = tmp_path / "results"
    with open_cluster(fake, secret_file, dest_path=dest) as cluster:
        job = cluster.submit(1)
        until(lambda: fake.held_uids() == [job.uid], message="job held")
        fake.push(cluster.cluster_id, JobsUpdate([], [], [], [
            FileChunk(job.uid, "out/log.txt", 0, b"hello ", False),
            FileChunk(job.uid, "out/log.txt", 6, b"world", True),
            FileChunk(job.uid, "../escape.txt", 0, b"evil", True),
        ]))
        fake.release()
        assert job.result(timeout=10) == 2
        assert (dest / "out" / "log.txt").read_bytes() == b"hello world"
    assert not (tmp_path / "escape.txt").exists()


def test_dest_path_defaults_to_the_working_directory(make_fake, secret_file, tmp_path) -> None:
    fake = make_fake(hold_jobs=True)
    with open_cluster(fake, secret_file) as cluster:
        job = cluster.submit(1)
        until(lambda: fake.held_uids() == [job.uid], message="job held")
        fake.push(cluster.cluster_id, JobsUpdate([], [], [], [FileChunk(job.uid, "here.txt", 0, b"x", True)]))
        fake.release()
        job.result(timeout=10)
    assert (tmp_path / "here.txt").read_bytes() == b"x"  # conftest runs each test in tmp_path


def test_submit_node_names_the_node(fake, secret_file) -> None:
    with open_cluster(fake, secret_file) as cluster:
        assert cluster.submit_node("n7", 5).result(timeout=10) == 10
    (sent,) = sent_jobs(fake)
    assert sent.options == WireOptions(node="n7")


def test_cluster_resources_and_priority_are_every_jobs_defaults(fake, secret_file) -> None:
    with open_cluster(fake, secret_file, resources={"cpus": 2, "memory": "512M"}, priority=3) as cluster:
        cluster.submit(1).result(timeout=10)
        cluster.options(resources={"cpus": 4}, timeout=60).submit(2).result(timeout=10)
        assert list(cluster.options(priority=9).map([3, 4])) == [6, 8]
    plain, own, *mapped = sent_jobs(fake)
    assert plain.options == WireOptions(cpus=2.0, memory=512 << 20, priority=3)
    assert own.options == WireOptions(cpus=4.0, memory=512 << 20, timeout=60.0, priority=3)
    assert [m.options for m in mapped] == [WireOptions(cpus=2.0, memory=512 << 20, priority=9)] * 2


def test_jobs_without_options_send_none(fake, secret_file) -> None:
    with open_cluster(fake, secret_file) as cluster:
        cluster.submit(1).result(timeout=10)
    (sent,) = sent_jobs(fake)
    assert sent.options is None


@pytest.mark.parametrize(
    "options",
    [
        {"resources": {"cpu": 2}},
        {"resources": {"memory": "lots"}},
        {"resources": {"gpus": 0.5}},
        {"timeout": 0},
        {"timeout": "10"},
        {"priority": 1.5},
        {"node": ""},
    ],
)
def test_bad_options_are_refused_when_given(fake, secret_file, options) -> None:
    with open_cluster(fake, secret_file) as cluster:
        with pytest.raises(ClientConfigError):
            cluster.options(**options)


def test_bad_cluster_resources_are_refused_before_connecting(secret_file) -> None:
    with pytest.raises(ClientConfigError, match="unknown resource"):
        SharedJobCluster(double, scheduler="127.0.0.1:1", secret_file=secret_file, resources={"ram": "1G"})


def test_close_from_inside_a_callback_is_refused_rather_than_deadlocking(fake, secret_file) -> None:
    errors: list[BaseException] = []
    cluster: SharedJobCluster | None = None

    def job_status(job: Job) -> None:
        if job.status is S.FINISHED:
            try:
                assert cluster is not None
                cluster.close()
            except RuntimeError as exc:
                errors.append(exc)

    cluster = open_cluster(fake, secret_file, job_status=job_status)
    try:
        assert cluster.submit(1).result(timeout=10) == 2
        until(lambda: errors, message="the callback tried to close")
        assert "terminate=True" in str(errors[0])
    finally:
        cluster.close()


def test_a_raising_callback_does_not_stop_jobs_or_later_callbacks(fake, secret_file, caplog) -> None:
    seen: list[JobStatus] = []

    def job_status(job: Job) -> None:
        seen.append(job.status)
        raise ValueError("user bug")

    with open_cluster(fake, secret_file, job_status=job_status) as cluster:
        assert [cluster.submit(i).result(timeout=10) for i in range(3)] == [0, 2, 4]
    assert seen.count(S.FINISHED) == 3
    assert "user bug" in caplog.text
