"""``ForeignPolicy``: a policy that is not a ``PolicyBase``, as the Dispatcher calls one.

A third-party policy only has to implement ``base.Policy``. The Dispatcher
makes its calls per job and per decision through a ``PolicyBase``: compiled,
those are direct calls, where calls through a protocol go by name through the
object protocol (about 10% of a decision). A policy that does not derive from
``PolicyBase`` is wrapped in this adapter, which passes those calls on.
"""

from __future__ import annotations

from collections.abc import Set

from .base import Policy, QueuedJob
from .core import PolicyBase


class ForeignPolicy(PolicyBase):
    """Passes the Dispatcher's per-job and per-decision calls on to ``policy``."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def enqueue(self, job: QueuedJob) -> None:
        self.policy.enqueue(job)

    def dequeue(self, job: QueuedJob) -> None:
        self.policy.dequeue(job)

    def on_start(self, job: QueuedJob, now: float, *, resumed: bool = False) -> None:
        self.policy.on_start(job, now, resumed=resumed)

    def on_finish(self, job: QueuedJob, now: float, runtime: float | None = None) -> None:
        self.policy.on_finish(job, now, runtime)

    def begin_round(self, now: float) -> None:
        self.policy.begin_round(now)

    def next_tenant(self, skip: Set[str]) -> str | None:
        return self.policy.next_tenant(skip)

    def pick_job(self, tenant: str) -> QueuedJob | None:
        return self.policy.pick_job(tenant)

    def pass_over(self, job: QueuedJob) -> None:
        self.policy.pass_over(job)

    def hold(self, tenant: str) -> None:
        self.policy.hold(tenant)
