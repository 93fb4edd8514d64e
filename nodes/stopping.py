"""Stopping tasks a worker holds: which to kill (cancels, timeouts) and who pays for a worker's death.

The ``WorkerPool`` asks two questions of a ``WorkerHandle`` and leaves the
answers here, apart from its bookkeeping:

* ``check_worker(worker, now)``: is the task the worker runs (read from its
  started-task counter, so a prefetched task that started unnoticed counts)
  cancelled or out of time? Then signal the worker's process group and every
  descendant of the worker (``fairpool.nodes.proctree``: found through /proc
  while the worker lives, so a grandchild in a session of its own goes too):
  SIGTERM now, SIGKILL once ``TERM_GRACE`` has passed on a later check. The
  worker's socket then closes and the pool replaces it (``stop_worker``
  finishes off what is left of the group and the tree).
* ``death_outcome(worker)``: the worker is gone; which held tasks end FAILED
  (and why) and which go back to the node queue to run on another worker.
"""

from __future__ import annotations

import signal

import structlog

from fairpool.messages import Task

from .workerproc import TERM_GRACE, WorkerHandle, death_reason, signal_group

log = structlog.get_logger("fairpool.node")

#: While a task has a timeout or a cancel is pending, the pool's watchdog looks this often (seconds).
WATCH_INTERVAL = 0.05


def cancel_reason(reason: str) -> str:
    """The reason reported for a cancelled task: always starting with "cancelled"."""
    reason = reason.strip()
    if not reason:
        return "cancelled"
    return reason if reason.startswith("cancelled") else f"cancelled: {reason}"


def timeout_reason(timeout: float) -> str:
    return f"timed out after {timeout:g} s"


def needs_watching(worker: WorkerHandle) -> bool:
    """Whether the watchdog must keep looking at this worker."""
    if not worker.alive:
        return False
    if worker.kill is not None or worker.cancelling:
        return True
    return any(held.task.timeout > 0 for held in worker.queue)


def job_fields(worker: WorkerHandle, task: Task) -> dict[str, str]:
    """The fields of a node log line about ``task`` (the node's name comes bound by the daemon)."""
    return {"job": task.uid, "tenant": worker.tenants.get(task.cluster_id, ""), "cluster": task.cluster_id}


def check_worker(worker: WorkerHandle, now: float) -> None:
    """Kill the worker's process group if the task it runs is cancelled or out of time.

    ``now`` is ``time.monotonic()``.
    """
    if worker.kill is not None:
        if now >= worker.kill_deadline and not worker.killed_hard:
            worker.killed_hard = True
            target = next((h.task for h in worker.queue if h.task.uid == worker.kill[0]), None)
            fields = job_fields(worker, target) if target is not None else {"job": worker.kill[0]}
            log.warning("a job's processes outlived SIGTERM, killing them", pid=worker.process.pid, **fields)
            signal_group(worker.pgid, signal.SIGKILL)
            worker.tree.kill(_roots(worker))
        elif _collect(worker):
            worker.tree.signal(signal.SIGTERM)  # what the job forked since the SIGTERM
        return
    index = worker.running_index()
    if index < 0:
        return
    held = worker.queue[index]
    if held.started is None:
        held.started = now  # it was prefetched and is now seen running
    uid = held.task.uid
    if uid in worker.cancelling:
        kill(worker, held.task, worker.cancelling[uid], now)
    elif held.task.timeout > 0 and now - held.started >= held.task.timeout:
        kill(worker, held.task, timeout_reason(held.task.timeout), now)


def kill(worker: WorkerHandle, task: Task, reason: str, now: float) -> None:
    """Signal the worker's whole group to stop ``task`` (and the worker with it)."""
    log.info("stopping a job", pid=worker.process.pid, reason=reason, **job_fields(worker, task))
    worker.kill = (task.uid, reason)
    worker.kill_deadline = now + TERM_GRACE
    _collect(worker)  # first: once the worker dies, its orphans are no longer its descendants
    signal_group(worker.pgid, signal.SIGTERM)
    worker.tree.signal(signal.SIGTERM)


def _roots(worker: WorkerHandle) -> list[int]:
    """The worker's pid while it is still its own (unreaped): the root of its jobs' process tree."""
    return [worker.process.pid] if worker.process.returncode is None else []


def _collect(worker: WorkerHandle) -> int:
    """Add the worker's descendants to its tree; how many are new."""
    return worker.tree.collect(_roots(worker))


def death_outcome(worker: WorkerHandle) -> tuple[list[tuple[Task, str]], list[Task]]:
    """For a worker that is gone: (tasks to report FAILED with their reasons, tasks to run again).

    The task that was running when the worker died is to blame (or is the
    one it was killed for). A task cancelled while held ends cancelled. The
    others run again, in their order: those after the running one never
    started; those before it ran, but their batched results died with it.
    """
    held = [h.task for h in worker.queue]
    running = worker.running_index()
    culprit = held.pop(running) if running >= 0 else None
    ended: list[tuple[Task, str]] = []
    if worker.kill is not None:
        target, reason = worker.kill
        if culprit is not None and culprit.uid != target:
            # the target ended just before the signal: this one was not meant to die
            held.insert(running, culprit)
            culprit = None
        if culprit is not None:
            ended.append((culprit, reason))
        else:
            ended.extend((task, reason) for task in held if task.uid == target)
    elif culprit is not None:
        ended.append((culprit, worker.cancelling.get(culprit.uid, death_reason(worker.process.returncode))))
    gone = {task.uid for task, _ in ended}
    for task in held:
        if task.uid in worker.cancelling and task.uid not in gone:
            ended.append((task, worker.cancelling[task.uid]))
            gone.add(task.uid)
    return ended, [task for task in held if task.uid not in gone]
