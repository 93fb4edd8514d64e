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

from mypy_extensions import mypyc_attr

from .core import NO_HEAD, PolicyBase
from .estimates import Overrun
from .heap import Key
from .options import Option
from .resources import Resources, below
from .running import RunningJob, TenantState


class _Clock:
    """A class's virtual time (priority's tiers keep one each; fair-share has one class)."""

    __slots__ = ("vtime", "dispatched")

    def __init__(self, vtime: float = 0.0) -> None:
        self.vtime = vtime  # the service received by the tenant last dispatched
        self.dispatched = vtime  # its tag at that dispatch, the estimates of its jobs included


class _Account:
    """One tenant's books: its tag, the estimates of its running jobs, their overrun.

    One object per tenant, so that a decision looks a tenant up once, not in
    five dicts; ``weight``, ``vclass`` (and so ``clock``) and ``minimum`` are
    the tree's, refreshed when the policy file changes.
    """

    __slots__ = ("tag", "estimated", "overrun", "weight", "vclass", "clock", "minimum")

    def __init__(self, tag: float, weight: float, vclass: int, clock: _Clock, minimum: Resources | None) -> None:
        self.tag = tag
        self.estimated = 0.0  # estimated charges of its running jobs
        self.overrun = Overrun()
        self.weight = weight
        self.vclass = vclass
        self.clock = clock
        self.minimum = minimum  # priority's min guarantee


