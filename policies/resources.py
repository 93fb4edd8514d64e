"""Resource vectors and the charge a running job costs its tenant.

A job asks for ``(cpus, memory, gpus)``; the pool's capacity ``C`` is the sum
over the nodes that are up. POLICIES.md charges a running job, per second,
``c(r) = sum_k r_k / C_k`` (a one-cpu job on an m-cpu pool costs 1/m), and DRF
ranks tenants by their dominant share ``max_k alloc_k / C_k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class HasResources(Protocol):
    """Anything that asks for resources: a job, or a Resources vector itself."""

    @property
    def cpus(self) -> float: ...
    @property
    def memory(self) -> int: ...
    @property
    def gpus(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: float = 0.0
    memory: int = 0  # bytes
    gpus: int = 0

    @classmethod
    def of(cls, item: HasResources) -> Resources:
        return cls(float(item.cpus), int(item.memory), int(item.gpus))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.memory + other.memory, self.gpus + other.gpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpus - other.cpus, self.memory - other.memory, self.gpus - other.gpus)

    def __bool__(self) -> bool:
        return bool(self.cpus or self.memory or self.gpus)

    def to_dict(self) -> dict[str, float | int]:
        return {"cpus": self.cpus, "memory": self.memory, "gpus": self.gpus}

    def describe(self) -> str:
        parts = [f"{self.cpus:g} cpus"]
        if self.memory:
            parts.append(f"{self.memory} bytes")
        if self.gpus:
            parts.append(f"{self.gpus} gpus")
        return ", ".join(parts)


NOTHING = Resources()


def charge(item: HasResources, capacity: Resources) -> float:
    """``c(r) = sum_k r_k / C_k``: what one second of this job costs, in pool-seconds.

    Kinds the pool has none of are left out (a job asking for them cannot run
    anyway). An empty pool (no node yet) is taken as one cpu, so that charges
    stay positive and comparable until nodes join.
    """
    return charge_of(float(item.cpus), float(item.memory), float(item.gpus), capacity)


def charge_of(cpus: float, memory: float, gpus: float, capacity: Resources) -> float:
    """``charge`` of plain numbers (a running job's, read once)."""
    if capacity.cpus <= 0 and capacity.memory <= 0 and capacity.gpus <= 0:
        return cpus
    total = 0.0
    if capacity.cpus > 0:
        total += cpus / capacity.cpus
    if capacity.memory > 0:
        total += memory / capacity.memory
    if capacity.gpus > 0:
        total += gpus / capacity.gpus
    return total


def dominant_share(alloc: HasResources, capacity: Resources) -> float:
    """``max_k alloc_k / C_k`` (DRF's dominant share, before the weight)."""
    return dominant_share_of(float(alloc.cpus), float(alloc.memory), float(alloc.gpus), capacity)


def dominant_share_of(cpus: float, memory: float, gpus: float, capacity: Resources) -> float:
    """``dominant_share`` of plain numbers (what a tenant's running jobs hold, summed)."""
    if capacity.cpus <= 0 and capacity.memory <= 0 and capacity.gpus <= 0:
        return cpus
    share = 0.0
    if capacity.cpus > 0:
        share = cpus / capacity.cpus
    if capacity.memory > 0:
        share = max(share, memory / capacity.memory)
    if capacity.gpus > 0:
        share = max(share, gpus / capacity.gpus)
    return share


def exceeds(alloc: Resources, limit: Resources) -> str | None:
    """The first kind in which ``alloc`` is above ``limit`` (a zero limit: no limit), or None."""
    if limit.cpus and alloc.cpus > limit.cpus + 1e-9:
        return "cpus"
    if limit.memory and alloc.memory > limit.memory:
        return "memory"
    if limit.gpus and alloc.gpus > limit.gpus:
        return "gpus"
    return None


def below(alloc: Resources, minimum: Resources) -> bool:
    """Whether ``alloc`` is short of ``minimum`` in some kind the minimum names."""
    return ((minimum.cpus > 0 and alloc.cpus < minimum.cpus - 1e-9)
            or (minimum.memory > 0 and alloc.memory < minimum.memory)
            or (minimum.gpus > 0 and alloc.gpus < minimum.gpus))
