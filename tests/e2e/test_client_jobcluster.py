"""End to end: ``fairpool.JobCluster`` -- the SharedJobCluster API on a private local pool.

No scheduler is started first: the cluster starts its own pool (a real
``fairpool up`` process) on demand, runs jobs there with the same API --
options, cancel, callbacks, files, executor -- and stops the pool, workers
included, when it closes.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys

import pytest
from conftest import process_gone, wait_for
from jobfunctions import wait_for_gate

import fairpool
from fairpool import JobStatus

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("in_tmp_dir")]


def work(x, gate: str = ""):
    """Return (worker pid, x * 2); with ``gate``, wait for that file first."""
    import os

    if gate:
        wait_for_gate(gate, timeout=30)
    return os.getpid(), x * 2


def test_job_cluster_runs_jobs_on_its_own_pool_and_stops_it_on_close(tmp_path):
    cluster = fairpool.JobCluster(work, cpus=2)
    try:
        pool_process = cluster.pool.process
        assert cluster.scheduler.startswith("127.0.0.1:")
        jobs = [cluster.submit(i) for i in range(20)]
        results = [job.result(timeout=30) for job in jobs]
        assert [value for _, value in results] == [i * 2 for i in range(20)]
        assert all(job.status is JobStatus.FINISHED and job.node for job in jobs)
        worker_pids = {pid for pid, _ in results}
        assert os.getpid() not in worker_pids
    finally:
        cluster.close()
    assert pool_process.poll() is not None, "the private pool outlived its cluster"
    wait_for(lambda: all(process_gone(pid) for pid in worker_pids), timeout=10, message="the pool's workers are gone")
    assert not cluster.pool.state_dir.exists()
    assert not list(tmp_path.glob("*.recover")), "a private pool leaves nothing to recover"


def test_job_cluster_offers_options_cancel_and_callbacks(tmp_path):
    statuses: dict[str, list[JobStatus]] = {}

    def job_status(job) -> None:
        statuses.setdefault(job.uid, []).append(job.status)

    gate = tmp_path / "gate"
    with fairpool.JobCluster(work, cpus=1, job_status=job_status) as cluster:
        timed_out = cluster.options(timeout=0.5).submit(1, str(tmp_path / "never"))
        with pytest.raises(Exception, match="timed out"):
            timed_out.result(timeout=20)
        running = cluster.submit(2, str(gate))
        wait_for(lambda: running.status is JobStatus.RUNNING, timeout=15)
        assert cluster.cancel(running) is True
        with pytest.raises(concurrent.futures.CancelledError):
            running.result(timeout=15)
        third = cluster.submit(3)
        assert third.result(timeout=15)[1] == 6  # the worker was replaced after the kill
        assert cluster.submit_node(third.node, 4).result(timeout=15)[1] == 8
    assert statuses[timed_out.uid] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED]
    assert statuses[running.uid] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLED]


def test_job_cluster_jobs_send_files_and_provisional_results(tmp_path):
    def report(name):
        import fairpool

        fairpool.provisional_result("started")
        with open(name, "w") as f:
            f.write("from the private pool")
        fairpool.send_file(name)
        return "sent"

    dest = tmp_path / "dest"
    with fairpool.JobCluster(report, cpus=1, dest_path=dest) as cluster:
        job = cluster.submit("note.txt")
        assert job.result(timeout=30) == "sent"
    assert job.provisional == "started"
    assert (dest / "note.txt").read_text() == "from the private pool"


def test_job_cluster_executor_runs_any_function(tmp_path):
    with fairpool.JobCluster(work, cpus=2) as cluster, cluster.executor() as executor:
        assert executor.submit(pow, 3, 4).result(timeout=30) == 81
        assert list(executor.map(abs, range(-5, 5), chunksize=3)) == [abs(x) for x in range(-5, 5)]


def test_job_cluster_refuses_a_scheduler_argument():
    with pytest.raises(TypeError, match="scheduler"):
        fairpool.JobCluster(work, scheduler="127.0.0.1:1")


SCRIPT_WITHOUT_CLOSE = """
import sys
import fairpool

def worker_pid():
    import os
    return os.getpid()

cluster = fairpool.JobCluster(worker_pid, cpus=1)
print(cluster.pool.process.pid, cluster.submit().result(timeout=30), flush=True)
# no close(): the interpreter exits with the cluster open
"""


def test_job_cluster_pool_stops_when_the_script_forgets_to_close(tmp_path):
    script = tmp_path / "forgetful.py"
    script.write_text(SCRIPT_WITHOUT_CLOSE)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    pool_pid, worker = (int(pid) for pid in done.stdout.split()[-2:])
    wait_for(lambda: process_gone(pool_pid) and process_gone(worker), timeout=10, message="the private pool stopped at exit")
