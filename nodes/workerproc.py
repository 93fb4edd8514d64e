"""One worker process as the node daemon sees it: start it, tell how it died, stop and reap it.

``spawn_worker`` starts ``python -m fairpool.nodes.worker`` on a socketpair
(the node's end wrapped as a trio stream), in a session of its own, so that
the worker and every process a job starts share one process group that the
node can signal as a whole (``signal_group``): a cancelled or timed-out job
dies with its children and grandchildren. Two more file descriptors go along:

* on Linux, a shared-memory counter in which the worker records the ordinal
  of the task it started last, so that the pool knows which held task is
  really running (``WorkerHandle.running_index``): the one to blame for a
  crash, to kill for a cancel or a timeout;
* a "lifeline" pipe whose write end only the node holds: when the node dies,
  even by SIGKILL, the worker sees EOF on it and kills its own group, so no
  job outlives its node (a rerun elsewhere would otherwise race it).

With a ``run_as`` identity (``fairpool.nodes.isolation``) the worker starts as
that unprivileged user: ``subprocess`` sets its groups, group and user in the
child before exec, so no tenant code ever runs with the node's privileges.

``stop_worker`` makes sure the process is gone and reaped: EOF first (an idle
worker exits by itself, running its clusters' cleanups), then SIGTERM to the
group, then SIGKILL; and whatever the job left behind goes too (``reap_group``):
in the group, and in the worker's process tree (``WorkerHandle.tree``,
``fairpool.nodes.proctree``: the worker is a child subreaper, so a process its
job started in a session of its own is still found by its parent links).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import trio

from fairpool.messages import Task
from fairpool.protocol import DEFAULT_MAX_FRAME
from fairpool.wire import MessageStream, Outbox

from .isolation import RunAs, worker_process_options
from .proctree import ProcessTree
from .worker import COUNTER

#: How long an idle worker gets to run its cleanups and exit once its socket closes.
EXIT_GRACE = 1.0
#: After SIGTERM, how long before SIGKILL (the worker, and what its jobs left in its group).
TERM_GRACE = 2.0
#: How often a dying process group is looked at while it gets its grace.
GROUP_POLL = 0.05


def death_reason(returncode: int | None) -> str:
    """What users read when a worker process dies: its exit code or the signal that killed it."""
    if returncode is None:
        return "worker process died: its connection to the node closed"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"worker process died: killed by signal {name}"
    return f"worker process exited with code {returncode}"


@dataclass(eq=False)
class Held:
    """A task handed to a worker: the head of the worker's queue runs, the rest are prefetched."""

    task: Task
    estimate: float  # expected runtime when assigned (seconds)
    ordinal: int  # its position among every task this worker was given (0, 1, ...)
    started: float | None = None  # time.monotonic() when it was first known to run


@dataclass(eq=False)
class WorkerHandle:
    """One worker process as the pool sees it: its socket, outbox and the tasks it holds."""

    process: trio.Process
    stream: MessageStream
    outbox: Outbox = field(default_factory=Outbox)
    ready: bool = False
    alive: bool = True
    queue: deque[Held] = field(default_factory=deque)  # the head is running (or about to)
    queued_estimate: float = 0.0
    dispatched: int = 0  # tasks given to it so far: the next one's ordinal
    loaded: set[str] = field(default_factory=set)  # clusters whose definition it was sent
    tenants: dict[str, str] = field(default_factory=dict)  # of those clusters: whose (for log lines)
    releases: deque[str] = field(default_factory=deque)  # ReleaseCluster sent, not yet acknowledged
    counter: mmap.mmap | None = None  # ordinal + 1 of the task it started last (see fairpool.nodes.worker)
    lifeline: int | None = None  # write end of the worker's lifeline pipe
    cancelling: dict[str, str] = field(default_factory=dict)  # held task uid -> why it is cancelled
    reported: set[str] = field(default_factory=set)  # held tasks already reported cancelled by the pool
    kill: tuple[str, str] | None = None  # (uid, reason): the group was signalled to stop that task
    kill_deadline: float = 0.0  # time.monotonic() after which SIGKILL follows the SIGTERM
    killed_hard: bool = False
    tree: ProcessTree = field(default_factory=ProcessTree)  # its descendants, collected to stop them

    @property
    def pgid(self) -> int:
        return self.process.pid  # a session leader: its pid is its group's id

    def running_index(self) -> int:
        """Which of ``queue`` is running; -1: none (between tasks, or the one running is reported)."""
        if not self.queue:
            return -1
        if self.counter is None:
            return 0  # without the counter, the oldest unreported task is the best guess
        last: int = COUNTER.unpack_from(self.counter, 0)[0] - 1
        index = last - self.queue[0].ordinal  # the queue holds consecutive ordinals
        return index if 0 <= index < len(self.queue) else -1


