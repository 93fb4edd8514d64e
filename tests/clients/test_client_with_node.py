"""The client library and a real node daemon, through a relaying scheduler stand-in (relayfake.py).

These check that the two halves of the contract fit: what a job sends while
it runs reaches the Job and dest_path, a cancel or a timeout kills the job's
process tree and ends the Job right, an executor's functions run on a node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import cloudpickle
import pytest
import trio
from conftest import process_gone, wait_for
from relayfake import RelayScheduler

from fairpool import Job, JobStatus, SharedJobCluster
from fairpool.clients.asynccluster import AsyncSharedJobCluster
from fairpool.clients.errors import JobCancelled

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(90)

S = JobStatus


@pytest.fixture
def relay(tmp_path: Path, fast_timing) -> Iterator[RelayScheduler]:
    scheduler = RelayScheduler(tmp_path / "relay").start()
    yield scheduler
    scheduler.stop()


def open_cluster(relay: RelayScheduler, computation, **options) -> SharedJobCluster:
    return SharedJobCluster(computation, scheduler=relay.address, secret_file=relay.state_dir / "secret", **options)


def reporting(n: int) -> int:
    import fairpool

    fairpool.provisional_result(n / 2)
    # A name of its own: a cluster's jobs on one node share a working directory (as in dispy), and
    # two jobs writing "report.txt" at once sent each other's file now and then.
    with open(f"report-{n}.txt", "w") as f:
        f.write(f"report {n}")
    fairpool.send_file(f"report-{n}.txt", f"reports/{n}.txt")
    return n


def spawn_and_wait(pid_file: str) -> None:
    child = subprocess.Popen(["sleep", "1000"])
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.replace(pid_file + ".tmp", pid_file)
    child.wait()


until = partial(wait_for, timeout=30.0, interval=0.01)


def test_provisional_results_and_files_reach_the_job_and_dest_path(relay, tmp_path) -> None:
    seen: dict[str, list[JobStatus]] = {}

    def job_status(job: Job) -> None:
        seen.setdefault(job.uid, []).append(job.status)

    dest = tmp_path / "dest"
    with open_cluster(relay, reporting, dest_path=dest, job_status=job_status) as cluster:
        jobs = [cluster.submit(n) for n in (2, 4)]
        assert [job.result(timeout=60) for job in jobs] == [2, 4]
        assert [job.provisional for job in jobs] == [1.0, 2.0]
        assert (dest / "reports" / "2.txt").read_text() == "report 2"
        assert (dest / "reports" / "4.txt").read_text() == "report 4"
    for job in jobs:
        assert seen[job.uid] == [S.QUEUED, S.RUNNING, S.PROVISIONAL, S.FINISHED]


def test_cancelling_a_running_job_kills_its_grandchild_and_ends_it_cancelled(relay, tmp_path) -> None:
    pid_file = tmp_path / "grandchild"
    with open_cluster(relay, spawn_and_wait) as cluster:
        job = cluster.submit(str(pid_file))
        until(pid_file.exists, message="the job started its grandchild")
        grandchild = int(pid_file.read_text())
        assert job.cancel() is True
        with pytest.raises(JobCancelled, match="cancelled"):
            job.result(timeout=30)
        assert job.cancelled() and job.status is S.CANCELLED
        until(lambda: process_gone(grandchild), message="the grandchild gone")


def test_a_job_past_its_timeout_fails_and_its_tree_is_killed(relay, tmp_path) -> None:
    pid_file = tmp_path / "grandchild"
    with open_cluster(relay, spawn_and_wait) as cluster:
        job = cluster.options(timeout=0.5).submit(str(pid_file))
        with pytest.raises(RuntimeError, match="timed out after 0.5 s"):
            job.result(timeout=30)
        assert job.status is S.FAILED and job.status_reason == "timed out after 0.5 s"
    until(pid_file.exists, message="the grandchild pid written")
    until(lambda: process_gone(int(pid_file.read_text())), message="the grandchild gone")


def test_an_executor_runs_any_function_on_a_real_node(relay) -> None:
    with open_cluster(relay, reporting) as cluster, cluster.executor() as executor:
        assert executor.submit(pow, 2, 10).result(timeout=60) == 1024
        assert list(executor.map(lambda x: x + 1, range(7), chunksize=3)) == list(range(1, 8))


def test_the_async_cluster_awaits_jobs_of_a_real_node(relay, tmp_path) -> None:
    async def main() -> list[object]:
        async with AsyncSharedJobCluster(reporting, scheduler=relay.address, secret_file=relay.state_dir / "secret",
                                         dest_path=tmp_path) as cluster:
            job = await cluster.submit(6)
            values = [await job, job.provisional]
            values += [v async for v in cluster.map([8, 10])]
            return values

    assert trio.run(main) == [6, 3.0, 8, 10]
    assert (tmp_path / "reports" / "6.txt").read_text() == "report 6"


def test_cluster_status_hears_the_node_join(tmp_path, fast_timing) -> None:
    relay = RelayScheduler(tmp_path / "relay", node=False).start()
    events: list[tuple[str, str, int, object]] = []
    try:
        with open_cluster(relay, reporting, cluster_status=lambda e, n, j: events.append((e, n, n.cpus, j))) as cluster:
            job = cluster.submit(1)  # waits: no node yet
            relay.start_node()
            assert job.result(timeout=60) == 1
            until(lambda: events, message="the join reported")
    finally:
        relay.stop()
    assert events == [("joined", "relay-node", 2, None)]
