"""Prometheus metrics of the scheduler, served at ``/metrics`` (prometheus_client).

A ``CollectorRegistry`` of its own (never the process-global one): the
gauges are read from ``SchedulerState`` when Prometheus scrapes (queued and
running jobs by tenant, nodes by state, CPUs and busy slots, connections by
role), the rest is observed as it happens: finished jobs by tenant and
status, dispatch latency (submitted -> started) and job duration (started ->
ended) from each result the state journals, journal fsync latency from the
journal writer. What is observed is kept as plain counts (a bisect and an
add per observation: prometheus_client's own Histogram and Counter cost
several times more, and this runs for every job). Tenant label values are bounded: the first ``top_tenants``
tenants (those the policy file declares first, then in order of first
activity) keep their own name for the scheduler's life, every other tenant
is counted under ``other``; so a counter never moves between series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fairpool.scheduler.history import tenant_load
from fairpool.scheduler.journalrecords import JournalRecord, RResults

if TYPE_CHECKING:
    from fairpool.scheduler.state import SchedulerState

OTHER = "other"
DEFAULT_TOP_TENANTS = 20
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 4 * 3600.0)
DURATION_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class TenantLabels:
    """At most ``limit`` tenant names as label values; the rest share ``other``. Sticky."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._named: set[str] = set()

    def __call__(self, tenant: str) -> str:
        if tenant in self._named:
            return tenant
        if len(self._named) < self.limit:
            self._named.add(tenant)
            return tenant
        return OTHER

    def admit(self, tenants: Iterator[str] | list[str]) -> None:
        for tenant in tenants:
            self(tenant)


class Buckets:
    """A histogram as plain counts per bucket, exposed as Prometheus' cumulative ``le`` buckets."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in its bucket
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = list(accumulate(self.counts))
        buckets = [(repr(float(b)), float(c)) for b, c in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", float(cumulative[-1])))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class SchedulerMetrics:
    def __init__(self, state: SchedulerState, *, top_tenants: int = DEFAULT_TOP_TENANTS) -> None:
        self.state = state
        self.labels = TenantLabels(top_tenants)
        self.labels.admit(list(state.dispatcher.tenants))
        self.finished: dict[tuple[str, str], int] = {}  # (tenant label, final status) -> jobs
        self.dispatch_latency = Buckets(LATENCY_BUCKETS)
        self.job_duration = Buckets(DURATION_BUCKETS)
        self.fsync = Buckets(FSYNC_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(self))

    def observe_record(self, record: JournalRecord) -> None:
        """Called with every record the state journals (from the state task, for every job: cheap)."""
        if not isinstance(record, RResults):
            return
        jobs, finished = self.state.jobs, self.finished
        for result in record.results:
            job = jobs.get(result.uid)
            key = (self.labels(job.tenant) if job is not None else OTHER, result.status)
            finished[key] = finished.get(key, 0) + 1
            started = result.started_at
            if started and result.finished_at >= started:
                self.job_duration.observe(result.finished_at - started)
            if job is not None and started and started >= job.submitted_at:
                self.dispatch_latency.observe(started - job.submitted_at)

    def observe_fsync(self, seconds: float) -> None:
        self.fsync.observe(seconds)

    def render(self) -> bytes:
        """The text exposition format, read from the state now."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """The gauges, computed from the state at each scrape."""

    def __init__(self, metrics: SchedulerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # nothing to check against the other collectors at registration

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        finished = CounterMetricFamily("fairpool_jobs_finished", "Jobs that ended since the scheduler started, "
                                       "by tenant and final status", labels=["tenant", "status"])
        for (tenant, status), count in sorted(metrics.finished.items()):
            finished.add_metric([tenant, status], count)
        yield finished
        yield metrics.dispatch_latency.family("fairpool_dispatch_latency_seconds", "Seconds from a job's submit "
                                              "to its start on a node (observed when the job ends)")
        yield metrics.job_duration.family("fairpool_job_duration_seconds", "Seconds a job ran on its node")
        yield metrics.fsync.family("fairpool_journal_fsync_seconds", "Seconds each group commit of the journal "
                                   "took (its write and fsync)")
        yield from self._gauges()

    def _gauges(self) -> Iterator[Metric]:
        state = self.metrics.state
        labels = self.metrics.labels
        labels.admit(list(state.dispatcher.tenants))
        queued = GaugeMetricFamily("fairpool_jobs_queued", "Jobs waiting in the queue, by tenant", labels=["tenant"])
        running = GaugeMetricFamily("fairpool_jobs_running", "Jobs handed to a node (running or about to), "
                                    "by tenant", labels=["tenant"])
        by_queued: dict[str, int] = {}
        by_running: dict[str, int] = {}
        for tenant, load in sorted(tenant_load(state).items()):
            label = labels(tenant)
            by_queued[label] = by_queued.get(label, 0) + load.queued
            by_running[label] = by_running.get(label, 0) + load.running
        for label, value in by_queued.items():
            queued.add_metric([label], value)
        for label, value in by_running.items():
            running.add_metric([label], value)
        yield queued
        yield running

        nodes = GaugeMetricFamily("fairpool_nodes", "Nodes by state", labels=["state"])
        states = {"up": 0, "draining": 0, "drained": 0, "down": 0}
        for node in state.nodes.values():
            states[node.state] = states.get(node.state, 0) + 1
        states["down"] += len({name for name, _session, _jobs in state.orphans.by_node()}
                              - {n.name for n in state.nodes.values()})
        for name, count in states.items():
            nodes.add_metric([name], count)
        yield nodes
        yield GaugeMetricFamily("fairpool_cpus", "CPUs of the connected nodes",
                                value=sum(n.cpus for n in state.nodes.values()))
        yield GaugeMetricFamily("fairpool_busy_slots", "CPU slots running a job now",
                                value=sum(min(len(n.assigned), n.cpus) for n in state.nodes.values()))

        connections = GaugeMetricFamily("fairpool_connections", "Authenticated connections by role",
                                        labels=["role"])
        roles = {"client": 0, "node": 0, "admin": 0}
        for conn in state.conns.values():
            roles[conn.role] = roles.get(conn.role, 0) + 1
        for role, count in roles.items():
            connections.add_metric([role], count)
        yield connections
        yield GaugeMetricFamily("fairpool_clusters", "Clusters the scheduler holds", value=len(state.clusters))
        info = GaugeMetricFamily("fairpool_policy_info", "The fair-share policy in force", labels=["policy"])
        info.add_metric([state.policy.name], 1)
        yield info
