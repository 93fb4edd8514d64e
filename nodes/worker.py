"""The worker process: runs a node's tasks one at a time, in plain synchronous Python.

The node's ``WorkerPool`` starts it as
``python -m fairpool.nodes.worker --fd N --workdir-base DIR`` with one end of
an AF_UNIX socketpair inherited as fd N, framed like every other hop
(``fairpool.protocol``). node -> worker: ``Dispatch`` (cluster definitions
and tasks), ``ReleaseCluster``; worker -> node: ``WorkerReady`` once, then
``NodeProgress`` carrying results only (the node counts a task as started
when it reaches the head of this worker's queue, so no message is spent on
that). An empty ``NodeProgress`` acknowledges a ``ReleaseCluster``: the node
then knows the cluster's cleanup ran and may remove its working directory.

With ``--counter-fd M`` (a shared-memory file from the node) the worker
stores, before each task, that task's ordinal + 1 (tasks are numbered in the
order the node sent them): a plain memory write, no syscall. The node reads
it to know which of the tasks it handed over is really running -- the one to
blame if a job kills the process while results of earlier jobs were still
batched here, the one to kill for a cancel or a timeout.

``CancelTasks`` from the node names tasks it handed over and no longer wants:
those still waiting here are not run but answered, in their turn, with a
FAILED "cancelled" result (a task already running is the node's to kill).

With ``--lifeline-fd L`` (the read end of a pipe only the node can write to)
a small thread waits for EOF on it: the node is gone, even killed by SIGKILL,
so the worker kills its whole process group -- itself and whatever its job
started, in a session of its own too -- rather than run on unsupervised.

The worker is a child subreaper (``fairpool.nodes.proctree``): a process its
job started stays its descendant even when its parent dies, so that the node
can find (and stop) a job's whole tree; the orphans that end under it are
reaped whenever it waits for work.

Jobs talk back through ``fairpool.nodes.runtime``: their provisional results
and file chunks go to the node at once (``send_now``), ahead of the job's
final result, which is batched as usual.

This is the only place where tenant code and data are unpickled and run
(SPEC promise 5). A job's exception never kills the worker; only a job that
kills the process does, and the node notices and replaces it.
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path

from fairpool.largefields import is_pieces
from fairpool.messages import (
    AnyMessage,
    CancelTasks,
    Dispatch,
    JobResult,
    Message,
    NodeProgress,
    ReleaseCluster,
    Task,
    WorkerReady,
)
from fairpool.protocol import Connection, ProtocolError, encode_frame_parts

from .jobs import ClusterRuntime, failed_result
from .outputcap import DEFAULT_MAX_OUTPUT
from .proctree import ProcessTree, become_subreaper, reap_orphans

#: Send results once this many are pending...
MAX_BATCH = 64
#: ...or once their payloads take this many bytes (a larger result goes alone: no frame nears the limit)...
MAX_BATCH_BYTES = 16 * 1024 * 1024
#: ...or once the oldest pending one has waited this long (seconds).
MAX_BATCH_DELAY = 0.002
#: Before a job expected to run longer than this (or of unknown length), send
#: what is pending: those results must not wait behind it.
FLUSH_BEFORE_RUNTIME = 0.0005
RECEIVE_SIZE = 256 * 1024
#: Between jobs, look for new tasks at least every this many jobs.
POLL_EVERY = 16
#: Layout of the shared counter: ordinal + 1 of the task started last (0: none), little-endian u64.
COUNTER = struct.Struct("<Q")

#: The worker running in this process, for the in-job runtime (provisional results, files).
ACTIVE: Worker | None = None


class Worker:
    """The loop: read tasks, run them in order, send their results in adaptive batches."""

    def __init__(self, sock: socket.socket, workdir_base: Path, counter: mmap.mmap | None = None,
                 max_output: int = DEFAULT_MAX_OUTPUT) -> None:
        self.sock = sock
        self.max_output = max_output  # bytes of each of a job's streams kept (the node's max_output)
        self.counter = counter
        self.tasks_started = 0  # tasks taken from the queue, run or skipped: the next one's ordinal
        self.cancelled: dict[str, str] = {}  # uid of a queued task -> why the node cancelled it
        # a job's own threads may send (provisional results...) while the loop flushes results
        self.send_lock = threading.Lock()
        self.workdir_base = workdir_base
        self.protocol = Connection()
        self.clusters: dict[str, ClusterRuntime] = {}
        self.fifo: deque[Task | ReleaseCluster] = deque()
        self.pending: list[JobResult] = []
        self.pending_bytes = 0
        self.first_unsent = 0.0
        self.eof = False
        self.current: Task | None = None
        self.subreaper = False  # orphans of jobs are reparented to this process: reap them
        self.orphans_exited = False  # a child exited since the last reaping (set by SIGCHLD)

    # --- the loop ------------------------------------------------------------

    def run(self) -> int:
        try:
            self._send([WorkerReady(os.getpid())])
            while not self.eof:
                if not self.fifo:
                    self.flush()
                    if self.orphans_exited:  # (a SIGCHLD came: reading /proc every time would cost a job's worth)
                        self.orphans_exited = False
                        reap_orphans()
                    self._receive(block=True)
                    continue
                item = self.fifo.popleft()
                if isinstance(item, ReleaseCluster):
                    self.flush()
                    self.release(item.cluster_id)
                    self._send([NodeProgress([], [])])
                    continue
                result = self._take(item)
                # The task's arguments (views of its payload, however large) are done with: free
                # them before the result is encoded and sent, not after.
                del item
                size = len(result.payload)
                if self.pending and self.pending_bytes + size > MAX_BATCH_BYTES:
                    self.flush()
                if not self.pending:
                    self.first_unsent = time.monotonic()
                self.pending.append(result)
                self.pending_bytes += size
                pending = len(self.pending)
                # A syscall per job would cost more than a trivial job: look for new
                # tasks when about to report or to run dry, and every few jobs -- and
                # after any job that was not trivial, so that a cancel sent meanwhile
                # is read before the next task starts.
                if (
                    len(self.fifo) <= pending
                    or not self.tasks_started % POLL_EVERY
                    or result.finished_at - result.started_at > FLUSH_BEFORE_RUNTIME
                ):
                    self._receive(block=False)
                # Once as many are done as are left, report: the node refills on results,
                # and the refill must arrive before this queue runs dry.
                if (
                    pending >= len(self.fifo)
                    or is_pieces(result.payload)  # views of the job's memory: sent before the next job
                    or pending >= MAX_BATCH
                    or self.pending_bytes >= MAX_BATCH_BYTES
                    or time.monotonic() - self.first_unsent >= MAX_BATCH_DELAY
                ):
                    self.flush()
        except OSError:
            pass  # the node is gone: nobody to report to
        except ProtocolError as exc:
            print(f"fairpool worker {os.getpid()}: protocol error from the node: {exc}", file=sys.stderr)
            return 2
        finally:
            for cluster_id in list(self.clusters):
                self.release(cluster_id)
        return 0

    def _take(self, task: Task) -> JobResult:
        """Run the next task (or answer it if it was cancelled while waiting here)."""
        self.tasks_started += 1
        if self.cancelled:
            reason = self.cancelled.pop(task.uid, None)
            if reason is not None:
                # Never started: the counter keeps naming the task that really ran last.
                return failed_result(task, time.time(), reason)
        cluster = self.clusters.get(task.cluster_id)
        if self.pending and self._flush_first(cluster):
            self.flush()
        if self.counter is not None:
            COUNTER.pack_into(self.counter, 0, self.tasks_started)
        self.current = task
        try:
            if cluster is None:
                reason = f"unknown cluster {task.cluster_id!r}: no definition reached this worker"
                return failed_result(task, time.time(), reason)
            return cluster.run(task)
        finally:
            self.current = None

    def _flush_first(self, cluster: ClusterRuntime | None) -> bool:
        if cluster is None or cluster.runtime is None or cluster.runtime > FLUSH_BEFORE_RUNTIME:
            return True
        return time.monotonic() - self.first_unsent >= MAX_BATCH_DELAY

    def flush(self) -> None:
        if self.pending:
            results, self.pending = self.pending, []
            self.pending_bytes = 0
            self._send([NodeProgress([], results)])

    def send_now(self, message: Message) -> None:
        """Send a job's message (provisional result, file chunk) at once, from any thread."""
        self._send([message])

    def _send(self, messages: list[Message]) -> None:
        # Large results go out as they are, after their frame's start: not copied into a frame.
        parts = encode_frame_parts(messages)
        with self.send_lock:
            for part in parts:
                self.sock.sendall(part)

    def _receive(self, *, block: bool) -> None:
        """Read what the node sent: wait for something if ``block``, else take only what is there."""
        if block:
            self._read(0)
        while not self.eof:
            try:
                self._read(socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return

    def _read(self, flags: int) -> None:
        into = self.protocol.receive_buffer()
        if into is None:
            self._handle(self.sock.recv(RECEIVE_SIZE, flags))
            return
        # The rest of a large frame (a task's big arguments): straight into its buffer.
        with into:
            count = self.sock.recv_into(into, 0, flags)
        if not count:
            self._handle(b"")  # the node hung up inside a frame: a ProtocolError
        else:
            self._dispatch(self.protocol.received_into(count))

    def _handle(self, data: bytes) -> None:
        if not data:
            self.eof = True
        self._dispatch(self.protocol.receive_data(data))

    def _dispatch(self, messages: list[AnyMessage]) -> None:
        for message in messages:
            if isinstance(message, Dispatch):
                for cdef in message.clusters:
                    if cdef.cluster_id not in self.clusters:
                        workdir = self.workdir_base / cdef.cluster_id
                        self.clusters[cdef.cluster_id] = ClusterRuntime(cdef.cluster_id, cdef.spec, workdir,
                                                                        cdef.max_payload, self.max_output)
                self.fifo.extend(message.tasks)
            elif isinstance(message, ReleaseCluster):
                # in order with the tasks: cleanup runs after the cluster's last queued job
                self.fifo.append(message)
            elif isinstance(message, CancelTasks):
                waiting = {item.uid for item in self.fifo if isinstance(item, Task)}
                for uid in message.uids:
                    if uid in waiting:  # one not here has run already: the node handles it
                        self.cancelled[uid] = message.reason
            else:
                raise ProtocolError(f"unexpected {type(message).__name__} from the node")


    def release(self, cluster_id: str) -> None:
        cluster = self.clusters.pop(cluster_id, None)
        if cluster is not None:
            cluster.release()


def _child_exited(signum: int, frame: object) -> None:
    if ACTIVE is not None:
        ACTIVE.orphans_exited = True


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def _watch_lifeline(fd: int) -> None:
    """Block until the node is gone (EOF on the lifeline), then kill this process group."""
    try:
        while os.read(fd, 64):
            pass  # nothing is ever written; a byte is no reason to stop watching
    except OSError:
        pass
    try:
        tree = ProcessTree()  # what our jobs started in sessions of their own too (we are their subreaper)
        tree.collect([os.getpid()])
        tree.kill([os.getpid()])
        if os.getpgrp() == os.getpid():  # our own group (the node starts us in a session of our own)
            os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(70)  # reached only if the group was not ours to kill


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairpool.nodes.worker", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="inherited socket to the node")
    parser.add_argument("--workdir-base", type=Path, required=True, help="parent of the clusters' working dirs")
    parser.add_argument("--counter-fd", type=int, default=None, help="shared memory for the started-task counter")
    parser.add_argument("--lifeline-fd", type=int, default=None, help="pipe that reaches EOF when the node dies")
    parser.add_argument("--max-output", type=int, default=DEFAULT_MAX_OUTPUT,
                        help="bytes of each of a job's stdout and stderr kept (head and tail)")
    options = parser.parse_args(argv)
    sock = socket.socket(fileno=options.fd)
    # a job's own child processes must not hold the node's socket open
    os.set_inheritable(sock.fileno(), False)
    sock.setblocking(True)
    if options.lifeline_fd is not None:
        os.set_inheritable(options.lifeline_fd, False)
        threading.Thread(target=_watch_lifeline, args=(options.lifeline_fd,), name="lifeline", daemon=True).start()
    # Should a Ctrl-C reach a worker (one started by hand in a terminal's group), the
    # node stops its workers itself. A handler, not SIG_IGN, so that programs run by
    # jobs get the default back at exec.
    signal.signal(signal.SIGINT, _ignore_signal)
    counter = None
    if options.counter_fd is not None:
        counter = mmap.mmap(options.counter_fd, COUNTER.size)
        os.close(options.counter_fd)  # the mapping stays
    global ACTIVE
    # absolute now: jobs run in cluster dirs, where a relative base would mean something else
    ACTIVE = Worker(sock, options.workdir_base.absolute(), counter, options.max_output)
    ACTIVE.subreaper = become_subreaper()
    if ACTIVE.subreaper:
        signal.signal(signal.SIGCHLD, _child_exited)
    try:
        return ACTIVE.run()
    finally:
        sock.close()


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy, so that
    # ``fairpool.nodes.worker.ACTIVE`` is the worker that is running.
    from fairpool.nodes.worker import main as _main

    sys.exit(_main())
