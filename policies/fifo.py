"""fifo: the smallest submit sequence goes first (dispy's and Dask's default).

Tenants are ordered by the sequence of their oldest queued job, so the merge
of their queues is the pool's submit order; a requeued job keeps its original
place (its old sequence). In-tenant priority is ignored: first in, first out.

- ``mode = "strict"``: when the oldest job fits on no node, nothing
  younger starts (it cannot be overtaken, so it cannot starve).
- ``mode = "skip"`` (default, as dispy and Dask behave): a job that fits nowhere is passed over for the round and
  the next one in submit order is tried (better use of the pool; a big job may
  wait long).

A tenant held by its own limits (max_running, max resources) never blocks the
others in either mode.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import ClassVar

from .base import NO_FIT_SKIP_JOB, NO_FIT_STOP, Explanation, QueuedJob
from .core import PolicyBase
from .heap import Key
from .options import Option

MODES = ("strict", "skip")


class FifoPolicy(PolicyBase):
    name = "fifo"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("mode", "choice", "skip", "strict: the oldest job blocks the pool until it fits; "
               "skip: jobs that fit nowhere are passed over", MODES),
    )
    by_priority = False

    def __init__(self, mode: str = "skip") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"fifo mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.no_fit = NO_FIT_STOP if mode == "strict" else NO_FIT_SKIP_JOB

    def _key(self, tenant: str) -> Key:
        return self.head_order(tenant)

    def order(self) -> Iterator[QueuedJob]:
        queues = [self._tenants[t].queue.jobs() for t in sorted(self._tenants) if self.backlogged(t)]
        return heapq.merge(*queues, key=lambda job: job.seq)

    def explain(self, job: QueuedJob, now: float | None = None) -> Explanation:
        base = super().explain(job, now)
        if not base.queued:
            return base
        earlier = sum(1 for state in self._tenants.values() for other in state.queue.jobs()
                      if other.seq < job.seq)
        reason = f"{earlier} job(s) submitted earlier are still queued"
        return Explanation(self.name, job.uid, job.tenant, True, base.rank, base.tenants, earlier,
                           None, None, reason)
