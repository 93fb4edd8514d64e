"""End to end: what a running job sends its client -- provisional results and files.

``fairpool.provisional_result(value)`` shows the job PROVISIONAL with the value
in ``job.provisional`` while it goes on to its final status;
``fairpool.send_file(path)`` lands the node's file under the client's
``dest_path`` (default: the client's working directory), and a name that would
escape ``dest_path`` is refused.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from conftest import wait_for
from jobfunctions import wait_for_gate

from fairpool import JobStatus, SharedJobCluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client_dir(tmp_path, monkeypatch):
    """The client's working directory (its default ``dest_path``), apart from the node's state."""
    here = tmp_path / "client"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


@pytest.fixture
def pool(scheduler, start_node, cluster_kwargs, client_dir):
    start_node(cpus=2, name="n1")
    return cluster_kwargs


def counting(gate: str, steps: int):
    """Report each step as a provisional result; wait for the gate file after the first."""
    import fairpool

    for i in range(1, steps + 1):
        fairpool.provisional_result({"step": i})
        if i == 1:
            wait_for_gate(gate, timeout=30)
    return "all done"


def test_provisional_result_shows_while_job_runs_then_job_finishes(pool, tmp_path):
    gate = tmp_path / "gate"
    with SharedJobCluster(counting, **pool) as cluster:
        job = cluster.submit(str(gate), 3)
        wait_for(lambda: job.status is JobStatus.PROVISIONAL, timeout=15, message="the job shows PROVISIONAL")
        assert job.provisional == {"step": 1}
        assert not job.done()
        gate.touch()
        assert job.result(timeout=15) == "all done"
    assert job.status is JobStatus.FINISHED
    assert job.provisional == {"step": 3}  # the latest value is kept


def test_provisional_result_then_failure_ends_failed(pool):
    def report_then_fail():
        import fairpool

        fairpool.provisional_result(0.5)
        raise RuntimeError("after the provisional result")

    with SharedJobCluster(report_then_fail, **pool) as cluster:
        job = cluster.submit()
        with pytest.raises(RuntimeError, match="after the provisional result"):
            job.result(timeout=15)
    assert job.status is JobStatus.FAILED
    assert job.provisional == 0.5


def write_and_send(name: str, size: int, send_as: str | None = None):
    """Write ``size`` pseudo-random bytes to ``name`` in the job's directory and send it."""
    import hashlib
    import os
    import random

    import fairpool

    data = random.Random(size).randbytes(size)
    os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
    with open(name, "wb") as f:
        f.write(data)
    sent = fairpool.send_file(name) if send_as is None else fairpool.send_file(name, send_as)
    return sent, hashlib.sha256(data).hexdigest()


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_send_file_lands_in_client_working_directory_by_default(pool, client_dir):
    with SharedJobCluster(write_and_send, **pool) as cluster:
        size, digest = cluster.submit("report.txt", 1000).result(timeout=15)
    assert size == 1000
    assert _digest(client_dir / "report.txt") == digest


def test_send_file_lands_under_dest_path_with_subdirectories_and_many_chunks(pool, tmp_path):
    dest = tmp_path / "results"
    big = 3 * 1024 * 1024 + 17  # several chunks
    with SharedJobCluster(write_and_send, dest_path=dest, **pool) as cluster:
        jobs = [cluster.submit("out/big.bin", big), cluster.submit("small.txt", 10)]
        (size, digest), (_, small_digest) = [j.result(timeout=30) for j in jobs]
    assert size == big
    assert _digest(dest / "out" / "big.bin") == digest
    assert _digest(dest / "small.txt") == small_digest
    assert not [p for p in dest.rglob("*") if p.name.startswith(".")], "temporary files were left behind"


def test_send_file_refuses_name_that_escapes_dest_path(pool, tmp_path):
    dest = tmp_path / "results"

    def try_escape(name: str):
        import fairpool

        with open("payload.txt", "w") as f:
            f.write("must not escape")
        try:
            fairpool.send_file("payload.txt", name)
        except ValueError as exc:
            return f"refused: {exc}"
        return "sent"

    escapes = ["../escaped.txt", "sub/../../escaped.txt", str(tmp_path / "absolute.txt")]
    with SharedJobCluster(try_escape, dest_path=dest, **pool) as cluster:
        answers = [cluster.submit(name).result(timeout=15) for name in escapes]
        assert cluster.submit("inside.txt").result(timeout=15) == "sent"  # the same job, a fair name
    for name, answer in zip(escapes, answers, strict=True):
        assert answer.startswith("refused:") and "dest_path" in answer, (name, answer)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "absolute.txt").exists()
    assert (dest / "inside.txt").read_text() == "must not escape"


def test_client_refuses_file_sent_through_symlink_out_of_dest_path(pool, tmp_path):
    dest = tmp_path / "results"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink(outside, dest / "link")  # a relative name the node cannot tell apart from a fair one
    with SharedJobCluster(write_and_send, dest_path=dest, **pool) as cluster:
        job = cluster.submit("data.bin", 100, "link/stolen.bin")
        assert job.result(timeout=15)[0] == 100  # the job goes on; the client drops the file
        assert cluster.submit("data.bin", 100, "kept.bin").result(timeout=15)[0] == 100
    assert list(outside.iterdir()) == []
    assert (dest / "kept.bin").stat().st_size == 100


def test_send_file_from_outside_the_job_directory_lands_under_its_base_name(pool, tmp_path, client_dir):
    elsewhere = tmp_path / "node-scratch"
    elsewhere.mkdir()

    def produce(directory):
        import os

        import fairpool

        path = os.path.join(directory, "deep", "model.ckpt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("weights")
        empty = os.path.join(directory, "empty.log")
        open(empty, "w").close()
        return fairpool.send_file(path), fairpool.send_file(empty)

    with SharedJobCluster(produce, **pool) as cluster:
        assert cluster.submit(str(elsewhere)).result(timeout=15) == (7, 0)
    assert (client_dir / "model.ckpt").read_text() == "weights"
    assert (client_dir / "empty.log").exists() and (client_dir / "empty.log").stat().st_size == 0


def test_files_are_in_place_when_the_job_result_arrives(pool, tmp_path):
    dest = tmp_path / "results"
    seen: list[bool] = []

    def on_status(job) -> None:
        if job.status is JobStatus.FINISHED:
            seen.append((dest / f"{job.args[0]}").exists())

    with SharedJobCluster(write_and_send, dest_path=dest, job_status=on_status, **pool) as cluster:
        jobs = [cluster.submit(f"f{i}.bin", 200_000) for i in range(6)]
        for job in jobs:
            job.result(timeout=15)
            assert (dest / job.args[0]).stat().st_size == 200_000
    assert seen == [True] * 6
