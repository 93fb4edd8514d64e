"""The client's state of one cluster, without I/O: which jobs exist, what is unsent, unqueued, unacked.

Two kinds of threads touch it. The user's threads register jobs
(``add``/``add_many``: one short critical section per call, however many
jobs), ask for cancellations (``request_cancel``) and wait on jobs
(``wait``). The connection's trio thread takes the new jobs as batched
``Submit`` messages (``take_new``) and the cancellations as ``CancelJobs``
(``take_cancels``), applies what the scheduler says (``apply``) and collects
``AckResults`` (``take_acks``). Jobs stay in ``_unqueued`` until a ``Queued``
acknowledges them, so after a reconnect ``resubmits`` sends exactly those
again, under the same uids (the scheduler ignores a uid it already has, so a
resend never duplicates a job); cancellations are sent again too
(``recancels``) until their jobs end.

A ``JobsUpdate`` is applied in the order that keeps users' view consistent:
jobs started, then provisional results, then files (written under
``dest_path`` by the ``FileReceiver``), then final results -- a job's files
are in place before its future settles. Status changes go through the
``StatusFeed`` (at once, or via the callback thread when there is a
``job_status`` callback).

A reattached cluster's session starts with the dead client's jobs (``adopt``:
from its recover file, or the scheduler's list of the cluster's jobs) and, while
``adopting``, takes any job of its cluster the scheduler reports as its own;
new uids are numbered after every one known (``reserve``). A ``RecoverLog``
gets the uids sent, queued and received (a result before its acknowledgement).

Only ``add``/``add_many``/``request_cancel``/``jobs``/``wait`` and the
counters are called from user threads; everything else runs in the
connection thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any

from fairpool.clients.errors import JobAbandoned
from fairpool.clients.files import FileReceiver
from fairpool.clients.job import Job
from fairpool.clients.reattach import MISSING_REASON
from fairpool.clients.recover import RecoverLog, job_number
from fairpool.clients.statuses import StatusFeed
from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    AnyMessage,
    CancelJobs,
    Error,
    JobOptions,
    JobProvisional,
    JobResult,
    JobSubmit,
    JobsUpdate,
    NodeEvent,
    Queued,
    Submit,
)
from fairpool.payload import loads as load_payload
from fairpool.protocol import DEFAULT_MAX_FRAME

logger = logging.getLogger("fairpool.clients")

#: Bounds on one Submit message, so no frame nears the peer's size limit and the
#: scheduler can start on a huge submission before all of it has arrived.
MAX_SUBMIT_JOBS = 10_000
MAX_SUBMIT_BYTES = 16 * 1024 * 1024
#: One job's pickled arguments must fit in a frame by itself.
MAX_JOB_PAYLOAD = DEFAULT_MAX_FRAME - 64 * 1024


class ClusterSession:
    def __init__(
        self,
        cluster_id: str,
        *,
        feed: Callable[[Callable[[int], None]], StatusFeed] | None = None,
        files: FileReceiver | None = None,
        canceller: Callable[[Job], bool] | None = None,
        job_class: type[Job] = Job,
        recorder: RecoverLog | None = None,
    ) -> None:
        """``feed`` builds the StatusFeed from the session's "futures settled" counter
        (default: no callbacks); ``canceller`` is what ``job.cancel()`` calls; ``recorder``
        logs the jobs' progress to the recover file."""
        self.cluster_id = cluster_id
        self.recorder = recorder
        self.adopting = False  # a reattached cluster: jobs the scheduler reports are ours
        self.whole_listing = False  # the scheduler listed every job of the cluster it holds
        self._job_class = job_class
        self._listed: set[str] = set()
        self._lock = threading.Lock()
        self._settled_all = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._count = 0
        self._new: list[JobSubmit] = []
        self._cancel_new: list[str] = []
        self._flush_requested = False
        self._outstanding = 0  # registered and not yet settled
        self._aborted = 0  # settled without the scheduler's result
        self.feed = feed(self._settled) if feed is not None else StatusFeed(cluster_id, self._settled)
        self.files = files
        self._canceller = canceller
        # connection thread only:
        self._unqueued: dict[str, JobSubmit] = {}
        self._cancelling: set[str] = set()
        self._acks: list[str] = []

    # --- user threads ---------------------------------------------------------

    def add(self, job: Job, payload: bytes, options: JobOptions | None = None) -> bool:
        """Register one job; True if the caller must ask the connection to flush."""
        with self._lock:
            self._register(job, payload, options)
            return self._request_flush()

    def add_many(self, items: Iterable[tuple[Job, bytes]], options: JobOptions | None = None) -> bool:
        """Register many jobs under one lock acquisition (the bulk ``map`` path)."""
        with self._lock:
            for job, payload in items:
                self._register(job, payload, options)
            return self._request_flush()

    def _register(self, job: Job, payload: bytes, options: JobOptions | None) -> None:
        self._count += 1
        uid = f"{self.cluster_id}.{self._count}"
        job.uid = uid
        job.canceller = self._canceller
        self._jobs[uid] = job
        self._new.append(JobSubmit(uid, payload, options))
        self._outstanding += 1

    def _request_flush(self) -> bool:
        # One wake-up per burst: later submits ride along until the connection takes them.
        if self._flush_requested or not (self._new or self._cancel_new):
            return False
        self._flush_requested = True
        return True

    def request_cancel(self, job: Job) -> tuple[bool, bool]:
        """Ask for ``job`` to be cancelled: (it had not ended, the caller must ask for a flush)."""
        with self._lock:
            if self._jobs.get(job.uid) is not job or job.phase.is_final or job.done():
                return False, False
            self._cancel_new.append(job.uid)
            return True, self._request_flush()

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every registered job is settled; False if ``timeout`` passed first."""
        with self._settled_all:
            return self._settled_all.wait_for(lambda: self._outstanding == 0, timeout)

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def all_received(self) -> bool:
        """Every job ended and its result reached us (none was settled locally by ``abort_all``)."""
        with self._lock:
            return self._outstanding == 0 and self._aborted == 0

    def _settled(self, count: int, aborted: int = 0) -> None:
        if count:
            with self._settled_all:
                self._outstanding -= count
                self._aborted += aborted
                if self._outstanding == 0:
                    self._settled_all.notify_all()

    # --- connection thread ----------------------------------------------------

    def take_new(self) -> list[Submit]:
        """The jobs registered since the last call, as Submit messages; they stay unqueued until Queued."""
        with self._lock:
            new, self._new = self._new, []
            self._flush_requested = False
            count = self._count
        if new and self.recorder is not None:
            self.recorder.sent(count)  # before they leave: any uid the scheduler may hold is logged
        for item in new:
            self._unqueued[item.uid] = item
        return self._batches(new)

    def take_cancels(self) -> CancelJobs | None:
        """Cancellations asked for since the last call (after ``take_new``: a job's Submit goes first).

        A job registered after that ``take_new`` keeps its cancellation for the next flush (its
        registration asked for one): sent now, it would overtake the job's Submit, and the scheduler
        would cancel nothing, then queue the job."""
        with self._lock:
            unsent = {item.uid for item in self._new}
            uids = [uid for uid in self._cancel_new if uid not in unsent]
            self._cancel_new = [uid for uid in self._cancel_new if uid in unsent]
        uids = [uid for uid in uids if not self._jobs[uid].phase.is_final]
        self._cancelling.update(uids)
        return CancelJobs(uids) if uids else None

    def resubmits(self) -> list[Submit]:
        """Every job not yet acknowledged by Queued, for a fresh connection."""
        return self._batches(list(self._unqueued.values()))

    def recancels(self) -> CancelJobs | None:
        """Every cancellation whose job has not ended yet, for a fresh connection."""
        self._cancelling = {uid for uid in self._cancelling if not self._jobs[uid].phase.is_final}
        return CancelJobs(sorted(self._cancelling)) if self._cancelling else None

    def _batches(self, items: list[JobSubmit]) -> list[Submit]:
        batches: list[Submit] = []
        batch: list[JobSubmit] = []
        size = 0
        for item in items:
            if batch and (len(batch) >= MAX_SUBMIT_JOBS or size + len(item.payload) > MAX_SUBMIT_BYTES):
                batches.append(Submit(self.cluster_id, batch))
                batch, size = [], 0
            batch.append(item)
            size += len(item.payload)
        if batch:
            batches.append(Submit(self.cluster_id, batch))
        return batches

    @property
    def unqueued(self) -> int:
        return len(self._unqueued)

    def apply(self, message: AnyMessage) -> bool:
        """Apply a job message from the scheduler; False if it is not one this session handles."""
        if isinstance(message, JobsUpdate):
            self._apply_update(message)
        elif isinstance(message, Queued):
            if message.cluster_id == self.cluster_id:
                self._apply_queued(message)
        elif isinstance(message, Error) and message.ref in self._jobs:
            # A refused job: it will never run, so it ends here.
            self._apply_results([JobResult(message.ref, "FAILED", reason=f"refused by the scheduler: {message.reason}")])
        elif isinstance(message, Error) and message.ref == self.cluster_id and self._unqueued:
            # The cluster itself is refused now (closed, or unknown): no job sent will be queued.
            logger.warning("cluster %s: the scheduler refuses the cluster's jobs: %s", self.cluster_id, message.reason)
            reason = f"refused by the scheduler: {message.reason}"
            self._apply_results([JobResult(uid, "FAILED", reason=reason) for uid in list(self._unqueued)])
        elif isinstance(message, NodeEvent):
            self.feed.node_event(message)
        else:
            return False
        return True

    def _apply_queued(self, message: Queued) -> None:
        jobs = self._jobs
        unqueued = self._unqueued
        show = self.feed.show
        ids: dict[str, Any] = {}
        for uid in message.uids:
            unqueued.pop(uid, None)
            job = jobs.get(uid)
            if job is not None:
                if job.phase is JobStatus.CREATED:
                    show(job, JobStatus.QUEUED)
                if job.id is not None:
                    ids[uid] = job.id
        if self.recorder is not None:
            self.recorder.queued(message.uids, message.at, ids)

    def _apply_update(self, update: JobsUpdate) -> None:
        if self.adopting:
            self._adopt_unknown(update)
        jobs = self._jobs
        feed = self.feed
        for started in update.started:
            job = jobs.get(started.uid)
            if job is not None:
                self._unqueued.pop(started.uid, None)  # started implies queued, even if Queued was lost
                job.mark_started(started.node, started.started_at)
                feed.advance(job, JobStatus.RUNNING)
        for provisional in update.provisional:
            self._apply_provisional(provisional)
        if update.files and self.files is not None:
            for chunk in update.files:
                job = jobs.get(chunk.uid)
                # after its end, a job's chunk is one sent again: the user may own the file by now
                if job is not None and not job.phase.is_final:
                    self.files.receive(chunk)
        if update.results:
            self._apply_results(update.results)

    def _apply_provisional(self, provisional: JobProvisional) -> None:
        job = self._jobs.get(provisional.uid)
        if job is None or job.phase.is_final or job.done():
            return
        try:
            value = load_payload(provisional.payload)  # (fairpool.payload: large buffers out of band)
        except Exception as exc:
            logger.warning("job %s: a provisional result could not be unpickled here: %r", job.uid, exc)
            return
        self.feed.advance(job, JobStatus.PROVISIONAL)
        self.feed.show(job, JobStatus.PROVISIONAL, value)

    def _apply_results(self, results: list[JobResult]) -> None:
        jobs = self._jobs
        feed = self.feed
        settled = 0
        for result in results:
            job = jobs.get(result.uid)
            if job is None:
                # Not ours to acknowledge: the scheduler keeps it (a reattached client may claim it).
                continue
            self._unqueued.pop(result.uid, None)
            # Acknowledge duplicates too: the first acknowledgement may have been lost.
            self._acks.append(result.uid)
            if job.phase.is_final or job.done():
                continue  # a duplicate delivered again after a reconnect
            outcome = job.outcome(result)
            feed.advance(job, outcome[0], ran=bool(result.started_at or result.node))
            settled += feed.end(job, outcome)
            self._cancelling.discard(result.uid)
        self._settled(settled)

    def has_acks(self) -> bool:
        return bool(self._acks)

    def take_acks(self) -> AckResults | None:
        if not self._acks:
            return None
        acks, self._acks = self._acks, []
        if self.recorder is not None:
            self.recorder.received(acks)  # first: once acknowledged, the scheduler forgets them
        return AckResults(acks)

    # --- jobs of an earlier client (a reattached cluster) -----------------------

    def adopt(self, known: Iterable[tuple[str, float, Any]], running: Collection[str] = (), *, log: bool = True) -> int:
        """Take on jobs an earlier client submitted, as ``(uid, submitted_at, job.id)``: QUEUED, or RUNNING
        if in ``running``; uids known already (or not of this cluster) are skipped. Returns how many were new."""
        numbered = sorted(((job_number(uid, self.cluster_id), uid, at, job_id) for uid, at, job_id in known),
                          key=lambda item: item[0])
        adopted: list[Job] = []
        with self._lock:
            for number, uid, at, job_id in numbered:
                if not number or uid in self._jobs:
                    continue
                job = self._job_class((), {}, at)
                job.uid, job.id, job.canceller = uid, job_id, self._canceller
                job.phase = job.status = JobStatus.RUNNING if uid in running else JobStatus.QUEUED
                self._jobs[uid] = job
                self._count = max(self._count, number)
                adopted.append(job)
            self._outstanding += len(adopted)
        if adopted and log and self.recorder is not None:
            ids = {job.uid: job.id for job in adopted if job.id is not None}
            self.recorder.queued([job.uid for job in adopted], adopted[0].submitted_at, ids)
        return len(adopted)

    def reserve(self, number: int) -> None:
        """New jobs are numbered after ``number`` (an earlier client may have sent that many)."""
        with self._lock:
            self._count = max(self._count, number)

    def _adopt_unknown(self, update: JobsUpdate) -> None:
        jobs = self._jobs
        unknown = [item.uid for group in (update.started, update.results, update.provisional, update.files)
                   for item in group if item.uid not in jobs]
        if unknown:
            self.adopt((uid, 0.0, None) for uid in dict.fromkeys(unknown))

    def apply_listing(self, entries: list[tuple[str, str, float]]) -> None:
        """The scheduler's list of this cluster's jobs, as (uid, status, submitted_at): each one is ours."""
        self._listed.update(uid for uid, _, _ in entries)
        running = {uid for uid, status, _ in entries if status in ("RUNNING", "PROVISIONAL")}
        self.adopt(((uid, at, None) for uid, _, at in entries), running)

    def settle_missing(self) -> int:
        """After a whole listing: end the jobs we know that the scheduler does not (their results
        will never come); returns how many."""
        listed, self._listed = self._listed, set()
        with self._lock:
            missing = [job for uid, job in self._jobs.items()
                       if uid not in listed and uid not in self._unqueued and not job.phase.is_final]
        settled = 0
        for job in missing:
            settled += self.feed.end(job, (JobStatus.ABANDONED, MISSING_REASON, None, JobAbandoned(MISSING_REASON, job.uid)))
        self._settled(settled)
        if missing and self.recorder is not None:
            self.recorder.received(job.uid for job in missing)  # nothing more to wait for
        return len(missing)

    def abort_all(self, error: BaseException) -> int:
        """Settle every unsettled job with ``error`` (the cluster will not hear about them again).

        A job whose final result arrived but waits on the callback thread is left to it.
        """
        with self._lock:
            jobs = list(self._jobs.values())
        aborted = sum(1 for job in jobs if not job.phase.is_final and job.abort(error))
        self._settled(aborted, aborted)
        return aborted

