"""priority: strict tiers, fair-share inside a tier, minimum guarantees first.

A tenant's ``tier`` (policy file; default 0) is strict: while a tenant of a
higher tier is backlogged, no lower tier starts anything. Inside a tier the
tenants share by fair-share (start-time fair queuing, with a virtual time per
tier so that a tier's idle spell earns its tenants no credit against each
other). Before tiers, a tenant below its ``min`` guarantee (in any resource
the guarantee names) goes first, whatever its tier. ``max`` caps and
``max_running`` are never exceeded: the shared limits filter holds those jobs
(``fairpool.policies.limits``).
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from .fairshare import FairSharePolicy
from .resources import Resources, below


@mypyc_attr(allow_interpreted_subclasses=True)  # third-party policies build on it
class PriorityPolicy(FairSharePolicy):
    name = "priority"
    tiered = True

    def _vclass(self, tenant: str) -> int:
        return self.tree.config(tenant).tier

    def guaranteed(self, tenant: str) -> bool:
        """Whether it holds less than its ``min`` (and so goes before every tier)."""
        minimum = self.tree.config(tenant).min
        return minimum is not None and below(self.allocation(tenant), minimum)

    def _minimum(self, tenant: str) -> Resources | None:
        return self.tree.config(tenant).min

    def _figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        config = self.tree.config(tenant)
        active = self.active()
        top = max((self.tree.config(t).tier for t in active), default=config.tier)
        same_tier = [t for t in active if self.tree.config(t).tier == config.tier]
        entitlement = self.tree.entitlement(tenant, same_tier) if config.tier >= top else 0.0
        words = f"tier {config.tier}"
        if self.guaranteed(tenant):
            words += ", below its min guarantee: served first"
        elif config.tier < top:
            words += f", waits for tier {top}"
        _, received, sfq = super()._figures(tenant)
        return entitlement, received, f"{words}; {sfq}"
