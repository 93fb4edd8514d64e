"""The node daemon's worker processes: start them, feed them tasks, replace the dead.

``WorkerPool`` owns ``cpus`` worker processes (``fairpool.nodes.worker``),
each behind a socketpair, and a node-local FIFO of tasks. It hands tasks out
with an adaptive per-worker depth computed from each cluster's moving average
job runtime: many trivial jobs are queued per worker so that no worker waits
for a round trip, while a long job gets a worker to itself so that no
prefetched job waits behind it while another worker idles.

Progress goes to the daemon through one synchronous callback,
``on_progress(started, results, provisional, files)``; a task counts as
started when it reaches the head of a worker's queue (no message from the
worker needed). What a job sends while it runs (provisional results, file
chunks) is passed on as it arrives, always ahead of the job's result.

Stopping tasks other than by their result -- ``cancel``, timeouts and the
watchdog, ``hand_back`` when the node leaves, a worker's death -- is the
part of the pool in ``fairpool.nodes.poolstop`` (``StoppingTasks``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog
import trio

from fairpool.clusterspec import ClusterSpec
from fairpool.messages import (
    ClusterDef,
    Dispatch,
    FileChunk,
    JobProvisional,
    JobResult,
    JobStarted,
    NodeProgress,
    ReleaseCluster,
    Task,
    WorkerReady,
)
from fairpool.protocol import ProtocolError
from fairpool.wire import ConnectionClosed

from .isolation import probe_run_as, resolve_run_as
from .poolstop import StoppingTasks
from .stopping import job_fields
from .workdirs import install_cluster_files, prepare_base, remove_cluster_dir
from .workerproc import Held, WorkerHandle, spawn_worker, stop_worker

log = structlog.get_logger("fairpool.node")

ProgressCallback = Callable[[list[JobStarted], list[JobResult], list[JobProvisional], list[FileChunk]], None]

#: At most this many tasks queued on one worker (its running one included).
MAX_DEPTH = 64
#: Prefetch only while the estimated work queued on a worker stays under this
#: (seconds): ~32 trivial jobs, a few 0.5 ms ones, and a job of a few ms or more
#: runs alone.
DEPTH_BUDGET = 0.002
#: What a cluster's jobs are assumed to take before the first one ends: long
#: (over the budget), so each gets a worker to itself. Finite, so sums stay exact.
UNKNOWN_RUNTIME = 1.0
_EWMA_WEIGHT = 0.2
#: A worker that dies before it is ready is restarted after this (seconds), not in a tight loop.
RESPAWN_BACKOFF = 1.0


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of the pool, for logs, tests and the node's status."""

    workers: int  # live worker processes
    ready: int  # of which have reported ready
    busy: int  # workers holding at least one task
    queued: int  # tasks waiting in the node queue (not yet given to a worker)
    running: int  # tasks held by workers (running or prefetched)
    done: int  # results produced since start
    deaths: int  # worker processes that died while the node ran


