"""drf: Dominant Resource Fairness (Ghodsi et al., NSDI 2011), weighted.

A tenant's dominant share is ``d_i = max_k(alloc_ik / C_k) / w_i`` over what
its running jobs hold. Progressive filling: the backlogged tenant with the
smallest ``d_i`` gets its next job if it fits on some node, else it sits the
round out (the Dispatcher skips it) and the next smallest goes. DRF looks at
what is held now, not at history: a tenant's past use earns it nothing.

The paper's example: 9 CPUs and 18 GB; A's tasks <1 CPU, 4 GB>, B's
<3 CPU, 1 GB>: A runs 3 tasks (dominant share 2/3 of memory), B runs 2 (2/3
of CPUs).

Ties (equal dominant shares: every tenant at zero when a slot frees) go to the
tenant served least recently, then by submit sequence. Breaking them by
sequence alone would hand every freed slot to the tenant whose jobs were
submitted first whenever the pool has fewer slots than tenants: starvation.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from .core import NO_HEAD, PolicyBase
from .heap import Key
from .resources import dominant_share, dominant_share_of
from .running import RunningJob


@mypyc_attr(allow_interpreted_subclasses=True)  # third-party policies build on it
class DrfPolicy(PolicyBase):
    name = "drf"

    def __init__(self) -> None:
        super().__init__()
        self._served: dict[str, int] = {}  # tenant -> number of the decision that last served it
        self._decisions = 0

    def dominant(self, tenant: str) -> float:
        return dominant_share(self.allocation(tenant), self.capacity) / self.tree.weight(tenant)

    def _key(self, tenant: str) -> Key:
        # grows with every start; PolicyBase pushes the tenant again after a finish. (dominant()
        # and head_order() inlined, on the tenant's plain numbers: several keys per decision)
        state = self._tenants.get(tenant)
        served = self._served.get(tenant, 0)
        if state is None:
            return (0.0, served, *NO_HEAD)
        share = 0.0
        if state.running:
            share = dominant_share_of(state.cpus, state.memory, state.gpus, self.capacity) / self.tree.weight(tenant)
        head = state.queue.first
        return (share, served, head[0], head[1]) if head is not None else (share, served, *NO_HEAD)

    def _on_started(self, run: RunningJob, resumed: bool) -> None:
        self._decisions += 1
        self._served[run.tenant] = self._decisions

    def _figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        held = dominant_share(self.allocation(tenant), self.capacity)
        words = f"dominant share {held:.3g} / weight {self.tree.weight(tenant):g} = {self.dominant(tenant):.3g}"
        return self.tree.entitlement(tenant, self.active()), held, words
