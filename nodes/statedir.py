"""A node's state directory: one node per directory, and the working directories in it.

Each cluster a node runs gets ``<state_dir>/clusters/<cluster_id>/`` (its
depends files; jobs run there). A node removes a cluster's directory when the
scheduler releases the cluster, and the rest when it exits; a node that
crashed leaves them behind. At start, with ``clean`` (``--clean``), the node
removes those leftovers, except any a process still works in (a job of the
crashed node that outlived it: its current directory is inside); without it
they are kept and counted in the log.

The node holds an exclusive lock on ``<state_dir>/node.lock`` while it runs:
two nodes sharing a state directory would delete each other's files.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

import structlog

log = structlog.get_logger("fairpool.node")

LOCK_NAME = "node.lock"
CLUSTERS = "clusters"


class StateDirBusy(OSError):
    """Another node runs on this state directory. (An OSError: the CLI reports it in one line.)"""


def lock_state_dir(state_dir: Path) -> IO[bytes]:
    """Hold ``state_dir`` for this node until the returned file is closed; StateDirBusy if taken."""
    state_dir.mkdir(parents=True, exist_ok=True)
    f = open(state_dir / LOCK_NAME, "ab")  # noqa: SIM115 - held for the node's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StateDirBusy(f"another node is running on state dir {state_dir} (give each node its own "
                           "--state-dir)") from None
    return f


def leftovers(clusters_dir: Path) -> list[Path]:
    """The working directories under ``clusters_dir`` (under a held lock: left by an earlier run)."""
    try:
        return sorted(p for p in clusters_dir.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []


def in_use(directories: list[Path], proc: Path = Path("/proc")) -> set[Path]:
    """Those of ``directories`` some live process has its current directory in (Linux /proc).

    Processes of other users cannot be looked at and are not counted; without
    /proc nothing is known to be in use.
    """
    wanted = {d.resolve(): d for d in directories}
    busy: set[Path] = set()
    try:
        entries = list(proc.iterdir())
    except OSError:
        return busy
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        for parent in (cwd, *cwd.parents):
            if parent in wanted:
                busy.add(wanted[parent])
                break
    return busy


def prepare_clusters_dir(clusters_dir: Path, *, clean: bool) -> None:
    """Make ``clusters_dir``; with ``clean`` remove what an earlier run left there, except busy ones."""
    clusters_dir.mkdir(parents=True, exist_ok=True)
    stale = leftovers(clusters_dir)
    if not stale:
        return
    if not clean:
        log.warning("working directories left by an earlier run of this node; --clean removes them",
                    directory=str(clusters_dir), count=len(stale))
        return
    busy = in_use(stale)
    for path in stale:
        if path not in busy:
            shutil.rmtree(path, ignore_errors=True)
    log.info("removed working directories left by an earlier run", directory=str(clusters_dir),
             removed=len(stale) - len(busy), kept_in_use=len(busy))
    for path in sorted(busy):
        log.warning("kept a working directory a process still uses", path=str(path))


def remove_working_dirs(clusters_dir: Path) -> None:
    """At a clean exit, with the workers gone: nobody needs the working directories any more."""
    for path in leftovers(clusters_dir):
        shutil.rmtree(path, ignore_errors=True)
