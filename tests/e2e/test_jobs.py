"""End to end: real scheduler and node processes on loopback, driven by SharedJobCluster."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import time

import pytest

from fairpool import JobStatus, SharedJobCluster

pytestmark = pytest.mark.timeout(90)


def test_function_job_returns_value_with_status_node_and_timestamps(one_node_pool):
    def double(x):
        return x * 2

    before = time.time()
    with SharedJobCluster(double, **one_node_pool) as cluster:
        job = cluster.submit(21)
        assert job.result(timeout=60) == 42
    assert job.status is JobStatus.FINISHED
    assert job.node == "n1"
    assert before <= job.submitted_at <= job.started_at <= job.finished_at <= time.time()


def test_job_is_a_future_usable_with_concurrent_futures(one_node_pool):
    with SharedJobCluster(lambda x: x + 1, **one_node_pool) as cluster:
        jobs = [cluster.submit(i) for i in range(20)]
        done, not_done = concurrent.futures.wait(jobs, timeout=60)
        assert not not_done
        assert sorted(j.result() for j in concurrent.futures.as_completed(jobs)) == list(range(1, 21))


def test_closure_captures_local_state(one_node_pool):
    offset = 1000
    table = {"a": 1, "b": 2}

    def compute(key):
        return table[key] + offset

    with SharedJobCluster(compute, **one_node_pool) as cluster:
        assert [cluster.submit(k).result(timeout=60) for k in "ab"] == [1001, 1002]


def test_kwargs_reach_the_computation(one_node_pool):
    def power(base, exponent=1):
        return base**exponent

    with SharedJobCluster(power, **one_node_pool) as cluster:
        assert cluster.submit(3, exponent=4).result(timeout=60) == 81


def test_exception_fails_job_with_remote_traceback(one_node_pool):
    def explode(x):
        raise ValueError(f"bad input {x}")

    with SharedJobCluster(explode, **one_node_pool) as cluster:
        job = cluster.submit(7)
        with pytest.raises(ValueError, match="bad input 7"):
            job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert "explode" in job.traceback and "ValueError" in job.traceback
    assert job() is None  # dispy style: None when the job failed


def test_dispy_style_call_returns_result(one_node_pool):
    with SharedJobCluster(lambda: "hello", **one_node_pool) as cluster:
        assert cluster.submit()() == "hello"


def test_prints_are_captured_per_job(one_node_pool):
    def chatty(n):
        print(f"out {n}")
        print(f"err {n}", file=sys.stderr)
        return n

    with SharedJobCluster(chatty, **one_node_pool) as cluster:
        jobs = [cluster.submit(i) for i in range(4)]
        cluster.wait(timeout=60)
    for i, job in enumerate(jobs):
        assert job.stdout == f"out {i}\n"
        assert job.stderr == f"err {i}\n"


def test_sys_exit_fails_job_with_reason(one_node_pool):
    def quit_early():
        sys.exit(3)

    with SharedJobCluster(quit_early, **one_node_pool) as cluster:
        job = cluster.submit()
        with pytest.raises(BaseException):  # noqa: B017 - the job's own SystemExit or a wrapper
            job.result(timeout=60)
    assert job.status is JobStatus.FAILED
    assert "exit" in (job.traceback + str(job.exception())).lower()


@pytest.mark.parametrize("how", ["os._exit", "SIGKILL"])
def test_worker_death_fails_job_and_node_keeps_serving(one_node_pool, how):
    def die(how):
        if how == "os._exit":
            os._exit(5)
        os.kill(os.getpid(), signal.SIGKILL)

    with SharedJobCluster(die, **one_node_pool) as cluster:
        job = cluster.submit(how)
        with pytest.raises(Exception):  # noqa: B017
            job.result(timeout=60)
        assert job.status is JobStatus.FAILED
        reason = (str(job.exception()) + job.traceback).lower()
        assert ("signal" in reason or "sigkill" in reason) if how == "SIGKILL" else "5" in reason

    with SharedJobCluster(lambda x: x * 3, **one_node_pool) as cluster:
        assert [j.result(timeout=60) for j in [cluster.submit(i) for i in range(10)]] == [3 * i for i in range(10)]


def test_map_returns_results_in_order(one_node_pool):
    with SharedJobCluster(lambda x: x * x, **one_node_pool) as cluster:
        assert list(cluster.map(range(200))) == [x * x for x in range(200)]


def test_wait_returns_true_when_all_jobs_done(one_node_pool):
    with SharedJobCluster(lambda x: x, **one_node_pool) as cluster:
        jobs = [cluster.submit(i) for i in range(50)]
        assert cluster.wait(timeout=60) is True
        assert all(j.done() for j in jobs)
        assert len(cluster.jobs()) == 50


def test_many_jobs_spread_over_two_nodes(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="left")
    start_node(cpus=1, name="right")

    def where(x):
        import time

        time.sleep(0.05)
        return x

    with SharedJobCluster(where, **cluster_kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(30)]
        assert [j.result(timeout=60) for j in jobs] == list(range(30))
    assert {j.node for j in jobs} == {"left", "right"}


def test_jobs_submitted_before_any_node_run_when_one_joins(scheduler, start_node, cluster_kwargs):
    with SharedJobCluster(lambda x: -x, **cluster_kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(5)]
        assert not any(j.done() for j in jobs)
        start_node(cpus=1, name="late")
        assert [j.result(timeout=60) for j in jobs] == [0, -1, -2, -3, -4]


def test_wait_with_progress_draws_a_bar_to_the_end(one_node_pool):
    import io

    out = io.StringIO()
    with SharedJobCluster(lambda x: x, **one_node_pool) as cluster:
        [cluster.submit(i) for i in range(20)]
        assert cluster.wait(timeout=60, progress=out) is True
    assert out.getvalue().rstrip().endswith("20/20 jobs ended (100%)")
