"""End to end: what a computation can be, and what it can bring along (depends, setup, cleanup)."""

from __future__ import annotations

import importlib
import os
import stat
import sys
import textwrap

import pytest

from fairpool import JobStatus, SharedJobCluster

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own, importable here but not on the node."""
    src = tmp_path / "usermods"
    src.mkdir()
    name = f"labmath_{os.getpid()}_{id(tmp_path) % 10000}"
    (src / f"{name}.py").write_text(textwrap.dedent("""
        SCALE = 7

        class Point:
            def __init__(self, x):
                self.x = x

        def scale(x):
            return Point(x * SCALE)

        def compute(x):
            return scale(x).x + 1
    """))
    monkeypatch.syspath_prepend(str(src))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def test_function_from_user_module_in_depends_is_shipped_by_value(one_node_pool, user_module):
    with SharedJobCluster(user_module.compute, depends=[user_module], **one_node_pool) as cluster:
        assert cluster.submit(3).result(timeout=60) == 22


def test_helper_function_listed_in_depends_is_shipped_by_value(one_node_pool, user_module):
    scale = user_module.scale

    def compute(x):
        return scale(x).x

    with SharedJobCluster(compute, depends=[scale], **one_node_pool) as cluster:
        assert cluster.submit(2).result(timeout=60) == 14


def test_depends_files_appear_in_job_working_directory(one_node_pool, tmp_path):
    data = tmp_path / "weights.txt"
    data.write_text("1 2 3\n")

    def total(name):
        with open(name) as f:
            return sum(int(v) for v in f.read().split())

    with SharedJobCluster(total, depends=[str(data)], **one_node_pool) as cluster:
        assert cluster.submit("weights.txt").result(timeout=60) == 6


def test_program_computation_returns_exit_code_and_output(one_node_pool, tmp_path):
    program = tmp_path / "greet.sh"
    program.write_text('#!/bin/sh\necho "hello $1 $2"\necho "warning" >&2\nexit 3\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)

    with SharedJobCluster(str(program), **one_node_pool) as cluster:
        job = cluster.submit("big", 42)
        assert job.result(timeout=60) == 3
    assert job.status is JobStatus.FINISHED
    assert job.exit_code == 3
    assert job.stdout == "hello big 42\n"
    assert job.stderr == "warning\n"


def test_setup_globals_are_visible_to_every_job_in_the_worker(one_node_pool):
    def setup():
        global model  # noqa: PLW0603 - in-memory processing: setup loads, jobs read
        model = {"factor": 10, "pid": os.getpid()}

    def compute(x):
        return x * model["factor"], model["pid"], os.getpid()

    with SharedJobCluster(compute, setup=setup, **one_node_pool) as cluster:
        results = [j.result(timeout=60) for j in [cluster.submit(i) for i in range(20)]]
    assert [r[0] for r in results] == [10 * i for i in range(20)]
    assert all(setup_pid == job_pid for _, setup_pid, job_pid in results)


def test_cleanup_runs_when_cluster_closes(one_node_pool, tmp_path):
    marker_dir = str(tmp_path / "cleanups")
    os.mkdir(marker_dir)

    def setup():
        return 0

    def cleanup():
        with open(os.path.join(marker_dir, str(os.getpid())), "w") as f:
            f.write("done")

    with SharedJobCluster(lambda x: os.getpid(), setup=setup, cleanup=cleanup, **one_node_pool) as cluster:
        worker_pids = {j.result(timeout=60) for j in [cluster.submit(i) for i in range(10)]}
    from conftest import wait_for

    wait_for(lambda: set(os.listdir(marker_dir)) >= {str(p) for p in worker_pids},
             timeout=30, message="cleanup ran in every worker that ran a job")
