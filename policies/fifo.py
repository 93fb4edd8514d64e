"""fifo: the smallest submit sequence goes first (dispy's and Dask's default).

One queue for the whole pool, in submit order; a requeued job keeps its
original place (its old sequence). Tenants and in-tenant priority play no
part: first in, first out.

- ``mode = "skip"`` (default, as dispy and Dask behave): a job that fits
  nowhere is passed over for the round and the next one in submit order is
  tried (better use of the pool; a big job may wait long).
- ``mode = "strict"``: when the oldest job fits on no node, nothing younger
  starts (it cannot be overtaken, so it cannot starve).

A tenant held by its own limits (max_running, max resources) never blocks the
others in either mode.

Unlike the fair policies, fifo keeps no accounts, so it is built for speed:
a dict in submit order (jobs arrive in sequence), the rare out-of-order
requeues merged in, and removals during a decision round deferred to the next
round, so that taking the head of 100,000 queued jobs costs O(1).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Set
from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

from .base import NO_FIT_SKIP_JOB, NO_FIT_STOP, Explanation, QueuedJob
from .options import Option
from .resources import Resources
from .tenants import TenantConfig

MODES = ("strict", "skip")


@mypyc_attr(allow_interpreted_subclasses=True)  # third-party policies build on it
class FifoPolicy:
    name = "fifo"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("mode", "choice", "skip", "skip: jobs that fit nowhere are passed over; "
               "strict: the oldest job blocks the pool until it fits", MODES),
    )

    def __init__(self, mode: str = "skip") -> None:
        if mode not in MODES:
            raise ValueError(f"fifo mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.no_fit = NO_FIT_STOP if mode == "strict" else NO_FIT_SKIP_JOB
        self._jobs: dict[int, QueuedJob] = {}  # by sequence; insertion order is submit order
        self._last_seq = -1
        self._requeued: set[int] = set()  # sequences enqueued out of order
        self._gone: set[int] = set()  # left the queue during the current round (removed next round)
        self._count = 0
        self._round: Iterator[QueuedJob] | None = None
        self._current: QueuedJob | None = None

    def __len__(self) -> int:
        return self._count

    def __getstate__(self) -> dict[str, Any]:
        # A round's iterator is not state: a copy starts its next round afresh.
        state = dict(self.__dict__)
        state["_round"] = None
        return state

    # --- events -------------------------------------------------------------

    def configure(self, tenants: Mapping[str, TenantConfig] | None = None,
                  capacity: Resources | None = None) -> None:
        """Nothing to do: fifo ignores weights and capacity."""

    def enqueue(self, job: QueuedJob) -> None:
        seq = job.seq
        if seq in self._jobs and seq not in self._gone:
            return
        if seq in self._gone:  # back before its removal was applied: it simply stays
            self._gone.discard(seq)
            self._jobs[seq] = job
            self._count += 1
            return
        if seq < self._last_seq:
            self._requeued.add(seq)
        else:
            self._last_seq = seq
        self._round = None  # the dict changes: a round's iterator must not go on
        self._jobs[seq] = job
        self._count += 1

    def dequeue(self, job: QueuedJob) -> None:
        seq = job.seq
        if seq in self._jobs and seq not in self._gone:
            self._gone.add(seq)
            self._count -= 1
            if self._current is not None and self._current.seq == seq:
                self._current = None

    def on_start(self, job: QueuedJob, now: float, *, resumed: bool = False) -> None:
        self.dequeue(job)

    def on_finish(self, job: QueuedJob, now: float, runtime: float | None = None) -> None:
        """fifo keeps no accounts."""

    # --- decisions ----------------------------------------------------------

    def begin_round(self, now: float) -> None:
        for seq in self._gone:
            self._jobs.pop(seq, None)
            self._requeued.discard(seq)
        self._gone.clear()
        self._current = None
        self._round = self._in_order()

    def _in_order(self) -> Iterator[QueuedJob]:
        if not self._requeued:
            return iter(self._jobs.values())
        requeued = sorted(self._requeued)
        skip = set(requeued)
        inorder = (j for j in self._jobs.values() if j.seq not in skip)
        return heapq.merge((self._jobs[s] for s in requeued), inorder, key=lambda j: j.seq)

    def next_tenant(self, skip: Set[str]) -> str | None:
        current = self._current
        if current is not None and current.tenant not in skip:
            return current.tenant
        if self._round is None:
            self._round = self._in_order()
        for job in self._round:
            if job.seq in self._gone or job.tenant in skip:
                continue
            self._current = job
            return job.tenant
        self._current = None
        return None

    def pick_job(self, tenant: str) -> QueuedJob | None:
        current = self._current
        return current if current is not None and current.tenant == tenant else None

    def pass_over(self, job: QueuedJob) -> None:
        if self._current is job:
            self._current = None

    def hold(self, tenant: str) -> None:
        if self._current is not None and self._current.tenant == tenant:
            self._current = None

    # --- views --------------------------------------------------------------

    def order(self) -> Iterator[QueuedJob]:
        """Queued jobs in submit order (a snapshot: safe while the queue changes)."""
        gone = self._gone
        return iter([j for j in self._in_order() if j.seq not in gone])

    def explain(self, job: QueuedJob, now: float | None = None) -> Explanation:
        queued = job.seq in self._jobs and job.seq not in self._gone
        if not queued:
            return Explanation(self.name, job.uid, job.tenant, False, None, 0, 0, None, None, "not queued")
        earlier = sum(1 for seq in self._jobs if seq < job.seq and seq not in self._gone)
        reason = f"{earlier} job(s) submitted earlier are still queued"
        # rank: its place in the one queue of the pool
        return Explanation(self.name, job.uid, job.tenant, True, earlier + 1, self._count, earlier, None, None,
                           reason)

    def tenant_figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        return None, None, "first in, first out: weights play no part"

    def snapshot(self) -> dict[str, Any]:
        return {"policy": self.name}  # nothing else to keep: fifo has no accounts

    def restore(self, state: Mapping[str, Any], now: float) -> bool:
        return state.get("policy") == self.name
