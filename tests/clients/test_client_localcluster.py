"""JobCluster: a private pool started on demand (a real `fairpool up`), stopped on close."""

from __future__ import annotations

import os

import pytest

import fairpool
from fairpool import JobStatus
from fairpool.clients.errors import SchedulerConnectionError
from fairpool.clients.localcluster import JobCluster, LocalPool

pytestmark = pytest.mark.timeout(120)


def triple(x: int) -> int:
    return 3 * x


def test_job_cluster_runs_jobs_on_its_own_pool_and_stops_it_on_close(tmp_path) -> None:
    cluster = JobCluster(triple, cpus=1)
    pool = cluster.pool
    try:
        assert pool.running and pool.state_dir.is_dir()
        assert cluster.scheduler == pool.address and cluster.scheduler.startswith("127.0.0.1:")
        jobs = [cluster.submit(i) for i in range(5)]
        assert [job.result(timeout=60) for job in jobs] == [0, 3, 6, 9, 12]
        assert all(job.status is JobStatus.FINISHED for job in jobs)
        assert cluster.recover_file is None  # nothing to recover once the pool is gone
    finally:
        cluster.close()
    assert not pool.running and pool.process.returncode is not None
    assert not pool.state_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(pool.process.pid, 0)  # the whole group is gone
    assert list(tmp_path.glob("fairpool-*.recover")) == []


def test_job_cluster_is_exported_and_refuses_a_scheduler() -> None:
    assert fairpool.JobCluster is JobCluster
    with pytest.raises(TypeError, match="scheduler"):
        JobCluster(triple, scheduler="127.0.0.1:1")


def test_a_pool_that_cannot_start_is_reported_with_its_log(monkeypatch) -> None:
    with pytest.raises(SchedulerConnectionError, match="exited") as info:
        LocalPool.start(cpus=0)  # `fairpool up` refuses: the error quotes its log
    assert "cpus" in str(info.value)
