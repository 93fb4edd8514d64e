"""Crash recovery in the client: SharedJobCluster.reattach and recover_jobs against the fake scheduler.

A client "crash" here is ``crash(cluster)``: its connection thread stops dead
(no CloseCluster, no acknowledgement it had not sent yet) and its recover file
stays as written, which is what kill -9 leaves (one test does kill -9 a client
process). The fake re-attaches as the real scheduler does: it re-sends the
running jobs and the unacknowledged results, and answers the probe's
``cluster.stats`` and ``jobs.list``; tests marked ``lists`` also run with a
fake that answers no request, where only the recover file knows queued jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio
from clientfake import FakeScheduler
from conftest import wait_for
from jobfunctions import double

from fairpool import JobStatus, SharedJobCluster, recover_jobs
from fairpool.clients.asynccluster import AsyncSharedJobCluster
from fairpool.clients.errors import (
    ClusterClosedError,
    ClusterError,
    ClusterNotFound,
    JobAbandoned,
    NoRecoverFile,
)
from fairpool.clients.recover import RecoverLog, read_recover_state, recover_path
from fairpool.messages import AckResults, CloseCluster, OpenCluster, Submit

#: Run a test against a scheduler that lists the cluster's jobs, and one that does not.
lists = pytest.mark.parametrize("lists", [True, False], ids=["listed", "unlisted"])


def open_cluster(fake: FakeScheduler, secret_file: Path, **options: object) -> SharedJobCluster:
    return SharedJobCluster(double, scheduler=fake.address, secret_file=secret_file, **options)


def crash(cluster: SharedJobCluster) -> None:
    """What kill -9 leaves behind: the connection gone mid-flight, the recover file as written."""
    cluster._loop.stop()
    cluster._open = False
    cluster._closed = True  # close() would only do nothing now
    if cluster._recover_log is not None:
        cluster._recover_log.close()  # (the descriptor, not the file)


def queued_jobs(cluster: SharedJobCluster, n: int) -> list:
    jobs = [cluster.submit(i) for i in range(n)]
    wait_for(lambda: all(j.status is JobStatus.QUEUED for j in jobs), timeout=10, message="every job queued")
    return jobs


def last_connection(fake: FakeScheduler) -> int:
    return fake.connections


def test_reattach_gets_the_results_that_arrived_while_detached(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    jobs = queued_jobs(cluster, 5)
    crash(cluster)
    fake.release()  # they run while nobody listens
    again = SharedJobCluster.reattach(cluster.cluster_id)  # everything else from the recover file here
    try:
        recovered = again.jobs()
        assert [j.uid for j in recovered] == [j.uid for j in jobs]
        assert [j.result(timeout=10) for j in recovered] == [0, 2, 4, 6, 8]
        assert all(j.status is JobStatus.FINISHED and j.stdout == f"ran {j.uid}\n" for j in recovered)
        assert again.wait(timeout=10)
    finally:
        again.close()


@lists
def test_reattach_lists_every_queued_job_of_the_recover_file_with_its_id(make_fake, secret_file: Path,
                                                                        lists: bool) -> None:
    fake = make_fake(hold_jobs=True, hold_queued=True, answer_requests=lists)
    cluster = open_cluster(fake, secret_file)
    jobs = [cluster.submit(i) for i in range(4)]
    for i, job in enumerate(jobs):
        job.id = {"n": i}  # before the scheduler acknowledges the job: logged with it
    fake.send_queued()
    wait_for(lambda: all(j.status is JobStatus.QUEUED for j in jobs), timeout=10)
    crash(cluster)
    again = SharedJobCluster.reattach(cluster.cluster_id)
    try:
        # The scheduler re-sends nothing for jobs that did not start: the file (or its list) knows them.
        listed = again.jobs()
        assert [(j.uid, j.id, j.status, j.args) for j in listed] == [
            (job.uid, {"n": i}, JobStatus.QUEUED, ()) for i, job in enumerate(jobs)
        ]
        assert not any(j.done() for j in listed)
        fake.release()
        assert [j.result(timeout=10) for j in listed] == [0, 2, 4, 6]
    finally:
        again.close()


def test_reattach_reports_running_jobs_as_running(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    jobs = queued_jobs(cluster, 2)
    crash(cluster)
    fake.start_held([jobs[0].uid])
    again = SharedJobCluster.reattach(cluster.cluster_id)
    try:
        first, second = again.jobs()
        wait_for(lambda: first.status is JobStatus.RUNNING, timeout=10)
        assert first.node == "fake-node" and second.status is JobStatus.QUEUED
    finally:
        again.close(terminate=True)


def test_the_recover_file_logs_jobs_sent_queued_and_received(fake: FakeScheduler, secret_file: Path) -> None:
    cluster = open_cluster(fake, secret_file)
    jobs = [cluster.submit(i) for i in range(3)]
    assert [j.result(timeout=10) for j in jobs] == [0, 2, 4]
    fake.wait_for(lambda: {u for a in fake.received(AckResults) for u in a.uids} == {j.uid for j in jobs})
    assert cluster.recover_file is not None
    state = read_recover_state(cluster.recover_file)
    assert state.sent == 3 and sorted(state.queued) == [1, 2, 3]
    assert state.received == {j.uid for j in jobs}
    assert state.pending() == []
    cluster.close()


def test_reattach_leaves_out_results_the_dead_client_received(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    jobs = queued_jobs(cluster, 3)
    fake.release([jobs[0].uid])
    assert jobs[0].result(timeout=10) == 0
    fake.wait_for(lambda: any(jobs[0].uid in a.uids for a in fake.received(AckResults)))  # the scheduler forgot it
    crash(cluster)
    again = SharedJobCluster.reattach(cluster.cluster_id)
    try:
        assert [j.uid for j in again.jobs()] == [jobs[1].uid, jobs[2].uid]
        fake.release()
        assert again.wait(timeout=10)
    finally:
        again.close()


@lists
def test_new_submits_after_reattach_are_numbered_after_every_uid_sent(make_fake, secret_file: Path,
                                                                     lists: bool) -> None:
    fake = make_fake(hold_jobs=True, answer_requests=lists)
    cluster = open_cluster(fake, secret_file)
    queued_jobs(cluster, 2)
    fake.hold_queued = True
    unseen = cluster.submit(100)  # reaches the scheduler; its Queued never comes back
    fake.wait_for(lambda: any(unseen.uid in [j.uid for j in s.jobs] for s in fake.received(Submit)))
    crash(cluster)
    cid = cluster.cluster_id
    again = SharedJobCluster.reattach(cid)
    try:
        assert [j.uid for j in again.jobs()] == [f"{cid}.1", f"{cid}.2", *([unseen.uid] if lists else [])]
        new = again.submit(21)
        assert new.uid == f"{cid}.4"  # not .3: the scheduler holds a job of that uid
        fake.wait_for(lambda: new.uid in fake.held_uids())
        fake.send_queued()
        fake.release()
        assert new.result(timeout=10) == 42
        # The job the dead client never saw queued is ours as soon as the scheduler reports it.
        wait_for(lambda: unseen.uid in {j.uid for j in again.jobs()}, timeout=10)
        adopted = next(j for j in again.jobs() if j.uid == unseen.uid)
        assert adopted.result(timeout=10) == 200
    finally:
        again.close()


@lists
def test_reattach_without_a_recover_file_takes_what_the_scheduler_reports(make_fake, secret_file: Path,
                                                                          tmp_path: Path, lists: bool,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake(hold_jobs=True, answer_requests=lists)
    cluster = open_cluster(fake, secret_file)
    jobs = queued_jobs(cluster, 3)
    crash(cluster)
    fake.start_held([jobs[0].uid])
    fake.release([jobs[1].uid])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cid = cluster.cluster_id
    again = SharedJobCluster.reattach(cid, scheduler=fake.address, secret_file=secret_file)
    try:
        if lists:  # every job of the cluster, as soon as reattach returns
            running, _finished, queued = again.jobs()
            assert [j.uid for j in again.jobs()] == [j.uid for j in jobs]
            assert running.status is JobStatus.RUNNING and queued.status is JobStatus.QUEUED
        else:  # the queued job is unknown here; the others are re-sent right after ClusterOpened
            wait_for(lambda: [j.uid for j in again.jobs()] == [jobs[0].uid, jobs[1].uid], timeout=10)
        assert again.jobs()[1].result(timeout=10) == 2
        assert again.recover_file == elsewhere / recover_path(cid).name  # a recover file of its own
        state = read_recover_state(again.recover_file)
        assert {1, 2} <= set(state.queued)
        if lists:
            assert again.submit(5).uid == f"{cid}.4"
        else:
            with pytest.raises(ClusterError, match="could take the uid of a queued one"):
                again.submit(5)
    finally:
        again.close(terminate=True)


def test_reattach_defaults_come_from_the_recover_file_before_the_environment(
        make_fake, secret_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file, tenant="alice")
    queued_jobs(cluster, 1)
    crash(cluster)
    monkeypatch.setenv("FAIRPOOL_SCHEDULER", "127.0.0.1:1")
    monkeypatch.setenv("FAIRPOOL_TENANT", "mallory")
    monkeypatch.setenv("FAIRPOOL_SECRET_FILE", "/nonexistent")
    again = SharedJobCluster.reattach(cluster.cluster_id)
    try:
        assert again.scheduler == fake.address and again.tenant == "alice"
        assert len(again.jobs()) == 1
    finally:
        again.close(terminate=True)
    reopen = fake.received_on(last_connection(fake), OpenCluster)
    assert reopen and reopen[0].spec == b""  # a re-attach: the scheduler keeps the spec


@lists
def test_reattach_to_an_unknown_cluster_is_a_clear_error(make_fake, secret_file: Path, lists: bool) -> None:
    fake = make_fake(answer_requests=lists)
    with pytest.raises(ClusterNotFound, match=f"has no cluster {'0' * 32} for tenant"):
        SharedJobCluster.reattach("0" * 32, scheduler=fake.address, secret_file=secret_file)
    assert list(Path.cwd().glob("fairpool-*.recover")) == []  # nothing left behind
    if lists:  # asked first: an OpenCluster would have opened a new, empty cluster in the real scheduler
        assert fake.received(OpenCluster) == []


def test_reattach_to_another_tenants_cluster_is_refused_as_unknown(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file, tenant="alice")
    crash(cluster)
    with pytest.raises(ClusterNotFound, match="no cluster"):
        SharedJobCluster.reattach(cluster.cluster_id, tenant="bob")
    assert len(fake.received(OpenCluster)) == 1  # alice's: bob opened nothing


def test_a_job_the_scheduler_no_longer_holds_ends_abandoned_on_reattach(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    kept, purged = queued_jobs(cluster, 2)
    crash(cluster)
    fake.forget(purged.uid)  # its result dropped after the retention time, say
    again = SharedJobCluster.reattach(cluster.cluster_id)
    try:
        first, second = again.jobs()
        assert (first.uid, first.status) == (kept.uid, JobStatus.QUEUED)
        assert (second.uid, second.status) == (purged.uid, JobStatus.ABANDONED)
        with pytest.raises(JobAbandoned, match="no longer holds this job"):
            second.result(timeout=0)
        fake.release()
        assert again.wait(timeout=10) and first.result(timeout=0) == 0
    finally:
        again.close()
    assert not recover_path(cluster.cluster_id).exists()  # nothing left to wait for


def test_recover_jobs_picks_the_latest_recover_file(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    older = open_cluster(fake, secret_file)
    queued_jobs(older, 2)
    crash(older)
    latest = open_cluster(fake, secret_file)
    queued_jobs(latest, 3)
    crash(latest)
    fake.release()
    jobs = recover_jobs(timeout=10)
    assert [j.result(timeout=0) for j in jobs] == [0, 2, 4]
    assert all(j.uid.startswith(latest.cluster_id + ".") for j in jobs)
    assert not recover_path(latest.cluster_id).exists()  # every result received
    assert recover_path(older.cluster_id).exists()  # not this call's business


def test_recover_jobs_acknowledges_the_results_and_closes_the_cluster(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    queued_jobs(cluster, 3)
    crash(cluster)
    fake.release()
    jobs = recover_jobs(cluster.cluster_id, timeout=10)
    number = last_connection(fake)
    acked = {uid for a in fake.received_on(number, AckResults) for uid in a.uids}
    assert acked == {j.uid for j in jobs}
    assert [m.cluster_id for m in fake.received_on(number, CloseCluster)] == [cluster.cluster_id]
    assert fake.clusters[cluster.cluster_id].unacked == {}
    assert not recover_path(cluster.cluster_id).exists()


def test_recover_jobs_timeout_returns_the_live_state_and_keeps_the_jobs_recoverable(make_fake,
                                                                                    secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    running, finished, queued = queued_jobs(cluster, 3)
    crash(cluster)
    fake.start_held([running.uid])
    fake.release([finished.uid])
    started = time.monotonic()
    jobs = recover_jobs(timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 8
    assert [(j.uid, j.status) for j in jobs] == [
        (running.uid, JobStatus.RUNNING), (finished.uid, JobStatus.FINISHED), (queued.uid, JobStatus.QUEUED)]
    assert jobs[1].result(timeout=0) == 2
    with pytest.raises(ClusterClosedError, match="recover_jobs"):
        jobs[2].result(timeout=0)
    number = last_connection(fake)
    assert fake.received_on(number, CloseCluster) == []  # the rest run on
    fake.wait_for(lambda: fake.clusters[cluster.cluster_id].outbox is None)
    assert fake.clusters[cluster.cluster_id].unacked == {}  # the received result was acknowledged
    assert recover_path(cluster.cluster_id).exists()
    fake.release()
    rest = recover_jobs(timeout=10)
    assert [(j.uid, j.result(timeout=0)) for j in rest] == [(running.uid, 0), (queued.uid, 4)]
    assert not recover_path(cluster.cluster_id).exists()


def test_recover_jobs_without_a_recover_file_is_a_clear_error(fake: FakeScheduler, secret_file: Path) -> None:
    with pytest.raises(NoRecoverFile, match="no recover file"):
        recover_jobs(scheduler=fake.address, secret_file=secret_file, timeout=1)


def test_recover_jobs_skips_a_torn_last_line_of_the_recover_file(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = open_cluster(fake, secret_file)
    queued_jobs(cluster, 2)
    crash(cluster)
    assert cluster.recover_file is not None
    with open(cluster.recover_file, "a") as f:
        f.write("queued 1700000000.0 3-")  # a write cut short
    fake.release()
    assert [j.result(timeout=0) for j in recover_jobs(timeout=10)] == [0, 2]


async def test_async_cluster_reattaches_too(make_fake, secret_file: Path) -> None:
    fake = make_fake(hold_jobs=True)
    cluster = await trio.to_thread.run_sync(open_cluster, fake, secret_file)
    await trio.to_thread.run_sync(queued_jobs, cluster, 2)
    await trio.to_thread.run_sync(crash, cluster)
    await trio.to_thread.run_sync(fake.release)
    async with AsyncSharedJobCluster.reattach(cluster.cluster_id) as again:
        assert [await job for job in again.jobs()] == [0, 2]
        job = await again.submit(4)
        assert job.uid == f"{cluster.cluster_id}.3"
        await trio.to_thread.run_sync(fake.wait_for, lambda: job.uid in fake.held_uids())
        await trio.to_thread.run_sync(fake.release)
        assert await job == 8


KILLED_CLIENT = textwrap.dedent("""
    import json, sys, time
    from fairpool import SharedJobCluster

    def triple(x):
        return 3 * x

    cluster = SharedJobCluster(triple, scheduler=sys.argv[1], secret_file=sys.argv[2])
    jobs = [cluster.submit(i) for i in range(4)]
    for i, job in enumerate(jobs):
        job.id = f"job-{i}"
    print("submitted", flush=True)
    while any(j.status == "CREATED" for j in jobs):
        time.sleep(0.01)
    print(json.dumps({"cluster_id": cluster.cluster_id}), flush=True)
    time.sleep(600)
