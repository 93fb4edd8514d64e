"""End to end: ``job_status`` and ``cluster_status`` callbacks, fed by real scheduler and node processes.

What a user relies on: every status change of every job reaches ``job_status``
(QUEUED, RUNNING, PROVISIONAL, FINISHED, FAILED, CANCELLED, ABANDONED), in order
per job, all from one client thread that never runs two callbacks at once; a
callback that raises is logged and changes nothing else; ``cluster_status``
hears of nodes joining, leaving and failing while the cluster is open.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from conftest import wait_for
from jobfunctions import wait_for_gate

from fairpool import JobStatus, SharedJobCluster

# in_tmp_dir: recover files and received files land there.
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("in_tmp_dir")]

Q, R, P, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PROVISIONAL, JobStatus.FINISHED


class StatusRecorder:
    """A ``job_status`` callback that records what it is called with, and how."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause  # widens the window in which a concurrent second call would be caught
        self._inside = threading.Lock()
        self.overlaps = 0
        self.threads: set[int] = set()
        self.calls: list[tuple[str, JobStatus, object]] = []

    def __call__(self, job) -> None:
        if not self._inside.acquire(blocking=False):
            self.overlaps += 1
            return
        try:
            self.threads.add(threading.get_ident())
            self.calls.append((job.uid, job.status, job.provisional))
            if self.pause:
                time.sleep(self.pause)
        finally:
            self._inside.release()

    def statuses(self, job) -> list[JobStatus]:
        return [status for uid, status, _ in list(self.calls) if uid == job.uid]


def step(kind: str, gate: str = ""):
    """A job: finish, fail, report a provisional value first, or wait for a gate file."""
    import fairpool

    if kind == "fail":
        raise ValueError("boom")
    if kind == "provisional":
        fairpool.provisional_result("halfway")
    if kind == "gate":
        wait_for_gate(gate, timeout=30)
    return kind


def test_job_status_sees_every_status_in_order_on_one_thread_never_concurrently(scheduler, start_node,
                                                                                 cluster_kwargs):
    start_node(cpus=2, name="n1")
    recorder = StatusRecorder(pause=0.002)
    with SharedJobCluster(step, job_status=recorder, **cluster_kwargs) as cluster:
        plain = [cluster.submit("plain") for _ in range(30)]
        provisional = cluster.submit("provisional")
        failing = cluster.submit("fail")
        assert cluster.wait(timeout=30)
    # close() delivered every callback of the jobs that ended
    for job in plain:
        assert recorder.statuses(job) == [Q, R, F], job
    assert recorder.statuses(provisional) == [Q, R, P, F]
    assert [value for uid, status, value in recorder.calls if uid == provisional.uid and status is P] == ["halfway"]
    assert recorder.statuses(failing) == [Q, R, JobStatus.FAILED]
    assert recorder.overlaps == 0, "job_status ran concurrently with itself"
    assert len(recorder.threads) == 1, "callbacks came from more than one thread"
    assert threading.main_thread().ident not in recorder.threads


def test_job_status_sees_queued_job_cancelled(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=2, name="n1")
    gate = tmp_path / "gate"
    recorder = StatusRecorder()
    with SharedJobCluster(step, job_status=recorder, **cluster_kwargs) as cluster:
        # the blocker takes both CPUs, so the second two-CPU job cannot be placed: it stays queued
        blocker = cluster.options(resources={"cpus": 2}).submit("gate", str(gate))
        waiting = cluster.options(resources={"cpus": 2}).submit("gate", str(gate))
        wait_for(lambda: recorder.statuses(blocker) == [Q, R] and recorder.statuses(waiting) == [Q],
                 timeout=15, message="the blocker runs and the second job is queued")
        assert cluster.cancel(waiting) is True
        wait_for(lambda: waiting.done(), timeout=15, message="the queued job ends")
        gate.touch()
        assert blocker.result(timeout=15) == "gate"
    assert recorder.statuses(waiting) == [Q, JobStatus.CANCELLED]
    assert recorder.statuses(blocker) == [Q, R, F]


@pytest.mark.scheduler_config(heartbeat_timeout=2.0)
def test_job_status_sees_running_job_abandoned_when_its_node_dies(scheduler, start_node, cluster_kwargs, tmp_path):
    victim = start_node(cpus=1, name="victim")
    recorder = StatusRecorder()
    with SharedJobCluster(step, job_status=recorder, **cluster_kwargs) as cluster:
        job = cluster.submit("gate", str(tmp_path / "never"))
        wait_for(lambda: recorder.statuses(job) == [Q, R], timeout=15, message="the job runs")
        victim.kill()
        wait_for(lambda: job.done(), timeout=15, message="the job of the dead node ends")
        assert recorder.statuses(job) == [Q, R, JobStatus.ABANDONED]
        assert job.status is JobStatus.ABANDONED


