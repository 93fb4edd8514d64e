"""``Job``: one submitted call, a ``concurrent.futures.Future`` with the job's record attached.

A Job is created in the user's thread by ``submit`` and from then on written
only by the cluster's connection thread (``mark_queued``, ``mark_started``,
``resolve``), which fills in the record *before* settling the future, so a
caller woken by ``result()`` sees every field. Per-job overhead is kept low:
the fields live in ``__slots__``, the Future underneath is a ``LeanFuture``,
and there is no lock or event beyond the Future's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import InvalidStateError
from dataclasses import dataclass
from typing import Any

import cloudpickle

from fairpool.clients.errors import JobAbandoned, JobCancelled, JobFailed
from fairpool.clients.leanfuture import LeanFuture
from fairpool.jobstatus import JobStatus
from fairpool.messages import JobResult


@dataclass(frozen=True)
class JobOptions:
    """Per-job options given through ``cluster.options(...)``.

    Recorded on the job (``job.options``) only: the wire's ``JobSubmit`` has
    no field for them yet, so the scheduler does not see or enforce them.
    """

    resources: Mapping[str, Any] | None = None
    timeout: float | None = None
    priority: int | None = None


class Job(LeanFuture):
    """A job of a cluster: a Future plus its uid, status, output and timestamps."""

    __slots__ = (
        "uid",
        "id",
        "status",
        "status_reason",
        "args",
        "kwargs",
        "options",
        "stdout",
        "stderr",
        "traceback",
        "exit_code",
        "node",
        "submitted_at",
        "started_at",
        "finished_at",
        "provisional",
    )

    def __init__(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        submitted_at: float,
        options: JobOptions | None = None,
    ) -> None:
        super().__init__()
        self.uid = ""  # set by the session when the job is registered
        self.id: Any = None  # free for the user
        self.status = JobStatus.CREATED
        self.status_reason = ""
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.stdout = ""
        self.stderr = ""
        self.traceback = ""
        self.exit_code: int | None = None
        self.node = ""
        self.submitted_at = submitted_at
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.provisional: Any = None

    def __call__(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its result, or None if it failed (dispy style).

        Raises ``TimeoutError`` if ``timeout`` passes first.
        """
        if self.exception(timeout) is not None:
            return None
        return self.result()

    def cancel(self) -> bool:
        """Return False: the job runs remotely, so a local Future.cancel cannot stop it.

        Cancelling a Future alone would mark it done while the job goes on
        running and later delivers a result; a job is only ever settled by
        what the scheduler reports.
        """
        return False

    def __repr__(self) -> str:
        shown = f" id={self.id!r}" if self.id is not None else ""
        return f"<Job {self.uid or '(unsubmitted)'}{shown} {self.status.value}>"

    # --- written by the cluster's connection thread only ----------------------

    def mark_queued(self) -> None:
        if self.status is JobStatus.CREATED:
            self.status = JobStatus.QUEUED

    def mark_started(self, node: str, started_at: float) -> None:
        # A re-sent "started" after a reconnect must not move a settled job backwards.
        if self.status in (JobStatus.CREATED, JobStatus.QUEUED):
            self.status = JobStatus.RUNNING
        if not self.status.is_final:
            self.node = node
            self.started_at = started_at

    def resolve(self, result: JobResult) -> bool:
        """Record a final result and settle the future; False if it was settled already."""
        if self.done():
            return False  # a duplicate delivered again after a reconnect
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.traceback = result.traceback
        self.exit_code = result.exit_code
        self.node = result.node or self.node
        self.started_at = result.started_at or self.started_at
        self.finished_at = result.finished_at or None
        status = result.status
        if status == "FINISHED":
            try:
                # A program's node may leave the payload empty: its result is the exit code.
                value = cloudpickle.loads(result.payload) if result.payload else result.exit_code
            except Exception as exc:
                reason = f"the result could not be unpickled here: {exc!r}"
                return self._settle(JobStatus.FAILED, reason, JobFailed(reason, self.uid))
            self.status = JobStatus.FINISHED
            return self._set(value, None)
        if status == "FAILED":
            reason = result.reason or "the job raised an exception"
            return self._settle(JobStatus.FAILED, reason, self._remote_exception(result, reason))
        if status == "ABANDONED":
            reason = result.reason or "its node was lost and the cluster is not reentrant"
            return self._settle(JobStatus.ABANDONED, reason, JobAbandoned(reason, self.uid))
        if status == "CANCELLED":
            reason = result.reason or "cancelled"
            return self._settle(JobStatus.CANCELLED, reason, JobCancelled(reason, self.uid))
        reason = f"the scheduler reported an unknown status {status!r}"
        return self._settle(JobStatus.FAILED, reason, JobFailed(reason, self.uid))

    def abort(self, error: BaseException) -> bool:
        """Settle a job that will never hear from the scheduler again; its status stays as known."""
        if self.done():
            return False
        self.status_reason = str(error)
        return self._set(None, error)

    def _remote_exception(self, result: JobResult, reason: str) -> BaseException:
        exc: BaseException
        if result.payload:
            try:
                loaded = cloudpickle.loads(result.payload)
            except Exception as unpickle_error:
                loaded = JobFailed(f"{reason} (its exception could not be unpickled here: {unpickle_error!r})", self.uid)
            exc = loaded if isinstance(loaded, BaseException) else JobFailed(f"{reason}: {loaded!r}", self.uid)
        else:
            exc = JobFailed(reason, self.uid)
        if result.traceback:
            # Shown under the local traceback when result() re-raises it.
            where = f" on node {result.node}" if result.node else ""
            exc.add_note(f"remote traceback of job {self.uid}{where}:\n{result.traceback.rstrip()}")
        return exc

    def _settle(self, status: JobStatus, reason: str, error: BaseException) -> bool:
        self.status = status
        self.status_reason = reason
        return self._set(None, error)

    def _set(self, value: Any, error: BaseException | None) -> bool:
        try:
            if error is None:
                self.set_result(value)
            else:
                self.set_exception(error)
        except InvalidStateError:
            return False
        return True
