"""A tiny discrete-event driver for policies: virtual clock, nodes, jobs with runtimes.

No scheduler, no processes: jobs are submitted at given times, a Dispatcher
decides at every event time which queued jobs start, and each job ends after
its runtime. What every tenant received is measured in charged slot-seconds
(``c(r) * duration``, a one-cpu job on an m-cpu pool is 1/m of the pool) over
a window, as POLICIES.md measures fairness. The real simulator drives the
scheduler's state machine instead; this one only checks policies.
"""

from __future__ import annotations

import heapq
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fairpool.policies.base import Policy, QueuedJob
from fairpool.policies.core import PolicyBase
from fairpool.policies.dispatcher import Dispatcher, Placement
from fairpool.policies.resources import Resources, charge
from fairpool.policies.tenants import TenantConfig


@dataclass(eq=False)
class SimJob:
    uid: str
    tenant: str
    seq: int
    runtime: float
    priority: int = 0
    submitted_at: float = 0.0
    cpus: float = 1.0
    memory: int = 0
    gpus: int = 0


@dataclass
class SimNode:
    name: str
    cpus: float
    memory: int = 0
    gpus: int = 0
    used: Resources = field(default_factory=Resources)

    def fits(self, job: QueuedJob) -> bool:
        return (self.used.cpus + job.cpus <= self.cpus + 1e-9
                and self.used.memory + job.memory <= self.memory
                and self.used.gpus + job.gpus <= self.gpus)


@dataclass(frozen=True)
class Run:
    uid: str
    tenant: str
    start: float
    end: float
    charge: float


class Sim:
    """Jobs, nodes and a policy on a virtual clock.

    ``shuffle``: how events that happen at the same time are ordered before
    they reach the policy (a permutation; default: as they were scheduled).
    """

    def __init__(self, policy: Policy, *, slots: int | None = None,
                 nodes: Iterable[tuple[float, int, int]] = (),
                 tenants: Mapping[str, TenantConfig] | None = None,
                 shuffle: Callable[[list[tuple[str, SimJob]]], None] | None = None) -> None:
        specs = list(nodes) or [(1.0, 0, 0)] * (slots or 1)
        self.nodes = [SimNode(f"n{i}", float(c), m, g) for i, (c, m, g) in enumerate(specs)]
        self.capacity = Resources(sum(n.cpus for n in self.nodes), sum(n.memory for n in self.nodes),
                                  sum(n.gpus for n in self.nodes))
        self.dispatcher = Dispatcher(policy, tenants, self.capacity)
        self.shuffle = shuffle
        self.now = 0.0
        self._events: list[tuple[float, int, int, str, SimJob]] = []
        self._counter = 0
        self._seq = 0
        self._where: dict[str, SimNode] = {}
        self._started: dict[str, tuple[SimJob, float]] = {}  # running: job, start
        self.runs: list[Run] = []
        self.starts: list[tuple[float, str]] = []  # (time, uid): the decisions, in order
        self.refused: list[str] = []

    # --- workload -----------------------------------------------------------

    def job(self, tenant: str, runtime: float, at: float = 0.0, **kw: object) -> SimJob:
        """Submit one job at ``at`` (sequence numbers follow the order of these calls)."""
        self._seq += 1
        job = SimJob(f"{tenant}.{self._seq}", tenant, self._seq, runtime, submitted_at=at, **kw)  # type: ignore[arg-type]
        self._push(at, 1, "submit", job)
        return job

    def jobs(self, tenant: str, runtime: float, count: int, at: float = 0.0, **kw: object) -> list[SimJob]:
        return [self.job(tenant, runtime, at, **kw) for _ in range(count)]

    def _push(self, at: float, order: int, kind: str, job: SimJob) -> None:
        self._counter += 1
        heapq.heappush(self._events, (at, order, self._counter, kind, job))

    # --- running ------------------------------------------------------------

    def _place(self, job: QueuedJob) -> Placement:
        if all(n.used.cpus >= n.cpus - 1e-9 for n in self.nodes):
            return Placement.FULL
        fitting = [n for n in self.nodes if n.fits(job)]
        if not fitting:
            return Placement.NO_FIT
        node = max(fitting, key=lambda n: n.cpus - n.used.cpus)
        node.used = node.used + Resources.of(job)
        self._where[job.uid] = node
        return Placement.PLACED

    def run(self, until: float) -> None:
        """Process every event up to ``until`` (jobs still running then are cut there)."""
        while self._events and self._events[0][0] <= until:
            t = self._events[0][0]
            batch: list[tuple[str, SimJob]] = []
            while self._events and self._events[0][0] == t:
                _, _, _, kind, job = heapq.heappop(self._events)
                batch.append((kind, job))
            if self.shuffle is not None:
                self.shuffle(batch)
            self.now = t
            for kind, job in batch:
                if kind == "finish":
                    self._finish(job)
                else:
                    refused = self.dispatcher.admit(job)
                    if refused is not None:
                        self.refused.append(refused)
                    else:
                        self.dispatcher.enqueue(job)
            for started in self.dispatcher.next_jobs(t, self._place):
                assert isinstance(started, SimJob)
                self._started[started.uid] = (started, t)
                self.starts.append((t, started.uid))
                self._push(t + started.runtime, 0, "finish", started)
        self.now = until

    def _finish(self, job: SimJob) -> None:
        _, start = self._started.pop(job.uid)
        node = self._where.pop(job.uid)
        node.used = node.used - Resources.of(job)
        self.runs.append(Run(job.uid, job.tenant, start, self.now, charge(job, self.capacity)))
        self.dispatcher.finished(job, self.now, self.now - start)

    # --- measures -----------------------------------------------------------

    def shares(self, start: float, end: float) -> dict[str, float]:
        """Each tenant's fraction of the charged slot-seconds within [start, end]."""
        got: dict[str, float] = defaultdict(float)
        running = [Run(j.uid, j.tenant, t, self.now, charge(j, self.capacity)) for j, t in self._started.values()]
        for run in self.runs + running:
            overlap = min(run.end, end) - max(run.start, start)
            if overlap > 0:
                got[run.tenant] += run.charge * overlap
        total = sum(got.values())
        return {t: v / total for t, v in sorted(got.items())} if total else {}

    def running_jobs(self) -> list[tuple[SimJob, float]]:
        return sorted(self._started.values(), key=lambda item: item[0].seq)

    def running(self, tenant: str) -> int:
        return sum(1 for job, _ in self._started.values() if job.tenant == tenant)


