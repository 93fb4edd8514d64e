"""What a policy keeps per running job and per tenant: ``RunningJob`` and ``TenantState``.

Plain numbers on slotted objects (compiled, native attributes): every start
and finish of a job reads and updates them, so no ``Resources`` objects and
no second lookup by name.
"""

from __future__ import annotations

from typing import Any

from .base import QueuedJob
from .queues import TenantQueue
from .resources import NOTHING, Resources, charge_of


class RunningJob:
    __slots__ = ("uid", "tenant", "seq", "started", "charge", "estimate", "cpus", "memory", "gpus", "state")

    def __init__(self, job: QueuedJob, uid: str, tenant: str, started: float, capacity: Resources,
                 estimate: float, state: TenantState) -> None:
        self.state = state  # its tenant's
        self.uid = uid
        self.tenant = tenant
        self.seq = job.seq
        self.started = started
        self.estimate = estimate  # L_hat at dispatch, seconds
        # what it holds, as plain numbers: a Resources per start and finish cost every decision
        self.cpus = float(job.cpus)
        self.memory = int(job.memory)
        self.gpus = int(job.gpus)
        # c(r) at dispatch, pool-seconds per second
        self.charge = charge_of(self.cpus, self.memory, self.gpus, capacity)

    @property
    def resources(self) -> Resources:
        return Resources(self.cpus, self.memory, self.gpus)

    def excess_at(self, at: float | None) -> float:
        """Its charge for running past its estimate until ``at``: ``c(r) * (at - start - estimate)``
        (0 if not past it, or no time). A snapshot taken at ``at`` charged a running job that much."""
        if at is None:
            return 0.0
        over = at - (self.started + self.estimate)
        return self.charge * over if over > 0.0 else 0.0


class TenantState:
    __slots__ = ("queue", "running", "rate", "cpus", "memory", "gpus", "books")

    def __init__(self, by_priority: bool) -> None:
        self.books: Any = None  # a subclass's own per-tenant record, reached without a second lookup
        self.queue = TenantQueue(by_priority)
        self.running = 0
        self.rate = 0.0  # sum of c(r) of its running jobs: its share of the pool now
        self.cpus = 0.0  # what its running jobs hold
        self.memory = 0
        self.gpus = 0

    @property
    def alloc(self) -> Resources:
        return Resources(self.cpus, self.memory, self.gpus) if self.running else NOTHING
