"""Scheduler decision cost: 1,000 tenants x 100 queued jobs on 256 slots, per policy.

Two measurements per policy, both on the real code, no processes:

- **dispatcher** (the decision itself, steady state): a ``Dispatcher`` over
  the policy, 1,000 tenants (weights 1..4) with 100 queued jobs each, 256
  one-cpu slots filled. Then, ``--decisions`` times: the running job that
  ends first ends (``finished``, with its runtime), its tenant submits a
  replacement (``enqueue``, so every tenant keeps 100 queued), and
  ``next_jobs`` starts the next job. Reported: decisions per CPU-second of
  this process counting all three calls (``event+decide``), and counting
  ``next_jobs`` alone (``decide``); CPU time, because on a shared machine the
  time spent descheduled is not the policy's (the wall-clock rate of the
  whole loop is shown beside). Placement is a counter of free slots, called
  as the scheduler calls it: ``next_jobs`` limited to the free slots
  (``--no-limit``: without one, so that a round with one free slot asks the
  policy twice, the second time for a job that placement answers FULL).
- **simulator** (the whole scheduler): ``scheduler.simulator.Simulator``
  (the real ``SchedulerState``, driven by fake nodes and clients) on 1,000
  backlogged tenants x 100 jobs, 32 nodes x 8 cpus, runtimes uniform 0.5-1.5 s,
  for ``--sim-seconds`` simulated seconds (the queues drain by 256 jobs per
  simulated second: about 100 per tenant throughout). Reported: the
  simulator's own figure, jobs dispatched over the wall-clock time spent in
  the ``handle()`` calls that dispatched, which also take in the node's
  progress report and send the results to the clients: the cost per job, not
  only the decision.

``--profile POLICY`` runs the dispatcher measurement under cProfile and prints
the top functions by own and by cumulative time (the steady state only).
Figures only; nothing is asserted. The target
(issue 5): >= 100,000 decisions/s.

    .venv/bin/python bench/decisions.py
    .venv/bin/python bench/decisions.py --policies fair-share,drf --decisions 200000
    .venv/bin/python bench/decisions.py --profile decayed-usage
    .venv/bin/python bench/decisions.py --compiled     # as ``pip install .`` builds it
"""

from __future__ import annotations

import argparse
import cProfile
import heapq
import json
import os
import platform
import pstats
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from compiled_venv import policies_build, reexec_compiled

from fairpool.policies.dispatcher import Dispatcher, Placement
from fairpool.policies.registry import BUILTIN, make_policy
from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig
from fairpool.scheduler.policyfile import PolicyConfig
from fairpool.scheduler.simulator import Simulator
from fairpool.scheduler.workload import MeasureSpec, NodeSpec, Runtime, StreamSpec, Workload

TARGET = 100_000  # decisions per second
RUNTIME = Runtime("uniform", 0.5, 1.5)


@dataclass(eq=False, slots=True)
class BenchJob:
    """What a policy sees of a job (the ``QueuedJob`` protocol)."""

    uid: str
    tenant: str
    seq: int
    priority: int = 0
    submitted_at: float = 0.0
    cpus: float = 1.0
    memory: int = 0
    gpus: int = 0


@dataclass(frozen=True)
class PolicyFigures:
    policy: str
    decisions: int
    event_and_decide_s: float  # CPU seconds in finished + enqueue + next_jobs
    decide_s: float  # CPU seconds in next_jobs alone
    wall_s: float  # wall-clock seconds of the whole loop (the bench's own bookkeeping included)
    sim_decisions: int | None = None
    sim_dispatch_s: float | None = None
    sim_handle_s: float | None = None

    @property
    def rate(self) -> float:
        return self.decisions / self.event_and_decide_s

    @property
    def decide_rate(self) -> float:
        return self.decisions / self.decide_s

    @property
    def sim_rate(self) -> float | None:
        if not self.sim_decisions or not self.sim_dispatch_s:
            return None
        return self.sim_decisions / self.sim_dispatch_s


def tenant_configs(tenants: int) -> dict[str, TenantConfig]:
    return {f"t{i:04d}": TenantConfig(f"t{i:04d}", weight=float(1 + i % 4)) for i in range(tenants)}


