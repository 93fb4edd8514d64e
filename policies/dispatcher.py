"""Dispatcher: what the scheduler calls; joins a policy, the limits and placement.

The scheduler keeps placement (which node has room for a job) and hands it in
as a callback; the Dispatcher runs the decision round::

    dispatcher.begin_round / next_tenant / pick_job      (the policy's order)
      -> limits.hold(job)     held: the tenant sits the round out
      -> place(job)           PLACED / NO_FIT / FULL     (the scheduler's)
      -> policy.on_start(job, now), limits.started(job)

so that ``SchedulerState._schedule`` becomes::

    chosen = self.dispatcher.next_jobs(now, place)

and every job event goes through it (``enqueue``, ``dequeue``,
``finished``, ``resume``), so that the policy and the limits never disagree
about what is queued and running.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .base import NO_FIT_SKIP_JOB, NO_FIT_STOP, Explanation, Policy, QueuedJob
from .core import PolicyBase
from .foreign import ForeignPolicy
from .limits import Limits
from .resources import NOTHING, Resources
from .tenants import TenantConfig


class Placement(enum.Enum):
    PLACED = "placed"  # the scheduler committed the job to a node
    NO_FIT = "no-fit"  # no node has room for this job now (others might fit)
    FULL = "full"  # no room for anything: the round ends


class Dispatcher:
    """One policy and the shared limits, fed every job event by the scheduler."""

    def __init__(self, policy: Policy, tenants: Mapping[str, TenantConfig] | None = None,
                 capacity: Resources = NOTHING, *, max_no_fit: int = 1000) -> None:
        self.policy = policy
        self._calls = self._calls_to(policy)
        self.limits = Limits(tenants)
        self.tenants: dict[str, TenantConfig] = dict(tenants or {})
        self.capacity = capacity
        self.max_no_fit = max_no_fit  # jobs tried in vain per round, then it ends (bounded cost)
        self._running: dict[str, tuple[QueuedJob, float]] = {}
        policy.configure(self.tenants, capacity)

    @staticmethod
    def _calls_to(policy: Policy) -> PolicyBase:
        """The policy as the per-job calls go to it: compiled, a call to a ``PolicyBase`` is direct
        (``foreign`` says why)."""
        return policy if isinstance(policy, PolicyBase) else ForeignPolicy(policy)

    @property
    def name(self) -> str:
        return self.policy.name

    def __len__(self) -> int:
        return len(self.policy)

    # --- configuration --------------------------------------------------------

    def configure(self, tenants: Mapping[str, TenantConfig] | None = None,
                  capacity: Resources | None = None) -> None:
        """The policy file was (re)loaded, or the pool's capacity changed (a node joined or left)."""
        if tenants is not None:
            self.tenants = dict(tenants)
            self.limits.reset(self.tenants, self.policy.order(), self.running())
        if capacity is not None:
            self.capacity = capacity
        self.policy.configure(self.tenants if tenants is not None else None, capacity)

    def replace_policy(self, policy: Policy, now: float) -> None:
        """Switch policy live (``policy set``, or new options on reload).

        The new policy is told every queued and running job. The same policy
        with new options takes over the old one's state (decayed usage, tags);
        another policy starts afresh, with the running jobs charged to it as if
        it had started them.
        """
        old, self.policy = self.policy, policy
        self._calls = self._calls_to(policy)
        policy.configure(self.tenants, self.capacity)
        carried = policy.restore(old.snapshot(), now)
        for job, started in sorted(self._running.values(), key=lambda item: (item[1], item[0].seq)):
            policy.on_start(job, started, resumed=carried)
        for job in sorted(old.order(), key=lambda j: j.seq):
            policy.enqueue(job)
        policy.begin_round(now)

    # --- job events -----------------------------------------------------------

    def admit(self, job: QueuedJob) -> str | None:
        """Ask before queueing a NEW job: the reason it is refused, or None."""
        return self.limits.admit(job)

    def enqueue(self, job: QueuedJob) -> None:
        """A job became QUEUED: submitted and admitted, or requeued after its node was
        lost (call ``finished`` for it first)."""
        if self.limits.limited:
            self.limits.queued(job)
        self._calls.enqueue(job)

    def dequeue(self, job: QueuedJob) -> None:
        """A queued job left the queue without starting (cancelled)."""
        if self.limits.limited:
            self.limits.unqueued(job)
        self._calls.dequeue(job)

    def finished(self, job: QueuedJob, now: float, runtime: float | None = None) -> None:
        """A job placed by ``next_jobs`` ended (any final status) or was taken off its lost node.

        ``runtime``: the node's finished_at - started_at when known; else the
        time since placement is charged.
        """
        uid = job.uid
        if uid not in self._running:
            return
        del self._running[uid]  # (not pop(uid, None): compiled, a call by name)
        if self.limits.limited:
            self.limits.finished(job)
        self._calls.on_finish(job, now, runtime)

    def resume(self, job: QueuedJob, started_at: float) -> None:
        """After a restart (and ``restore``): a job that is still running on a node."""
        if job.uid in self._running:
            return
        self._running[job.uid] = (job, started_at)
        self.limits.started(job)
        self._calls.on_start(job, started_at, resumed=True)

    # --- decisions ----------------------------------------------------------

    def next_jobs(self, now: float, place: Callable[[QueuedJob], Placement],
                  limit: int | None = None) -> list[QueuedJob]:
        """Start jobs in policy order until the pool is full; the ones placed, in order.

        ``place(job)`` is the scheduler's: it commits the job to a node and
        answers PLACED, or NO_FIT (no node has room for this one), or FULL.
        """
        policy, limits = self._calls, self.limits
        limited = limits.limited
        running = self._running
        policy.begin_round(now)
        chosen: list[QueuedJob] = []
        skip: set[str] = set()
        no_fit = 0
        while limit is None or len(chosen) < limit:
            tenant = policy.next_tenant(skip)
            if tenant is None:
                break
            job = policy.pick_job(tenant)
            if job is None:
                skip.add(tenant)
                continue
            if limited and limits.hold(job) is not None:
                policy.hold(tenant)
                skip.add(tenant)
                continue
            outcome = place(job)
            if outcome is Placement.PLACED:
                if limited:
                    limits.unqueued(job)
                    limits.started(job)
                policy.on_start(job, now)
                running[job.uid] = (job, now)
                chosen.append(job)
                continue
            if outcome is Placement.FULL:
                break
            no_fit += 1
            rule = self.policy.no_fit
            if rule == NO_FIT_STOP or no_fit >= self.max_no_fit:
                break
            if rule == NO_FIT_SKIP_JOB:
                policy.pass_over(job)
            else:
                skip.add(tenant)
        return chosen

    # --- views --------------------------------------------------------------

    def running(self) -> Iterator[QueuedJob]:
        return (job for job, _ in self._running.values())

    def order(self) -> Iterator[QueuedJob]:
        """Queued jobs in the policy's current order (for listings)."""
        return self.policy.order()

    def explain(self, job: QueuedJob, now: float | None = None) -> Explanation:
        """The policy's explanation, with the limit that holds the job if one does."""
        explanation = self.policy.explain(job, now)
        if explanation.queued:
            held = self.limits.hold(job)
            if held is not None:
                return Explanation(explanation.policy, explanation.uid, explanation.tenant, True,
                                   explanation.rank, explanation.tenants, explanation.ahead,
                                   explanation.entitlement, explanation.received, f"held: {held}")
        return explanation

    def snapshot(self) -> dict[str, Any]:
        return self.policy.snapshot()

    def restore(self, state: Mapping[str, Any], now: float) -> bool:
        return self.policy.restore(state, now)
