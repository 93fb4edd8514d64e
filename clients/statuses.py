"""How a cluster's job status changes reach users: at once, or in order through the callback thread.

``StatusFeed`` is the session's one way to change what users see of a job
(``job.status``, ``job.provisional``, the settled future). Without a
``job_status`` callback it writes them at once, on the connection thread.
With one, each change is posted to the cluster's ``CallbackThread`` and
applied there just before the callback is called with the job, so that the
callback reads the status it is called for, a job's statuses arrive in
order, and the future of a job settles right before its final callback.

Users always see the whole story: a job whose QUEUED or RUNNING the
scheduler never reported on its own (it ran and finished inside one batch)
gets them shown first (``advance``). ``cluster_status(event, node, job)`` is
called on the same thread for each ``NodeEvent``; ``node`` is a ``NodeInfo``:
the node's name (a ``str``) carrying its ``cpus``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fairpool.clients.job import Job, Outcome
from fairpool.clients.notify import CallbackThread
from fairpool.jobstatus import JobStatus
from fairpool.messages import NodeEvent

logger = logging.getLogger("fairpool.clients")

_KEEP: Any = object()  # "leave job.provisional as it is"
# statuses only a job that ran can reach: RUNNING is shown before them
_RAN_TO = frozenset({JobStatus.RUNNING, JobStatus.PROVISIONAL, JobStatus.FINISHED, JobStatus.FAILED})


class NodeInfo(str):
    """A node as ``cluster_status`` sees it: its name, with ``cpus``."""

    cpus: int

    def __new__(cls, name: str, cpus: int = 0) -> NodeInfo:
        info = super().__new__(cls, name)
        info.cpus = cpus
        return info


class StatusFeed:
    def __init__(
        self,
        cluster_id: str,
        on_settled: Callable[[int], None],
        *,
        job_status: Callable[[Job], Any] | None = None,
        cluster_status: Callable[[str, NodeInfo, Job | None], Any] | None = None,
        callbacks: CallbackThread | None = None,
    ) -> None:
        if (job_status is not None or cluster_status is not None) and callbacks is None:
            raise ValueError("callbacks need a CallbackThread")
        self.cluster_id = cluster_id
        self._on_settled = on_settled
        self._job_status = job_status
        self._cluster_status = cluster_status
        self._callbacks = callbacks

    @property
    def deferred(self) -> bool:
        """True if changes are applied on the callback thread (a job_status callback is set)."""
        return self._job_status is not None

    # --- connection thread ------------------------------------------------------

    def show(self, job: Job, status: JobStatus, provisional: Any = _KEEP) -> None:
        """A non-final status change (and, for PROVISIONAL, the new value)."""
        job.phase = status
        if self._job_status is None:
            if provisional is not _KEEP:
                job.provisional = provisional
            job.status = status
        else:
            assert self._callbacks is not None
            self._callbacks.post(self._deliver, job, status, provisional)

    def advance(self, job: Job, to: JobStatus, ran: bool = True) -> None:
        """Show the statuses a job went through unreported on its way to ``to``."""
        if job.phase is JobStatus.CREATED and (ran or to in (JobStatus.CANCELLED, JobStatus.ABANDONED)):
            self.show(job, JobStatus.QUEUED)
        if job.phase is JobStatus.QUEUED and ran and to in _RAN_TO:
            self.show(job, JobStatus.RUNNING)  # shown, even when ``to`` is RUNNING itself

    def end(self, job: Job, outcome: Outcome) -> int:
        """The job's final status; returns how many futures settled now (0 or 1; deferred: 0)."""
        job.phase = outcome[0]
        if self._job_status is None:
            return 1 if job.settle(*outcome) else 0
        assert self._callbacks is not None
        self._callbacks.post(self._deliver_end, job, outcome)
        return 0

    def node_event(self, event: NodeEvent) -> None:
        if self._cluster_status is not None:
            assert self._callbacks is not None
            self._callbacks.post(self._deliver_node_event, event)

    # --- callback thread --------------------------------------------------------

    def _deliver(self, job: Job, status: JobStatus, provisional: Any) -> None:
        if job.done():
            return  # aborted meanwhile (the cluster closed): nothing more to tell
        if provisional is not _KEEP:
            job.provisional = provisional
        job.status = status
        self._call_job_status(job)

    def _deliver_end(self, job: Job, outcome: Outcome) -> None:
        if job.settle(*outcome):
            self._on_settled(1)
            self._call_job_status(job)

    def _call_job_status(self, job: Job) -> None:
        assert self._job_status is not None
        try:
            self._job_status(job)
        except Exception:
            logger.exception(
                "cluster %s: the job_status callback raised for job %s (%s); carrying on",
                self.cluster_id, job.uid, job.status.value,
            )

    def _deliver_node_event(self, event: NodeEvent) -> None:
        assert self._cluster_status is not None
        try:
            self._cluster_status(event.event, NodeInfo(event.node, event.cpus), None)
        except Exception:
            logger.exception(
                "cluster %s: the cluster_status callback raised for %s of node %s; carrying on",
                self.cluster_id, event.event, event.node,
            )
