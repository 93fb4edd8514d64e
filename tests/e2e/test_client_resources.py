"""End to end: resources, placement on named nodes, and jobs that cannot fit.

Nodes advertise what they have (``fairpool node --cpus/--memory/--gpus``);
a job asks (``resources=`` on the cluster, or ``cluster.options(resources=...)``
per job) and runs only where it fits; a job that fits nowhere right now
waits QUEUED; one that no node could ever run fails fast with a clear
reason; ``submit_node(name, ...)`` runs on that node.
"""

from __future__ import annotations

import time

import pytest
from conftest import wait_for
from jobfunctions import wait_for_gate

from fairpool import JobStatus, SharedJobCluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("in_tmp_dir")]

GIB = 1024**3


@pytest.fixture
def cpu_and_gpu_nodes(start_node):
    """Two nodes alike but for a GPU: "cpu" (no GPU) and "gpu" (one)."""
    start_node(cpus=2, name="cpu", extra_args=["--gpus", "0", "--memory", "2G"])
    start_node(cpus=2, name="gpu", extra_args=["--gpus", "1", "--memory", "8G"])


def tag(x, gate: str = ""):
    """Return ``x``; with ``gate``, wait for that file first."""
    if gate:
        wait_for_gate(gate, timeout=30)
    return x


def _wait_both_joined(cluster: SharedJobCluster) -> None:
    # a pinned job waits for its node: one per node proves both have joined
    jobs = [cluster.submit_node(name, name) for name in ("cpu", "gpu")]
    assert [j.result(timeout=15) for j in jobs] == ["cpu", "gpu"]


def test_submit_node_runs_on_the_named_node(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="left")
    start_node(cpus=1, name="right")
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        lefts = [cluster.submit_node("left", i) for i in range(6)]
        rights = [cluster.submit_node("right", i) for i in range(6)]
        assert [j.result(timeout=15) for j in lefts + rights] == list(range(6)) * 2
    assert {j.node for j in lefts} == {"left"}
    assert {j.node for j in rights} == {"right"}


def test_gpu_job_per_options_runs_only_on_the_gpu_node(scheduler, cpu_and_gpu_nodes, cluster_kwargs):
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        _wait_both_joined(cluster)
        gpu_jobs = [cluster.options(resources={"gpus": 1}).submit(i) for i in range(4)]
        assert [j.result(timeout=15) for j in gpu_jobs] == list(range(4))
    assert {j.node for j in gpu_jobs} == {"gpu"}


def test_cluster_resources_apply_to_every_job(scheduler, cpu_and_gpu_nodes, cluster_kwargs):
    with SharedJobCluster(tag, **cluster_kwargs) as probe:
        _wait_both_joined(probe)
    with SharedJobCluster(tag, resources={"cpus": 2, "memory": "4G", "gpus": 1}, **cluster_kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(4)]
        # per-job options merge over the cluster's, field by field: the GPU is still asked for
        more = cluster.options(resources={"cpus": 1}).submit("merged")
        assert [j.result(timeout=15) for j in jobs] == list(range(4))
        assert more.result(timeout=15) == "merged"
    assert {j.node for j in [*jobs, more]} == {"gpu"}


def test_memory_request_runs_only_where_the_memory_is(scheduler, cpu_and_gpu_nodes, cluster_kwargs):
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        _wait_both_joined(cluster)
        jobs = [cluster.options(resources={"memory": "4G"}).submit(i) for i in range(4)]
        assert [j.result(timeout=15) for j in jobs] == list(range(4))
    assert {j.node for j in jobs} == {"gpu"}  # the node with 8G, not the one with 2G


def test_cpus_request_runs_only_on_a_node_with_that_many(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="small")
    start_node(cpus=2, name="big")
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        assert [cluster.submit_node(n, n).result(timeout=15) for n in ("small", "big")] == ["small", "big"]
        jobs = [cluster.options(resources={"cpus": 2}).submit(i) for i in range(4)]
        assert [j.result(timeout=15) for j in jobs] == list(range(4))
    assert {j.node for j in jobs} == {"big"}


def test_job_that_fits_nowhere_now_stays_queued_until_room(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=2, name="gpu", extra_args=["--gpus", "1"])
    gate = tmp_path / "gate"
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        holder = cluster.options(resources={"gpus": 1}).submit("holder", str(gate))
        wait_for(lambda: holder.status is JobStatus.RUNNING, timeout=15, message="the GPU is taken")
        waiting = cluster.options(resources={"gpus": 1}).submit("waiting")
        wait_for(lambda: waiting.status is JobStatus.QUEUED, timeout=15)
        watch_until = time.monotonic() + 1.0  # the node has a free CPU, but no free GPU
        while time.monotonic() < watch_until:
            assert waiting.status is JobStatus.QUEUED and not waiting.done()
            time.sleep(0.02)
        gate.touch()
        assert holder.result(timeout=15) == "holder"
        assert waiting.result(timeout=15) == "waiting"
    assert waiting.started_at >= holder.finished_at


