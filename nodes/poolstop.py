"""How the worker pool stops tasks and gives them back: cancel, the watchdog, hand-back, deaths.

``StoppingTasks`` is the part of ``WorkerPool`` (``fairpool.nodes.workerpool``)
that ends tasks other than by their result; the pool's bookkeeping it works
on is named by ``PoolBook``. Killing a worker's process tree, and who pays
for a worker's death, are ``fairpool.nodes.stopping``'s.

Stopping a task (``cancel``, or its ``Task.timeout`` passing): one waiting in
the node queue is dropped; one prefetched by a worker is named to it in a
``CancelTasks`` and the worker skips it; one that runs has its worker's whole
process group killed (SIGTERM, SIGKILL after a grace), and the worker is
replaced. Each such task is reported FAILED with the reason ("cancelled...",
"timed out after N s"). A watchdog task looks at the running tasks while any
has a timeout or a pending cancel, reading each worker's started-task counter,
so a prefetched task that started before its worker read the cancel is caught.

Handing back (``hand_back``: the node is leaving) gives up every task held
here: queued ones are dropped, workers holding any are killed, and none of
them is reported from here again -- the scheduler has them back; what the
node tells a scheduler it still holds (``held_uids``, ``running``) leaves
them out.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

import cloudpickle
import structlog
import trio

from fairpool.messages import CancelTasks, JobResult, JobStarted, Task

from .stopping import (
    WATCH_INTERVAL,
    cancel_reason,
    check_worker,
    death_outcome,
    job_fields,
    kill,
    needs_watching,
)
from .workerproc import WorkerHandle, death_reason

log = structlog.get_logger("fairpool.node")


class PoolBook(Protocol):
    """What of the pool's state and bookkeeping ``StoppingTasks`` uses (``WorkerPool`` has it all)."""

    node_name: str
    _queue: deque[Task]
    _workers: list[WorkerHandle]
    _results: list[JobResult]
    _watch: trio.Event
    _handed_back: set[str]
    _done: int
    _deaths: int

    def _failure(self, task: Task, reason: str, now: float) -> JobResult: ...
    def _task_done(self, cluster_id: str) -> None: ...
    def _release_done(self, worker: WorkerHandle, cluster_id: str) -> None: ...
    def _dispatch(self) -> None: ...
    def _emit(self) -> None: ...


class StoppingTasks:
    """``WorkerPool``'s cancel, watchdog, hand-back and worker deaths (see the module docstring)."""

    def cancel(self: PoolBook, uids: list[str], reason: str = "cancelled") -> None:
        """Stop these tasks wherever they are (see the module docstring); unknown uids are ignored:
        their results were reported already, or will be."""
        wanted = set(uids)
        reason = cancel_reason(reason)
        now = time.time()
        if self._queue and wanted:
            kept: deque[Task] = deque()
            for task in self._queue:
                if task.uid in wanted:
                    wanted.discard(task.uid)
                    self._results.append(self._failure(task, reason, now))
                    self._done += 1
                    self._task_done(task.cluster_id)
                else:
                    kept.append(task)
            self._queue = kept
        for worker in self._workers:
            if not wanted:
                break
            if not worker.alive:
                continue
            named = [held.task.uid for held in worker.queue if held.task.uid in wanted]
            if not named:
                continue
            wanted.difference_update(named)
            running = worker.running_index()
            for index, held in enumerate(worker.queue):
                if held.task.uid in named and index > max(running, 0) and held.task.uid not in worker.reported:
                    # Not started (it waits behind a job that may run for hours): it ends now; the
                    # worker skips it when it reads the cancel, and that report is dropped.
                    worker.reported.add(held.task.uid)
                    self._results.append(self._failure(held.task, reason, now))
            for uid in named:
                worker.cancelling[uid] = reason
            # Those still waiting in the worker are skipped there; a running one is killed here.
            worker.outbox.put(CancelTasks(named, reason))
            check_worker(worker, time.monotonic())
            self._watch.set()
        self._emit()

    def held_uids(self: PoolBook) -> set[str]:
        """Every task this node holds: queued here, prefetched by a worker, or running."""
        uids = {task.uid for task in self._queue}
        for worker in self._workers:
            uids.update(held.task.uid for held in worker.queue)
        return uids - self._handed_back if self._handed_back else uids

    def hand_back(self: PoolBook) -> list[str]:
        """Give up every task held here (the node is leaving): the queued ones are dropped, the
        workers holding any are killed; none of them is reported from here. Returns their uids."""
        uids = [task.uid for task in self._queue]
        for task in self._queue:
            self._task_done(task.cluster_id)
        self._queue.clear()
        now = time.monotonic()
        for worker in self._workers:
            held = [h.task for h in worker.queue if h.task.uid not in self._handed_back]
            if not worker.alive or not held:
                continue
            uids.extend(task.uid for task in held if task.uid not in worker.reported)
            self._handed_back.update(task.uid for task in held)
            if worker.kill is None:
                kill(worker, held[0], "handed back to the scheduler", now)
            self._watch.set()
        self._handed_back.update(uids)
        return uids

    def running(self: PoolBook) -> list[JobStarted]:
        """The tasks running now, as started events (told again to a scheduler after a reconnect)."""
        now = time.time()
        events = []
        for worker in self._workers:
            index = worker.running_index()
            if index >= 0 and worker.queue[index].task.uid not in self._handed_back:
                held = worker.queue[index]
                started_at = now - (time.monotonic() - held.started) if held.started is not None else now
                events.append(JobStarted(held.task.uid, self.node_name, started_at))
        return events

    async def _watchdog(self: PoolBook) -> None:
        """Look at the running tasks while any has a timeout or a pending cancel."""
        while True:
            if not any(needs_watching(worker) for worker in self._workers):
                await self._watch.wait()
                self._watch = trio.Event()
                continue
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.alive:
                    check_worker(worker, now)
            await trio.sleep(WATCH_INTERVAL)

    def _failure(self: PoolBook, task: Task, reason: str, now: float) -> JobResult:
        return JobResult(
            task.uid,
            "FAILED",
            cloudpickle.dumps(RuntimeError(reason)),
            traceback=reason,
            reason=reason,
            started_at=now,
            finished_at=time.time(),
            node=self.node_name,
        )

    def _on_death(self: PoolBook, worker: WorkerHandle) -> None:
        worker.alive = False
        self._workers.remove(worker)
        self._deaths += 1
        if worker.kill is None:  # (a kill of ours was logged with its job when it was sent)
            running = worker.running_index()
            culprit = job_fields(worker, worker.queue[running].task) if running >= 0 else {}
            log.warning("worker died", pid=worker.process.pid, reason=death_reason(worker.process.returncode),
                        held=len(worker.queue), **culprit)
        ended, again = death_outcome(worker)
        if self._handed_back:  # the scheduler has those back: they end (here) without a word
            gone = [task for task, _ in ended if task.uid in self._handed_back]
            gone += [task for task in again if task.uid in self._handed_back]
            ended = [(task, reason) for task, reason in ended if task.uid not in self._handed_back]
            again = [task for task in again if task.uid not in self._handed_back]
            for task in gone:
                self._done += 1
                self._task_done(task.cluster_id)
        worker.queue.clear()
        if worker.counter is not None:
            worker.counter.close()
        self._queue.extendleft(reversed(again))  # first in line for the next worker
        now = time.time()
        for task, reason in ended:
            self._results.append(self._failure(task, reason, now))
            self._done += 1
            self._task_done(task.cluster_id)
        for cluster_id in list(worker.releases):
            self._release_done(worker, cluster_id)
        self._dispatch()
        self._emit()