def measure_dispatcher(policy_name: str, *, tenants: int, queued: int, slots: int, decisions: int,
                       seed: int = 1, profiler: cProfile.Profile | None = None,
                       limit_to_room: bool = True, batch: int = 1) -> PolicyFigures:
    """Steady state: every decision follows one job's end and its tenant's replacement submit.

    ``limit_to_room``: pass ``next_jobs`` the free slots as its ``limit``, as the scheduler does.
    ``batch``: completions per decision round (the scheduler decides once per batch of messages,
    and a node reports the results that are ready together).
    """
    configs = tenant_configs(tenants)
    dispatcher = Dispatcher(make_policy(policy_name), configs, Resources(float(slots)))
    rng = random.Random(seed)
    names = list(configs)
    seq = 0
    now = 0.0
    for _ in range(queued):  # interleaved, as many clients submitting at once would
        for name in names:
            dispatcher.enqueue(BenchJob(f"{name}.{seq}", name, seq))
            seq += 1
    free = slots

    def place(job: Any) -> Placement:
        nonlocal free
        if free <= 0:
            return Placement.FULL
        free -= 1
        return Placement.PLACED

    ends: list[tuple[float, int, BenchJob]] = []  # (end time, seq, job) of the running jobs
    for job in dispatcher.next_jobs(now, place):
        ends.append((now + RUNTIME.sample(rng), job.seq, job))
    heapq.heapify(ends)
    started = {job.uid: now for _, _, job in ends}
    done = decide_s = 0.0
    made = 0
    # CPU time of this process: on a shared machine, time spent descheduled is not the policy's
    clock = time.process_time
    if profiler is not None:
        profiler.enable()  # the steady state only, not the set-up
    wall = time.perf_counter()
    while made < decisions:
        ended = [heapq.heappop(ends) for _ in range(batch)]
        now = ended[-1][0]
        events = []
        for end, _, job in ended:
            events.append((job, end - started.pop(job.uid),
                           BenchJob(f"{job.tenant}.{seq}", job.tenant, seq, submitted_at=end)))
            seq += 1
        # only the dispatcher's calls are timed (and one clock read, ~0.24 us, in between)
        t0 = clock()
        for job, runtime, replacement in events:
            dispatcher.finished(job, now, runtime)
            free += 1
            dispatcher.enqueue(replacement)
        t1 = clock()
        chosen = dispatcher.next_jobs(now, place, free if limit_to_room else None)
        t2 = clock()
        done += t2 - t0
        decide_s += t2 - t1
        for new in chosen:
            started[new.uid] = now
            heapq.heappush(ends, (now + RUNTIME.sample(rng), new.seq, new))
        made += len(chosen)
    wall = time.perf_counter() - wall
    if profiler is not None:
        profiler.disable()
    return PolicyFigures(policy_name, made, done, decide_s, wall)


def measure_simulator(policy_name: str, *, tenants: int, queued: int, nodes: int, cpus: int,
                      seconds: float) -> tuple[int, float, float, list[str]]:
    """The real SchedulerState in the simulator: (jobs dispatched, dispatch seconds, handle seconds, problems)."""
    configs = tenant_configs(tenants)
    streams = tuple(StreamSpec(name, "backlog", RUNTIME, jobs=queued, index=i) for i, name in enumerate(configs))
    workload = Workload(tuple(NodeSpec(f"n{k:02d}", cpus) for k in range(nodes)), streams, seconds,
                        measure=MeasureSpec(window=seconds, sliding=seconds, resolution=1.0))
    config = PolicyConfig(policy_name, MappingProxyType(configs), MappingProxyType({}), "<decisions.py>")
    report = Simulator(config, workload).run()
    p = report.performance
    return p.decisions, p.dispatch_seconds, p.handle_seconds, list(report.problems)