class WorkerPool(StoppingTasks):
    """``cpus`` worker processes behind one node-local task queue (see the module docstring)."""

    def __init__(
        self,
        cpus: int,
        workdir_base: Path,
        on_progress: ProgressCallback,
        *,
        node_name: str = "",
        run_as: str | None = None,
        private: Sequence[Path] = (),
        max_output: int | None = None,
    ) -> None:
        if cpus < 1:
            raise ValueError(f"a worker pool needs at least one cpu, got {cpus}")
        self.cpus = cpus
        # absolute: workers chdir into cluster dirs, a relative base would then point elsewhere
        self.workdir_base = Path(workdir_base).absolute()
        self.node_name = node_name
        self.max_output = max_output  # bytes of each of a job's streams kept (None: the worker's default)
        # who jobs run as (None: the node's own user); IsolationError now, at the node's start
        self.run_as = resolve_run_as(run_as)
        self._private = [Path(p).absolute() for p in private]  # files jobs must not be able to read
        self._on_progress = on_progress
        self._queue: deque[Task] = deque()
        self._clusters: dict[str, ClusterDef] = {}
        self._outstanding: dict[str, int] = {}  # cluster -> tasks queued or held by workers
        self._releasing: set[str] = set()
        self._dir_waiters: dict[str, set[WorkerHandle]] = {}  # cluster -> workers yet to run cleanup
        self._runtime: dict[str, float] = {}  # cluster -> moving average job runtime
        self._workers: list[WorkerHandle] = []
        self._started: list[JobStarted] = []
        self._results: list[JobResult] = []
        self._provisional: list[JobProvisional] = []
        self._files: list[FileChunk] = []
        self._done = 0
        self._deaths = 0
        self._watch = trio.Event()  # set when there may be something for the watchdog
        self._handed_back: set[str] = set()  # given back to the scheduler: never reported from here

    # --- the daemon's interface -----------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``cpus`` workers alive until cancelled; then stop them and reap them.

        With ``run_as``, first checks that the user can run a worker and read no private file
        (IsolationError otherwise).
        """
        prepare_base(self.workdir_base, self.run_as)
        if self.run_as is not None:
            await probe_run_as(self.run_as, self.workdir_base, self._private)
            log.info("jobs run as", user=str(self.run_as))
        async with trio.open_nursery() as nursery:
            for slot in range(self.cpus):
                await nursery.start(self._supervise, slot)
            nursery.start_soon(self._watchdog)
            task_status.started()

    def submit(self, clusters: list[ClusterDef], tasks: list[Task]) -> None:
        """Queue tasks (and the definitions of their clusters); never blocks."""
        for cdef in clusters:
            self._clusters[cdef.cluster_id] = cdef
            self._releasing.discard(cdef.cluster_id)
            # the directory was just (re)written: a pending removal must not delete it
            self._dir_waiters.pop(cdef.cluster_id, None)
        now = time.time()
        for task in tasks:
            if task.cluster_id not in self._clusters:
                reason = f"unknown cluster {task.cluster_id!r}: its definition never reached this node"
                self._results.append(self._failure(task, reason, now))
                continue
            self._outstanding[task.cluster_id] = self._outstanding.get(task.cluster_id, 0) + 1
            self._queue.append(task)
        self._dispatch()
        self._emit()

    def fail(self, tasks: list[Task], reason: str) -> None:
        """Report tasks as FAILED without running them (e.g. their cluster could not be set up)."""
        now = time.time()
        self._results.extend(self._failure(task, reason, now) for task in tasks)
        self._emit()

    def install_files(self, cluster_id: str, spec: ClusterSpec) -> Path:
        """Create the cluster's working directory, owned by the user jobs run as, and write its
        depends files (``fairpool.nodes.workdirs``); SpecError if refused, OSError if not writable."""
        return install_cluster_files(self.workdir_base, cluster_id, spec, self.run_as)

    def release_cluster(self, cluster_id: str) -> None:
        """Run the cluster's cleanups and remove its directory once none of its tasks is left."""
        self._releasing.add(cluster_id)
        self._maybe_release(cluster_id)

    def statistics(self) -> PoolStatistics:
        live = [w for w in self._workers if w.alive]
        return PoolStatistics(
            workers=len(live),
            ready=sum(1 for w in live if w.ready),
            busy=sum(1 for w in live if w.queue),
            queued=len(self._queue),
            running=sum(len(w.queue) for w in live),
            done=self._done,
            deaths=self._deaths,
        )

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.alive]

    def _estimate(self, cluster_id: str) -> float:
        return self._runtime.get(cluster_id, UNKNOWN_RUNTIME)

    # --- handing out tasks ----------------------------------------------------

    def _dispatch(self) -> None:
        if not self._queue:
            return
        # (a worker being killed takes nothing more: it is about to be replaced)
        workers = sorted((w for w in self._workers if w.alive and w.ready and w.kill is None), key=lambda w: len(w.queue))
        if not workers:
            return
        batches: dict[WorkerHandle, tuple[list[ClusterDef], list[Task]]] = {}
        now = time.time()
        queue = self._queue
        progress = True
        # round-robin, one task per worker per pass, so that a short burst spreads over all workers
        while queue and progress:
            progress = False
            for worker in workers:
                if not queue:
                    break
                task = queue[0]
                estimate = self._estimate(task.cluster_id)
                if worker.queue and (
                    len(worker.queue) >= MAX_DEPTH or worker.queued_estimate + estimate > DEPTH_BUDGET
                ):
                    continue
                queue.popleft()
                progress = True
                held = Held(task, estimate, worker.dispatched)
                worker.dispatched += 1
                if not worker.queue:
                    self._started.append(JobStarted(task.uid, self.node_name, now))
                    held.started = time.monotonic()
                worker.queue.append(held)
                worker.queued_estimate += estimate
                if task.timeout > 0:
                    self._watch.set()
                defs, tasks = batches.setdefault(worker, ([], []))
                if task.cluster_id not in worker.loaded:
                    worker.loaded.add(task.cluster_id)
                    worker.tenants[task.cluster_id] = self._clusters[task.cluster_id].tenant
                    defs.append(self._clusters[task.cluster_id])
                tasks.append(task)
        for worker, (defs, tasks) in batches.items():
            worker.outbox.put_quietly(Dispatch(defs, tasks))
            worker.outbox.flush_now()

    def _emit(self) -> None:
        if self._started or self._results or self._provisional or self._files:
            started, self._started = self._started, []
            results, self._results = self._results, []
            provisional, self._provisional = self._provisional, []
            files, self._files = self._files, []
            self._on_progress(started, results, provisional, files)

    def _task_done(self, cluster_id: str) -> None:
        left = self._outstanding.get(cluster_id, 1) - 1
        if left > 0:
            self._outstanding[cluster_id] = left
            return
        self._outstanding.pop(cluster_id, None)
        if cluster_id in self._releasing:
            self._maybe_release(cluster_id)

    # --- cluster release --------------------------------------------------------

    def _maybe_release(self, cluster_id: str) -> None:
        if self._outstanding.get(cluster_id):
            return  # its last task will call us again
        self._releasing.discard(cluster_id)
        self._clusters.pop(cluster_id, None)
        self._runtime.pop(cluster_id, None)
        waiters: set[WorkerHandle] = set()
        for worker in self._workers:
            if worker.alive and cluster_id in worker.loaded:
                worker.loaded.discard(cluster_id)
                worker.tenants.pop(cluster_id, None)
                worker.releases.append(cluster_id)
                worker.outbox.put(ReleaseCluster(cluster_id))
                waiters.add(worker)
        if waiters:
            self._dir_waiters[cluster_id] = waiters
        else:
            self._remove_dir(cluster_id)

    def _release_done(self, worker: WorkerHandle, cluster_id: str) -> None:
        waiters = self._dir_waiters.get(cluster_id)
        if waiters is None:
            return
        waiters.discard(worker)
        if not waiters:
            del self._dir_waiters[cluster_id]
            self._remove_dir(cluster_id)

    def _remove_dir(self, cluster_id: str) -> None:
        remove_cluster_dir(self.workdir_base, cluster_id)

    # --- one worker slot --------------------------------------------------------

    async def _supervise(self, slot: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep one worker process alive in this slot: start it, serve it, replace it when it dies."""
        first = True
        while True:
            worker = await spawn_worker(self.workdir_base, self.run_as, self.max_output)
            self._workers.append(worker)
            if first:
                task_status.started()
                first = False
            closed = False
            try:
                await self._serve(worker)
                closed = True
            finally:
                with trio.CancelScope(shield=True):
                    await stop_worker(worker, closed_by_worker=closed)
            self._on_death(worker)
            if not worker.ready:
                await trio.sleep(RESPAWN_BACKOFF)

    async def _serve(self, worker: WorkerHandle) -> None:
        """Until the worker's socket closes: send it its batches, handle what it says."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, worker)
            try:
                while True:
                    for message in await worker.stream.receive():
                        self._handle(worker, message)
            except ConnectionClosed:
                pass
            except ProtocolError as exc:
                log.error("worker broke the protocol", pid=worker.process.pid, error=str(exc))
            nursery.cancel_scope.cancel()

    async def _write(self, worker: WorkerHandle) -> None:
        try:
            await worker.outbox.run_writer(worker.stream)
        except ConnectionClosed:
            pass  # the reader sees the EOF too and handles the death

    def _handle(self, worker: WorkerHandle, message: object) -> None:
        if isinstance(message, NodeProgress):
            if message.provisional or message.files:
                # a running job talking: pass it on now, ahead of its result
                self._provisional.extend(message.provisional)
                self._files.extend(message.files)
                if not message.results:
                    self._emit()
                    return
            elif not message.results:
                if worker.releases:
                    self._release_done(worker, worker.releases.popleft())
                return
            self._handle_results(worker, message.results)
        elif isinstance(message, WorkerReady):
            worker.ready = True
            log.debug("worker ready", pid=message.pid)
            self._dispatch()
            self._emit()
        else:
            raise ProtocolError(f"unexpected {type(message).__name__} from a worker")

    def _handle_results(self, worker: WorkerHandle, results: list[JobResult]) -> None:
        now = time.time()
        queue = worker.queue
        replace = msgspec.structs.replace
        for result in results:
            if not queue:
                log.warning("worker sent a result it was not given", pid=worker.process.pid, job=result.uid)
                continue
            held = queue.popleft()
            task = held.task
            if task.uid != result.uid:
                log.warning("worker answered out of order", pid=worker.process.pid, got=result.uid,
                            **job_fields(worker, task))
            worker.queued_estimate -= held.estimate
            if queue:
                head = queue[0]
                self._started.append(JobStarted(head.task.uid, self.node_name, now))
                if head.started is None:
                    head.started = time.monotonic()
            if task.uid in worker.reported or task.uid in self._handed_back:  # told already / not ours
                worker.reported.discard(task.uid)
                worker.cancelling.pop(task.uid, None)
                self._done += 1
                self._task_done(task.cluster_id)
                continue
            if worker.cancelling.pop(task.uid, None) is None:
                # (a task skipped because it was cancelled says nothing about the cluster's runtimes)
                runtime = max(result.finished_at - result.started_at, 0.0)
                old = self._runtime.get(task.cluster_id)
                self._runtime[task.cluster_id] = runtime if old is None else old + _EWMA_WEIGHT * (runtime - old)
            self._results.append(replace(result, node=self.node_name))
            self._done += 1
            self._task_done(task.cluster_id)
        if not queue:
            worker.queued_estimate = 0.0  # no drift from float sums
        self._dispatch()
        self._emit()
