"""SPEC promises 1-4 under real crashes: kill -9 the client, the scheduler, a node, and lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fairpool import JobStatus, SharedJobCluster, recover_jobs

pytestmark = pytest.mark.timeout(150)

# A job that records every run of itself, so a test can tell whether anything ran twice.
RECORDING_CLIENT = textwrap.dedent("""
    import json, os, sys, time
    from fairpool import SharedJobCluster

    ledger, n, pause = sys.argv[3], int(sys.argv[4]), float(sys.argv[5])

    def work(i):
        import os, time
        with open(ledger, "a") as f:
            f.write(f"{i}\\n")
        time.sleep(pause)
        return i * 10

    cluster = SharedJobCluster(work, scheduler=sys.argv[1], secret_file=sys.argv[2])
    jobs = [cluster.submit(i) for i in range(n)]
    while not all(j.status != "CREATED" for j in jobs):  # every job acknowledged QUEUED
        time.sleep(0.01)
    print(json.dumps({"cluster_id": cluster.cluster_id}), flush=True)
    time.sleep(600)  # killed here
""")


def _ledger_counts(ledger: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    if ledger.exists():
        for line in ledger.read_text().split():
            counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


def _start_recording_client(tmp_path: Path, cluster_kwargs, n: int, pause: float) -> tuple[subprocess.Popen[str], str]:
    script = tmp_path / "client.py"
    script.write_text(RECORDING_CLIENT)
    ledger = tmp_path / "ledger"
    proc = subprocess.Popen([sys.executable, str(script), cluster_kwargs["scheduler"],
                             str(cluster_kwargs["secret_file"]), str(ledger), str(n), str(pause)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, json.loads(line)["cluster_id"]


def test_client_killed_jobs_keep_running_and_reattach_gets_every_result(scheduler, start_node, cluster_kwargs,
                                                                         tmp_path):
    start_node(cpus=2, name="n1")
    proc, cluster_id = _start_recording_client(tmp_path, cluster_kwargs, n=12, pause=0.2)
    proc.kill()  # SIGKILL: no goodbye
    proc.wait()
    cluster = SharedJobCluster.reattach(cluster_id, **cluster_kwargs)
    try:
        jobs = cluster.jobs()
        assert len(jobs) == 12
        assert sorted(j.result(timeout=60) for j in jobs) == [i * 10 for i in range(12)]
        assert all(j.status is JobStatus.FINISHED for j in jobs)
    finally:
        cluster.close()
    assert set(_ledger_counts(tmp_path / "ledger").values()) == {1}  # each ran exactly once


def test_recover_jobs_uses_the_latest_recover_file_in_the_working_directory(scheduler, start_node,
                                                                           cluster_kwargs, tmp_path,
                                                                           monkeypatch):
    start_node(cpus=2, name="n1")
    proc, cluster_id = _start_recording_client(tmp_path, cluster_kwargs, n=6, pause=0.05)
    proc.kill()
    proc.wait()
    monkeypatch.chdir(tmp_path)  # where the dead client wrote its recover file
    jobs = recover_jobs(secret_file=cluster_kwargs["secret_file"], timeout=60)
    assert sorted(j.result(timeout=1) for j in jobs) == [i * 10 for i in range(6)]
    assert all(j.uid.startswith(cluster_id) for j in jobs)


def test_scheduler_killed_and_restarted_connected_client_gets_every_result_once(scheduler, start_node,
                                                                                cluster_kwargs, tmp_path):
    start_node(cpus=2, name="n1")
    ledger = tmp_path / "ledger"

    def work(i):
        import time

        with open(ledger, "a") as f:
            f.write(f"{i}\n")
        time.sleep(0.1)
        return i + 1000

    with SharedJobCluster(work, **cluster_kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(40)]
        from conftest import wait_for

        wait_for(lambda: all(j.status is not JobStatus.CREATED for j in jobs), timeout=30,
                 message="every job acknowledged QUEUED")
        wait_for(lambda: _ledger_counts(ledger), timeout=30, message="some jobs started")
        scheduler.restart(kill=True)  # SIGKILL mid-run, then the same address again
        assert [j.result(timeout=90) for j in jobs] == [i + 1000 for i in range(40)]
    counts = _ledger_counts(ledger)
    assert sorted(counts) == list(range(40))
    assert set(counts.values()) == {1}, f"ran twice: {[i for i, c in counts.items() if c > 1]}"


def test_acknowledged_job_survives_an_immediate_scheduler_crash(scheduler, start_node, cluster_kwargs):
    with SharedJobCluster(lambda x: x * 7, **cluster_kwargs) as cluster:
        job = cluster.submit(6)
        from conftest import wait_for

        wait_for(lambda: job.status is JobStatus.QUEUED, timeout=30, message="the job was acknowledged")
        scheduler.kill()  # no node yet: the job exists only in the journal now
        scheduler.start()
        start_node(cpus=1, name="late")
        assert job.result(timeout=90) == 42


@pytest.mark.scheduler_config(heartbeat_timeout=3.0)
def test_node_killed_reentrant_jobs_rerun_elsewhere(scheduler, start_node, cluster_kwargs):
    victim = start_node(cpus=2, name="victim")

    def slow(i):
        import time

        time.sleep(1.0)
        return i

    with SharedJobCluster(slow, reentrant=True, **cluster_kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(4)]
        from conftest import wait_for

        wait_for(lambda: any(j.status is JobStatus.RUNNING for j in jobs), timeout=30, message="jobs running")
        victim.kill()
        start_node(cpus=2, name="rescuer")
        assert sorted(j.result(timeout=60) for j in jobs) == [0, 1, 2, 3]
        assert {j.node for j in jobs} == {"rescuer"}  # the victim finished none of them


@pytest.mark.scheduler_config(heartbeat_timeout=3.0)
def test_node_killed_non_reentrant_running_jobs_are_abandoned_and_reported(scheduler, start_node, cluster_kwargs):
    victim = start_node(cpus=1, name="victim")

    def slow():
        import time

        time.sleep(60)

    with SharedJobCluster(slow, **cluster_kwargs) as cluster:
        job = cluster.submit()
        from conftest import wait_for

        wait_for(lambda: job.status is JobStatus.RUNNING, timeout=30, message="the job runs")
        killed_at = time.monotonic()
        victim.kill()
        with pytest.raises(Exception):  # noqa: B017 - the future ends with the abandonment
            job.result(timeout=30)
        assert job.status is JobStatus.ABANDONED
        assert "victim" in str(job.exception())
        assert time.monotonic() - killed_at < 3.0 + 5.0  # noticed within the heartbeat timeout (+ slack)
