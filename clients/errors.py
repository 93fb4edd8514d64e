"""The exceptions the client library raises, in one place so users can catch them by family.

``ClusterError`` is the root. Connection trouble derives from the builtin
``ConnectionError`` as well, so ``except ConnectionError`` catches an
unreachable or refusing scheduler; job outcomes (``JobFailed``,
``JobAbandoned``, ``JobCancelled``) are what a ``Job`` future raises when the
job did not produce a value.
"""

from __future__ import annotations

from concurrent.futures import CancelledError


class ClusterError(Exception):
    """Root of every error the client library raises itself."""


class ClientConfigError(ClusterError, ValueError):
    """A setting (scheduler address, secret file, argument) is unusable."""


class ComputationError(ClusterError, ValueError):
    """The computation or its depends cannot be packed for the nodes."""


class ArgumentsError(ClusterError, ValueError):
    """A job's arguments cannot be pickled, or are too large to send."""


class SchedulerConnectionError(ClusterError, ConnectionError):
    """The scheduler could not be reached, or it refused us (authentication or the cluster)."""


class ClusterRefused(SchedulerConnectionError):
    """The scheduler answered OpenCluster with an error: this cluster cannot be opened."""


class ClusterNotFound(ClusterRefused):
    """Re-attaching: the scheduler has no such cluster for this tenant (never opened there,
    another tenant's, or over with every result collected)."""


class NoRecoverFile(ClusterError, FileNotFoundError):
    """``recover_jobs()`` found no recover file in the working directory."""


class ClusterClosedError(ClusterError, RuntimeError):
    """The cluster was closed (or its connection thread stopped): it accepts no more work."""


class JobError(ClusterError):
    """A job ended without a value; ``reason`` says why, ``uid`` names the job."""

    def __init__(self, reason: str, uid: str = "") -> None:
        super().__init__(f"job {uid}: {reason}" if uid else reason)
        self.reason = reason
        self.uid = uid

    def __reduce__(self) -> tuple[type[JobError], tuple[str, str]]:
        # Pickling (e.g. to log or forward) must rebuild from the two fields, not from str(self).
        return (type(self), (self.reason, self.uid))


class JobFailed(JobError):
    """The job failed and its exception could not be shipped back (see ``job.traceback``)."""


class JobAbandoned(JobError):
    """The job's node was lost and the cluster is not reentrant: the job was not rerun."""


class JobCancelled(JobError, CancelledError):
    """The job was cancelled before it produced a value."""
