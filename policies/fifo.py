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
one ``TenantQueue`` for the whole pool, unordered by priority (jobs arrive
in sequence, so the head leaves in O(1); the rare out-of-order requeues sit
in its heap), and removals during a decision round deferred to the next
round, so that the round's walk through the queue is never invalidated.
(A dict in submit order did this before: every round's fresh iterator then
stepped over the slots of all the jobs taken from its front since it last
grew, so a decision cost more the longer the scheduler ran.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

from .base import NO_FIT_SKIP_JOB, NO_FIT_STOP, Explanation, QueuedJob
from .options import Option
from .queues import TenantQueue
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
        self._queue = TenantQueue(by_priority=False)  # the pool's one queue, by sequence
        self._gone: dict[str, QueuedJob] = {}  # left the queue this round (removed next round)
        self._round: Iterator[QueuedJob] | None = None  # the walk past the head, once needed
        self._head_offered = False  # this round: the head was offered (the walk starts after it)
        self._current: QueuedJob | None = None

    def __len__(self) -> int:
        return len(self._queue) - len(self._gone)

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
        uid = job.uid
        if self._gone.pop(uid, None) is not None:  # back before its removal was applied: it stays
            return
        if uid in self._queue:
            return
        self._round = None  # the queue changes: a round's walk must not go on
        self._head_offered = False
        self._queue.push(job)

    def dequeue(self, job: QueuedJob) -> None:
        uid = job.uid
        if uid in self._queue and uid not in self._gone:
            self._gone[uid] = job
            current = self._current
            if current is not None and current.uid == uid:
                self._current = None

    def on_start(self, job: QueuedJob, now: float, *, resumed: bool = False) -> None:
        self.dequeue(job)

    def on_finish(self, job: QueuedJob, now: float, runtime: float | None = None) -> None:
        """fifo keeps no accounts."""

    # --- decisions ----------------------------------------------------------

    def begin_round(self, now: float) -> None:
        if self._gone:
            queue = self._queue
            for uid in self._gone:
                queue.remove(uid)
            self._gone.clear()
        self._current = None
        self._round = None
        self._head_offered = False

    def next_tenant(self, skip: Set[str]) -> str | None:
        current = self._current
        if current is not None and current.tenant not in skip:
            return current.tenant
        gone = self._gone
        if self._round is None:
            if not self._head_offered:  # most rounds take the head and end: no walk at all
                self._head_offered = True
                first = self._queue.first
                if first is None:
                    self._current = None
                    return None
                head: QueuedJob = first[3]
                if head.tenant not in skip and not (gone and head.uid in gone):
                    self._current = head
                    return head.tenant
            self._round = self._queue.jobs()
            next(self._round, None)  # the head, offered already
        for job in self._round:
            if job.tenant in skip or (gone and job.uid in gone):
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
        return iter([j for j in self._queue.jobs() if j.uid not in gone])

    def explain(self, job: QueuedJob, now: float | None = None) -> Explanation:
        queued = job.uid in self._queue and job.uid not in self._gone
        if not queued:
            return Explanation(self.name, job.uid, job.tenant, False, None, 0, 0, None, None, "not queued")
        earlier = sum(1 for j in self.order() if j.seq < job.seq)
        reason = f"{earlier} job(s) submitted earlier are still queued"
        # rank: its place in the one queue of the pool
        return Explanation(self.name, job.uid, job.tenant, True, earlier + 1, len(self), earlier, None, None,
                           reason)

    def tenant_figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        return None, None, "first in, first out: weights play no part"

    def snapshot(self) -> dict[str, Any]:
        return {"policy": self.name}  # nothing else to keep: fifo has no accounts

    def restore(self, state: Mapping[str, Any], now: float) -> bool:
        return state.get("policy") == self.name