""")


@pytest.mark.timeout(60)
def test_a_client_killed_with_sigkill_is_recovered_from_its_recover_file(make_fake, secret_file: Path,
                                                                        tmp_path: Path) -> None:
    fake = make_fake(hold_jobs=True, hold_queued=True)
    script = tmp_path / "client.py"
    script.write_text(KILLED_CLIENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRPOOL_")}
    proc = subprocess.Popen([sys.executable, str(script), fake.address, str(secret_file)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline() == "submitted\n", proc.stderr.read()
        fake.send_queued()  # the ids are set by now: they go to the recover file with the uids
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        cluster_id = json.loads(line)["cluster_id"]
    finally:
        proc.kill()
        proc.wait()
    fake.release()
    jobs = recover_jobs(timeout=10)
    assert [(j.uid, j.id, j.result(timeout=0)) for j in jobs] == [
        (f"{cluster_id}.{i + 1}", f"job-{i}", 3 * i) for i in range(4)]
    assert not recover_path(cluster_id).exists()


def test_a_recover_file_that_cannot_be_written_leaves_the_cluster_working(
        fake: FakeScheduler, secret_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> Path:
        raise PermissionError("read-only directory")

    monkeypatch.setattr(RecoverLog, "create", refuse)
    with open_cluster(fake, secret_file) as cluster:
        assert cluster.recover_file is None and cluster._session.recorder is None  # nothing held for it
        assert cluster.submit(4).result(timeout=10) == 8
