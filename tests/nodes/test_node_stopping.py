"""Stopping tasks on a node: cancels and timeouts kill a job's whole process tree, never more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import trio
from nodeharness import (
    WorkerProcess,
    dead,
    function_cluster,
    install,
    running_pool,
    task,
    timed_task,
    until,
    value,
)

from fairpool.messages import CancelTasks, Dispatch
from fairpool.nodes import stopping
from fairpool.nodes.stopping import cancel_reason, timeout_reason

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(60)


def spawn_and_wait(pid_file: str, ignore_term: bool = False) -> None:
    """Start a grandchild `sleep 1000`, say who is who, and wait for it (forever, in effect)."""
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "1000"])
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.replace(pid_file + ".tmp", pid_file)
    child.wait()


def nap_or_mark(x: object) -> object:
    if isinstance(x, float):
        time.sleep(x)
    elif isinstance(x, str):
        with open(x, "w") as f:
            f.write("ran")
    return x


async def pids_from(pid_file: Path) -> tuple[int, int]:
    await until(pid_file.exists, message="the job started its grandchild")
    worker, grandchild = map(int, (await trio.Path(pid_file).read_text()).split())
    return worker, grandchild


def test_cancel_reasons_always_start_with_cancelled() -> None:
    assert cancel_reason("") == "cancelled"
    assert cancel_reason("cancelled by alice") == "cancelled by alice"
    assert cancel_reason("admin request") == "cancelled: admin request"
    assert timeout_reason(2.0) == "timed out after 2 s"


async def test_cancelling_a_running_job_kills_its_worker_and_grandchild(tmp_path: Path) -> None:
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", spawn_and_wait)
        install(tmp_path, cluster)
        pid_file = tmp_path / "pids"
        pool.submit([cluster], [task("j1", "c1", str(pid_file))])
        worker_pid, grandchild = await pids_from(pid_file)
        assert pool.worker_pids() == [worker_pid]

        pool.cancel(["j1"], "cancelled by the client")
        (result,) = await collector.wait(["j1"], timeout=10)
        assert result.status == "FAILED" and result.reason == "cancelled by the client"
        assert result.node == "n1"
        await until(lambda: dead(grandchild), timeout=10, message="the grandchild gone")
        assert dead(worker_pid)
        # the worker was replaced and the node goes on
        await until(lambda: pool.statistics().ready == 1, message="a new worker")
        assert pool.worker_pids() != [worker_pid]
        cluster2 = function_cluster("c2", nap_or_mark)
        install(tmp_path, cluster2)
        pool.submit([cluster2], [task("j3", "c2", 0.0)])
        (after,) = await collector.wait(["j3"])
        assert after.status == "FINISHED"


async def test_a_job_queued_on_the_node_is_dropped_without_running(tmp_path: Path) -> None:
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", nap_or_mark)
        install(tmp_path, cluster)
        marker = tmp_path / "marker"
        pool.submit([cluster], [task("long", "c1", 1.0), task("queued", "c1", str(marker))])
        assert pool.statistics().queued == 1  # a long job (unknown runtime) runs alone
        pool.cancel(["queued"])
        (result,) = await collector.wait(["queued"], timeout=0.5)  # at once, not after "long"
        assert result.status == "FAILED" and result.reason == "cancelled"
        assert "long" not in collector.results
        (long,) = await collector.wait(["long"])
        assert long.status == "FINISHED"
        assert not marker.exists()
        assert pool.statistics().deaths == 0


async def test_a_prefetched_job_is_skipped_by_its_worker_not_killed(tmp_path: Path) -> None:
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", nap_or_mark)
        install(tmp_path, cluster)
        warm = [f"w{i}" for i in range(20)]
        pool.submit([cluster], [task(u, "c1", 0.0) for u in warm])  # its jobs are known to be short
        await collector.wait(warm)
        marker = tmp_path / "marker"
        pool.submit([], [task("slow", "c1", 0.5), task("skip", "c1", str(marker)), task("after", "c1", 0.0)])
        assert pool.statistics().running == 3  # all three handed to the one worker
        (worker_pid,) = pool.worker_pids()
        pool.cancel(["skip"])
        slow, skipped, after = await collector.wait(["slow", "skip", "after"])
        assert skipped.status == "FAILED" and skipped.reason == "cancelled"
        assert (slow.status, after.status) == ("FINISHED", "FINISHED")
        assert not marker.exists()
        assert pool.worker_pids() == [worker_pid] and pool.statistics().deaths == 0


async def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stopping, "TERM_GRACE", 0.3)
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", spawn_and_wait)
        install(tmp_path, cluster)
        pid_file = tmp_path / "pids"
        pool.submit([cluster], [task("j1", "c1", str(pid_file), True)])
        worker_pid, grandchild = await pids_from(pid_file)
        pool.cancel(["j1"])
        (result,) = await collector.wait(["j1"], timeout=10)
        assert result.status == "FAILED" and result.reason == "cancelled"
        assert dead(worker_pid)
        await until(lambda: dead(grandchild), timeout=10, message="the grandchild gone")


async def test_a_job_running_past_its_timeout_is_killed_with_its_grandchild(tmp_path: Path) -> None:
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", spawn_and_wait)
        install(tmp_path, cluster)
        pid_file = tmp_path / "pids"
        began = trio.current_time()
        pool.submit([cluster], [timed_task("j1", "c1", 0.5, str(pid_file))])
        worker_pid, grandchild = await pids_from(pid_file)
        (result,) = await collector.wait(["j1"], timeout=10)
        assert result.status == "FAILED" and result.reason == "timed out after 0.5 s"
        assert 0.5 <= trio.current_time() - began < 5
        assert isinstance(value(result), RuntimeError)
        await until(lambda: dead(grandchild), timeout=10, message="the grandchild gone")
        assert dead(worker_pid)


async def test_a_job_that_ends_within_its_timeout_is_left_alone(tmp_path: Path) -> None:
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", nap_or_mark)
        install(tmp_path, cluster)
        pool.submit([cluster], [timed_task("j1", "c1", 5.0, 0.2)])
        (result,) = await collector.wait(["j1"])
        assert (result.status, value(result)) == ("FINISHED", 0.2)
        assert pool.statistics().deaths == 0


async def test_cancelling_an_unknown_or_finished_job_changes_nothing(tmp_path: Path) -> None:
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", nap_or_mark)
        install(tmp_path, cluster)
        pool.submit([cluster], [task("j1", "c1", 0.0)])
        await collector.wait(["j1"])
        pool.cancel(["j1", "nope"])
        await trio.sleep(0.2)
        assert collector.results["j1"].status == "FINISHED"
        assert set(collector.results) == {"j1"} and pool.statistics().deaths == 0


def test_a_worker_whose_node_dies_kills_its_job_tree(tmp_path: Path) -> None:
    cluster = function_cluster("c1", spawn_and_wait)
    install(tmp_path, cluster)
    pid_file = tmp_path / "pids"
    worker = WorkerProcess(tmp_path, lifeline=True)
    try:
        worker.send(Dispatch([cluster], [task("j1", "c1", str(pid_file))]))
        deadline = time.monotonic() + 20
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.01)
        _, grandchild = map(int, pid_file.read_text().split())
        assert worker.lifeline is not None
        os.close(worker.lifeline)  # what the kernel does when the node dies, even by SIGKILL
        worker.lifeline = None
        assert worker.process.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while not dead(grandchild):
            assert time.monotonic() < deadline, "the grandchild outlived its node"
            time.sleep(0.01)
    finally:
        worker.close()


def test_a_worker_skips_a_queued_task_the_node_cancels(tmp_path: Path) -> None:
    cluster = function_cluster("c1", nap_or_mark)
    install(tmp_path, cluster)
    marker = tmp_path / "marker"
    worker = WorkerProcess(tmp_path)
    try:
        worker.receive()  # WorkerReady
        worker.send(Dispatch([cluster], [task("a", "c1", 0.3), task("b", "c1", str(marker))]))
        worker.send(CancelTasks(["b"], "cancelled by test"))
        results = {r.uid: r for r in worker.results(2)}
        assert results["a"].status == "FINISHED"
        assert (results["b"].status, results["b"].reason) == ("FAILED", "cancelled by test")
        assert not marker.exists()
    finally:
        worker.close()