async def spawn_worker(workdir_base: Path, run_as: RunAs | None = None, max_output: int | None = None) -> WorkerHandle:
    """Start a worker process in a new session, on a fresh socketpair, counter and lifeline.

    With ``run_as`` it starts as that user (groups, group and user set before exec); with
    ``max_output`` it keeps that many bytes of each of a job's streams (default: the worker's).
    """
    ours, theirs = socket.socketpair()
    lifeline_read, lifeline_write = os.pipe()  # both non-inheritable: only pass_fds crosses exec
    # -P: nothing of the current directory on sys.path, where a cluster's files could shadow modules
    argv = [sys.executable, "-P", "-m", "fairpool.nodes.worker", "--fd", str(theirs.fileno())]
    argv += ["--workdir-base", str(workdir_base), "--lifeline-fd", str(lifeline_read)]
    if max_output is not None:
        argv += ["--max-output", str(max_output)]
    pass_fds = [theirs.fileno(), lifeline_read]
    counter_fd = _counter_fd()
    counter = None
    if counter_fd is not None:
        counter = mmap.mmap(counter_fd, COUNTER.size)
        argv += ["--counter-fd", str(counter_fd)]
        pass_fds.append(counter_fd)
    try:
        # Shielded: Popen runs in a thread that a cancel cannot stop, and a
        # cancel arriving after it would leave the new process unowned.
        with trio.CancelScope(shield=True):
            process = await trio.lowlevel.open_process(
                argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL, start_new_session=True,
                **worker_process_options(run_as, workdir_base),
            )
    except BaseException:
        ours.close()
        os.close(lifeline_write)
        if counter is not None:
            counter.close()
        raise
    finally:
        theirs.close()
        os.close(lifeline_read)
        if counter_fd is not None:
            os.close(counter_fd)
    stream = MessageStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), DEFAULT_MAX_FRAME)
    return WorkerHandle(process, stream, counter=counter, lifeline=lifeline_write)


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False if the group has no process left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours any more (the id was reused): leave it alone
    return True


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in the group.

    Reads /proc where there is one: an orphaned zombie is in its group until
    someone reaps it, which in a container may be never, and it is no threat.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return signal_group(pgid, 0)
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold anything, so split after its last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def reap_group(pgid: int, grace: float = TERM_GRACE, tree: ProcessTree | None = None) -> None:
    """Stop what is left of a worker's process group, and of the process ``tree`` collected from it
    (with what its members forked since): SIGTERM, ``grace`` seconds, SIGKILL."""
    tree = tree if tree is not None else ProcessTree()
    tree.collect()
    group = group_alive(pgid) and signal_group(pgid, signal.SIGTERM)
    tree.signal(signal.SIGTERM)
    if not group and not tree.alive():
        return
    for _ in range(max(int(grace / GROUP_POLL), 1)):
        await trio.sleep(GROUP_POLL)
        tree.collect()
        tree.signal(signal.SIGTERM)  # (those forked meanwhile)
        if not group_alive(pgid) and not tree.alive():
            return
    signal_group(pgid, signal.SIGKILL)
    tree.kill()


async def stop_worker(worker: WorkerHandle, *, closed_by_worker: bool) -> None:
    """Close the worker's socket and make sure its process and its group are gone, the worker reaped."""
    process = worker.process
    if process.returncode is None:
        # While it lives, everything its jobs started is its descendant (it is a subreaper): once
        # it is gone, what it leaves goes to init, and only its group would still tell.
        worker.tree.collect([process.pid])
    await worker.stream.aclose()
    if closed_by_worker or not worker.queue:
        # A worker whose socket closed is dying: let it finish, so its exit status
        # is its own. An idle one exits by itself on EOF, running its cleanups.
        with trio.move_on_after(EXIT_GRACE):
            await process.wait()
    if process.returncode is None:
        # Signalled while unreaped, so the group id cannot belong to anyone else yet.
        signal_group(worker.pgid, signal.SIGTERM)
        with trio.move_on_after(TERM_GRACE):
            await process.wait()
    if process.returncode is None:
        signal_group(worker.pgid, signal.SIGKILL)
        await process.wait()
    # The worker is gone; processes its jobs started may still be in its group, or in its tree.
    await reap_group(worker.pgid, tree=worker.tree)
    if worker.lifeline is not None:
        with contextlib.suppress(OSError):
            os.close(worker.lifeline)
        worker.lifeline = None


def _counter_fd() -> int | None:
    """A zeroed shared-memory file for a worker's started-task counter (Linux), or None."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:
        return None
    try:
        fd: int = memfd_create("fairpool-worker-counter", os.MFD_CLOEXEC)
    except OSError:
        return None
    os.ftruncate(fd, COUNTER.size)
    return fd
