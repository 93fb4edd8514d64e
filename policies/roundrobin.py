"""round-robin: deficit round robin over slot-seconds, charged by actual runtime.

Backlogged tenants take turns in a ring. A tenant's turn adds ``Q * w_i``
slot-seconds to its deficit; it dispatches while its deficit is positive, each
job charged ``c(r) * m * L_hat`` (a one-cpu job on an m-cpu pool is one slot)
and corrected by its real runtime when it ends (and, like fair-share, charged
for any time past its estimate as it accrues); then the next tenant's turn
comes. Each tenant thus gets ``w_i / sum w`` of the slot-time whatever its job
lengths, where plain one-job-per-turn round robin (dispy's
fair_cluster_scheduler) gives a tenant of 10 ms jobs ~1% against one of 1 s
jobs.

A tenant that empties its queue leaves the ring keeping its debt but not its
credit; tenants that become backlogged between two decisions join at the tail
in submit order (so the order in which simultaneous submits arrive does not
matter). A tenant skipped for a round (capped, or its job fits nowhere) keeps
its place.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Set
from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

from .core import PolicyBase
from .estimates import Overruns
from .heap import Key
from .options import Option
from .running import RunningJob


@mypyc_attr(allow_interpreted_subclasses=True)  # third-party policies build on it
class RoundRobinPolicy(PolicyBase):
    name = "round-robin"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("quantum", "duration", 1.0, "slot-seconds a tenant of weight 1 may use per turn"),
        Option("initial_estimate", "duration", 1.0,
               "runtime assumed for a tenant's jobs until one of them has ended"),
    )

    def __init__(self, quantum: float = 1.0, initial_estimate: float = 1.0) -> None:
        super().__init__(initial_estimate=initial_estimate)
        self.quantum = quantum
        self._ring: deque[str] = deque()
        self._in_ring: set[str] = set()
        self._staged: set[str] = set()  # became backlogged since the last decision
        self._parked: list[str] = []  # skipped this round, in ring order: back to the front
        self._granted: set[str] = set()  # their turn has begun (quantum added)
        self._deficit: dict[str, float] = {}
        self._overrun = Overruns()

    def _slots(self) -> float:
        return self.capacity.cpus if self.capacity.cpus > 0 else 1.0

    def deficit(self, tenant: str) -> float:
        """Slot-seconds it may still use this turn (its overrunning jobs' excess taken off)."""
        excess = self._overrun.value(tenant, self._rel(self._now))
        return self._deficit.get(tenant, 0.0) - (excess * self._slots() if excess else 0.0)

    def _key(self, tenant: str) -> Key:  # unused: the ring, not a heap, is the order
        return self.head_order(tenant)

    # --- ring upkeep ----------------------------------------------------------

    def _on_backlogged(self, tenant: str) -> None:
        if tenant not in self._in_ring:
            self._staged.add(tenant)

    def _on_idle(self, tenant: str) -> None:
        self._staged.discard(tenant)
        self._granted.discard(tenant)
        self._deficit[tenant] = min(self._deficit.get(tenant, 0.0), 0.0)
        if tenant in self._in_ring:
            self._in_ring.discard(tenant)
            self._ring.remove(tenant)
        if tenant in self._parked:
            self._parked.remove(tenant)

    def _merge_staged(self) -> None:
        if self._staged:
            for tenant in sorted(self._staged, key=self.head_order):
                self._ring.append(tenant)
                self._in_ring.add(tenant)
            self._staged.clear()

    def _rebuild(self) -> None:
        self._current = None
        self._merge_staged()

    def begin_round(self, now: float) -> None:
        self._advance(now)
        for name in sorted(self._aside_jobs):
            self._tenants[name].queue.restore_aside()
        self._aside_jobs.clear()
        for tenant in reversed(self._parked):
            self._ring.appendleft(tenant)
        self._parked.clear()
        self._merge_staged()

    # --- decisions ----------------------------------------------------------

    def next_tenant(self, skip: Set[str]) -> str | None:
        self._merge_staged()
        ring = self._ring
        futile = 0  # turns ended in a row without anyone able to go
        while ring:
            tenant = ring[0]
            if tenant in skip or self._tenants[tenant].queue.head() is None:
                self._parked.append(ring.popleft())
                futile = 0
                continue
            if tenant not in self._granted:
                self._granted.add(tenant)
                self._deficit[tenant] = self._deficit.get(tenant, 0.0) + self.quantum * self.tree.weight(tenant)
            if self.deficit(tenant) > 0:
                self._current = tenant
                return tenant
            ring.rotate(-1)  # turn over: to the tail
            self._granted.discard(tenant)
            futile += 1
            if futile >= len(ring):
                self._grant_rounds()
                futile = 0
        return None

    def _grant_rounds(self) -> None:
        """Every tenant in the ring is in debt: play the whole rounds it takes at once."""
        rounds = min(math.ceil((-self.deficit(t) + 1e-12) / (self.quantum * self.tree.weight(t)))
                     for t in self._ring)
        for tenant in self._ring:
            self._deficit[tenant] = self._deficit.get(tenant, 0.0) + (rounds - 1) * self.quantum * self.tree.weight(tenant)

    def _on_started(self, run: RunningJob, resumed: bool) -> None:
        tenant = run.tenant
        if resumed:
            # its estimate was taken off the restored deficit, and so was its excess until the
            # snapshot: that goes back, since the excess accrues again (from its start) from now on
            excess = run.excess_at(self._snapshot_at)
            if excess:
                self._deficit[tenant] = self._deficit.get(tenant, 0.0) + excess * self._slots()
        else:
            self._deficit[tenant] = self._deficit.get(tenant, 0.0) - run.charge * self._slots() * run.estimate
        self._overrun.started(tenant, run.uid, run.seq, run.charge, self._rel(run.started) + run.estimate)

    def _on_finished(self, run: RunningJob, now: float, runtime: float) -> None:
        tenant = run.tenant
        self._overrun.finished(tenant, run.uid)
        self._deficit[tenant] = (self._deficit.get(tenant, 0.0)
                                 - run.charge * self._slots() * (runtime - run.estimate))

    def _repush(self, tenant: str, *, either_way: bool = False) -> None:
        pass  # no heap: the ring is the order

    # --- views --------------------------------------------------------------

    def ranking(self) -> list[str]:
        self._flush()
        ring = list(self._parked) + list(self._ring)
        ring += sorted(self._staged - set(ring), key=self.head_order)
        return [t for t in ring if self.backlogged(t)]

    def _history(self) -> set[str]:
        return set(self._deficit)

    def _figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        words = f"deficit {self.deficit(tenant):.3g} slot-seconds, quantum {self.quantum * self.tree.weight(tenant):.3g}"
        return self.tree.entitlement(tenant, self.active()), self.running_rate(tenant), words

    def _state(self) -> dict[str, Any]:
        return {"deficits": {t: self.deficit(t) for t in sorted(self._deficit)}}

    def _load(self, state: Mapping[str, Any], now: float) -> None:
        self._deficit = {str(t): float(v) for t, v in dict(state["deficits"]).items()}
