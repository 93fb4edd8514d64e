"""Tenants as the policies see them: settings from the policy file, and their tree.

A tenant the policy file does not declare gets the defaults (weight 1, tier 0,
no limits, no parent). Tenants may sit in a tree through ``parent``
(``org`` > ``org.team`` > ``alice``); a parent may be a pure group that never
submits. The tree gives each tenant two numbers the policies use:

- ``weight(t)``: the weight it competes with, its own weight scaled along its
  path below its top-level ancestor (``w_top * prod w_x / sum w_siblings(x)``),
  so that a team's members split the team's weight and the top level keeps the
  plain weights of the policy file; undeclared tenants join the top level and
  change nobody else's weight.
- ``share(t)``: Slurm's normalized share, ``prod (w_x / sum w_siblings(x))``
  along the whole path, over every tenant known so far; it sums to 1 over the
  leaves.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .resources import Resources


@dataclass(frozen=True)
class TenantConfig:
    name: str
    weight: float = 1.0
    tier: int = 0
    min: Resources | None = None  # guaranteed (priority policy: served first below it)
    max: Resources | None = None  # never exceeded; a zero kind has no limit
    max_running: int | None = None
    max_queued: int | None = None
    parent: str | None = None


def default_tenant(name: str) -> TenantConfig:
    return TenantConfig(name)


class TenantTree:
    """Weights, shares and paths of the tenants declared, plus those seen since."""

    def __init__(self, declared: Mapping[str, TenantConfig] | None = None) -> None:
        self.declared: dict[str, TenantConfig] = dict(declared or {})
        self._seen: set[str] = set()
        self._children: dict[str | None, list[str]] = {}
        self._totals: dict[str | None, float] = {}
        self.weights: dict[str, float] = {}  # every known tenant's (read-only: hot paths read it directly)
        self._defaults: dict[str, TenantConfig] = {}
        self._path: dict[str, tuple[str, ...]] = {}
        self._rebuild()

    def config(self, tenant: str) -> TenantConfig:
        found = self.declared.get(tenant)
        if found is None:
            found = self._defaults.get(tenant)
            if found is None:
                found = self._defaults[tenant] = default_tenant(tenant)
        return found

    def add(self, tenant: str) -> bool:
        """Note a tenant seen in a job; True when it was new (shares have changed).

        An undeclared tenant joins the top level with weight 1: no other
        weight changes, and shares only through the top-level total.
        """
        if tenant in self._path:
            return False
        self._seen.add(tenant)
        bisect.insort(self._children.setdefault(None, []), tenant)
        self._totals[None] = self._totals.get(None, 0.0) + self.config(tenant).weight
        self._path[tenant] = (tenant,)
        self.weights[tenant] = self.config(tenant).weight
        return True

    def known(self) -> Iterable[str]:
        return self._path.keys()

    def entitlement(self, tenant: str, among: list[str]) -> float | None:
        """``w_i / sum w`` over the tenants ``among`` (``tenant`` counted in)."""
        names = set(among) | {tenant}
        total = sum(self.weight(t) for t in names)
        return self.weight(tenant) / total if total > 0 else None

    def weight(self, tenant: str) -> float:
        found = self.weights.get(tenant)
        if found is None:
            self.add(tenant)
            return self.weights[tenant]
        return found

    def share(self, tenant: str) -> float:
        total = self._totals.get(None, 0.0)
        return self.weight(tenant) / total if total > 0 else 0.0

    def path(self, tenant: str) -> tuple[str, ...]:
        """From the top-level ancestor down to the tenant itself."""
        if tenant not in self._path:
            self.add(tenant)
        return self._path[tenant]

    def children(self, tenant: str | None) -> list[str]:
        """The tenants directly below ``tenant`` (None: the top level), by name."""
        return self._children.get(tenant, [])

    def level_share(self, tenant: str) -> float:
        """``w / sum w_siblings`` at the tenant's own level (siblings included)."""
        config = self.config(tenant)
        total = self._totals.get(config.parent, 0.0)
        return config.weight / total if total > 0 else 0.0

    def _rebuild(self) -> None:
        names = sorted(set(self.declared) | self._seen)
        children: dict[str | None, list[str]] = {}
        for name in names:
            children.setdefault(self.config(name).parent, []).append(name)
        self._children = children
        self._totals = {parent: sum(self.config(c).weight for c in kids)
                        for parent, kids in children.items()}
        self.weights.clear()
        self._path.clear()
        for name in names:
            path: list[str] = []
            node: str | None = name
            while node is not None and len(path) <= len(names):  # the file loader refuses cycles
                path.append(node)
                node = self.config(node).parent
            path.reverse()
            self._path[name] = tuple(path)
            weight = self.config(path[0]).weight
            for x in path[1:]:
                weight *= self.level_share(x)
            self.weights[name] = weight
