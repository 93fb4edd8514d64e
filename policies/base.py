"""The policy seam: what a fair-share policy is told, and what it answers.

A policy owns the ORDER in which tenants and their queued jobs are offered to
the pool; the scheduler owns placement (which node fits), and quotas are a
filter shared by every policy (``fairpool.policies.limits``). The
``Dispatcher`` (``fairpool.policies.dispatcher``) joins the three; the
scheduler talks to it, not to the policy.

Policies are small pure objects: no clock (every event carries ``now``), no
randomness, ties broken by submit sequence. They are fed incremental events so
that a decision costs O(log tenants):

- ``enqueue(job)`` / ``dequeue(job)``: a job joined / left the queue without
  running (submitted or requeued / cancelled);
- ``on_start(job, now)``: the job was placed on a node (it leaves the queue);
  ``resumed=True`` re-registers a job that was running before a restart, whose
  charge is already in the restored state;
- ``on_finish(job, now, runtime)``: a started job ended, or its node was lost;
- ``configure(tenants, capacity)``: the policy file or the pool changed;
- a decision round: ``begin_round(now)``, then ``next_tenant(skip)`` /
  ``pick_job(tenant)`` until the pool is full, where ``skip`` holds the tenants
  that cannot go this round (capped, or their job fits nowhere), and
  ``pass_over(job)`` sets a job aside for the round (fifo's skip mode), and
  ``hold(tenant)`` says the tenant sits it out because of its own limits (it
  then does not count as backlogged: it must not bank credit);
- ``explain(job, now)``, ``snapshot()`` / ``restore(state, now)`` (the state
  that must survive a restart, as plain JSON/msgpack-able dicts).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass
from typing import Any, Protocol

from .resources import HasResources, Resources
from .tenants import TenantConfig

NO_FIT_STOP = "stop"  # strict fifo: the round ends at a job that fits nowhere
NO_FIT_SKIP_JOB = "skip-job"  # skip fifo: try the next job, maybe the same tenant's
NO_FIT_SKIP_TENANT = "skip-tenant"  # fair policies: the tenant sits this round out


class QueuedJob(HasResources, Protocol):
    """The read-only face of a job that a policy ranks (JobRecord has all of it)."""

    @property
    def uid(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def submitted_at(self) -> float: ...


@dataclass(frozen=True)
class Explanation:
    """Why a job waits: its tenant's rank, entitlement and received share."""

    policy: str
    uid: str
    tenant: str
    queued: bool
    rank: int | None  # 1: this tenant goes next; None: not backlogged
    tenants: int  # backlogged tenants ranked
    ahead: int  # jobs of the same tenant before this one
    entitlement: float | None  # fraction of the pool it is entitled to now
    received: float | None  # fraction it receives (the policy's measure)
    reason: str

    def __str__(self) -> str:
        parts = []
        if self.rank is not None:
            parts.append(f"rank {self.rank} of {self.tenants}")
        if self.entitlement is not None:
            parts.append(f"entitled to {self.entitlement:.1%}")
        if self.received is not None:
            parts.append(f"receives {self.received:.1%}")
        figures = f" ({', '.join(parts)})" if parts else ""
        return f"{self.policy}: job {self.uid} of tenant {self.tenant}: {self.reason}{figures}"


def wait_reason(rank: int | None, tenants: int, ahead: int, words: str = "") -> str:
    """Why a queued job waits, in words: its tenant's ``rank`` among ``tenants`` ranked, the
    ``ahead`` jobs of its own before it, then the policy's own ``words``."""
    if rank == 1 and ahead == 0:
        reason = "next in line, waits for free capacity"
    elif rank == 1:
        reason = f"its tenant goes next; {ahead} of its own job(s) first"
    else:
        before = (rank or tenants + 1) - 1
        reason = f"{before} tenant(s) go first"
        if ahead:
            reason += f", then {ahead} of its own job(s)"
    return f"{reason}; {words}" if words else reason


class Policy(Protocol):
    """What the Dispatcher needs; ``fairpool.policies.core.PolicyBase`` implements it."""

    @property
    def name(self) -> str: ...

    @property
    def no_fit(self) -> str:
        """NO_FIT_STOP | NO_FIT_SKIP_JOB | NO_FIT_SKIP_TENANT."""
        ...

    def configure(self, tenants: Mapping[str, TenantConfig] | None = None,
                  capacity: Resources | None = None) -> None: ...

    def enqueue(self, job: QueuedJob) -> None: ...

    def dequeue(self, job: QueuedJob) -> None: ...

    def on_start(self, job: QueuedJob, now: float, *, resumed: bool = False) -> None: ...

    def on_finish(self, job: QueuedJob, now: float, runtime: float | None = None) -> None: ...

    def begin_round(self, now: float) -> None: ...

    def next_tenant(self, skip: Set[str]) -> str | None: ...

    def pick_job(self, tenant: str) -> QueuedJob | None: ...

    def pass_over(self, job: QueuedJob) -> None: ...

    def hold(self, tenant: str) -> None:
        """The tenant's next job is held by its own limits: it is not backlogged meanwhile."""
        ...

    def explain(self, job: QueuedJob, now: float | None = None) -> Explanation: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any], now: float) -> bool: ...

    def order(self) -> Iterator[QueuedJob]:
        """Every queued job, in the order the policy ranks them now (a listing, not a decision)."""
        ...

    def __len__(self) -> int: ...


class UnknownPolicy(ValueError):
    pass
