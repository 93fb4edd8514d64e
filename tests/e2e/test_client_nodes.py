"""End to end: a cluster's view of the nodes and its controls over where it runs (dispy's node API)."""

from __future__ import annotations

import io
import os
import time

import pytest

from fairpool import SharedJobCluster

pytestmark = pytest.mark.timeout(90)


def _where(tag):
    import os as _os
    import time as _time

    start = _time.time()
    _time.sleep(0.2)
    return (tag, _os.getpid(), start, _time.time())


@pytest.fixture
def two_nodes(scheduler, start_node, cluster_kwargs):
    start_node(cpus=2, name="n1")
    start_node(cpus=2, name="n2", extra_args=["--memory", "2G", "--gpus", "1"])
    return cluster_kwargs


def _wait_for_nodes(cluster, names):
    from conftest import wait_for

    return wait_for(lambda: {n.name for n in cluster.nodes()} >= set(names) and cluster.nodes(), timeout=30,
                    message=f"nodes {names} joined")


def test_nodes_lists_cpus_memory_gpus_busy_done_and_heartbeat(two_nodes):
    with SharedJobCluster(lambda x: x, **two_nodes) as cluster:
        _wait_for_nodes(cluster, ["n1", "n2"])
        [cluster.submit(i).result(timeout=60) for i in range(6)]
        nodes = {n.name: n for n in cluster.nodes()}
    assert nodes["n1"].cpus == 2 and nodes["n2"].gpus == 1 and nodes["n2"].memory == 2 * 1024**3
    assert all(n.state == "up" and n.allocated for n in nodes.values())
    assert sum(n.done for n in nodes.values()) >= 6
    assert all(n.last_heartbeat and time.time() - n.last_heartbeat < 30 for n in nodes.values())


def test_stats_count_jobs_per_status_and_per_node(two_nodes):
    with SharedJobCluster(_where, **two_nodes) as cluster:
        jobs = [cluster.submit(i) for i in range(6)]
        cluster.wait(timeout=60)
        stats = cluster.stats()
        out = io.StringIO()
        cluster.print_status(out)
    assert stats["by_status"] == {"FINISHED": 6}
    per_node = stats["by_node"]
    assert sum(entry["done"] for entry in per_node.values()) == 6
    assert all(entry["cpu_time"] >= 0.2 * entry["done"] for entry in per_node.values())
    assert {j.node for j in jobs} <= set(per_node)
    table = out.getvalue()
    assert "Node" in table and any(name in table for name in per_node)


def test_nodes_argument_limits_the_cluster_to_matching_nodes(two_nodes):
    with SharedJobCluster(_where, nodes=["n2"], **two_nodes) as cluster:
        _wait_for_nodes(cluster, ["n1", "n2"])
        jobs = [cluster.submit(i) for i in range(6)]
        assert [j.result(timeout=60)[0] for j in jobs] == list(range(6))
        assert {j.node for j in jobs} == {"n2"}
        assert {n.name: n.allocated for n in cluster.nodes()} == {"n1": False, "n2": True}


def test_deallocate_then_allocate_node_moves_new_jobs(two_nodes):
    with SharedJobCluster(_where, **two_nodes) as cluster:
        _wait_for_nodes(cluster, ["n1", "n2"])
        cluster.deallocate_node("n1")
        first = [cluster.submit(i) for i in range(4)]
        cluster.wait(timeout=60)
        assert {j.node for j in first} == {"n2"}
        cluster.allocate_node("n1")
        cluster.deallocate_node("n2")
        second = [cluster.submit(i) for i in range(4)]
        cluster.wait(timeout=60)
        assert {j.node for j in second} == {"n1"}


def test_set_node_cpus_caps_the_cluster_jobs_running_at_once_on_a_node(scheduler, start_node, cluster_kwargs):
    start_node(cpus=2, name="n1")
    with SharedJobCluster(_where, **cluster_kwargs) as cluster:
        _wait_for_nodes(cluster, ["n1"])
        assert cluster.set_node_cpus("n1", 1) == 1
        spans = [j.result(timeout=60)[2:] for j in [cluster.submit(i) for i in range(4)]]
    spans.sort()
    assert all(later[0] >= earlier[1] - 0.01 for earlier, later in zip(spans, spans[1:], strict=False))


def test_node_jobs_lists_the_cluster_jobs_on_a_node(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")

    def slow(i):
        import time as _time

        _time.sleep(2)
        return i

    with SharedJobCluster(slow, **cluster_kwargs) as cluster:
        job = cluster.submit(1)
        from conftest import wait_for

        wait_for(lambda: cluster.node_jobs("n1") == [job.uid], timeout=30, message="the job is on n1")
        assert job.result(timeout=60) == 1
        assert cluster.node_jobs("n1") == []


def test_resetup_node_runs_cleanup_then_setup_again(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="n1")
    log = str(tmp_path / "setup.log")

    def setup():
        with open(log, "a") as f:
            f.write("setup\n")

    def cleanup():
        with open(log, "a") as f:
            f.write("cleanup\n")

    with SharedJobCluster(lambda: os.getpid(), setup=setup, cleanup=cleanup, **cluster_kwargs) as cluster:
        cluster.submit().result(timeout=60)
        cluster.resetup_node("n1")
        from conftest import wait_for

        wait_for(lambda: open(log).read().count("cleanup") == 1, timeout=30, message="cleanup ran")
        cluster.submit().result(timeout=60)
        assert open(log).read().split() == ["setup", "cleanup", "setup"]


def test_node_controls_name_an_unknown_node_clearly(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")
    with SharedJobCluster(lambda: 1, **cluster_kwargs) as cluster:
        with pytest.raises(Exception, match="no such node 'ghost'"):
            cluster.set_node_cpus("ghost", 1)


def test_why_says_what_holds_a_job_that_fits_nowhere_now(scheduler, start_node, cluster_kwargs):
    start_node(cpus=2, name="n1")
    with SharedJobCluster(lambda: 1, **cluster_kwargs) as cluster:
        _wait_for_nodes(cluster, ["n1"])
        job = cluster.options(node="elsewhere").submit()
        from conftest import wait_for

        wait_for(lambda: job.status == "QUEUED", timeout=30, message="the job was queued")
        reason = cluster.why(job)
        assert "elsewhere" in reason and "not up" in reason
        assert job.status_reason == reason
        cluster.cancel(job)
