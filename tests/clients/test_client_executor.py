"""cluster.executor(): a concurrent.futures.Executor for any function, over the fake scheduler."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import pytest
from clientfake import FakeScheduler
from jobfunctions import double

from fairpool import Job, SharedJobCluster
from fairpool.clients.errors import ClusterClosedError
from fairpool.messages import OpenCluster, Submit


def power(base: int, exponent: int = 2) -> int:
    return base**exponent


def fail_on(x: int) -> int:
    if x == 3:
        raise KeyError(x)
    return x


def open_cluster(fake: FakeScheduler, secret_file: Path) -> SharedJobCluster:
    return SharedJobCluster(double, scheduler=fake.address, secret_file=secret_file)


def test_submit_runs_any_function_with_its_arguments(fake, secret_file) -> None:
    with open_cluster(fake, secret_file) as cluster:
        executor = cluster.executor()
        assert isinstance(executor, cf.Executor)
        future = executor.submit(power, 3, exponent=3)
        assert isinstance(future, Job) and future.result(timeout=10) == 27
        assert executor.submit(lambda a, b: a + b, 1, 2).result(timeout=10) == 3
        assert cluster.submit(4).result(timeout=10) == 8  # the cluster's own computation is unchanged
    opened = fake.received(OpenCluster)
    assert len(opened) == 2 and opened[1].name == "double.executor"


def test_a_failing_call_raises_its_exception(fake, secret_file) -> None:
    with open_cluster(fake, secret_file) as cluster, cluster.executor() as executor:
        with pytest.raises(KeyError):
            executor.submit(fail_on, 3).result(timeout=10)


def test_map_yields_results_in_order(fake, secret_file) -> None:
    with open_cluster(fake, secret_file) as cluster, cluster.executor() as executor:
        assert list(executor.map(power, range(10), [3] * 10)) == [i**3 for i in range(10)]


def test_map_with_a_chunksize_sends_fewer_jobs(fake, secret_file) -> None:
    with open_cluster(fake, secret_file) as cluster, cluster.executor() as executor:
        assert list(executor.map(double, range(10), chunksize=4)) == [2 * i for i in range(10)]
        executor_cluster = executor.cluster.cluster_id
    jobs = [j for s in fake.received(Submit) if s.cluster_id == executor_cluster for j in s.jobs]
    assert len(jobs) == 3  # 4 + 4 + 2 calls


def test_map_raises_a_failing_calls_exception_in_turn(fake, secret_file) -> None:
    with open_cluster(fake, secret_file) as cluster, cluster.executor() as executor:
        results = executor.map(fail_on, range(6))
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(KeyError):
            next(results)


def test_map_times_out_and_cancels_what_is_left(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    with open_cluster(fake, secret_file) as cluster:
        executor = cluster.executor()
        results = executor.map(double, range(3), timeout=0.2)
        with pytest.raises(TimeoutError):
            next(results)
        jobs = executor.cluster.jobs()
        for job in jobs:
            with pytest.raises(cf.CancelledError):
                job.result(timeout=10)
        executor.shutdown()


def test_shutdown_cancel_futures_cancels_jobs_not_yet_run_and_refuses_more(make_fake, secret_file) -> None:
    fake = make_fake(hold_jobs=True)
    with open_cluster(fake, secret_file) as cluster:
        executor = cluster.executor()
        futures = [executor.submit(double, i) for i in range(3)]
        executor.shutdown(wait=True, cancel_futures=True)
        assert all(f.cancelled() for f in futures)
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(double, 1)


def test_closing_the_cluster_shuts_its_executor_down(fake, secret_file) -> None:
    cluster = open_cluster(fake, secret_file)
    executor = cluster.executor()
    future = executor.submit(double, 21)
    cluster.close()
    assert future.result(timeout=0) == 42
    with pytest.raises(RuntimeError):
        executor.submit(double, 1)
    with pytest.raises(ClusterClosedError):
        cluster.executor()


def test_as_completed_works_on_executor_futures(fake, secret_file) -> None:
    with open_cluster(fake, secret_file) as cluster, cluster.executor() as executor:
        futures = [executor.submit(double, i) for i in range(20)]
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=10)) == [2 * i for i in range(20)]
