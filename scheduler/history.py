"""What the pool did over time, for the dashboard's charts: a sampler of the live state.

Every ``interval`` seconds ``History.sample`` reads ``SchedulerState`` (in
the trio thread, between awaits: nothing changes it meanwhile) and keeps,
in a ring of ``points`` samples: throughput (jobs ended per second), queued,
running, busy and total CPUs, and for each active tenant its entitlement and
the share it received. Entitlement is the policy's own figure where it has
one (fair-share, round-robin, DRF, priority, decayed-usage), else the
tenant's weight over the weights of the active tenants; the received share
is the CPUs its running jobs hold over the CPUs of the nodes that are up.
``tenant_load`` (who has what queued and running now) is shared with
``fairpool.scheduler.metrics``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from fairpool.jobstatus import JobStatus

if TYPE_CHECKING:
    from fairpool.scheduler.state import SchedulerState

SAMPLE_INTERVAL = 2.0
SAMPLE_POINTS = 900  # 30 minutes at the default interval
CHART_TENANTS = 12  # the most active tenants get a line each; a chart of more is unreadable


@dataclass
class Load:
    """One tenant's jobs right now."""

    queued: int = 0
    running: int = 0  # handed to a node (running, or prefetched there)
    cpus: float = 0.0  # CPUs its jobs on nodes hold


def tenant_load(state: SchedulerState) -> dict[str, Load]:
    """Queued and running jobs per tenant: one pass over the jobs the scheduler holds."""
    load: dict[str, Load] = {}
    for node in state.nodes.values():
        for job in node.assigned.values():
            entry = load.get(job.tenant) or load.setdefault(job.tenant, Load())
            entry.running += 1
            entry.cpus += job.cpus
    queued = JobStatus.QUEUED
    for job in state.jobs.values():
        if job.status is queued and not job.node:
            entry = load.get(job.tenant) or load.setdefault(job.tenant, Load())
            entry.queued += 1
    return load


@dataclass(frozen=True)
class TenantPoint:
    entitlement: float
    received: float
    running: int
    queued: int


@dataclass(frozen=True)
class Sample:
    at: float
    queued: int
    running: int
    finished: int  # jobs ended since the scheduler started (a counter)
    throughput: float  # jobs ended per second since the previous sample
    nodes: int
    cpus: int  # of the nodes that are up
    busy: int
    tenants: dict[str, TenantPoint] = field(default_factory=dict)


class History:
    def __init__(self, state: SchedulerState, *, interval: float = SAMPLE_INTERVAL,
                 points: int = SAMPLE_POINTS) -> None:
        self.state = state
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=points)

    async def run(self) -> None:
        while True:
            self.sample(time.time())
            await trio.sleep(self.interval)

    def sample(self, now: float) -> Sample:
        state = self.state
        previous = self.samples[-1] if self.samples else None
        finished = state.finished_total
        throughput = 0.0
        if previous is not None and now > previous.at:
            throughput = max(finished - previous.finished, 0) / (now - previous.at)
        up = [n for n in state.nodes.values() if n.state == "up"]
        capacity = float(sum(n.cpus for n in up))
        load = tenant_load(state)
        sample = Sample(
            at=now, queued=sum(v.queued for v in load.values()), running=sum(v.running for v in load.values()),
            finished=finished, throughput=throughput, nodes=len(state.nodes), cpus=int(capacity),
            busy=sum(min(len(n.assigned), n.cpus) for n in state.nodes.values()),
            tenants=self._shares(load, capacity))
        self.samples.append(sample)
        return sample

    def _shares(self, load: dict[str, Load], capacity: float) -> dict[str, TenantPoint]:
        active = [name for name, entry in load.items() if entry.queued or entry.running]
        if not active:
            return {}
        tenants = self.state.dispatcher.tenants
        weights = {name: (tenants[name].weight if name in tenants else 1.0) for name in active}
        total_weight = sum(weights.values())
        figures = getattr(self.state.dispatcher.policy, "tenant_figures", None)
        points: dict[str, TenantPoint] = {}
        for name in active:
            entitlement = figures(name)[0] if figures is not None else None
            if entitlement is None:
                entitlement = weights[name] / total_weight if total_weight > 0 else 0.0
            received = load[name].cpus / capacity if capacity > 0 else 0.0
            points[name] = TenantPoint(round(float(entitlement), 4), round(min(received, 1.0), 4),
                                       load[name].running, load[name].queued)
        return points

    def view(self, tenant: str | None = None) -> dict[str, Any]:
        """The series as the dashboard draws them: ``tenant`` given, only that tenant's share."""
        samples = list(self.samples)
        at = [round(s.at, 3) for s in samples]
        if tenant is not None:
            return {"interval": self.interval, "at": at, "tenants": _tenant_series(samples, [tenant])}
        return {
            "interval": self.interval, "at": at,
            "throughput": [round(s.throughput, 3) for s in samples],
            "queued": [s.queued for s in samples], "running": [s.running for s in samples],
            "busy": [s.busy for s in samples], "cpus": [s.cpus for s in samples],
            "tenants": _tenant_series(samples, _most_active(samples)),
        }


def _most_active(samples: Iterable[Sample]) -> list[str]:
    held: dict[str, float] = {}
    for sample in samples:
        for name, point in sample.tenants.items():
            # Counted in, even with nothing received: a starved tenant is what the chart is for.
            held[name] = held.get(name, 0.0) + point.received + point.entitlement
    return sorted(held, key=lambda name: (-held[name], name))[:CHART_TENANTS]


def _tenant_series(samples: list[Sample], names: list[str]) -> dict[str, dict[str, list[float | None]]]:
    series: dict[str, dict[str, list[float | None]]] = {}
    for name in sorted(names):
        entitlement: list[float | None] = []
        received: list[float | None] = []
        for sample in samples:
            point = sample.tenants.get(name)
            entitlement.append(point.entitlement if point else None)
            received.append(point.received if point else None)
        if any(v is not None for v in entitlement):
            series[name] = {"entitlement": entitlement, "received": received}
    return series
