"""The policy seam: what a fair-share policy sees and answers.

A policy owns the ORDER in which queued jobs are offered to the pool; the
scheduler owns placement (which node fits) and quotas. Policies are pure and
deterministic: no clock, no randomness, ties broken by submit sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class QueuedJob(Protocol):
    """The read-only face of a job that a policy ranks."""

    @property
    def uid(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def priority(self) -> int: ...


class Policy(Protocol):
    name: str

    def enqueue(self, job: QueuedJob) -> None:
        """A job became QUEUED (submitted, or requeued after its node was lost)."""

    def dequeue(self, job: QueuedJob) -> None:
        """A queued job left the queue (dispatched or cancelled)."""

    def order(self) -> Iterator[QueuedJob]:
        """Queued jobs in the order the pool should try them."""

    def __len__(self) -> int: ...

    def explain(self, job: QueuedJob) -> str:
        """Why this queued job waits, in one line."""


class UnknownPolicy(ValueError):
    pass
