"""End to end: ``cluster.executor()`` is a ``concurrent.futures.Executor`` over the shared pool.

``submit(fn, *args)`` runs any function (not only the cluster's computation)
and returns a Future; ``map`` keeps order and packs ``chunksize`` calls per
job; ``shutdown(wait, cancel_futures)`` behaves as concurrent.futures
documents; ``concurrent.futures.wait``/``as_completed`` work on the jobs.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest
from conftest import wait_for
from jobfunctions import wait_for_gate

from fairpool import JobStatus, SharedJobCluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("in_tmp_dir")]


def unused(x):
    raise AssertionError("the cluster's own computation should not run for executor jobs")


def cube(x):
    return x**3


def pid_and(x):
    import os

    return os.getpid(), x


def hold(gate: str, value):
    wait_for_gate(gate, timeout=30)
    return value


def test_executor_is_an_executor_that_runs_any_function_on_a_node(one_node_pool):
    with SharedJobCluster(unused, **one_node_pool) as cluster:
        executor = cluster.executor()
        assert isinstance(executor, concurrent.futures.Executor)
        futures = [executor.submit(cube, 3), executor.submit(pow, 2, 10), executor.submit(pid_and, x="kw")]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        assert futures[0].result(timeout=15) == 27
        assert futures[1].result(timeout=15) == 1024
        pid, value = futures[2].result(timeout=15)
        assert value == "kw" and pid != os.getpid()  # it ran elsewhere
        executor.shutdown()


def test_executor_submit_raises_the_functions_exception(one_node_pool):
    def fails(n):
        raise KeyError(n)

    with SharedJobCluster(unused, **one_node_pool) as cluster, cluster.executor() as executor:
        future = executor.submit(fails, "missing")
        with pytest.raises(KeyError, match="missing"):
            future.result(timeout=15)


def test_executor_map_keeps_order_and_packs_chunksize_calls_per_job(one_node_pool):
    with SharedJobCluster(unused, **one_node_pool) as cluster:
        executor = cluster.executor()
        assert list(executor.map(cube, range(50), timeout=30)) == [x**3 for x in range(50)]
        assert list(executor.map(pow, range(23), [2] * 23, chunksize=5, timeout=30)) == [x**2 for x in range(23)]
        # 50 single calls, then ceil(23 / 5) jobs for the chunked map
        assert len(executor.cluster.jobs()) == 50 + 5
        executor.shutdown()


def test_executor_map_raises_the_first_failure_in_order(one_node_pool):
    def inverse(x):
        return 1 / x

    with SharedJobCluster(unused, **one_node_pool) as cluster, cluster.executor() as executor:
        results = executor.map(inverse, [1, 2, 0, 4], chunksize=2)
        assert next(results) == 1.0
        assert next(results) == 0.5
        with pytest.raises(ZeroDivisionError):
            next(results)


def test_executor_shutdown_waits_then_refuses_new_work(one_node_pool, tmp_path):
    gate = tmp_path / "gate"
    with SharedJobCluster(unused, **one_node_pool) as cluster:
        executor = cluster.executor()
        future = executor.submit(hold, str(gate), "held")
        wait_for(lambda: future.status is JobStatus.RUNNING, timeout=15)
        gate.touch()
        executor.shutdown(wait=True)
        assert future.done() and future.result() == "held"
        with pytest.raises(RuntimeError):
            executor.submit(cube, 1)


def test_executor_shutdown_cancel_futures_cancels_pending_not_running(scheduler, start_node, cluster_kwargs,
                                                                      tmp_path):
    start_node(cpus=1, name="n1")
    gate = tmp_path / "gate"
    with SharedJobCluster(unused, **cluster_kwargs) as cluster:
        executor = cluster.executor()
        running = executor.submit(hold, str(gate), "ran")
        wait_for(lambda: running.status is JobStatus.RUNNING, timeout=15)
        pending = [executor.submit(hold, str(gate), i) for i in range(5)]
        wait_for(lambda: all(f.status is JobStatus.QUEUED for f in pending), timeout=15)
        executor.shutdown(wait=False, cancel_futures=True)
        wait_for(lambda: all(f.done() for f in pending), timeout=15, message="the pending futures are cancelled")
        assert all(f.cancelled() for f in pending)
        gate.touch()
        # concurrent.futures: "Any futures that are completed or running won't be cancelled."
        assert running.result(timeout=15) == "ran"


def test_concurrent_futures_wait_and_as_completed_work_on_jobs(one_node_pool, tmp_path):
    gate = tmp_path / "gate"
    with SharedJobCluster(hold, **one_node_pool) as cluster:
        slow = cluster.submit(str(gate), "slow")
        fast = cluster.submit(str(tmp_path), "fast")  # its gate (a directory) exists already
        done, not_done = concurrent.futures.wait([slow, fast], timeout=15,
                                                 return_when=concurrent.futures.FIRST_COMPLETED)
        assert done == {fast} and not_done == {slow}
        gate.touch()
        order = [job.result() for job in concurrent.futures.as_completed([slow, fast], timeout=15)]
        assert sorted(order) == ["fast", "slow"]


def test_concurrent_futures_wait_first_exception_returns_on_a_failed_job(one_node_pool, tmp_path):
    def fails():
        raise OSError("disk on fire")

    with SharedJobCluster(unused, **one_node_pool) as cluster, cluster.executor() as executor:
        stuck = executor.submit(hold, str(tmp_path / "never"), "stuck")
        failed = executor.submit(fails)
        done, not_done = concurrent.futures.wait([stuck, failed], timeout=15,
                                                 return_when=concurrent.futures.FIRST_EXCEPTION)
        assert done == {failed} and not_done == {stuck}
        assert isinstance(failed.exception(), OSError)
        stuck.cancel()
        done, _ = concurrent.futures.wait([stuck], timeout=15)
        assert stuck in done and stuck.cancelled()


def test_executor_closes_with_its_cluster(one_node_pool):
    cluster = SharedJobCluster(unused, **one_node_pool)
    executor = cluster.executor()
    future = executor.submit(cube, 4)
    started = time.monotonic()
    cluster.close()
    assert future.result(timeout=0) == 64  # close() waited for the executor's jobs
    assert time.monotonic() - started < 15
    with pytest.raises(RuntimeError):
        executor.submit(cube, 1)


def test_executor_map_timeout_raises_and_cancels_the_rest(one_node_pool, tmp_path):
    never = str(tmp_path / "never")
    with SharedJobCluster(unused, **one_node_pool) as cluster, cluster.executor() as executor:
        started = time.monotonic()
        results = executor.map(hold, [never] * 4, range(4), timeout=1.0)
        with pytest.raises(TimeoutError):
            next(results)
        assert time.monotonic() - started < 5
        jobs = executor.cluster.jobs()
        wait_for(lambda: all(j.done() for j in jobs), timeout=15, message="the map's jobs are cancelled")
        assert all(j.cancelled() for j in jobs)


def test_executor_submit_takes_lambdas_and_closures(one_node_pool):
    base = 100
    with SharedJobCluster(unused, **one_node_pool) as cluster, cluster.executor() as executor:
        assert executor.submit(lambda x: x + base, 5).result(timeout=15) == 105


def test_executor_shutdown_without_wait_returns_at_once_and_jobs_complete(one_node_pool, tmp_path):
    gate = tmp_path / "gate"
    with SharedJobCluster(unused, **one_node_pool) as cluster:
        executor = cluster.executor()
        future = executor.submit(hold, str(gate), "finished later")
        wait_for(lambda: future.status is JobStatus.RUNNING, timeout=15)
        started = time.monotonic()
        executor.shutdown(wait=False)
        assert time.monotonic() - started < 1.0
        assert not future.done()
        gate.touch()
        assert future.result(timeout=15) == "finished later"