def jain(ratios: Iterable[float]) -> float:
    """Jain's index ``(sum x)^2 / (n * sum x^2)``: 1 when every tenant gets its entitlement."""
    xs = list(ratios)
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if xs else 1.0


def shuffler(seed: int) -> Callable[[list[tuple[str, SimJob]]], None]:
    rng = random.Random(seed)
    return rng.shuffle


def job(tenant: str, seq: int, *, runtime: float = 1.0, **kw: object) -> SimJob:
    """One job for unit tests that feed a policy by hand."""
    return SimJob(f"{tenant}.{seq}", tenant, seq, runtime, **kw)  # type: ignore[arg-type]


def weights(**by_name: float) -> dict[str, TenantConfig]:
    return {name: TenantConfig(name, weight) for name, weight in by_name.items()}


def restarted_midway(make: Callable[[], PolicyBase], books: str, at: float) -> tuple[dict[str, float], dict[str, float]]:
    """A job estimated at 1 s runs 20 s; one policy sees it through, another is snapshotted at
    ``at`` (before or after the job outlives its estimate), restored into a fresh one that
    resumes the job. Their books after it ends (``books``: the snapshot's entry)."""
    long, short = job("a", 1), job("a", 2)
    through, restarted = make(), make()
    for policy in (through, restarted):
        policy.configure(weights(a=1, b=1), Resources(2.0))
        policy.enqueue(long)
        policy.enqueue(short)
        policy.on_start(long, 0.0)
        policy.on_start(short, 0.0)
        policy.on_finish(short, 0.4, 0.4)  # (a's estimate is 0.4 s from now on: not the long job's)
        policy.begin_round(at)
    restored = make()
    restored.configure(weights(a=1, b=1), Resources(2.0))
    assert restored.restore(restarted.snapshot(), at + 2.0)  # (back two seconds later)
    restored.on_start(long, 0.0, resumed=True)
    for policy in (through, restored):
        policy.on_finish(long, 20.0, 20.0)
    return through.snapshot()[books], restored.snapshot()[books]
