"""The node's WorkerPool under trio, with real worker processes."""

from __future__ import annotations

import os
import signal
import sys
import time

import cloudpickle
import pytest
import trio
from nodeharness import Collector, function_cluster, install, running_pool, task, until, value

from fairpool.clusterspec import DependFile
from fairpool.nodes.workerpool import WorkerPool
from fairpool.nodes.workerproc import death_reason

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(60)


def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def identity(x):
    return x


def die_or_echo(x):
    if x == "os._exit":
        os._exit(3)
    if x == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def write_marker():
    with open(os.environ["FAIRPOOL_TEST_MARKER"], "a") as f:
        f.write(f"{os.getpid()}\n")


def pids_alive(pids: list[int]) -> list[int]:
    # a zombie still has a /proc entry: none may be left unreaped
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


async def warm_up(pool: WorkerPool, collector: Collector, cluster_id: str, count: int = 20) -> None:
    """Run trivial jobs so the pool knows the cluster's jobs are short."""
    uids = [f"warm-{cluster_id}-{i}" for i in range(count)]
    pool.submit([], [task(u, cluster_id, 0) for u in uids])
    await collector.wait(uids)


async def test_jobs_spread_over_two_workers(tmp_path):
    async with running_pool(tmp_path) as (pool, collector):
        cluster = function_cluster("c1", pid_after)
        install(tmp_path, cluster)
        uids = [f"j{i}" for i in range(6)]
        pool.submit([cluster], [task(u, "c1", 0.05) for u in uids])
        results = await collector.wait(uids)
        assert all(r.status == "FINISHED" and r.node == "n1" for r in results)
        assert {value(r) for r in results} == set(pool.worker_pids())
        assert len(set(pool.worker_pids())) == 2
        assert {s.uid for s in collector.started} == set(uids)
        assert all(s.node == "n1" for s in collector.started)


@pytest.mark.parametrize(
    ("how", "reason"),
    [("os._exit", "worker process exited with code 3"), ("SIGKILL", "worker process died: killed by signal SIGKILL")],
)
async def test_job_killing_its_worker_fails_and_worker_is_replaced(tmp_path, how, reason):
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", die_or_echo)
        install(tmp_path, cluster)
        (first_pid,) = pool.worker_pids()
        pool.submit([cluster], [task("die", "c1", how)] + [task(f"ok{i}", "c1", i) for i in range(3)])
        died, *rest = await collector.wait(["die", "ok0", "ok1", "ok2"])
        assert died.status == "FAILED"
        assert died.reason == reason and reason in died.traceback
        assert isinstance(value(died), RuntimeError)
        assert [(r.status, value(r)) for r in rest] == [("FINISHED", 0), ("FINISHED", 1), ("FINISHED", 2)]
        stats = pool.statistics()
        assert stats.deaths == 1 and stats.workers == 1
        assert pool.worker_pids() != [first_pid]


async def test_killer_among_batched_trivial_jobs_fails_alone(tmp_path):
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", die_or_echo)
        install(tmp_path, cluster)
        pool.submit([cluster], [])
        await warm_up(pool, collector, "c1")
        args = [*range(10), "os._exit", *range(10, 20)]
        uids = [f"j{i}" for i in range(len(args))]
        pool.submit([], [task(u, "c1", a) for u, a in zip(uids, args, strict=True)])
        assert pool.statistics().running > 1  # prefetched: results of the first ones are batched
        results = await collector.wait(uids)
        failed = [r.uid for r in results if r.status == "FAILED"]
        assert failed == ["j10"], [(r.uid, r.reason) for r in results if r.status == "FAILED"]
        assert [value(r) for r in results if r.status == "FINISHED"] == list(range(20))


async def test_trivial_jobs_are_prefetched_long_jobs_are_not(tmp_path):
    async with running_pool(tmp_path, cpus=2) as (pool, collector):
        short = function_cluster("short", identity)
        long = function_cluster("long", pid_after)
        install(tmp_path, short)
        install(tmp_path, long)
        pool.submit([short, long], [])
        await warm_up(pool, collector, "short")
        pool.submit([], [task(f"s{i}", "short", i) for i in range(200)])
        assert pool.statistics().running > 8  # several per worker
        await collector.wait(f"s{i}" for i in range(200))

        pool.submit([], [task("l-warm0", "long", 0.02), task("l-warm1", "long", 0.02)])
        await collector.wait(["l-warm0", "l-warm1"])
        pool.submit([], [task(f"l{i}", "long", 0.05) for i in range(6)])
        stats = pool.statistics()
        assert (stats.running, stats.queued) == (2, 4)  # one each; the rest wait on the node
        await collector.wait(f"l{i}" for i in range(6))


async def test_release_runs_cleanups_then_removes_cluster_dir(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("FAIRPOOL_TEST_MARKER", str(marker))
    base = tmp_path / "clusters"
    async with running_pool(base, cpus=2) as (pool, collector):
        cluster = function_cluster("c1", pid_after, cleanup=write_marker)
        directory = install(base, cluster, [DependFile("data.txt", b"x")])
        uids = [f"j{i}" for i in range(4)]
        pool.submit([cluster], [task(u, "c1", 0.05) for u in uids])
        pool.release_cluster("c1")  # while its jobs still run: waits for them
        results = await collector.wait(uids)
        await until(lambda: not directory.exists(), message="cluster dir removed")
        job_pids = {value(r) for r in results}
        assert set(map(int, marker.read_text().split())) == job_pids


async def test_task_of_unknown_cluster_fails_at_once(tmp_path):
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        pool.submit([], [task("j1", "nope", 1)])
        (result,) = await collector.wait(["j1"])
        assert result.status == "FAILED" and "unknown cluster 'nope'" in result.reason


async def test_shutdown_stops_and_reaps_every_worker(tmp_path):
    async with running_pool(tmp_path, cpus=2) as (pool, collector):
        cluster = function_cluster("c1", pid_after)
        install(tmp_path, cluster)
        pool.submit([cluster], [task("busy", "c1", 60)])  # one worker busy, one idle
        await until(lambda: pool.statistics().busy == 1, message="a worker busy")
        pids = pool.worker_pids()
        assert len(pids) == 2 and pids_alive(pids) == pids
        started = trio.current_time()
    assert trio.current_time() - started < 5
    assert pids_alive(pids) == []


def test_death_reason_names_exit_code_or_signal():
    assert death_reason(3) == "worker process exited with code 3"
    assert death_reason(-signal.SIGSEGV) == "worker process died: killed by signal SIGSEGV"
