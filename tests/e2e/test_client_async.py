"""End to end, under trio: ``fairpool.AsyncSharedJobCluster`` against real scheduler and node processes.

``async with`` opens the cluster (its connection runs in the test's own trio
loop); ``await cluster.submit(...)`` gives an ``AsyncJob`` and ``await job``
its result or exception; ``map`` is an async iterator in order; options,
``submit_node``, ``cancel`` and callbacks behave as in the synchronous client,
and waiting on a job never blocks the loop.
"""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
import trio
from conftest import async_wait_for
from jobfunctions import wait_for_gate

import fairpool
from fairpool import JobStatus

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("in_tmp_dir")]


def square(x):
    return x * x


def gated(gate: str, value):
    wait_for_gate(gate, timeout=30)
    return value


async def test_async_submit_then_await_each_result(one_node_pool):
    with trio.fail_after(20):
        async with fairpool.AsyncSharedJobCluster(square, **one_node_pool) as cluster:
            jobs = [await cluster.submit(i) for i in range(20)]
            assert all(isinstance(j, concurrent.futures.Future) for j in jobs)
            assert [await job for job in jobs] == [i * i for i in range(20)]
    assert {job.status for job in jobs} == {JobStatus.FINISHED}
    assert {job.node for job in jobs} == {"n1"}


async def test_async_map_yields_results_in_order(one_node_pool):
    with trio.fail_after(20):
        async with fairpool.AsyncSharedJobCluster(square, **one_node_pool) as cluster:
            assert [value async for value in cluster.map(range(100))] == [i * i for i in range(100)]


async def test_async_await_raises_the_jobs_exception(one_node_pool):
    def explode(x):
        raise ValueError(f"bad {x}")

    with trio.fail_after(20):
        async with fairpool.AsyncSharedJobCluster(explode, **one_node_pool) as cluster:
            job = await cluster.submit(3)
            with pytest.raises(ValueError, match="bad 3"):
                await job
    assert job.status is JobStatus.FAILED


async def test_awaiting_a_job_leaves_the_trio_loop_free(one_node_pool, tmp_path):
    gate = tmp_path / "gate"
    with trio.fail_after(20):
        async with fairpool.AsyncSharedJobCluster(gated, **one_node_pool) as cluster:
            job = await cluster.submit(str(gate), "opened")
            async with trio.open_nursery() as nursery:

                async def open_gate_once_running() -> None:
                    await async_wait_for(lambda: job.status is JobStatus.RUNNING, timeout=15)
                    gate.touch()  # only runs if the await below lets the loop go on

                nursery.start_soon(open_gate_once_running)
                assert await job == "opened"


async def test_async_options_timeout_and_submit_node(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="left")
    start_node(cpus=1, name="right")
    with trio.fail_after(20):
        async with fairpool.AsyncSharedJobCluster(gated, **cluster_kwargs) as cluster:
            pinned = [await cluster.submit_node("right", str(tmp_path), i) for i in range(4)]
            assert [await job for job in pinned] == [0, 1, 2, 3]
            assert {job.node for job in pinned} == {"right"}
            slow = await cluster.options(timeout=0.5).submit(str(tmp_path / "never"), "late")
            with pytest.raises(Exception, match="timed out"):
                await slow
            assert slow.status is JobStatus.FAILED


async def test_async_cancel_running_job(one_node_pool, tmp_path):
    with trio.fail_after(20):
        async with fairpool.AsyncSharedJobCluster(gated, **one_node_pool) as cluster:
            job = await cluster.submit(str(tmp_path / "never"), "never")
            await async_wait_for(lambda: job.status is JobStatus.RUNNING, timeout=15)
            assert cluster.cancel(job) is True
            with pytest.raises(concurrent.futures.CancelledError):
                await job
            assert job.status is JobStatus.CANCELLED
            assert await (await cluster.submit(str(tmp_path), "after")) == "after"


async def test_async_job_status_callback_runs_off_the_trio_thread(one_node_pool):
    trio_thread = threading.get_ident()
    seen: list[tuple[JobStatus, int]] = []

    def job_status(job) -> None:
        seen.append((job.status, threading.get_ident()))

    with trio.fail_after(20):
        async with fairpool.AsyncSharedJobCluster(square, job_status=job_status, **one_node_pool) as cluster:
            job = await cluster.submit(7)
            assert await job == 49
    # leaving the block delivered every callback
    assert [status for status, _ in seen] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FINISHED]
    assert trio_thread not in {thread for _, thread in seen}


async def test_leaving_the_block_waits_for_the_jobs(one_node_pool, tmp_path):
    gate = tmp_path / "gate"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with fairpool.AsyncSharedJobCluster(gated, **one_node_pool) as cluster:
                jobs = [await cluster.submit(str(gate), i) for i in range(3)]

                async def open_gate_later() -> None:
                    await async_wait_for(lambda: any(j.status is JobStatus.RUNNING for j in jobs), timeout=15)
                    gate.touch()

                nursery.start_soon(open_gate_later)
            assert [job.result(timeout=0) for job in jobs] == [0, 1, 2]


async def test_async_cluster_to_an_unreachable_scheduler_raises_connection_error(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("not the real one")
    with trio.fail_after(20):
        with pytest.raises(ConnectionError):
            async with fairpool.AsyncSharedJobCluster(square, scheduler="127.0.0.1:1", secret_file=secret):
                pass


async def test_giving_up_waiting_leaves_the_job_running(one_node_pool, tmp_path):
    gate = tmp_path / "gate"
    with trio.fail_after(20):
        async with fairpool.AsyncSharedJobCluster(gated, **one_node_pool) as cluster:
            job = await cluster.submit(str(gate), "kept")
            with trio.move_on_after(0.3) as scope:
                await job
            assert scope.cancelled_caught and not job.done()
            gate.touch()
            assert await job == "kept"  # a cancelled wait cancels the wait, not the job


async def test_exception_in_the_block_propagates_as_raised(one_node_pool, tmp_path):
    with trio.fail_after(20):
        with pytest.raises(KeyError, match="user error"):
            async with fairpool.AsyncSharedJobCluster(gated, **one_node_pool) as cluster:
                await cluster.submit(str(tmp_path / "never"), "abandoned")
                raise KeyError("user error")


async def test_as_completed_yields_each_job_as_it_ends(scheduler, start_node, cluster_kwargs):
    from fairpool import AsyncSharedJobCluster

    start_node(cpus=2, name="n1")

    def nap(seconds):
        import time as _time

        _time.sleep(seconds)
        return seconds

    async with AsyncSharedJobCluster(nap, **cluster_kwargs) as cluster:
        slow = await cluster.submit(1.5)
        quick = await cluster.submit(0.05)
        order = [job async for job in cluster.as_completed()]
    assert order == [quick, slow]
    assert [await job for job in order] == [0.05, 1.5]