@mypyc_attr(allow_interpreted_subclasses=True)  # third-party policies build on it
class FairSharePolicy(PolicyBase):
    name = "fair-share"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("initial_estimate", "duration", 1.0,
               "runtime assumed for a tenant's jobs until one of them has ended"),
    )

    def __init__(self, initial_estimate: float = 1.0) -> None:
        super().__init__(initial_estimate=initial_estimate)
        self._accounts: dict[str, _Account] = {}
        self._clocks: dict[int, _Clock] = {}  # per class: priority's tiers keep their own
        # the class's flag, read into a native attribute: compiled, a ClassVar of a class that
        # interpreted subclasses may override is read by name, and every key reads it
        self._tiered = self.tiered

    # priority: keys start with (below its min guarantee? 0 : 1, -tier), the tier being the class
    tiered: ClassVar[bool] = False

    def _vclass(self, tenant: str) -> int:
        return 0

    def _minimum(self, tenant: str) -> Resources | None:
        return None

    def _clock(self, vclass: int) -> _Clock:
        clock = self._clocks.get(vclass)
        if clock is None:
            clock = self._clocks[vclass] = _Clock()
        return clock

    def _account(self, tenant: str, tag: float) -> _Account:
        vclass = self._vclass(tenant)
        account = self._accounts[tenant] = _Account(tag, self.tree.weight(tenant), vclass, self._clock(vclass),
                                                    self._minimum(tenant))
        state = self._tenants.get(tenant)
        if state is not None:
            state.books = account
        return account

    def _on_new_tenant(self, name: str, state: TenantState) -> None:
        state.books = self._accounts.get(name)

    def _on_configured(self) -> None:
        for tenant, account in self._accounts.items():
            account.weight = self.tree.weight(tenant)
            account.vclass = self._vclass(tenant)
            account.clock = self._clock(account.vclass)
            account.minimum = self._minimum(tenant)

    def tag(self, tenant: str) -> float:
        """``F_i`` now, the excess of jobs past their estimate included."""
        account = self._accounts.get(tenant)
        return 0.0 if account is None else self._tag_of(account)

    def _tag_of(self, account: _Account) -> float:
        excess = account.overrun.value(self._rel(self._now)) if account.overrun.running else 0.0
        return account.tag + excess / account.weight if excess else account.tag

    def _key(self, tenant: str) -> Key:
        # the hot path of every decision: tag() and head_order() inlined
        state = self._tenants.get(tenant)
        # typed, so that compiled the reads below are native attribute reads, not lookups by name
        account: _Account | None = state.books if state is not None else self._accounts.get(tenant)
        if account is None:
            tag = 0.0
        else:
            tag = account.tag
            overrun = account.overrun
            if overrun.running:
                excess = overrun.value(self._now - self._origin if self._origin is not None else 0.0)
                if excess:
                    tag += excess / account.weight
        head = state.queue.first if state is not None else None
        if not self._tiered:
            return (tag, head[0], head[1]) if head is not None else (tag, *NO_HEAD)
        # a finish can make a tenant guaranteed again: PolicyBase reconsiders it after every finish
        if account is None:
            minimum, tier = self._minimum(tenant), self._vclass(tenant)
        else:
            minimum, tier = account.minimum, account.vclass
        guaranteed = minimum is not None and below(self.allocation(tenant), minimum)
        rank = 0.0 if guaranteed else 1.0
        return (rank, -tier, tag, head[0], head[1]) if head is not None else (rank, -tier, tag, *NO_HEAD)

    def _on_backlogged(self, tenant: str) -> None:
        account = self._accounts.get(tenant)
        vtime = (account.clock if account else self._clock(self._vclass(tenant))).vtime
        if account is None:
            self._account(tenant, vtime)
        elif vtime > account.tag:
            account.tag = vtime

    def hold(self, tenant: str) -> None:
        # Held by its own caps it is not backlogged: it starts again from the virtual time, not
        # from a tag its idle slots kept low. Its own jobs run meanwhile, so their estimates count.
        account = self._accounts.get(tenant)
        vtime = (account.clock if account else self._clock(self._vclass(tenant))).dispatched
        if account is None:
            self._account(tenant, vtime)
        elif vtime > account.tag:
            account.tag = vtime

    def _on_started(self, run: RunningJob, resumed: bool) -> None:
        tenant = run.tenant
        account: _Account = run.state.books or self._account(tenant, 0.0)
        weight = account.weight
        if resumed:
            # Its estimate is in the restored tag, and so is its excess until the snapshot: that
            # comes off, since the excess accrues again (from its start) from now on.
            account.estimated += run.charge * run.estimate / weight
            account.tag -= run.excess_at(self._snapshot_at) / weight
            account.overrun.add(run.uid, run.seq, run.charge, self._rel(run.started) + run.estimate)
            return
        start_tag = self._tag_of(account)
        received = start_tag - account.estimated
        clock = account.clock
        if received > clock.vtime:
            clock.vtime = received
        if start_tag > clock.dispatched:
            clock.dispatched = start_tag
        estimate = run.charge * run.estimate / weight
        account.tag += estimate
        account.estimated += estimate
        account.overrun.add(run.uid, run.seq, run.charge, self._rel(run.started) + run.estimate)

    def _on_finished(self, run: RunningJob, now: float, runtime: float) -> None:
        account: _Account = run.state.books or self._account(run.tenant, 0.0)
        account.overrun.remove(run.uid)
        weight = account.weight
        account.tag += run.charge * (runtime - run.estimate) / weight
        left = account.estimated - run.charge * run.estimate / weight
        # nothing running: exactly nothing estimated (no float drift left behind)
        account.estimated = left if left > 1e-12 and run.state.running > 0 else 0.0

    def _history(self) -> set[str]:
        return set(self._accounts)

    def _figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        vtime = self._clock(self._vclass(tenant)).vtime
        words = f"virtual tag {self.tag(tenant):.4g} vs virtual time {vtime:.4g}"
        return (self.tree.entitlement(tenant, self.active()), self.running_rate(tenant), words)

    def _state(self) -> dict[str, Any]:
        tags = {t: self.tag(t) for t in sorted(self._accounts)}
        return {"tags": tags, "vtime": {str(c): clock.vtime for c, clock in sorted(self._clocks.items())}}

    def _load(self, state: Mapping[str, Any], now: float) -> None:
        tags = {str(t): float(v) for t, v in dict(state["tags"]).items()}
        self._clocks = {int(c): _Clock(float(v)) for c, v in dict(state["vtime"]).items()}
        self._accounts = {}
        for held in self._tenants.values():
            held.books = None
        for tenant, tag in tags.items():
            self._account(tenant, tag)
