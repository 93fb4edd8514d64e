"""fifo: the smallest submit sequence goes first (dispy's and Dask's default)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from fairpool.policies.base import QueuedJob


class FifoPolicy:
    """Jobs in submit order; a requeued job keeps its original place (its old sequence).

    A dict keyed by sequence keeps submit order for free (jobs arrive in
    sequence order); the rare out-of-order requeues are kept aside and merged
    in lazily, so the head of a queue of 100,000s of jobs costs nothing to read.
    """

    name = "fifo"

    def __init__(self) -> None:
        self._jobs: dict[int, QueuedJob] = {}
        self._last_seq = -1
        self._requeued: set[int] = set()

    def __len__(self) -> int:
        return len(self._jobs)

    def enqueue(self, job: QueuedJob) -> None:
        if job.seq < self._last_seq:
            self._requeued.add(job.seq)
        else:
            self._last_seq = job.seq
        self._jobs[job.seq] = job

    def dequeue(self, job: QueuedJob) -> None:
        self._jobs.pop(job.seq, None)
        self._requeued.discard(job.seq)

    def order(self) -> Iterator[QueuedJob]:
        """Callers must not enqueue or dequeue while iterating: collect first."""
        if not self._requeued:
            return iter(self._jobs.values())
        requeued = sorted(self._requeued)
        skip = self._requeued
        inorder = (j for j in self._jobs.values() if j.seq not in skip)
        return heapq.merge((self._jobs[s] for s in requeued), inorder, key=lambda j: j.seq)

    def explain(self, job: QueuedJob) -> str:
        if job.seq not in self._jobs:
            return "fifo: not queued"
        ahead = sum(1 for s in self._jobs if s < job.seq)
        return f"fifo: {ahead} job(s) submitted earlier are still queued"