def test_job_status_exception_is_logged_and_cluster_carries_on(scheduler, start_node, cluster_kwargs, caplog):
    start_node(cpus=2, name="n1")
    seen: list[JobStatus] = []

    def broken(job):
        seen.append(job.status)
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="fairpool.clients"):
        with SharedJobCluster(step, job_status=broken, **cluster_kwargs) as cluster:
            first = [cluster.submit("plain") for _ in range(5)]
            assert [j.result(timeout=15) for j in first] == ["plain"] * 5
            # the cluster still takes and runs work after its callback raised, again and again
            assert cluster.submit("plain").result(timeout=15) == "plain"
            assert cluster.submit("provisional").result(timeout=15) == "provisional"
    assert seen.count(F) == 7 and seen.count(P) == 1
    logged = [r for r in caplog.records if "callback raised" in r.getMessage()]
    assert len(logged) == len(seen)
    assert all(r.exc_info and "callback bug" in str(r.exc_info[1]) for r in logged)


class NodeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def __call__(self, event, node, job) -> None:
        self.events.append((event, str(node), job))

    def has(self, event: str, node: str) -> bool:
        return any(e == event and n == node for e, n, _ in list(self.events))


def test_cluster_status_reports_node_joining_and_leaving(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="first")
    events = NodeEvents()
    with SharedJobCluster(step, cluster_status=events, **cluster_kwargs) as cluster:
        assert cluster.submit("plain").result(timeout=15) == "plain"
        second = start_node(cpus=1, name="second")
        wait_for(lambda: events.has("joined", "second"), timeout=15, message="cluster_status hears 'joined'")
        assert cluster.submit_node("second", "plain").result(timeout=15) == "plain"
        second.stop()
        wait_for(lambda: events.has("left", "second"), timeout=15, message="cluster_status hears 'left'")
        assert cluster.submit("plain").result(timeout=15) == "plain"  # the remaining node carries on
    mine = [(e, n, j) for e, n, j in events.events if n == "second"]
    assert mine == [("joined", "second", None), ("left", "second", None)]


@pytest.mark.scheduler_config(heartbeat_timeout=2.0)
def test_cluster_status_reports_node_failing(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="steady")
    events = NodeEvents()
    with SharedJobCluster(step, cluster_status=events, **cluster_kwargs) as cluster:
        victim = start_node(cpus=1, name="victim")
        wait_for(lambda: events.has("joined", "victim"), timeout=15, message="the victim joined")
        job = cluster.submit_node("victim", "gate", str(tmp_path / "never"))
        wait_for(lambda: job.status is JobStatus.RUNNING, timeout=15, message="the job runs on the victim")
        victim.kill()
        wait_for(lambda: events.has("failed", "victim"), timeout=15, message="cluster_status hears 'failed'")
        wait_for(lambda: job.done(), timeout=15)


def test_job_status_sees_every_provisional_value_in_order(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")

    def countdown(n):
        import fairpool

        for i in range(n, 0, -1):
            fairpool.provisional_result(i)
        return "liftoff"

    recorder = StatusRecorder()
    with SharedJobCluster(countdown, job_status=recorder, **cluster_kwargs) as cluster:
        job = cluster.submit(10)
        assert job.result(timeout=15) == "liftoff"
    assert recorder.statuses(job) == [Q, R, *[P] * 10, F]
    assert [value for uid, status, value in recorder.calls if status is P] == list(range(10, 0, -1))


def test_job_status_callback_may_submit_more_jobs(scheduler, start_node, cluster_kwargs):
    start_node(cpus=2, name="n1")
    chain: list[int] = []

    def follow_up(job) -> None:
        # dispy's pattern: each finished job submits the next one from the callback
        if job.status is F:
            chain.append(job.result())
            if len(chain) < 5:
                cluster.submit(f"link{len(chain)}")

    with SharedJobCluster(step, job_status=follow_up, **cluster_kwargs) as cluster:
        cluster.submit("link0")
        wait_for(lambda: len(chain) == 5, timeout=15, message="five jobs ran, each submitted by a callback")
    assert chain == [f"link{i}" for i in range(5)]


def test_cluster_status_exception_is_logged_and_cluster_carries_on(scheduler, start_node, cluster_kwargs, caplog):
    start_node(cpus=1, name="first")
    calls: list[str] = []

    def broken(event, node, job) -> None:
        calls.append(f"{event} {node}")
        raise RuntimeError("cluster_status bug")

    with caplog.at_level(logging.ERROR, logger="fairpool.clients"):
        with SharedJobCluster(step, cluster_status=broken, **cluster_kwargs) as cluster:
            second = start_node(cpus=1, name="second")
            wait_for(lambda: "joined second" in calls, timeout=15)
            assert cluster.submit_node("second", "plain").result(timeout=15) == "plain"
            second.stop()
            wait_for(lambda: "left second" in calls, timeout=15, message="later events still arrive")
            assert cluster.submit("plain").result(timeout=15) == "plain"
    logged = [r for r in caplog.records if "callback raised" in r.getMessage()]
    assert len(logged) == len(calls) >= 2
