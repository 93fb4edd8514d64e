"""SharedJobCluster against the fake scheduler of conftest.py: the whole client, over real sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clientfake import FAST_TIMING, SECRET, FakeScheduler
from jobfunctions import double

from fairpool import Job, JobStatus, SharedJobCluster
from fairpool.clients import connection
from fairpool.clients.errors import (
    ClientConfigError,
    ClusterClosedError,
    ClusterRefused,
    SchedulerConnectionError,
)
from fairpool.clients.job import JobOptions
from fairpool.messages import AckResults, CloseCluster, Heartbeat, OpenCluster, Submit
from fairpool.messages import JobOptions as WireOptions


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is right out: {x}")
    return x


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


def open_cluster(fake: FakeScheduler, secret_file: Path, computation: Callable = double, **options) -> SharedJobCluster:
    return SharedJobCluster(computation, scheduler=fake.address, secret_file=secret_file, **options)


def submitted_uids(fake: FakeScheduler, connection_number: int) -> list[str]:
    return [job.uid for s in fake.received_on(connection_number, Submit) for job in s.jobs]


def test_public_names_import_from_fairpool() -> None:
    import fairpool

    assert fairpool.SharedJobCluster is SharedJobCluster and fairpool.Job is Job
    assert fairpool.JobStatus.FINISHED == "FINISHED"


def test_submit_returns_a_job_that_resolves_to_the_result(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file) as cluster:
        job = cluster.submit(21)
        assert job.result(timeout=10) == 42
    assert job.status is JobStatus.FINISHED
    assert job.uid == f"{cluster.cluster_id}.1"
    assert job.node == "fake-node" and job.stdout == f"ran {job.uid}\n"
    assert job.submitted_at <= job.started_at <= job.finished_at


def test_all_arguments_go_to_the_computation(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file, echo) as cluster:
        job = cluster.submit(1, timeout=5, resources="mine", priority=9)
        assert job.result(timeout=10) == ((1,), {"timeout": 5, "resources": "mine", "priority": 9})


def test_a_failing_job_raises_its_exception_and_keeps_the_traceback(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file, fail_on_three) as cluster:
        job = cluster.submit(3)
        with pytest.raises(ValueError, match="three is right out"):
            job.result(timeout=10)
    assert job.status is JobStatus.FAILED
    assert "fail_on_three" in job.traceback and "ValueError" in job.traceback
    assert job() is None


def test_map_yields_results_in_submission_order(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file) as cluster:
        assert list(cluster.map(range(500))) == [2 * i for i in range(500)]


def test_map_over_several_iterables_zips_them(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file, echo) as cluster:
        assert [args for args, _ in cluster.map([1, 2], "ab")] == [(1, "a"), (2, "b")]


def test_map_raises_the_first_failing_jobs_exception_when_reached(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file, fail_on_three) as cluster:
        results = cluster.map(range(6))
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="three"):
            next(results)


def test_jobs_lists_this_clusters_jobs_in_submission_order(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file) as cluster:
        jobs = [cluster.submit(i) for i in range(5)]
        jobs[2].id = "mine"
        assert cluster.jobs() == jobs
        assert cluster.jobs()[2].id == "mine"


def test_thousand_submits_travel_in_few_submit_frames(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file) as cluster:
        jobs = [cluster.submit(i) for i in range(1000)]
        assert cluster.wait(timeout=20)
        assert [job.result() for job in jobs] == [2 * i for i in range(1000)]
    frames = fake.received(Submit)
    uids = [job.uid for frame in frames for job in frame.jobs]
    assert sorted(uids) == sorted(job.uid for job in jobs)
    assert len(frames) <= 50, f"{len(frames)} Submit frames for 1000 jobs"


def test_results_are_acknowledged(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file) as cluster:
        jobs = [cluster.submit(i) for i in range(20)]
        assert cluster.wait(timeout=10)
    acked = {uid for ack in fake.received(AckResults) for uid in ack.uids}
    assert acked == {job.uid for job in jobs}


def test_wait_times_out_while_jobs_run_and_succeeds_once_they_end(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    with open_cluster(fake, secret_file) as cluster:
        job = cluster.submit(1)
        fake.wait_for(lambda: job.status is JobStatus.QUEUED)
        assert cluster.wait(timeout=0.05) is False
        fake.release()
        assert cluster.wait(timeout=10) is True
        assert job.result() == 2


def test_close_sends_close_cluster_and_removes_the_recover_file(fake: FakeScheduler, secret_file: Path) -> None:
    cluster = open_cluster(fake, secret_file)
    assert cluster.recover_file is not None and cluster.recover_file.exists()
    cluster.submit(1).result(timeout=10)
    cluster.close()
    assert [m.cluster_id for m in fake.received(CloseCluster)] == [cluster.cluster_id]
    assert not cluster.recover_file.exists()


def test_close_waits_for_pending_jobs_up_to_its_timeout(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    job = cluster.submit(1)
    started = time.monotonic()
    cluster.close(timeout=0.3)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(ClusterClosedError, match="recover_jobs"):
        job.result(timeout=0)
    assert job.status is JobStatus.QUEUED
    assert cluster.recover_file is not None and cluster.recover_file.exists()


def test_close_with_terminate_does_not_wait_and_keeps_the_recover_file(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    job = cluster.submit(1)
    fake.wait_for(lambda: job.status is JobStatus.QUEUED)
    started = time.monotonic()
    cluster.close(terminate=True)
    assert time.monotonic() - started < 5
    assert fake.received(CloseCluster)
    assert isinstance(job.exception(timeout=0), ClusterClosedError)
    assert cluster.recover_file is not None and cluster.recover_file.exists()


def test_use_after_close_is_a_clear_error(fake: FakeScheduler, secret_file: Path) -> None:
    cluster = open_cluster(fake, secret_file)
    cluster.close()
    cluster.close()  # idempotent
    with pytest.raises(ClusterClosedError, match="closed"):
        cluster.submit(1)
    with pytest.raises(ClusterClosedError):
        cluster.map([1])


def test_recover_file_records_the_cluster_and_is_announced(
    fake: FakeScheduler, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_cluster(fake, secret_file, tenant="alice") as cluster:
        assert cluster.recover_file == Path.cwd() / f"fairpool-{cluster.cluster_id}.recover"
        info = json.loads(cluster.recover_file.read_text())
        assert info["cluster_id"] == cluster.cluster_id
        assert info["scheduler"] == fake.address and info["tenant"] == "alice"
        assert info["secret_file"] == str(secret_file.absolute())
        assert abs(info["created"] - time.time()) < 60
    assert cluster.cluster_id in capsys.readouterr().err


def test_settings_come_from_fairpool_environment_variables(
    fake: FakeScheduler, secret_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIRPOOL_SCHEDULER", fake.address)
    monkeypatch.setenv("FAIRPOOL_SECRET_FILE", str(secret_file))
    monkeypatch.setenv("FAIRPOOL_TENANT", "bob")
    with SharedJobCluster(double) as cluster:
        assert cluster.submit(2).result(timeout=10) == 4
    assert cluster.tenant == "bob" and fake.peers[-1].tenant == "bob" and fake.peers[-1].role == "client"


def test_default_secret_file_is_the_one_fairpool_up_creates(
    fake: FakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path(".fairpool").mkdir()
    Path(".fairpool/secret").write_bytes(SECRET + b"\n")
    with SharedJobCluster(double, scheduler=fake.address) as cluster:
        assert cluster.submit(1).result(timeout=10) == 2


def test_missing_secret_file_is_a_clear_error(fake: FakeScheduler) -> None:
    with pytest.raises(ClientConfigError, match=r"secret file '\.fairpool/secret' does not exist.*FAIRPOOL_SECRET_FILE"):
        SharedJobCluster(double, scheduler=fake.address)


def test_unreachable_scheduler_is_a_clear_connection_error(secret_file: Path) -> None:
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the fairpool scheduler at 127.0.0.1:{port}") as raised:
        SharedJobCluster(double, scheduler=f"127.0.0.1:{port}", secret_file=secret_file)
    assert isinstance(raised.value, SchedulerConnectionError)
    assert time.monotonic() - started < 10


def test_wrong_secret_is_refused_clearly(fake: FakeScheduler, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not the secret")
    with pytest.raises(SchedulerConnectionError, match=f"scheduler at {fake.address} refused the connection"):
        SharedJobCluster(double, scheduler=fake.address, secret_file=wrong)


def test_refused_cluster_is_a_clear_error(make_fake, secret_file: Path) -> None:
    fake = make_fake(refuse_open="tenant 'x' is over quota")
    with pytest.raises(ClusterRefused, match="refused to open cluster .*over quota"):
        open_cluster(fake, secret_file)


def test_reconnect_resends_unacknowledged_jobs_with_the_same_uids(make_fake, secret_file: Path) -> None:
    fake = make_fake(drop_on_submit=1)  # the first Submit is never acknowledged: the connection drops
    with open_cluster(fake, secret_file) as cluster:
        jobs = [cluster.submit(i) for i in range(20)]
        assert [job.result(timeout=10) for job in jobs] == [2 * i for i in range(20)]
    lost = submitted_uids(fake, 1)
    assert lost and set(lost) <= set(submitted_uids(fake, 2))
    assert [m.cluster_id for m in fake.received(OpenCluster)] == [cluster.cluster_id] * 2
    assert len({job.uid for job in jobs}) == 20 and len(fake.clusters[cluster.cluster_id].jobs) == 20


def test_results_that_were_not_delivered_before_a_drop_arrive_after_reattaching(make_fake, secret_file: Path) -> None:
    fake = make_fake(drop_before_results=True)  # queued, then the connection drops before any result
    with open_cluster(fake, secret_file) as cluster:
        assert list(cluster.map(range(5))) == [0, 2, 4, 6, 8]  # map: one burst, so one Submit
        jobs = cluster.jobs()
    assert fake.connections == 2
    assert submitted_uids(fake, 2) == []  # they were queued: nothing to resend
    assert {uid for ack in fake.received_on(2, AckResults) for uid in ack.uids} == {job.uid for job in jobs}
    assert all(job.status is JobStatus.FINISHED for job in jobs)


def test_heartbeats_are_sent_about_every_interval(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file):
        fake.wait_for(lambda: len([m for _, m in fake.messages if isinstance(m, Heartbeat)]) >= 3, timeout=10)


def test_a_silent_scheduler_is_given_up_and_reconnected(
    make_fake, secret_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timing = connection.ConnectionTiming(**{**FAST_TIMING.__dict__, "heartbeat_timeout": 0.5})
    monkeypatch.setattr(connection, "DEFAULT_TIMING", timing)
    fake = make_fake(silent_connections=frozenset({1}))
    with open_cluster(fake, secret_file) as cluster:
        fake.wait_for(lambda: fake.connections >= 2, timeout=10)
        assert cluster.submit(5).result(timeout=10) == 10


def test_options_are_recorded_on_the_job_and_sent_with_it(fake: FakeScheduler, secret_file: Path) -> None:
    with open_cluster(fake, secret_file) as cluster:
        job = cluster.options(resources={"cpus": 2, "memory": "1G"}, timeout=30, priority=5).submit(4)
        assert job.result(timeout=10) == 8
    assert job.options == JobOptions({"cpus": 2, "memory": "1G"}, 30, 5)
    (sent,) = [j for s in fake.received(Submit) for j in s.jobs]
    assert sent.options == WireOptions(cpus=2.0, memory=1 << 30, timeout=30.0, priority=5)


def test_a_malformed_tls_argument_is_refused_before_connecting(secret_file: Path) -> None:
    with pytest.raises(ClientConfigError, match="bad tls="):
        SharedJobCluster(double, scheduler="127.0.0.1:1", secret_file=secret_file, tls={"ca": "x"})


def test_a_crashed_connection_thread_fails_pending_jobs_instead_of_hanging_them(
    fake: FakeScheduler, secret_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fairpool.clients.session import ClusterSession

    def broken_apply(self: ClusterSession, message: object) -> bool:
        raise RuntimeError("bug while applying a message")

    with open_cluster(fake, secret_file) as cluster:
        monkeypatch.setattr(ClusterSession, "apply", broken_apply)
        job = cluster.submit(1)
        with pytest.raises(ClusterClosedError, match="connection thread"):
            job.result(timeout=10)
        with pytest.raises(ClusterClosedError, match="connection thread"):
            cluster.submit(2)
