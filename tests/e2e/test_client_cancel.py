"""End to end: ``cancel(job)`` and per-job ``timeout=``, down to the processes a job started.

A queued job is cancelled without ever running. A running job's worker
process tree -- grandchildren included -- gets SIGTERM, then SIGKILL after a
grace period if it does not go; the job ends CANCELLED and the node replaces
the worker, so later jobs still run. A job over its ``timeout`` is killed the
same way and ends FAILED, saying it timed out.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import process_gone, wait_for
from jobfunctions import wait_for_gate

from fairpool import JobStatus, SharedJobCluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("in_tmp_dir")]


def spawn_and_hang(pidfile: str, stubborn: bool = False):
    """Start ``sleep 1000`` as a grandchild, record both pids, then hang.

    ``stubborn``: the job and its grandchild ignore SIGTERM (the job notes that it got one),
    so only SIGKILL ends them.
    """
    import os
    import signal
    import subprocess
    import time

    def noted(signum, frame):
        with open(pidfile + ".term", "w") as f:
            f.write("got SIGTERM")

    if stubborn:
        signal.signal(signal.SIGTERM, noted)
    ignore = (lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)) if stubborn else None
    child = subprocess.Popen(["sleep", "1000"], preexec_fn=ignore)
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.replace(pidfile + ".tmp", pidfile)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "was not stopped"


def whoami(gate: str = "", marker: str = ""):
    """Return the worker's pid; with ``gate``, wait for it first; with ``marker``, leave a trace."""
    import os

    if marker:
        open(marker, "w").close()
    if gate:
        wait_for_gate(gate, timeout=30)
    return os.getpid()


def _pids(pidfile: Path) -> tuple[int, int]:
    wait_for(pidfile.exists, timeout=15, message="the job recorded its pids")
    worker, grandchild = (int(p) for p in pidfile.read_text().split())
    return worker, grandchild


def test_cancel_queued_job_removes_it_without_running(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=2, name="n1")
    gate, marker = tmp_path / "gate", tmp_path / "ran"
    with SharedJobCluster(whoami, **cluster_kwargs) as cluster:
        blocker = cluster.options(resources={"cpus": 2}).submit(str(gate))
        queued = cluster.options(resources={"cpus": 2}).submit("", str(marker))
        wait_for(lambda: blocker.status is JobStatus.RUNNING and queued.status is JobStatus.QUEUED, timeout=15)
        assert cluster.cancel(queued) is True
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result(timeout=15)
        assert queued.status is JobStatus.CANCELLED and queued.cancelled()
        gate.touch()
        blocker.result(timeout=15)
        assert cluster.options(resources={"cpus": 2}).submit().result(timeout=15) > 0  # its slot was free
    assert not marker.exists(), "the cancelled job ran"
    assert cluster.cancel(queued) is False  # over already


def test_cancel_job_waiting_on_its_node_behind_another_never_runs(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="n1")
    gate, marker = tmp_path / "gate", tmp_path / "ran"
    with SharedJobCluster(whoami, **cluster_kwargs) as cluster:
        blocker = cluster.submit(str(gate))
        behind = cluster.submit("", str(marker))  # may already sit in the node's queue
        wait_for(lambda: blocker.status is JobStatus.RUNNING, timeout=15)
        assert behind.cancel() is True  # the Future's own cancel asks the scheduler too
        with pytest.raises(concurrent.futures.CancelledError):
            behind.result(timeout=15)
        gate.touch()
        blocker.result(timeout=15)
        cluster.submit().result(timeout=15)
    assert behind.status is JobStatus.CANCELLED
    assert not marker.exists(), "the cancelled job ran"


def test_cancel_running_job_kills_its_process_tree_and_worker_is_replaced(scheduler, start_node, cluster_kwargs,
                                                                         tmp_path):
    start_node(cpus=1, name="n1")
    pidfile = tmp_path / "pids"
    with SharedJobCluster(spawn_and_hang, **cluster_kwargs) as cluster:
        job = cluster.submit(str(pidfile))
        worker, grandchild = _pids(pidfile)
        assert not process_gone(grandchild)
        assert cluster.cancel(job) is True
        with pytest.raises(concurrent.futures.CancelledError):
            job.result(timeout=15)
        assert job.status is JobStatus.CANCELLED
        wait_for(lambda: process_gone(worker) and process_gone(grandchild), timeout=10, message="the job's processes are gone")
        # the node replaced the worker: the next job runs, in a new process
        later = SharedJobCluster(whoami, **cluster_kwargs)
        try:
            assert later.submit().result(timeout=15) not in (worker, grandchild)
        finally:
            later.close()


