"""The in-job runtime: provisional results and files, sent by a running job ahead of its result."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import pytest
from nodeharness import WorkerProcess, function_cluster, install, running_pool, task, value

import fairpool
from fairpool.messages import Dispatch
from fairpool.nodes.runtime import (
    CHUNK_SIZE,
    NotInJobError,
    check_name,
    provisional_result,
    send_file,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(60)


def report(n: int) -> int:
    from fairpool import provisional_result, send_file

    provisional_result({"step": 1})
    with open("out.txt", "w") as f:
        f.write("hello")
    send_file("out.txt")
    provisional_result({"step": 2})
    return n


def send_big(size: int) -> int:
    with open("big.bin", "wb") as f:
        f.write(os.urandom(size))
    return fairpool.send_file("big.bin", "sub/data.bin")


def send_path(path: str, name: str | None = None) -> int:
    return fairpool.send_file(path, name)


def test_the_runtime_is_public_and_refuses_to_run_outside_a_job() -> None:
    assert fairpool.provisional_result is provisional_result and fairpool.send_file is send_file
    with pytest.raises(NotInJobError, match="provisional_result"):
        provisional_result(1)
    with pytest.raises(NotInJobError, match="send_file"):
        send_file(__file__)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "..", ".", ""])
def test_names_that_would_leave_dest_path_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)


def test_names_are_normalized() -> None:
    assert check_name("a/./b//c.txt") == "a/b/c.txt"
    assert check_name("a/../b") == "b"


async def test_provisional_results_and_files_reach_the_pool_before_the_result(tmp_path: Path) -> None:
    async with running_pool(tmp_path, cpus=1) as (pool, collector):
        cluster = function_cluster("c1", report)
        install(tmp_path, cluster)
        pool.submit([cluster], [task("j1", "c1", 7)])
        (result,) = await collector.wait(["j1"])
        assert (result.status, value(result)) == ("FINISHED", 7)
        assert collector.events == [("provisional", "j1"), ("file", "j1"), ("provisional", "j1"), ("result", "j1")]
        assert [cloudpickle.loads(p.payload) for p in collector.provisional] == [{"step": 1}, {"step": 2}]
        (chunk,) = collector.files
        assert (chunk.name, chunk.offset, chunk.data, chunk.last) == ("out.txt", 0, b"hello", True)


def test_a_large_file_goes_in_ordered_chunks_before_the_result(tmp_path: Path) -> None:
    cluster = function_cluster("c1", send_big)
    install(tmp_path, cluster)
    size = 2 * CHUNK_SIZE + 12345
    worker = WorkerProcess(tmp_path)
    try:
        worker.receive()  # WorkerReady
        worker.send(Dispatch([cluster], [task("j1", "c1", size)]))
        messages = worker.progress_until_result("j1")
    finally:
        worker.close()
    chunks = [c for m in messages for c in m.files]
    assert [c.offset for c in chunks] == [0, CHUNK_SIZE, 2 * CHUNK_SIZE]
    assert [c.last for c in chunks] == [False, False, True]
    assert {c.name for c in chunks} == {"sub/data.bin"}
    assert all(len(c.data) <= CHUNK_SIZE for c in chunks)
    assert b"".join(c.data for c in chunks) == (tmp_path / "c1" / "big.bin").read_bytes()
    (result,) = messages[-1].results
    assert (result.status, value(result)) == ("FINISHED", size)
    assert all(not m.results for m in messages[:-1])


def test_a_node_file_outside_the_working_dir_goes_under_its_base_name(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "log.txt").write_text("node log")
    cluster = function_cluster("c1", send_path)
    install(tmp_path, cluster)
    worker = WorkerProcess(tmp_path)
    try:
        worker.receive()
        worker.send(Dispatch([cluster], [task("j1", "c1", str(elsewhere / "log.txt"))]))
        messages = worker.progress_until_result("j1")
    finally:
        worker.close()
    (chunk,) = [c for m in messages for c in m.files]
    assert (chunk.name, chunk.data, chunk.last) == ("log.txt", b"node log", True)


def test_a_job_naming_a_file_outside_dest_path_fails_clearly(tmp_path: Path) -> None:
    cluster = function_cluster("c1", send_path)
    install(tmp_path, cluster)
    (tmp_path / "c1" / "x").write_text("x")
    worker = WorkerProcess(tmp_path)
    try:
        worker.receive()
        worker.send(Dispatch([cluster], [task("j1", "c1", "x", "../../escape")]))
        messages = worker.progress_until_result("j1")
    finally:
        worker.close()
    assert [c for m in messages for c in m.files] == []
    (result,) = messages[-1].results
    assert result.status == "FAILED" and "ValueError" in result.reason and "dest_path" in result.reason
