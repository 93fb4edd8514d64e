"""One worker process as the node daemon sees it: start it, tell how it died, stop and reap it.

``spawn_worker`` starts ``python -m fairpool.nodes.worker`` on a socketpair
(the node's end wrapped as a trio stream) and, on Linux, a shared-memory
counter in which the worker records how many tasks it has started, so that
after a crash the pool blames the task that was really running
(``WorkerHandle.running_index``). ``stop_worker`` makes sure the process is
gone and reaped: EOF first (an idle worker exits by itself, running its
clusters' cleanups), then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

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

from .worker import COUNTER

#: How long an idle worker gets to run its cleanups and exit once its socket closes.
EXIT_GRACE = 1.0
#: After SIGTERM, how long before SIGKILL.
TERM_GRACE = 2.0


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
class WorkerHandle:
    """One worker process as the pool sees it: its socket, outbox and the tasks it holds."""

    process: trio.Process
    stream: MessageStream
    outbox: Outbox = field(default_factory=Outbox)
    ready: bool = False
    alive: bool = True
    # (task, estimated runtime when assigned); the head is running
    queue: deque[tuple[Task, float]] = field(default_factory=deque)
    queued_estimate: float = 0.0
    loaded: set[str] = field(default_factory=set)  # clusters whose definition it was sent
    releases: deque[str] = field(default_factory=deque)  # ReleaseCluster sent, not yet acknowledged
    counter: mmap.mmap | None = None  # the worker's count of tasks started (see fairpool.nodes.worker)
    reported: int = 0  # results received from it

    def running_index(self) -> int:
        """Which of ``queue`` was running when the worker died; -1: none (it died between tasks)."""
        if not self.queue:
            return -1
        if self.counter is None:
            return 0  # without the counter, the oldest unreported task is the best guess
        started: int = COUNTER.unpack_from(self.counter, 0)[0]
        return min(started - self.reported, len(self.queue)) - 1


async def spawn_worker(workdir_base: Path) -> WorkerHandle:
    """Start a worker process on a fresh socketpair (and started-tasks counter)."""
    ours, theirs = socket.socketpair()
    argv = [sys.executable, "-m", "fairpool.nodes.worker", "--fd", str(theirs.fileno())]
    argv += ["--workdir-base", str(workdir_base)]
    pass_fds = [theirs.fileno()]
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
            process = await trio.lowlevel.open_process(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL)
    except BaseException:
        ours.close()
        if counter is not None:
            counter.close()
        raise
    finally:
        theirs.close()
        if counter_fd is not None:
            os.close(counter_fd)
    stream = MessageStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), DEFAULT_MAX_FRAME)
    return WorkerHandle(process, stream, counter=counter)


async def stop_worker(worker: WorkerHandle, *, closed_by_worker: bool) -> None:
    """Close the worker's socket and make sure its process is gone and reaped."""
    await worker.stream.aclose()
    process = worker.process
    if closed_by_worker or not worker.queue:
        # A worker whose socket closed is dying: let it finish, so its exit status
        # is its own. An idle one exits by itself on EOF, running its cleanups.
        with trio.move_on_after(EXIT_GRACE):
            await process.wait()
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(TERM_GRACE):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


def _counter_fd() -> int | None:
    """A zeroed shared-memory file for a worker's started-tasks counter (Linux), or None."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:
        return None
    try:
        fd: int = memfd_create("fairpool-worker-counter", os.MFD_CLOEXEC)
    except OSError:
        return None
    os.ftruncate(fd, COUNTER.size)
    return fd