def test_jobs_that_fit_pass_a_job_that_fits_nowhere_now_under_fifo_skip(scheduler, start_node, cluster_kwargs,
                                                                        tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('policy = "fifo"\n\n[fifo]\nmode = "skip"\n')
    scheduler.args += ["--policy-file", str(policy)]
    scheduler.restart()
    start_node(cpus=2, name="gpu", extra_args=["--gpus", "1"])
    gate = tmp_path / "gate"
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        holder = cluster.options(resources={"gpus": 1}).submit("holder", str(gate))
        wait_for(lambda: holder.status is JobStatus.RUNNING, timeout=15, message="the GPU is taken")
        waiting = cluster.options(resources={"gpus": 1}).submit("waiting")
        # the node still has a free CPU: plain jobs submitted later run meanwhile, the GPU job does not
        assert [cluster.submit(i).result(timeout=15) for i in range(3)] == [0, 1, 2]
        # (its QUEUED waits for the journal's group commit, which results need not)
        wait_for(lambda: waiting.status is JobStatus.QUEUED, timeout=15)
        assert not waiting.done()
        gate.touch()
        assert waiting.result(timeout=15) == "waiting"


@pytest.mark.parametrize("resources, asked", [
    ({"gpus": 2}, "2 gpus"),
    ({"memory": "64G"}, str(64 * GIB)),
    ({"cpus": 16}, "16 cpus"),
])
def test_job_beyond_every_node_fails_fast_with_clear_reason(scheduler, cpu_and_gpu_nodes, cluster_kwargs,
                                                            resources, asked):
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        _wait_both_joined(cluster)
        started = time.monotonic()
        job = cluster.options(resources=resources).submit("never")
        with pytest.raises(Exception, match="no node can run this job") as raised:
            job.result(timeout=15)
        assert time.monotonic() - started < 5
        assert job.status is JobStatus.FAILED
        message = str(raised.value)
        assert asked in message
        # it names what the pool does have, as the nodes advertised it
        assert "2 cpus" in message and str(8 * GIB) in message and "1 gpus" in message
        assert cluster.submit("still fine").result(timeout=15) == "still fine"


def test_cluster_resources_beyond_every_node_fail_each_job(scheduler, cpu_and_gpu_nodes, cluster_kwargs):
    with SharedJobCluster(tag, **cluster_kwargs) as probe:
        _wait_both_joined(probe)
    with SharedJobCluster(tag, resources={"gpus": 4}, **cluster_kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(3)]
        assert cluster.wait(timeout=15)
    assert [j.status for j in jobs] == [JobStatus.FAILED] * 3
    assert all("no node can run this job" in str(j.exception()) for j in jobs)


def test_job_cpus_are_reserved_on_its_node(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=2, name="n1")
    gate = tmp_path / "gate"
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        wide = cluster.options(resources={"cpus": 2}).submit("wide", str(gate))
        wait_for(lambda: wide.status is JobStatus.RUNNING, timeout=15, message="the two-CPU job runs")
        narrow = cluster.submit("narrow")
        wait_for(lambda: narrow.status is JobStatus.QUEUED, timeout=15)
        watch_until = time.monotonic() + 1.0  # both CPUs are the wide job's
        while time.monotonic() < watch_until:
            assert narrow.status is JobStatus.QUEUED
            time.sleep(0.02)
        gate.touch()
        assert narrow.result(timeout=15) == "narrow"
    assert narrow.started_at >= wide.finished_at


def test_submit_node_waits_for_a_node_that_has_not_joined_yet(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="early")
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        assert cluster.submit_node("early", "ok").result(timeout=15) == "ok"
        job = cluster.submit_node("late", "pinned")
        wait_for(lambda: job.status is JobStatus.QUEUED, timeout=15)
        start_node(cpus=1, name="late")
        assert job.result(timeout=15) == "pinned"
    assert job.node == "late"


def test_malformed_resources_are_refused_at_the_call(scheduler, cluster_kwargs):
    malformed = [{"gpu": 1}, {"memory": "lots"}, {"cpus": -1}, {"gpus": 0.5}]
    with SharedJobCluster(tag, **cluster_kwargs) as cluster:
        for resources in malformed:
            with pytest.raises(ValueError, match=next(iter(resources))):
                cluster.options(resources=resources)
    for resources in malformed:
        with pytest.raises(ValueError, match=next(iter(resources))):
            SharedJobCluster(tag, resources=resources, **cluster_kwargs)
