"""fair-share: instantaneous weighted fair share by start-time fair queuing.

Each tenant carries a virtual tag ``F_i``; the backlogged tenant with the
smallest tag goes next. Dispatching a job of resources ``r`` adds
``c(r) * L_hat / w_i`` (``L_hat``: the tenant's moving average of runtimes);
when it ends, ``c(r) * (L - L_hat) / w_i`` corrects the estimate, and while it
outlives its estimate the excess is charged as it accrues (``Overrun``), so a
tenant of long jobs cannot take every freed slot until its first job ends.

A tenant that becomes backlogged gets ``F_i <- max(F_i, V)``, ``V`` being the
virtual time: the tag of the tenant last dispatched (the smallest tag among
the backlogged at that moment) without the estimates of its jobs still
running — only service actually received counts, or a first estimate far
above the real runtimes would push a newcomer behind a tenant whose tag is
about to be corrected down — so idle time earns no credit; so does a tenant
held by its own limits (``hold``): time spent at its max_running banks nothing. The memory in the
tags is what makes the long-run share ``w_i / sum w``: choosing by "running
slots / weight" with no memory locks onto whole slots (POLICIES.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .core import PolicyBase, RunningJob
from .estimates import Overruns
from .heap import Key
from .options import Option


class FairSharePolicy(PolicyBase):
    name = "fair-share"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("initial_estimate", "duration", 1.0,
               "runtime assumed for a tenant's jobs until one of them has ended"),
    )

    def __init__(self, initial_estimate: float = 1.0) -> None:
        super().__init__(initial_estimate=initial_estimate)
        self._tag: dict[str, float] = {}
        self._vtime: dict[int, float] = {}  # per class: priority's tiers keep their own
        self._overrun = Overruns()
        self._estimated: dict[str, float] = {}  # per tenant: estimated charges of its running jobs
        self._vtime_dispatched: dict[int, float] = {}  # the tags at dispatch, estimates included

    def _vclass(self, tenant: str) -> int:
        return 0

    def tag(self, tenant: str) -> float:
        """``F_i`` now, the excess of jobs past their estimate included."""
        excess = self._overrun.value(tenant, self._rel(self._now))
        return self._tag.get(tenant, 0.0) + (excess / self.tree.weight(tenant) if excess else 0.0)

    def _key(self, tenant: str) -> Key:
        return (self.tag(tenant), *self.head_order(tenant))

    def _on_backlogged(self, tenant: str) -> None:
        vtime = self._vtime.get(self._vclass(tenant), 0.0)
        self._tag[tenant] = max(self._tag.get(tenant, vtime), vtime)

    def hold(self, tenant: str) -> None:
        # Held by its own caps it is not backlogged: it starts again from the virtual time, not
        # from a tag its idle slots kept low. Its own jobs run meanwhile, so their estimates count.
        vtime = self._vtime_dispatched.get(self._vclass(tenant), 0.0)
        self._tag[tenant] = max(self._tag.get(tenant, vtime), vtime)

    def _on_started(self, run: RunningJob, resumed: bool) -> None:
        if resumed:
            return  # its estimate is in the restored tag already
        tenant = run.tenant
        start_tag = self.tag(tenant)
        received = start_tag - self._estimated.get(tenant, 0.0)
        vclass = self._vclass(tenant)
        self._vtime[vclass] = max(self._vtime.get(vclass, 0.0), received)
        self._vtime_dispatched[vclass] = max(self._vtime_dispatched.get(vclass, 0.0), start_tag)
        estimate = run.charge * run.estimate / self.tree.weight(tenant)
        self._tag[tenant] = self._tag.get(tenant, 0.0) + estimate
        self._estimated[tenant] = self._estimated.get(tenant, 0.0) + estimate
        self._overrun.started(tenant, run.uid, run.seq, run.charge, self._rel(run.started) + run.estimate)

    def _on_finished(self, run: RunningJob, now: float, runtime: float) -> None:
        tenant = run.tenant
        self._overrun.finished(tenant, run.uid)
        weight = self.tree.weight(tenant)
        correction = run.charge * (runtime - run.estimate) / weight
        self._tag[tenant] = self._tag.get(tenant, 0.0) + correction
        left = self._estimated.get(tenant, 0.0) - run.charge * run.estimate / weight
        state = self._tenants.get(tenant)
        if left > 1e-12 and state is not None and state.running > 0:
            self._estimated[tenant] = left
        else:
            self._estimated.pop(tenant, None)

    def _figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        vtime = self._vtime.get(self._vclass(tenant), 0.0)
        words = f"virtual tag {self.tag(tenant):.4g} vs virtual time {vtime:.4g}"
        return (self.entitlement_by_weight(tenant, self.active()), self.running_rate(tenant), words)

    def _state(self) -> dict[str, Any]:
        tags = {t: self.tag(t) for t in sorted(self._tag)}
        return {"tags": tags, "vtime": {str(c): v for c, v in sorted(self._vtime.items())}}

    def _load(self, state: Mapping[str, Any], now: float) -> None:
        self._tag = {str(t): float(v) for t, v in dict(state["tags"]).items()}
        self._vtime = {int(c): float(v) for c, v in dict(state["vtime"]).items()}
