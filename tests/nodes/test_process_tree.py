"""A job's whole process tree (``fairpool.nodes.proctree``): found, stopped and reaped, sessions of its own included.

Helpers run in subprocesses of their own: the test process must not become a
subreaper (orphans of every other test would then be reparented to it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import process_gone, wait_for

from fairpool import JobStatus, SharedJobCluster
from fairpool.nodes.proctree import ProcessTree

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")]


def ppid_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def helper(code: str) -> subprocess.Popen[str]:
    """A python process running ``code`` (it prints one JSON line when it is ready)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def ready(process: subprocess.Popen[str]) -> dict:  # type: ignore[type-arg]
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the helper exited ({process.wait()}) before it was ready"
    return json.loads(line)


def finish(process: subprocess.Popen[str], *pids: int) -> None:
    for pid in pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


ORPHANED_GRANDCHILD = """
    import json, subprocess, sys, time
    from fairpool.nodes.proctree import become_subreaper
    subreaper = become_subreaper()
    # the child starts "sleep" in a session of its own and exits at once: "sleep" is orphaned
    child = subprocess.run([sys.executable, "-c", "import subprocess; "
                            "print(subprocess.Popen(['sleep', '100'], start_new_session=True, "
                            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"],
                           capture_output=True, text=True)
    print(json.dumps({"subreaper": subreaper, "grandchild": int(child.stdout)}), flush=True)
    time.sleep(100)
"""


def test_an_orphan_in_a_session_of_its_own_stays_a_descendant_of_the_subreaper_and_is_found() -> None:
    process = helper(ORPHANED_GRANDCHILD)
    info = ready(process)
    grandchild = info["grandchild"]
    try:
        assert info["subreaper"] is True
        assert ppid_of(grandchild) == process.pid  # reparented to the subreaper, not to init
        tree = ProcessTree()
        tree.collect([process.pid])
        assert grandchild in tree.members
        assert tree.signal(signal.SIGTERM) == 1 and tree.signal(signal.SIGTERM) == 0  # once per signal
        wait_for(lambda: process_gone(grandchild), timeout=10, message="the orphan got SIGTERM")
        assert not tree.alive()
    finally:
        finish(process, grandchild)


def test_a_pid_reused_by_another_process_is_never_signalled() -> None:
    stranger = subprocess.Popen(["sleep", "100"])
    try:
        tree = ProcessTree()
        start = int(Path(f"/proc/{stranger.pid}/stat").read_text().rpartition(")")[2].split()[19])
        tree.members[stranger.pid] = start + 1  # the process we knew under this pid started at another time
        assert tree.signal(signal.SIGKILL) == 0
        assert stranger.poll() is None and not tree.members
    finally:
        stranger.kill()
        stranger.wait()


FORKING_TREE = """
    import json, subprocess, time
    from fairpool.nodes.proctree import become_subreaper
    become_subreaper()  # as a worker is: the sleepers orphaned when the shell dies stay ours
    # a shell that ignores SIGTERM and keeps starting more sleepers, in a session of its own
    shell = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 100 & sleep 0.01; done"],
                             start_new_session=True)
    time.sleep(0.3)
    print(json.dumps({"shell": shell.pid}), flush=True)
    time.sleep(100)
"""


def test_kill_takes_down_a_tree_that_keeps_forking_and_ignores_sigterm() -> None:
    process = helper(FORKING_TREE)
    shell = ready(process)["shell"]
    try:
        tree = ProcessTree()
        tree.collect([process.pid])
        assert shell in tree.members and len(tree) > 2  # the shell and its sleepers
        tree.signal(signal.SIGTERM)
        time.sleep(0.1)
        assert not process_gone(shell)  # it ignores SIGTERM
        tree.kill([process.pid])
        wait_for(lambda: not tree.alive() and not ProcessTree().collect([process.pid]), timeout=10,
                 message="nothing of the tree is left alive")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell, signal.SIGKILL)  # (the shell's group: its sleepers, should any be left)
        finish(process, shell)


REAPING = """
    import json, os, subprocess, time
    from pathlib import Path
    from fairpool.nodes.proctree import become_subreaper, reap_orphans
    def state(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return "gone"
    become_subreaper()
    orphan = int(subprocess.run(["sh", "-c", "sleep 0.2 & echo $!"], capture_output=True, text=True).stdout)
    owned = subprocess.Popen(["sh", "-c", "exit 3"])
    deadline = time.monotonic() + 10
    while (state(orphan), state(owned.pid)) != ("Z", "Z") and time.monotonic() < deadline:
        time.sleep(0.02)
    before = (state(orphan), state(owned.pid))
    reaped = reap_orphans()
    print(json.dumps({"before": before, "reaped": reaped, "orphan": state(orphan), "owned": owned.wait()}),
          flush=True)
"""


def test_the_subreaper_reaps_orphans_but_leaves_a_popen_its_exit_status() -> None:
    process = helper(REAPING)
    info = ready(process)
    process.wait()
    assert info["before"] == ["Z", "Z"]  # both ended, neither reaped yet
    assert info["reaped"] == 1 and info["orphan"] == "gone"
    assert info["owned"] == 3  # the Popen still got its own child's exit status


# --- end to end: cancel and timeout reach an orphan in a session of its own -------------------


def orphan_a_sleeper(pidfile: str) -> None:
    """Start ``sleep`` in a session of its own through a shell that exits at once, then hang."""
    import os
    import subprocess
    import time

    sleeper = subprocess.run(["sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 & echo $!"], capture_output=True,
                             text=True).stdout.strip()
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {sleeper}")
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(60)


def _pids(pidfile: Path) -> tuple[int, int]:
    wait_for(pidfile.exists, timeout=15, message="the job recorded its pids")
    worker, sleeper = (int(p) for p in pidfile.read_text().split())
    return worker, sleeper


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_stopping_a_job_kills_an_orphan_it_left_in_a_session_of_its_own(
        how, in_tmp_dir, scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="n1")
    pidfile = tmp_path / "pids"
    sleeper = 0
    try:
        with SharedJobCluster(orphan_a_sleeper, **cluster_kwargs) as cluster:
            job = (cluster.options(timeout=2).submit if how == "timeout" else cluster.submit)(str(pidfile))
            worker, sleeper = _pids(pidfile)
            assert ppid_of(sleeper) == worker  # orphaned, and reparented to the worker: its subreaper
            if how == "cancel":
                cluster.cancel(job)
                with pytest.raises(concurrent.futures.CancelledError):
                    job.result(timeout=15)
            else:
                with pytest.raises(Exception, match="timed out"):
                    job.result(timeout=15)
                assert job.status is JobStatus.FAILED
            wait_for(lambda: process_gone(worker) and process_gone(sleeper), timeout=5, message="the job's processes are gone")
    finally:
        if sleeper and not process_gone(sleeper):
            os.kill(sleeper, signal.SIGKILL)
