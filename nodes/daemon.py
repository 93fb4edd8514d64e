"""The node daemon: one authenticated connection to the scheduler in front of a WorkerPool.

``serve_node`` installs each dispatched cluster's files under
``<state_dir>/clusters/<cluster_id>/``, queues tasks on the ``WorkerPool``
and sends progress back to the scheduler in batches (``NodeProgress``
through a ``fairpool.wire.Outbox``: whatever is ready at each point, one send
per batch), with a ``Heartbeat`` every ``heartbeat_interval``.

The workers outlive the connection: when the scheduler goes away (crash,
restart, network, refused secret) the node keeps running its jobs, holds
their progress, and reconnects with exponential backoff and jitter; after
reconnecting it announces itself again and re-sends what it held, plus what
it sent in the last few seconds before the break, since bytes written to a
socket just before the peer died may never have been read. The scheduler
must therefore treat a result for a job that already ended as a duplicate.

What jobs send while they run -- provisional results and file chunks --
travels in the same ``NodeProgress`` messages and is held and re-sent the
same way (``fairpool.nodes.progress``). ``CancelTasks`` from the scheduler
goes to the pool, which drops the tasks or kills their process trees
(``fairpool.nodes.workerpool``).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
import uuid
from pathlib import Path

import structlog
import trio

from fairpool.clusterspec import ClusterSpec, SpecError, decode_spec, is_safe_file_name
from fairpool.config import NodeConfig
from fairpool.handshake import AuthError
from fairpool.messages import (
    AnyMessage,
    CancelTasks,
    ClusterDef,
    Dispatch,
    FileChunk,
    Heartbeat,
    JobProvisional,
    JobResult,
    JobStarted,
    NodeReady,
    ReleaseCluster,
    Task,
)
from fairpool.protocol import ProtocolError
from fairpool.secret import ensure_secret
from fairpool.wire import ConnectionClosed, MessageStream, Outbox, open_connection

from .progress import HeldProgress
from .workerpool import WorkerPool

log = structlog.get_logger("fairpool.node")

INITIAL_RECONNECT_DELAY = 0.1
MAX_HEARTBEAT_MARKS = 64
#: Once the scheduler has heartbeated us, this many of our intervals without a word means it is gone.
SILENCE_INTERVALS = 10


def detect_memory() -> int:
    """This host's physical memory in bytes (0 if it cannot be told)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def write_cluster_files(directory: Path, spec: ClusterSpec) -> None:
    """Write the spec's depends files into ``directory`` with their modes."""
    directory.mkdir(parents=True, exist_ok=True)
    for depend in spec.files:
        if not is_safe_file_name(depend.name):  # decode_spec checks too: never trust one layer
            raise SpecError(f"refused depends file name {depend.name!r}: it must be a plain file name")
        mode = depend.mode & 0o777
        if spec.kind == "program" and depend.name == spec.program:
            mode |= 0o500  # the program must be runnable by its owner, whatever mode it came with
        # O_NOFOLLOW: a symlink planted in the directory must not redirect the write
        fd = os.open(directory / depend.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(depend.data)
            os.fchmod(f.fileno(), mode)


#: How long news that a job started may wait for its result, to travel together.
STARTED_DELAY = 0.002

class _NodeDaemon:
    def __init__(self, config: NodeConfig, secret: bytes) -> None:
        self.config = config
        self._secret = secret
        self.clusters_dir = (config.state_dir / "clusters").absolute()
        self.memory = config.memory or detect_memory()
        self.pool = WorkerPool(config.cpus, self.clusters_dir, self._on_progress, node_name=config.name)
        self.held = HeldProgress()
        self.session = uuid.uuid4().hex  # this run of the node: a restarted node has lost what it ran
        self._wakeup = trio.Event()
        self._urgent = trio.Event()  # results (or what jobs send) are waiting: no delay
        self._installed: dict[str, bytes] = {}  # cluster -> digest of the spec its files came from
        self._bad: dict[str, str] = {}  # cluster -> why its tasks cannot run here
        self._heartbeats: dict[float, int] = {}  # heartbeat sent -> progress batches handed over before it

    def _on_progress(
        self,
        started: list[JobStarted],
        results: list[JobResult],
        provisional: list[JobProvisional],
        files: list[FileChunk],
    ) -> None:
        self.held.add(started, results, provisional, files)
        self._wakeup.set()
        if results or provisional or files:
            self._urgent.set()

    # --- connection ------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        status: trio.TaskStatus[None] | None = task_status
        delay = INITIAL_RECONNECT_DELAY
        address = self.config.scheduler
        while True:
            try:
                stream = await open_connection(
                    address,
                    self._secret,
                    role="node",
                    name=self.config.name,
                    timeout=self.config.handshake_timeout,
                    max_frame=self.config.max_frame_size,
                )
            except AuthError as exc:
                log.error("scheduler refused the node", scheduler=str(address), reason=str(exc))
            except (ConnectionClosed, ProtocolError, OSError) as exc:
                log.warning("cannot reach the scheduler", scheduler=str(address), reason=str(exc))
            else:
                began = trio.current_time()
                try:
                    if await self._session(stream, status):
                        status = None
                finally:
                    await stream.aclose()
                    self.held.connection_lost()
                if trio.current_time() - began > self.config.reconnect_max_delay:
                    delay = INITIAL_RECONNECT_DELAY  # it was up a while: try again soon
            await trio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.config.reconnect_max_delay)

    async def _session(self, stream: MessageStream, status: trio.TaskStatus[None] | None) -> bool:
        """Serve one connection until it breaks; False if it broke before the node was announced."""
        config = self.config
        try:
            held = sorted(self.pool.held_uids() | self.held.result_uids())
            await stream.send(NodeReady(config.name, config.cpus, self.memory, config.gpus, self.session, held))
        except ConnectionClosed as exc:
            log.warning("scheduler connection lost", scheduler=str(config.scheduler), reason=str(exc))
            return False
        log.info("node connected", scheduler=str(config.scheduler), name=config.name, cpus=config.cpus)
        if status is not None:
            status.started()
        outbox = Outbox()
        self._heartbeats.clear()  # echoes of another connection's heartbeats cannot come
        running = self.pool.running()
        if running:
            self.held.add(running, [])  # a restarted scheduler learns which of its jobs run here
        self._wakeup.set()  # whatever is held goes out first
        reason = "cancelled"
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                nonlocal reason
                try:
                    await outbox.run_writer(stream)
                except ConnectionClosed as exc:
                    reason = str(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(write)
            nursery.start_soon(self._pump, outbox)
            nursery.start_soon(self._heartbeat, outbox)
            try:
                await self._read(stream)
            except (ConnectionClosed, ProtocolError) as exc:
                reason = str(exc)
            nursery.cancel_scope.cancel()
        log.warning("node disconnected", scheduler=str(config.scheduler), reason=reason)
        return True

    async def _pump(self, outbox: Outbox) -> None:
        while True:
            await self._wakeup.wait()
            if not self._urgent.is_set():
                # Only "started" news: a job that ends within a moment needs no message of its own
                # (its result says when it started), which saves the scheduler and the client a
                # message per short job. Results end the wait at once.
                with trio.move_on_after(STARTED_DELAY):
                    await self._urgent.wait()
            self._wakeup = trio.Event()
            self._urgent = trio.Event()
            for progress in self.held.take():
                outbox.put(progress)

    async def _heartbeat(self, outbox: Outbox) -> None:
        while True:
            at = time.time()
            self._heartbeats[at] = self.held.mark()
            while len(self._heartbeats) > MAX_HEARTBEAT_MARKS:
                del self._heartbeats[next(iter(self._heartbeats))]
            outbox.put(Heartbeat(at))
            await trio.sleep(self.config.heartbeat_interval)

    async def _read(self, stream: MessageStream) -> None:
        heard_heartbeat = False
        silence = max(self.config.heartbeat_interval * SILENCE_INTERVALS, 1.0)
        while True:
            if heard_heartbeat:
                with trio.move_on_after(silence):
                    messages = await stream.receive()
                    for message in messages:
                        self._handle(message)
                    continue
                raise ConnectionClosed(f"no word from the scheduler for {silence:g}s")
            for message in await stream.receive():
                heard_heartbeat = heard_heartbeat or isinstance(message, Heartbeat)
                self._handle(message)

    # --- what the scheduler says -----------------------------------------------

    def _handle(self, message: AnyMessage) -> None:
        if isinstance(message, Dispatch):
            self._dispatch(message)
        elif isinstance(message, CancelTasks):
            self.pool.cancel(message.uids, message.reason)
        elif isinstance(message, ReleaseCluster):
            self._installed.pop(message.cluster_id, None)
            self._bad.pop(message.cluster_id, None)
            self.pool.release_cluster(message.cluster_id)
        elif isinstance(message, Heartbeat):
            # A scheduler that echoes our heartbeat has read everything we sent before it.
            upto = self._heartbeats.pop(message.at, None)
            if upto is not None:
                self.held.acknowledged(upto)
        else:
            log.warning("ignored unexpected message from the scheduler", type=type(message).__name__)

    def _dispatch(self, message: Dispatch) -> None:
        good: list[ClusterDef] = []
        for cdef in message.clusters:
            reason = self._install(cdef)
            if reason is None:
                self._bad.pop(cdef.cluster_id, None)
                good.append(cdef)
            else:
                log.warning("cannot install cluster", cluster_id=cdef.cluster_id, reason=reason)
                self._bad[cdef.cluster_id] = reason
        tasks: list[Task] = []
        refused: dict[str, list[Task]] = {}
        for task in message.tasks:
            if task.cluster_id in self._bad:
                refused.setdefault(task.cluster_id, []).append(task)
            else:
                tasks.append(task)
        for cluster_id, bad_tasks in refused.items():
            self.pool.fail(bad_tasks, self._bad[cluster_id])
        if good or tasks:
            self.pool.submit(good, tasks)

    def _install(self, cdef: ClusterDef) -> str | None:
        """Write the cluster's files; return why it cannot run here, or None."""
        cluster_id = cdef.cluster_id
        if not is_safe_file_name(cluster_id):
            return f"refused cluster id {cluster_id!r}: it must be a plain file name"
        digest = hashlib.sha256(cdef.spec).digest()
        if self._installed.get(cluster_id) == digest:
            return None  # sent again (e.g. after a reconnect): its jobs may be using the files
        try:
            spec = decode_spec(cdef.spec)
            write_cluster_files(self.clusters_dir / cluster_id, spec)
        except SpecError as exc:
            return f"bad cluster spec: {exc}"
        except OSError as exc:
            return f"could not write the cluster's files: {exc}"
        self._installed[cluster_id] = digest
        return None


async def serve_node(config: NodeConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a node until cancelled; ``task_status.started()`` once connected and announced."""
    secret = ensure_secret(config.secret_path)
    clusters_dir = config.state_dir / "clusters"
    # clusters of a previous run are gone from the scheduler's view of this node
    shutil.rmtree(clusters_dir, ignore_errors=True)
    clusters_dir.mkdir(parents=True, exist_ok=True)
    node = _NodeDaemon(config, secret)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.pool.run)
        await node.run(task_status)
