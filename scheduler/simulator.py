"""The policy simulator: the real SchedulerState on a described workload, on a virtual clock.

``fairpool admin policy simulate --config FILE --workload FILE`` calls
``run_simulation``; ``simulate`` takes the parsed files. No processes, no
sockets, no second implementation of scheduling: a ``SchedulerState`` is
built as the daemon builds it (policy and tenants from the policy file) and
driven purely through stimuli, by fake peers:

- nodes connect (``Connected`` with a node ``Peer``, then ``NodeReady``),
  run what they are dispatched, at most their cpus (memory, gpus) at once,
  the extras the scheduler prefetches queued in order, and report each
  instant's starts and ends in one ``NodeProgress``;
- each tenant has one client connection and one cluster; its streams submit
  jobs (``Submit``) as the workload says, and it acknowledges results
  (``AckResults``) so that the state stays small;
- ``Tick`` stimuli every ``tick`` seconds; the state's heartbeat timeout is
  made infinite, since virtual peers never go quiet.

Events sit in a heap ordered by (time, phase, sequence): at one instant,
submits and job ends come first, then nodes join (so that tenants that all
arrive at the start are all queued when the pool opens), then the nodes
report, then clients acknowledge, then the tick, then the fairness sample.
The run is therefore deterministic: same files, same report. The only wall
clock read is the time spent inside ``handle()`` (decisions per second).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from fairpool.handshake import Peer
from fairpool.messages import (
    AckResults,
    Dispatch,
    Error,
    Heartbeat,
    JobOptions,
    JobResult,
    JobStarted,
    JobSubmit,
    JobsUpdate,
    Message,
    NodeProgress,
    NodeReady,
    OpenCluster,
    ReleaseCluster,
    Submit,
)
from fairpool.policies.base import Policy
from fairpool.policies.resources import Resources, charge
from fairpool.policies.tenants import TenantConfig, TenantTree
from fairpool.scheduler.events import (
    Close,
    Connected,
    Instruction,
    Log,
    Received,
    Send,
    Stimulus,
    Tick,
)
from fairpool.scheduler.fairness import Claim, ShareLedger, limit_cap, water_fill
from fairpool.scheduler.policyfile import PolicyConfig, load_policy_file
from fairpool.scheduler.simreport import Performance, SimulationReport, TenantTally, build_report
from fairpool.scheduler.state import SchedulerState
from fairpool.scheduler.workload import NodeSpec, StreamSpec, Workload, load_workload

__all__ = ["SimulationReport", "Simulator", "run_simulation", "simulate"]

NEVER = 1e15  # heartbeat timeout: a virtual peer is never lost
SUBMIT_BATCH = 1000  # jobs per Submit message, as the client library batches them
MAX_PROBLEMS = 20
ARRIVE, JOIN, REPORT, ACK, TICK, SAMPLE = range(6)  # phases of one instant, in this order


class _Job:
    __slots__ = ("uid", "tenant", "runtime", "cpus", "memory", "gpus", "submitted_at", "node", "started_at",
                 "charge")

    def __init__(self, uid: str, tenant: str, runtime: float, stream: StreamSpec, now: float) -> None:
        self.uid = uid
        self.tenant = tenant
        self.runtime = runtime
        self.cpus, self.memory, self.gpus = stream.cpus, stream.memory, stream.gpus
        self.submitted_at = now
        self.node = ""  # where it was dispatched
        self.started_at = -1.0  # not started on a node yet
        self.charge = 0.0


class _Node:
    def __init__(self, conn: int, spec: NodeSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.queue: deque[_Job] = deque()  # dispatched, waiting for room (the prefetched ones)
        self.running: dict[str, _Job] = {}
        self.used = Resources()
        self.started: list[JobStarted] = []
        self.results: list[JobResult] = []
        self.report_due = False

    def fits(self, job: _Job) -> bool:
        spec, used = self.spec, self.used
        if used.cpus + job.cpus > spec.cpus + 1e-9:
            return False
        if job.memory and used.memory + job.memory > spec.memory:
            return False
        return not job.gpus or used.gpus + job.gpus <= spec.gpus


class _Tenant:
    def __init__(self, name: str, weight: float, config: TenantConfig | None, conn: int) -> None:
        self.name = name
        self.weight = weight
        self.config = config
        self.conn = conn
        self.cluster_id = f"sim-{name}"
        self.connected = False
        self.uids = itertools.count()
        self.waiting = 0  # submitted, not started on a node
        self.waiting_load = Resources()  # what those jobs ask for, together
        self.running = 0
        self.rate = 0.0  # charge of its running jobs: its share of the pool now
        self.unit = Resources(1.0)  # its latest job's resources (for its caps)
        self.submitted = self.started = self.finished = self.refused = 0
        self.waits: list[float] = []
        self.arrival: float | None = None
        self.start = math.inf  # its earliest stream start

    def waits_for(self, job: _Job) -> None:
        self.waiting += 1
        self.waiting_load = self.waiting_load + Resources(job.cpus, job.memory, job.gpus)

    def stops_waiting_for(self, job: _Job) -> None:
        self.waiting -= 1
        self.waiting_load = self.waiting_load - Resources(job.cpus, job.memory, job.gpus) if self.waiting \
            else Resources()  # no float drift left behind


class Simulator:
    """One run: build with the policy file's config and a workload, then ``run()``."""

    def __init__(self, policy_config: PolicyConfig, workload: Workload, *, policy: Policy | None = None,
                 default_policy: str = "fifo") -> None:
        self.config = policy_config
        self.workload = workload
        if policy is None:  # (not ``policy or``: a policy with nothing queued is falsy, len() == 0)
            policy = policy_config.make_policy(default=default_policy)
        self.state = SchedulerState(policy, heartbeat_timeout=NEVER)
        self.state.dispatcher.configure(tenants=policy_config.tenants)
        self.tiers = self.state.policy.name == "priority"
        self.ledger = ShareLedger(workload.duration, workload.measure.resolution)
        self._heap: list[tuple[float, int, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self._conns = itertools.count(1)
        self.nodes: dict[int, _Node] = {}
        self.capacity = Resources()
        self.jobs: dict[str, _Job] = {}
        tree = TenantTree(policy_config.tenants)
        self.tenants: dict[str, _Tenant] = {}
        for stream in workload.streams:
            tenant = self.tenants.get(stream.tenant)
            if tenant is None:
                tenant = self.tenants[stream.tenant] = _Tenant(
                    stream.tenant, tree.weight(stream.tenant), policy_config.tenants.get(stream.tenant),
                    next(self._conns))
            tenant.start = min(tenant.start, stream.start)
        self._clients = {t.conn: t for t in self.tenants.values()}
        self._active: dict[str, None] = {}  # waiting or running, in a deterministic order
        self._acks: dict[int, list[str]] = {}
        self.handle_calls = self.decisions = self.dispatch_calls = 0
        self.handle_seconds = self.dispatch_seconds = 0.0
        self.problems: list[str] = []
        self._problem_count = 0
        self._ran = False

    # --- the event loop -------------------------------------------------------

    def _at(self, when: float, phase: int, action: Callable[[float], None]) -> None:
        heapq.heappush(self._heap, (when, phase, next(self._seq), action))

    def run(self) -> SimulationReport:
        """Play the whole workload (once: the state is used up)."""
        if self._ran:
            raise RuntimeError("a Simulator runs once: make another one")
        self._ran = True
        workload = self.workload
        for spec in workload.nodes:
            self._at(spec.join, JOIN, functools.partial(self._join, spec))
        for stream in workload.streams:
            self._at(stream.start, ARRIVE, self._stream(stream))
        self._at(workload.tick, TICK, self._tick)
        self._at(0.5 * self.ledger.resolution, SAMPLE, self._sampler(0))
        while self._heap and self._heap[0][0] <= workload.duration:
            now, _, _, action = heapq.heappop(self._heap)
            action(now)
        for node in self.nodes.values():  # still running at the end: counted up to it
            for job in node.running.values():
                self.ledger.add_usage(job.tenant, job.started_at, workload.duration, job.charge)
        return self._report()

    def _handle(self, stimulus: Stimulus) -> None:
        began = time.perf_counter()
        out = self.state.handle(stimulus)
        took = time.perf_counter() - began
        self.handle_seconds += took
        self.handle_calls += 1
        decided = self.decisions
        for instruction in out:
            self._apply(instruction, stimulus.now)
        if self.decisions > decided:
            self.dispatch_seconds += took
            self.dispatch_calls += 1

    def _tick(self, now: float) -> None:
        self._handle(Tick(now))
        self._at(now + self.workload.tick, TICK, self._tick)

    # --- what the state asks for ----------------------------------------------

    def _apply(self, instruction: Instruction, now: float) -> None:
        if isinstance(instruction, Send):
            node = self.nodes.get(instruction.conn)
            if node is not None:
                self._to_node(node, instruction.message, now)
            elif instruction.conn in self._clients:
                self._to_client(self._clients[instruction.conn], instruction.message, now)
        elif isinstance(instruction, Close):
            self._problem(f"the scheduler closed connection {instruction.conn}: {instruction.reason}")
        elif isinstance(instruction, Log) and instruction.level in ("warning", "error", "critical"):
            self._problem(f"{instruction.level}: {instruction.event} {dict(instruction.fields)}")

    def _to_node(self, node: _Node, message: Message, now: float) -> None:
        if isinstance(message, Dispatch):
            for task in message.tasks:
                job = self.jobs.get(task.uid)
                if job is None or job.node:
                    self._problem(f"job {task.uid} dispatched to {node.spec.name}: "
                                  + ("unknown" if job is None else f"it was sent to {job.node} before"))
                    continue
                job.node = node.spec.name
                node.queue.append(job)
                self.decisions += 1
            self._report_due(node, now)
        elif not isinstance(message, Heartbeat | ReleaseCluster):
            self._problem(f"node {node.spec.name} was sent {type(message).__name__}")

    def _to_client(self, tenant: _Tenant, message: Message, now: float) -> None:
        if isinstance(message, JobsUpdate):
            for result in message.results:
                job = self.jobs.pop(result.uid, None)
                if job is not None and job.started_at < 0:  # refused, or fits no node
                    tenant.stops_waiting_for(job)
                    tenant.refused += 1
                    self._touch(tenant)
                if tenant.conn not in self._acks:
                    self._acks[tenant.conn] = []
                    self._at(now, ACK, functools.partial(self._ack, tenant.conn))
                self._acks[tenant.conn].append(result.uid)
        elif isinstance(message, Error):
            self._problem(f"tenant {tenant.name} was told: {message.reason} ({message.ref})")

    def _ack(self, conn: int, now: float) -> None:
        uids = self._acks.pop(conn, [])
        if uids:
            self._handle(Received(conn, (AckResults(uids),), now))

    def _touch(self, tenant: _Tenant) -> None:
        """Keep ``_active``, the tenants that claim a share now, up to date."""
        if tenant.waiting or tenant.running:
            self._active.setdefault(tenant.name, None)
        else:
            self._active.pop(tenant.name, None)

    def _problem(self, text: str) -> None:
        self._problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    # --- fake nodes -------------------------------------------------------------

    def _join(self, spec: NodeSpec, now: float) -> None:
        conn = next(self._conns)
        self.nodes[conn] = _Node(conn, spec)
        self.capacity = self.capacity + Resources(float(spec.cpus), spec.memory, spec.gpus)
        self._handle(Connected(conn, Peer("node", "", spec.name), now))
        ready = NodeReady(spec.name, spec.cpus, spec.memory, spec.gpus, session="sim", held=[])
        self._handle(Received(conn, (ready,), now))

    def _report_due(self, node: _Node, now: float) -> None:
        if not node.report_due:
            node.report_due = True
            self._at(now, REPORT, functools.partial(self._report_progress, node))

    def _report_progress(self, node: _Node, now: float) -> None:
        """Start what fits, in dispatch order, then tell this instant's starts and ends at once."""
        node.report_due = False
        while node.queue and node.fits(node.queue[0]):
            job = node.queue.popleft()
            node.running[job.uid] = job
            node.used = node.used + Resources(job.cpus, job.memory, job.gpus)
            job.started_at = now
            job.charge = charge(job, self.capacity)
            tenant = self.tenants[job.tenant]
            tenant.stops_waiting_for(job)
            tenant.running += 1
            tenant.rate += job.charge
            tenant.started += 1
            tenant.waits.append(now - job.submitted_at)
            self._touch(tenant)
            node.started.append(JobStarted(job.uid, node.spec.name, now))
            self._at(now + job.runtime, ARRIVE, functools.partial(self._end, node, job))
        if node.started or node.results:
            progress = NodeProgress(node.started, node.results)
            node.started, node.results = [], []
            self._handle(Received(node.conn, (progress,), now))

    def _end(self, node: _Node, job: _Job, now: float) -> None:
        del node.running[job.uid]
        node.used = node.used - Resources(job.cpus, job.memory, job.gpus)
        tenant = self.tenants[job.tenant]
        tenant.running -= 1
        tenant.rate = tenant.rate - job.charge if tenant.running else 0.0
        tenant.finished += 1
        self._touch(tenant)
        self.ledger.add_usage(job.tenant, job.started_at, now, job.charge)
        node.results.append(JobResult(job.uid, "FINISHED", started_at=job.started_at, finished_at=now,
                                      node=node.spec.name))
        self._report_due(node, now)

    # --- fake clients -----------------------------------------------------------

    def _stream(self, stream: StreamSpec) -> Callable[[float], None]:
        arrivals, runtimes = self.workload.rng(stream, "arrivals"), self.workload.rng(stream, "runtimes")
        tenant = self.tenants[stream.tenant]
        count = itertools.count(1)
        stop = min(stream.stop if stream.stop is not None else math.inf, self.workload.duration)

        def arrive(now: float) -> None:
            n = (stream.jobs or 0) if stream.arrive == "backlog" else 1
            jobs = [_Job(f"{tenant.cluster_id}.{next(tenant.uids)}", tenant.name,
                         stream.runtime.sample(runtimes), stream, now) for _ in range(n)]
            self._submit(tenant, stream, jobs, now)
            done = next(count)
            if stream.arrive == "backlog" or stream.jobs is not None and done >= stream.jobs:
                return
            gap = arrivals.expovariate(stream.rate) if stream.arrive == "poisson" else 1.0 / stream.rate
            if now + gap <= stop:
                self._at(now + gap, ARRIVE, arrive)

        return arrive

    def _submit(self, tenant: _Tenant, stream: StreamSpec, jobs: list[_Job], now: float) -> None:
        if not jobs:
            return
        messages: list[OpenCluster | Submit] = []
        if not tenant.connected:
            tenant.connected = True
            self._handle(Connected(tenant.conn, Peer("client", tenant.name, f"sim-{tenant.name}"), now))
            messages.append(OpenCluster(tenant.cluster_id, f"simulated {tenant.name}", b""))
        if tenant.arrival is None:
            tenant.arrival = now
        options = JobOptions(cpus=stream.cpus, memory=stream.memory, gpus=stream.gpus, priority=stream.priority)
        for job in jobs:
            self.jobs[job.uid] = job
            tenant.waits_for(job)
        for i in range(0, len(jobs), SUBMIT_BATCH):
            batch = jobs[i:i + SUBMIT_BATCH]
            messages.append(Submit(tenant.cluster_id, [JobSubmit(j.uid, b"", options) for j in batch]))
        tenant.unit = Resources(stream.cpus, stream.memory, stream.gpus)
        tenant.submitted += len(jobs)
        self._touch(tenant)
        self._handle(Received(tenant.conn, tuple(messages), now))

    # --- measuring ----------------------------------------------------------------

    def _sampler(self, index: int) -> Callable[[float], None]:
        def sample(now: float) -> None:
            self.ledger.add_entitlement(index, self.entitlements())
            if index + 1 < self.ledger.bins:
                self._at((index + 1.5) * self.ledger.resolution, SAMPLE, self._sampler(index + 1))

        return sample

    def entitlements(self) -> dict[str, float]:
        """What each active tenant is entitled to now, in pool fractions, out of what is in use.

        A tenant's demand is what it runs plus what its waiting jobs ask for: one
        waiting job does not entitle a trickle of small jobs to a weight's worth.
        """
        claims: dict[str, Claim] = {}
        total = 0.0
        for name in self._active:
            tenant = self.tenants[name]
            total += tenant.rate
            demand = tenant.rate + charge(tenant.waiting_load, self.capacity)
            tier = tenant.config.tier if self.tiers and tenant.config is not None else 0
            claims[name] = Claim(tenant.weight, demand, limit_cap(tenant.config, tenant.unit, self.capacity), tier)
        return water_fill(claims, total) if total > 0 else {}

    def _report(self) -> SimulationReport:
        tallies = [TenantTally(t.name, t.weight, t.submitted, t.started, t.finished, t.refused, tuple(t.waits),
                               t.arrival, t.start) for t in self.tenants.values()]
        problems = list(self.problems)
        if self._problem_count > len(problems):
            problems.append(f"... and {self._problem_count - len(problems)} more")
        performance = Performance(self.handle_calls, self.handle_seconds, self.decisions, self.dispatch_calls,
                                  self.dispatch_seconds)
        return build_report(self.state.policy.name, self.workload, self.ledger, tallies, performance, problems)


def simulate(policy_config: PolicyConfig, workload: Workload, *, policy: Policy | None = None,
             default_policy: str = "fifo") -> SimulationReport:
    """Run ``workload`` under the policy file's policy and tenants (``policy``: this one instead)."""
    return Simulator(policy_config, workload, policy=policy, default_policy=default_policy).run()


def run_simulation(config_path: Path | str, workload_path: Path | str, *,
                   default_policy: str = "fifo") -> SimulationReport:
    """``fairpool admin policy simulate --config FILE --workload FILE``.

    PolicyFileError / WorkloadError (both ConfigError) for a bad file.
    """
    return simulate(load_policy_file(config_path), load_workload(workload_path), default_policy=default_policy)