def profile(policy_name: str, args: argparse.Namespace, top: int = 25) -> None:
    profiler = cProfile.Profile()
    figures = measure_dispatcher(policy_name, tenants=args.tenants, queued=args.queued, slots=args.slots,
                                 decisions=args.decisions, profiler=profiler, limit_to_room=args.limit_to_room,
                                 batch=args.batch)
    print(f"profile of {policy_name}: the dispatcher measurement's steady state ({figures.decisions:,} "
          f"decisions, {figures.rate:,.0f}/s under the profiler), by own time, then by cumulative time:")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default=",".join(BUILTIN), help="comma list (all built-in)")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--queued", type=int, default=100, help="queued jobs per tenant")
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--decisions", type=int, default=50_000, help="timed decisions (dispatcher)")
    parser.add_argument("--repeat", type=int, default=3, help="dispatcher measurements; the best is shown")
    parser.add_argument("--sim-seconds", type=float, default=60.0, help="simulated seconds (0: no simulator run)")
    parser.add_argument("--profile", metavar="POLICY", help="cProfile the dispatcher measurement of POLICY")
    parser.add_argument("--batch", type=int, default=1,
                        help="dispatcher: completions per decision round (1: the worst case)")
    parser.add_argument("--no-limit", dest="limit_to_room", action="store_false",
                        help="dispatcher: call next_jobs without a limit (the scheduler passes the free slots)")
    parser.add_argument("--compiled", action="store_true",
                        help="measure a regular install of this checkout (policies compiled) in bench/.venv-compiled")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.policy_list = [p.strip() for p in args.policies.split(",") if p.strip()]
    if args.slots % 8:
        parser.error("--slots must be a multiple of 8 (nodes of 8 cpus in the simulator)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.compiled:
        reexec_compiled(__file__, [a for a in (sys.argv[1:] if argv is None else argv) if a != "--compiled"])
    if args.profile:
        profile(args.profile, args)
        return 0
    load_before = os.getloadavg()[0]
    print(f"{args.tenants} tenants x {args.queued} queued jobs, {args.slots} slots; dispatcher: "
          f"{args.decisions:,} decisions, best of {args.repeat}; simulator: {args.sim_seconds:g} simulated s "
          f"on {args.slots // 8} nodes x 8 cpus"
          + ("" if args.limit_to_room else "; next_jobs without a limit")
          + (f"; {args.batch} completions per round" if args.batch > 1 else "; one completion per round")
          + f"\npolicies: {policies_build()}", flush=True)
    results: list[PolicyFigures] = []
    sim_problems: dict[str, list[str]] = {}
    for name in args.policy_list:
        runs = [measure_dispatcher(name, tenants=args.tenants, queued=args.queued, slots=args.slots,
                                   decisions=args.decisions, seed=k + 1, limit_to_room=args.limit_to_room,
                                   batch=args.batch)
                for k in range(args.repeat)]
        best = min(runs, key=lambda f: f.event_and_decide_s / f.decisions)
        if args.sim_seconds > 0:
            made, dispatch_s, handle_s, problems = measure_simulator(
                name, tenants=args.tenants, queued=args.queued, nodes=args.slots // 8, cpus=8,
                seconds=args.sim_seconds)
            best = PolicyFigures(best.policy, best.decisions, best.event_and_decide_s, best.decide_s,
                                 best.wall_s, made, dispatch_s, handle_s)
            sim_problems[name] = problems
        results.append(best)
        sim = f"{best.sim_rate:>11,.0f}" if best.sim_rate else f"{'-':>11}"
        print(f"{name:14s} event+decide {best.rate:>9,.0f}/s  decide {best.decide_rate:>9,.0f}/s  "
              f"(wall {best.decisions / best.wall_s:>9,.0f}/s)  simulator {sim}/s  "
              f"({'met' if best.rate >= TARGET else 'BELOW'} {TARGET:,}/s)", flush=True)
    load_after = os.getloadavg()[0]
    print(f"1-min load average {load_before:.2f} before, {load_after:.2f} after ({os.cpu_count()} CPUs), "
          f"python {platform.python_version()}")
    for name, problems in sim_problems.items():
        for problem in problems:
            print(f"simulator problem ({name}): {problem}")
    if args.json:
        doc = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
               "load": [load_before, load_after],
               "policies": [dict(asdict(r), rate=r.rate, decide_rate=r.decide_rate, sim_rate=r.sim_rate)
                            for r in results]}
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
