"""A worker reaps the orphans its jobs leave: no zombie piles up on a long-lived node."""

from __future__ import annotations

from pathlib import Path

from conftest import wait_for

from fairpool import SharedJobCluster


def detach_grandchild() -> int:
    """Start a process in a session of its own that outlives this job briefly; return its pid."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"], start_new_session=True)
    child._child_created = False  # forget it: its parent "dies" (the job ends) and it becomes an orphan
    return child.pid


def noop() -> int:
    return 1


def state_of(pid: int) -> str:
    """The process's state letter ("Z" for a zombie), or "" once it is gone (reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_an_orphan_that_exits_is_reaped_by_the_worker(scheduler, start_node, cluster_kwargs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start_node(cpus=1)
    with SharedJobCluster(detach_grandchild, **cluster_kwargs) as cluster:
        grandchild = cluster.submit().result(timeout=60)
        wait_for(lambda: state_of(grandchild) in ("Z", ""), 30, message="the orphan to exit")
    with SharedJobCluster(noop, **cluster_kwargs) as cluster:  # the worker goes idle again after it
        assert cluster.submit().result(timeout=60) == 1
        wait_for(lambda: state_of(grandchild) == "", 30, message="the worker to reap the orphan")
