"""The worker process, driven over its socketpair with real frames."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from nodeharness import WorkerProcess, function_cluster, install, program_cluster, task, value

from fairpool.clusterspec import DependFile
from fairpool.messages import Dispatch, NodeProgress, ReleaseCluster, WorkerReady

# The worker cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "clusters"
    path.mkdir()
    return path


@pytest.fixture
def worker(base: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(base)
    ready = process.receive()
    assert isinstance(ready, WorkerReady) and ready.pid == process.process.pid
    yield process
    process.close()


def run_one(worker: WorkerProcess, base: Path, compute, *args, setup=None, cleanup=None, files=(), **kwargs):
    cluster = function_cluster("c1", compute, setup, cleanup, files)
    install(base, cluster, files)
    worker.send(Dispatch([cluster], [task("j1", "c1", *args, **kwargs)]))
    (result,) = worker.results(1)
    assert result.uid == "j1"
    return result


# --- functions shipped to the worker -------------------------------------------------


def add(a, b, *, scale=1):
    return (a + b) * scale


def chatty(n):
    print(f"out {n}")
    print(f"err {n}", file=sys.stderr)
    return n


class BadInput(ValueError):
    pass


def explode(x):
    raise BadInput(f"bad input {x}")


def quit_early(code):
    sys.exit(code)


def unpicklable():
    return lambda_holder()


class lambda_holder:  # noqa: N801 - a deliberately unpicklable value
    def __reduce__(self):
        raise TypeError("cannot pickle this thing")


def load_model():
    global model
    model = {"factor": 10, "pid": os.getpid()}


def use_model(x):
    return x * model["factor"], model["pid"], os.getpid()


def broken_setup():
    raise RuntimeError("no GPU here")


def write_marker():
    with open(os.environ["FAIRPOOL_TEST_MARKER"], "w") as f:
        f.write(f"cleaned {os.getpid()}")


def identity(x):
    return x


def read_file(name):
    with open(name) as f:
        return f.read(), os.getcwd()


class Point:
    def __init__(self, x):
        self.x = x


def make_values(x):
    return {"plain": [x, "text", 1.5], "point": Point(x), "function": lambda: x + 1}


# --- tests ---------------------------------------------------------------------------


def test_function_job_returns_its_value(worker, base):
    result = run_one(worker, base, add, 2, 3, scale=10)
    assert result.status == "FINISHED"
    assert value(result) == 50
    assert 0 < result.started_at <= result.finished_at
    assert result.reason == "" and result.traceback == ""


def test_results_that_need_cloudpickle_come_back_whole(worker, base):
    # a class and a lambda that reached the worker by value cannot be pickled by reference there
    result = run_one(worker, base, make_values, 4)
    assert result.status == "FINISHED", result.reason
    got = value(result)
    assert got["plain"] == [4, "text", 1.5]
    assert isinstance(got["point"], Point) and got["point"].x == 4
    assert got["function"]() == 5


def test_job_prints_are_captured_in_stdout_and_stderr(worker, base):
    result = run_one(worker, base, chatty, 7)
    assert result.status == "FINISHED"
    assert result.stdout == "out 7\n"
    assert result.stderr == "err 7\n"


def test_exception_fails_job_with_traceback_and_pickled_exception(worker, base):
    result = run_one(worker, base, explode, 4)
    assert result.status == "FAILED"
    assert result.reason == "BadInput: bad input 4"
    assert "explode" in result.traceback and "BadInput: bad input 4" in result.traceback
    assert "nodes/jobs.py" not in result.traceback and "nodes/worker.py" not in result.traceback  # the user's frames, not ours
    exc = value(result)
    assert isinstance(exc, ValueError) and str(exc) == "bad input 4"


def test_sys_exit_fails_job_with_reason(worker, base):
    result = run_one(worker, base, quit_early, 3)
    assert result.status == "FAILED"
    assert result.reason == "job called sys.exit(3)"
    assert "SystemExit" in result.traceback
    assert not isinstance(value(result), SystemExit)  # re-raising it must not exit the client


def test_unpicklable_result_fails_with_clear_reason(worker, base):
    result = run_one(worker, base, unpicklable)
    assert result.status == "FAILED"
    assert "could not be pickled" in result.reason and "cannot pickle this thing" in result.reason


def test_worker_keeps_serving_after_failing_jobs(worker, base):
    cluster = function_cluster("c1", identity)
    other = function_cluster("c2", explode)
    install(base, cluster)
    install(base, other)
    worker.send(Dispatch([cluster, other], [task("a", "c2", 1), task("b", "c1", "x"), task("c", "c2", 2)]))
    results = worker.results(3)
    assert [(r.uid, r.status) for r in results] == [("a", "FAILED"), ("b", "FINISHED"), ("c", "FAILED")]
    assert value(results[1]) == "x"


def test_setup_globals_reach_jobs_in_the_same_worker(worker, base):
    cluster = function_cluster("c1", use_model, setup=load_model)
    install(base, cluster)
    worker.send(Dispatch([cluster], [task(f"j{i}", "c1", i) for i in range(5)]))
    results = worker.results(5)
    assert all(r.status == "FINISHED" for r in results), [r.reason for r in results]
    values = [value(r) for r in results]
    assert [v[0] for v in values] == [0, 10, 20, 30, 40]
    assert {v[1] for v in values} == {v[2] for v in values} == {worker.process.pid}


def test_setup_failure_fails_every_job_of_the_cluster(worker, base):
    cluster = function_cluster("c1", identity, setup=broken_setup)
    install(base, cluster)
    worker.send(Dispatch([cluster], [task("a", "c1", 1), task("b", "c1", 2)]))
    results = worker.results(2)
    for result in results:
        assert result.status == "FAILED"
        assert result.reason == "setup failed: RuntimeError: no GPU here"
        assert "broken_setup" in result.traceback


def test_cleanup_runs_on_release_then_worker_acknowledges(base, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("FAIRPOOL_TEST_MARKER", str(marker))  # the worker inherits it
    worker = WorkerProcess(base)
    try:
        assert isinstance(worker.receive(), WorkerReady)
        cluster = function_cluster("c1", identity, cleanup=write_marker)
        install(base, cluster)
        worker.send(Dispatch([cluster], [task("j1", "c1", 1), task("j2", "c1", 2)]), ReleaseCluster("c1"))
        assert [value(r) for r in worker.results(2)] == [1, 2]
        assert worker.receive() == NodeProgress([], [])  # the release is done
        assert marker.read_text() == f"cleaned {worker.process.pid}"
        # a released cluster is forgotten: its tasks are refused
        worker.send(Dispatch([], [task("j3", "c1", 3)]))
        (late,) = worker.results(1)
        assert late.status == "FAILED" and "unknown cluster" in late.reason
    finally:
        worker.close()


def test_worker_exits_quietly_on_eof_running_cleanups(base, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("FAIRPOOL_TEST_MARKER", str(marker))
    worker = WorkerProcess(base)
    assert isinstance(worker.receive(), WorkerReady)
    cluster = function_cluster("c1", identity, cleanup=write_marker)
    install(base, cluster)
    worker.send(Dispatch([cluster], [task("j1", "c1", 1)]))
    worker.results(1)
    assert worker.close() == 0
    assert marker.read_text() == f"cleaned {worker.process.pid}"


def test_program_job_returns_exit_code_and_output(worker, base):
    script = b'#!/bin/sh\necho "hello $1 $2"\necho "warning" >&2\nexit 3\n'
    files = [DependFile("greet.sh", script, 0o755)]
    cluster = program_cluster("p1", "greet.sh", files)
    install(base, cluster, files)
    worker.send(Dispatch([cluster], [task("j1", "p1", "big", 42)]))
    (result,) = worker.results(1)
    assert result.status == "FINISHED"
    assert result.exit_code == 3 and value(result) == 3
    assert result.stdout == "hello big 42\n"
    assert result.stderr == "warning\n"


def test_program_that_cannot_start_fails_with_reason(worker, base):
    files = [DependFile("notexec.sh", b"#!/bin/sh\nexit 0\n", 0o644)]
    cluster = program_cluster("p1", "notexec.sh", files)
    install(base, cluster, files)
    worker.send(Dispatch([cluster], [task("j1", "p1")]))
    (result,) = worker.results(1)
    assert result.status == "FAILED"
    assert "could not run program 'notexec.sh'" in result.reason


def test_depends_files_are_visible_in_the_job_working_directory(worker, base):
    files = [DependFile("weights.txt", b"1 2 3\n")]
    result = run_one(worker, base, read_file, "weights.txt", files=files)
    assert result.status == "FINISHED", result.reason
    assert value(result) == ("1 2 3\n", str(base / "c1"))


def test_many_trivial_jobs_come_back_batched(worker, base):
    cluster = function_cluster("c1", identity)
    install(base, cluster)
    count = 500
    worker.send(Dispatch([cluster], [task(f"j{i}", "c1", i) for i in range(count)]))
    results = worker.results(count)
    assert [value(r) for r in results] == list(range(count))
    assert worker.frames <= count // 8, f"{worker.frames} NodeProgress frames for {count} jobs"


def test_lone_job_result_is_sent_at_once(worker, base):
    cluster = function_cluster("c1", identity)
    install(base, cluster)
    worker.send(Dispatch([cluster], [task("a", "c1", 1)]))
    worker.results(1)
    worker.send(Dispatch([], [task("b", "c1", 2)]))
    (result,) = worker.results(1, deadline=5)
    assert value(result) == 2 and worker.frames == 2


def test_task_of_unknown_cluster_fails(worker):
    worker.send(Dispatch([], [task("j1", "nope", 1)]))
    (result,) = worker.results(1)
    assert result.status == "FAILED" and "unknown cluster 'nope'" in result.reason


def test_relative_workdir_base_still_finds_every_cluster(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the worker inherits this cwd, then moves into cluster dirs
    base = Path("clusters")
    first, second = function_cluster("c1", identity), function_cluster("c2", read_file)
    install(base, first)
    install(base, second, [DependFile("data.txt", b"two")])
    worker = WorkerProcess(base)
    try:
        assert isinstance(worker.receive(), WorkerReady)
        worker.send(Dispatch([first, second], [task("a", "c1", 1), task("b", "c2", "data.txt")]))
        results = worker.results(2)
        assert [r.status for r in results] == ["FINISHED", "FINISHED"], [r.reason for r in results]
        assert value(results[1]) == ("two", str(tmp_path / "clusters" / "c2"))
    finally:
        worker.close()
