"""A job's whole process tree, beyond its process group: find it through /proc, signal it, wait it out.

A worker and what its jobs start share a process group that the node can
signal as a whole -- but a process that calls ``setsid`` (``subprocess.Popen(
start_new_session=True)``, a daemon) leaves that group, and one whose parent
died is reparented away from the worker. So:

* the worker makes itself a *child subreaper* (``become_subreaper``: Linux's
  ``prctl(PR_SET_CHILD_SUBREAPER)``; elsewhere nothing): orphans of its jobs
  are reparented to it, not to init, and every process a job started stays
  its descendant by parent links, whatever session it is in;
* to stop a job, the node collects the worker's descendants from /proc
  (``ProcessTree.collect``, while the worker still lives: once it dies its
  orphans go to init) and signals each of them besides the group: SIGTERM,
  then SIGKILL once the grace has passed (``signal``/``kill``); each round
  collects again, so what a member forked meanwhile is caught too;
* a process is known by its pid *and* its start time, so a pid the system
  reused for an unrelated process is never signalled;
* the worker, being the subreaper, reaps the orphans that end under it
  (``reap_orphans``, between jobs), so they do not pile up as zombies; it
  leaves alone the children a job's ``subprocess.Popen`` or ``multiprocessing``
  objects still own and would wait for themselves.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from collections.abc import Iterable

#: prctl option (linux/prctl.h).
PR_SET_CHILD_SUBREAPER = 36
#: SIGKILL rounds: each one collects what the last one's survivors forked before they died.
KILL_ROUNDS = 5


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux); False where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid`` from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ... starttime(22nd)": comm may hold anything, so split after its last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _table() -> dict[int, tuple[str, int, int]]:
    """Every process: pid -> (state, ppid, start time)."""
    table: dict[int, tuple[str, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    return table


def _live(state: str) -> bool:
    return state not in ("Z", "X")  # a zombie has ended: it is only waiting to be reaped


class ProcessTree:
    """The processes of one job's tree seen so far, each as pid -> start time."""

    def __init__(self) -> None:
        self.members: dict[int, int] = {}
        self.signalled: dict[int, int] = {}  # member -> last signal sent to it

    def __len__(self) -> int:
        return len(self.members)

    def collect(self, roots: Iterable[int] = ()) -> int:
        """Add every live descendant of ``roots`` and of the members known; returns how many are new."""
        table = _table()
        children: dict[int, list[int]] = {}
        for pid, (_, ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        known = {pid for pid, start in self.members.items() if pid in table and table[pid][2] == start}
        todo = [*roots, *known]
        seen = set(todo)
        added = 0
        while todo:
            for child in children.get(todo.pop(), ()):
                if child in seen:
                    continue
                seen.add(child)
                todo.append(child)
                state, _, start = table[child]
                if _live(state) and self.members.get(child) != start:
                    self.members[child] = start
                    added += 1
        return added

    def _current(self) -> list[int]:
        """Members still alive (not zombies) as the same processes; the others are forgotten."""
        alive = []
        for pid, start in list(self.members.items()):
            stat = _stat(pid)
            if stat is None or stat[2] != start or not _live(stat[0]):
                del self.members[pid]
                self.signalled.pop(pid, None)
            else:
                alive.append(pid)
        return alive

    def alive(self) -> bool:
        return bool(self._current())

    def signal(self, signum: int) -> int:
        """Send ``signum`` to every live member not sent it yet; returns how many were signalled."""
        sent = 0
        for pid in self._current():
            if self.signalled.get(pid) != signum and _send(pid, self.members[pid], signum):
                self.signalled[pid] = signum
                sent += 1
        return sent

    def kill(self, roots: Iterable[int] = ()) -> None:
        """SIGKILL every member, and what they forked before it reached them (orphans of the dying
        members are reparented to their subreaper: pass it in ``roots`` while it lives)."""
        roots = list(roots)
        for _ in range(KILL_ROUNDS):
            self.signal(signal.SIGKILL)
            if not self.collect(roots):
                return


def _send(pid: int, start: int, signum: int) -> bool:
    """Signal ``pid`` if it is still the process that started at ``start`` (pidfd: no reuse race)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    try:
        stat = _stat(pid)
        if stat is None or stat[2] != start:
            return False
        if fd >= 0:
            signal.pidfd_send_signal(fd, signum)
        else:
            os.kill(pid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd >= 0:
            os.close(fd)


def _children(pid: int) -> list[int]:
    """The children of ``pid`` (its threads' ``children`` files, else a scan of /proc)."""
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
        return found
    except OSError:
        return [child for child, (_, ppid, _) in _table().items() if ppid == pid]


def _owned_children() -> set[int]:
    """Children that objects of this process will wait for themselves: live ``Popen`` and
    ``multiprocessing`` processes (reaping one would steal its exit status)."""
    owned: set[int] = set()
    subprocess = sys.modules.get("subprocess")
    popen = getattr(subprocess, "Popen", None)
    if popen is not None:
        owned.update(obj.pid for obj in gc.get_objects() if isinstance(obj, popen) and obj.returncode is None)
    process = sys.modules.get("multiprocessing.process")
    for child in getattr(process, "_children", ()) or ():
        with contextlib.suppress(AttributeError):
            owned.add(child._popen.pid)
    return owned


def reap_orphans() -> int:
    """Reap the zombie children of this process (a subreaper) that no object here waits for."""
    me = os.getpid()
    zombies = [pid for pid in _children(me) if (stat := _stat(pid)) is not None and not _live(stat[0])]
    if not zombies:
        return 0
    owned = _owned_children()
    reaped = 0
    for pid in zombies:
        if pid in owned:
            continue
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
    return reaped
