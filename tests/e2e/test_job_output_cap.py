"""End to end: a job printing megabytes reaches the client capped to the node's max_output, head and tail."""

from __future__ import annotations

import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fairpool import SharedJobCluster

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("in_tmp_dir")]

CAP = 64 * 1024
#: What may come on top of the kept bytes: the marker line.
MARKER_ROOM = 200
MARKER = re.compile(r"\n\[\.\.\. (\d+) bytes of output dropped: the node keeps at most 65536 bytes of a job's "
                    r"(stdout|stderr); see max_output \.\.\.\]\n")


def loud(megabytes: int) -> tuple[int, int]:
    """Print ``megabytes`` MB between a first and a last line; the worker's peak RSS (KiB) before and after."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("FIRST LINE")
    line = "x" * 999
    for _ in range(megabytes * 1000):
        print(line)
    print("LAST LINE")
    print("the final error", file=sys.stderr)
    return before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.fixture
def capped_pool(start_node: Callable[..., object], cluster_kwargs: dict[str, str]) -> dict[str, str]:
    start_node(cpus=1, name="n1", extra_args=["--max-output", "64K"])
    return cluster_kwargs


def test_function_job_printing_20mb_gets_head_and_tail_within_the_cap(capped_pool, scheduler):
    with SharedJobCluster(loud, **capped_pool) as cluster:
        job = cluster.submit(20)
        before, after = job.result(timeout=120)
        # with everything captured, the worker's peak would grow by the 20 MB printed
        assert after - before < 8 * 1024, f"worker peak RSS grew by {after - before} KiB"
        assert len(job.stdout.encode()) <= CAP + MARKER_ROOM
        assert job.stdout.startswith("FIRST LINE\n")
        assert job.stdout.endswith("LAST LINE\n")
        match = MARKER.search(job.stdout)
        assert match is not None and match.group(2) == "stdout"
        assert int(match.group(1)) > 19_000_000
        assert job.stderr == "the final error\n"  # a small stream is left whole
        # the pool stays up: another job runs
        assert cluster.submit(0).result(timeout=60)[0] > 0
    assert scheduler.alive()


def test_program_job_printing_20mb_gets_head_and_tail_within_the_cap(capped_pool, tmp_path: Path):
    program = tmp_path / "loud.sh"
    program.write_text("#!/bin/sh\necho FIRST LINE\nseq 1 2600000\necho LAST LINE\necho oops >&2\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    with SharedJobCluster(str(program), **capped_pool) as cluster:
        job = cluster.submit()
        assert job.result(timeout=120) == 0
    assert len(job.stdout.encode()) <= CAP + MARKER_ROOM
    assert job.stdout.startswith("FIRST LINE\n1\n2\n")
    assert job.stdout.endswith("2599999\n2600000\nLAST LINE\n")
    match = MARKER.search(job.stdout)
    assert match is not None and int(match.group(1)) > 19_000_000
    assert job.stderr == "oops\n"