def test_cancel_kills_processes_that_ignore_sigterm_after_grace(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="n1")
    pidfile = tmp_path / "pids"
    with SharedJobCluster(spawn_and_hang, **cluster_kwargs) as cluster:
        job = cluster.submit(str(pidfile), True)
        worker, grandchild = _pids(pidfile)
        cluster.cancel(job)
        wait_for(lambda: process_gone(worker) and process_gone(grandchild), timeout=12,
                 message="SIGKILL ended the processes that ignored SIGTERM")
        assert Path(str(pidfile) + ".term").exists(), "the job never got SIGTERM before SIGKILL"
        with pytest.raises(concurrent.futures.CancelledError):
            job.result(timeout=15)
        assert job.status is JobStatus.CANCELLED


def test_job_over_its_timeout_is_killed_and_fails_saying_so(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="n1")
    pidfile = tmp_path / "pids"
    with SharedJobCluster(spawn_and_hang, **cluster_kwargs) as cluster:
        started = time.monotonic()
        job = cluster.options(timeout=0.5).submit(str(pidfile))
        with pytest.raises(Exception, match="timed out") as raised:
            job.result(timeout=15)
        assert not isinstance(raised.value, concurrent.futures.CancelledError)
        assert job.status is JobStatus.FAILED
        assert time.monotonic() - started < 10
        worker, grandchild = _pids(pidfile)
        wait_for(lambda: process_gone(worker) and process_gone(grandchild), timeout=10, message="the job's processes are gone")
    with SharedJobCluster(whoami, **cluster_kwargs) as later:
        assert later.submit().result(timeout=15) != worker  # the node replaced the worker


def test_job_within_its_timeout_finishes(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")

    def nap(seconds):
        import time

        time.sleep(seconds)
        return seconds

    with SharedJobCluster(nap, **cluster_kwargs) as cluster:
        assert cluster.options(timeout=10).submit(0.2).result(timeout=15) == 0.2


def test_cancel_right_after_submit_never_runs(scheduler, start_node, cluster_kwargs, tmp_path):
    markers = [tmp_path / f"ran{i}" for i in range(20)]
    with SharedJobCluster(whoami, **cluster_kwargs) as cluster:
        # cancelled before the scheduler could even acknowledge them (and no node to race with)
        jobs = [cluster.submit("", str(marker)) for marker in markers]
        assert all(cluster.cancel(job) for job in jobs)
        for job in jobs:
            with pytest.raises(concurrent.futures.CancelledError):
                job.result(timeout=15)
        start_node(cpus=2, name="n1")
        assert cluster.submit().result(timeout=15) > 0
    assert {job.status for job in jobs} == {JobStatus.CANCELLED}
    assert not [m.name for m in markers if m.exists()], "cancelled jobs ran"


def test_timeout_counts_running_time_not_time_spent_waiting(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")

    def nap(seconds):
        import time

        time.sleep(seconds)
        return seconds

    with SharedJobCluster(nap, **cluster_kwargs) as cluster:
        # one CPU: the fourth job waits ~1.5 s before it starts, more than its timeout
        jobs = [cluster.options(timeout=1.2).submit(0.5) for _ in range(4)]
        assert [job.result(timeout=20) for job in jobs] == [0.5] * 4


def setsid_grandchild(pidfile: str):
    import os
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(60)


def test_cancel_kills_grandchild_that_started_its_own_session(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="n1")
    pidfile = tmp_path / "pids"
    grandchild = 0
    try:
        with SharedJobCluster(setsid_grandchild, **cluster_kwargs) as cluster:
            job = cluster.submit(str(pidfile))
            worker, grandchild = _pids(pidfile)
            cluster.cancel(job)
            with pytest.raises(concurrent.futures.CancelledError):
                job.result(timeout=15)
            wait_for(lambda: process_gone(worker) and process_gone(grandchild), timeout=4, message="the job's processes are gone")
    finally:
        if grandchild and not process_gone(grandchild):
            os.kill(grandchild, signal.SIGKILL)  # do not leave it behind


def test_cancel_jobs_prefetched_behind_a_running_one_ends_them_at_once(scheduler, start_node, cluster_kwargs,
                                                                       tmp_path):
    start_node(cpus=1, name="n1")
    gate = tmp_path / "gate"
    with SharedJobCluster(whoami, **cluster_kwargs) as cluster:
        # many trivial jobs first: the node learns they are short and queues several per worker
        assert len({job.result(timeout=15) for job in [cluster.submit() for _ in range(100)]}) == 1
        blocker = cluster.submit(str(gate))
        markers = [tmp_path / f"ran{i}" for i in range(5)]
        behind = [cluster.submit("", str(marker)) for marker in markers]
        wait_for(lambda: blocker.status is JobStatus.RUNNING, timeout=15)
        try:
            assert all(job.cancel() for job in behind)
            # none of them started: they end now, not when the blocker does
            wait_for(lambda: all(job.done() for job in behind), timeout=3, message="the cancelled jobs end")
        finally:
            gate.touch()
        assert all(job.cancelled() for job in behind)
        worker = blocker.result(timeout=15)  # the running job was not killed with them
        assert cluster.submit().result(timeout=15) == worker  # nor was its worker
    assert not [m.name for m in markers if m.exists()], "cancelled jobs ran"
