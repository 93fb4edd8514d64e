"""``Job``: one submitted call, a ``concurrent.futures.Future`` with the job's record attached.

A Job is created in the user's thread by ``submit`` and from then on written
by the cluster's connection thread, which fills in the record *before*
settling the future, so a caller woken by ``result()`` sees every field.
Per-job overhead is kept low: the fields live in ``__slots__``, the Future
underneath is a ``LeanFuture``, and there is no lock or event beyond the
Future's own.

Two statuses: ``phase`` is where the connection thread knows the job to be;
``status`` is what users see. They are one and the same unless the cluster
has a ``job_status`` callback: then each change of ``status`` -- and the
settling of the future -- happens on the callback thread just before the
callback sees it, so the callback always reads the status it is called for
(see ``fairpool.clients.session``).

A job that ends CANCELLED is a cancelled Future (``cancelled()`` is True);
``result()`` and ``exception()`` raise ``JobCancelled`` (a ``CancelledError``)
naming the reason. ``cancel()`` asks the scheduler to cancel the job: it
returns True if the job had not ended yet, and the job ends CANCELLED unless
it finished first.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError, InvalidStateError
from typing import Any

import cloudpickle

from fairpool.clients.errors import JobAbandoned, JobCancelled, JobFailed
from fairpool.clients.leanfuture import LeanFuture
from fairpool.clients.options import JobOptions
from fairpool.jobstatus import JobStatus
from fairpool.messages import JobResult
from fairpool.payload import loads as load_payload

__all__ = ["Job", "JobOptions", "Outcome"]

#: What a final result means for a job: (status, reason, value, error).
Outcome = tuple[JobStatus, str, Any, BaseException | None]


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
        "phase",
        "canceller",
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
        self.phase = JobStatus.CREATED
        self.canceller: Callable[[Job], bool] | None = None  # set by the cluster that registers it

    def __call__(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its result, or None if it failed (dispy style).

        Raises ``TimeoutError`` if ``timeout`` passes first.
        """
        try:
            if self.exception(timeout) is not None:
                return None
        except CancelledError:
            return None
        return self.result()

    def cancel(self) -> bool:
        """Ask the scheduler to cancel this job; True if it had not ended (it then ends CANCELLED,
        unless it finished first), False if it had or it is not a cluster's job."""
        canceller = self.canceller
        return canceller(self) if canceller is not None else False

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        except CancelledError as exc:
            if isinstance(exc, JobCancelled):
                raise
            raise JobCancelled(self.status_reason or "cancelled", self.uid) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(timeout)
        except CancelledError as exc:
            if isinstance(exc, JobCancelled):
                raise
            raise JobCancelled(self.status_reason or "cancelled", self.uid) from None

    def __repr__(self) -> str:
        shown = f" id={self.id!r}" if self.id is not None else ""
        return f"<Job {self.uid or '(unsubmitted)'}{shown} {self.status.value}>"

    # --- written by the cluster's connection thread only ----------------------

    def mark_started(self, node: str, started_at: float) -> None:
        """Record where and when it started (the session moves its status)."""
        if not self.phase.is_final:
            self.node = node
            self.started_at = started_at

    def resolve(self, result: JobResult) -> bool:
        """Record a final result and settle the future at once; False if it had ended already."""
        if self.phase.is_final or self.done():
            return False  # a duplicate delivered again after a reconnect
        outcome = self.outcome(result)
        self.phase = outcome[0]
        return self.settle(*outcome)

    def outcome(self, result: JobResult) -> Outcome:
        """Fill in the record from a final result and say how the job ends (without settling it)."""
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
                # (large buffers come back out of band: views of the payload, see fairpool.payload)
                value = load_payload(result.payload) if result.payload else result.exit_code
            except Exception as exc:
                reason = f"the result could not be unpickled here: {exc!r}"
                return JobStatus.FAILED, reason, None, JobFailed(reason, self.uid)
            return JobStatus.FINISHED, "", value, None
        if status == "FAILED":
            reason = result.reason or "the job raised an exception"
            return JobStatus.FAILED, reason, None, self._remote_exception(result, reason)
        if status == "ABANDONED":
            reason = result.reason or "its node was lost and the cluster is not reentrant"
            return JobStatus.ABANDONED, reason, None, JobAbandoned(reason, self.uid)
        if status == "CANCELLED":
            reason = result.reason or "cancelled"
            return JobStatus.CANCELLED, reason, None, JobCancelled(reason, self.uid)
        reason = f"the scheduler reported an unknown status {status!r}"
        return JobStatus.FAILED, reason, None, JobFailed(reason, self.uid)

    def settle(self, status: JobStatus, reason: str, value: Any, error: BaseException | None) -> bool:
        """Show the final status and settle the future; False if it was settled already."""
        if self.done():
            return False
        self.status = status
        self.status_reason = reason
        if status is JobStatus.CANCELLED:
            # A cancelled Future, as concurrent.futures knows one: wait() and as_completed() see it done.
            if not LeanFuture.cancel(self):
                return False
            self.set_running_or_notify_cancel()
            return True
        return self._set(value, error)

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

    def _set(self, value: Any, error: BaseException | None) -> bool:
        try:
            if error is None:
                self.set_result(value)
            else:
                self.set_exception(error)
        except InvalidStateError:
            return False
        return True
