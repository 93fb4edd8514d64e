"""AsyncSharedJobCluster: the cluster for trio code, its connection in the test's own trio loop."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

import pytest
import trio
from clientfake import FakeScheduler
from conftest import async_wait_for
from jobfunctions import double

import fairpool
from fairpool import JobStatus
from fairpool.clients.asynccluster import AsyncJob, AsyncSharedJobCluster
from fairpool.clients.errors import ClusterClosedError, JobCancelled, SchedulerConnectionError
from fairpool.messages import CancelJobs, CloseCluster, NodeEvent, Submit
from fairpool.messages import JobOptions as WireOptions

pytestmark = pytest.mark.timeout(60)


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def open_cluster(fake: FakeScheduler, secret_file: Path, computation=double, **options) -> AsyncSharedJobCluster:
    return AsyncSharedJobCluster(computation, scheduler=fake.address, secret_file=secret_file, **options)


# The fake scheduler answers at once: poll often, give up after 10 s.
until = partial(async_wait_for, timeout=10.0, interval=0.005)


def test_it_is_exported_by_fairpool() -> None:
    assert fairpool.AsyncSharedJobCluster is AsyncSharedJobCluster


async def test_awaiting_a_job_gives_its_result(fake, secret_file) -> None:
    async with open_cluster(fake, secret_file) as cluster:
        job = await cluster.submit(21)
        assert isinstance(job, AsyncJob)
        assert await job == 42
        assert await job.wait_result() == 42
        assert job.status is JobStatus.FINISHED and job.node == "fake-node"
    assert [m.cluster_id for m in fake.received(CloseCluster)] == [cluster.cluster_id]


async def test_a_failing_job_raises_when_awaited(fake, secret_file) -> None:
    async with open_cluster(fake, secret_file, fail_on_three) as cluster:
        job = await cluster.submit(3)
        with pytest.raises(ValueError, match="three"):
            await job
        await job.wait()  # does not raise
        assert job.status is JobStatus.FAILED


async def test_a_burst_of_submits_goes_out_in_one_submit(fake, secret_file) -> None:
    async with open_cluster(fake, secret_file) as cluster:
        jobs = [await cluster.submit(i) for i in range(100)]
        assert [await job for job in jobs] == [2 * i for i in range(100)]
    assert len(fake.received(Submit)) == 1


async def test_map_yields_results_in_order(fake, secret_file) -> None:
    async with open_cluster(fake, secret_file) as cluster:
        assert [value async for value in cluster.map(range(50))] == [2 * i for i in range(50)]


async def test_wait_times_out_while_jobs_run_and_succeeds_once_they_end(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    async with open_cluster(fake, secret_file) as cluster:
        job = await cluster.submit(1)
        await until(lambda: fake.held_uids() == [job.uid])
        assert await cluster.wait(timeout=0.05) is False
        await trio.to_thread.run_sync(fake.release)
        assert await cluster.wait(timeout=10) is True
        assert cluster.jobs() == [job]


async def test_cancel_ends_a_queued_job_cancelled(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    async with open_cluster(fake, secret_file) as cluster:
        job = await cluster.submit(1)
        await until(lambda: fake.held_uids() == [job.uid])
        assert job.cancel() is True
        with pytest.raises(JobCancelled):
            await job
        assert job.cancelled() and cluster.cancel(job) is False
    assert [m.uids for m in fake.received(CancelJobs)] == [[job.uid]]


async def test_options_and_submit_node_travel_with_the_jobs(fake, secret_file) -> None:
    async with open_cluster(fake, secret_file, priority=2) as cluster:
        assert await (await cluster.options(timeout=5).submit(1)) == 2
        assert await (await cluster.submit_node("n3", 2)) == 4
        assert [v async for v in cluster.options(resources={"gpus": 1}).map([3])] == [6]
    sent = [job.options for s in fake.received(Submit) for job in s.jobs]
    assert sent == [WireOptions(timeout=5.0, priority=2), WireOptions(priority=2, node="n3"),
                    WireOptions(gpus=1, priority=2)]


async def test_callbacks_run_off_the_trio_thread(fake, secret_file) -> None:
    threads: list[threading.Thread] = []
    statuses: list[JobStatus] = []
    events: list[str] = []

    def job_status(job) -> None:
        threads.append(threading.current_thread())
        statuses.append(job.status)

    async with open_cluster(fake, secret_file, job_status=job_status,
                            cluster_status=lambda e, n, j: events.append(e)) as cluster:
        await trio.to_thread.run_sync(fake.push, cluster.cluster_id, NodeEvent("joined", "n1", 2))
        assert await (await cluster.submit(1)) == 2
    assert statuses == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FINISHED]
    assert threading.current_thread() not in threads and len(set(threads)) == 1
    assert events == ["joined"]


async def test_leaving_the_block_by_an_exception_does_not_wait_for_jobs(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    with pytest.raises(KeyError):
        async with open_cluster(fake, secret_file) as cluster:
            job = await cluster.submit(1)
            raise KeyError("boom")
    with pytest.raises(ClusterClosedError):
        await job
    assert fake.received(CloseCluster)
    assert cluster.recover_file is not None and cluster.recover_file.exists()  # recoverable later


async def test_a_closed_cluster_refuses_submits(fake, secret_file) -> None:
    async with open_cluster(fake, secret_file) as cluster:
        pass
    with pytest.raises(ClusterClosedError):
        await cluster.submit(1)


async def test_an_unreachable_scheduler_is_reported_on_entering(secret_file) -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SchedulerConnectionError):
        async with AsyncSharedJobCluster(double, scheduler=f"127.0.0.1:{port}", secret_file=secret_file):
            pass
