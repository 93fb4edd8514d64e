"""``fairpool demo``: a throwaway pool and three tenants sharing it, in one process.

Starts a scheduler on a free loopback port and a local node (as ``fairpool
up`` does) in a temporary state directory, runs the clients of three tenants
(alice, bob, carol, each in a thread with its own ``SharedJobCluster``), prints
how many jobs each tenant has had done as time goes on and each tenant's
share of the pool next to what its weight entitles it to, then the results,
and stops everything. The default policy is ``fair-share`` (weights 3:2:1);
``--policy fifo`` shows the difference: first come, first served.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from fairpool.address import Address
from fairpool.config import NodeConfig, SchedulerConfig, load_scheduler_config

TENANT_WEIGHTS = {"alice": 3, "bob": 2, "carol": 1}
JOB_SECONDS = 0.1
REPORT_EVERY = 0.5
DEADLINE = 120.0  # a demo that has not finished by then is broken: say so, do not hang
RESULT_TIMEOUT = 60.0


def demo_job(tenant: str, n: int) -> int:
    """What each demo job does: a little sleep standing in for work, then n squared."""
    time.sleep(JOB_SECONDS)
    return n * n


@dataclass
class TenantRun:
    name: str
    weight: int
    count: int
    jobs: list[Any] = field(default_factory=list)  # fairpool Jobs (futures), filled by the client thread
    results: list[int] = field(default_factory=list)

    def done(self) -> int:
        return sum(1 for job in self.jobs if job.done())

    def expected(self) -> list[int]:
        return [n * n for n in range(self.count)]

    def correct(self) -> bool:
        return self.results == self.expected()


def _run_tenant(run: TenantRun, address: Address, secret_file: Path, start: threading.Barrier) -> None:
    """One tenant's client, in a thread of its own (the sync client API blocks)."""
    from fairpool import SharedJobCluster

    with SharedJobCluster(demo_job, scheduler=str(address), secret_file=str(secret_file),
                          tenant=run.name) as cluster:
        start.wait(RESULT_TIMEOUT)  # every tenant submits at once: the race is the policy's to judge
        for n in range(run.count):
            run.jobs.append(cluster.submit(run.name, n))
        run.results = [job.result(timeout=RESULT_TIMEOUT) for job in run.jobs]


async def _report(runs: list[TenantRun], started: float, shares: list[dict[str, float]]) -> None:
    """Every REPORT_EVERY seconds: jobs done per tenant, and each one's share of the jobs that ended
    in that interval next to its entitlement (its weight among the tenants still waiting)."""
    print(f"{'time':>6}" + "".join(f"{run.name:>18}" for run in runs) + "   (jobs done: share / entitled)",
          flush=True)
    before = {run.name: 0 for run in runs}
    while True:
        await trio.sleep(REPORT_EVERY)
        now = {run.name: run.done() for run in runs}
        ended = sum(now[name] - before[name] for name in now)
        waiting = [run for run in runs if before[run.name] < run.count]
        total_weight = sum(run.weight for run in waiting) or 1
        cells = []
        for run in runs:
            share = (now[run.name] - before[run.name]) / ended if ended else 0.0
            entitled = run.weight / total_weight if run in waiting else 0.0
            cells.append(f"{now[run.name]:>5}: {share:4.0%} / {entitled:4.0%}")
        if ended and len(waiting) == len(runs):
            shares.append({run.name: (now[run.name] - before[run.name]) / ended for run in runs})
        print(f"{time.monotonic() - started:5.1f}s" + "".join(f"{c:>18}" for c in cells), flush=True)
        before = now


def _progress_line(runs: list[TenantRun], elapsed: float) -> str:
    return f"{elapsed:5.1f}s" + "".join(f"{run.done():>18}" for run in runs)


@dataclass
class Outcome:
    status: str = "interrupted"  # -> "timeout" | "done"


async def _demo(scheduler_config: SchedulerConfig, node_config: NodeConfig, runs: list[TenantRun], outcome: Outcome) -> None:
    from fairpool.cli import start_pool

    async with trio.open_nursery() as pool:
        address = await start_pool(pool, scheduler_config, node_config)
        print(f"scheduler at {address}, a local node with {node_config.cpus} CPUs, "
              f"policy {scheduler_config.policy}", flush=True)
        if scheduler_config.policy == "fifo":
            print("fifo runs jobs in the order they were submitted: the weights "
                  f"({_weights(runs)}) are not used by this policy.", flush=True)
        else:
            print(f"tenant weights: {_weights(runs)}", flush=True)
        started = time.monotonic()
        shares: list[dict[str, float]] = []
        start = threading.Barrier(len(runs))
        with trio.move_on_after(DEADLINE) as deadline:
            async with trio.open_nursery() as clients:
                clients.start_soon(_report, runs, started, shares)
                async with trio.open_nursery() as tenants:
                    for run in runs:
                        tenants.start_soon(_in_thread, run, address, scheduler_config.secret_path, start)
                clients.cancel_scope.cancel()
        pool.cancel_scope.cancel()
    elapsed = time.monotonic() - started
    if deadline.cancelled_caught:
        outcome.status = "timeout"
        print(f"the demo did not finish within {DEADLINE:g}s", flush=True)
        return
    outcome.status = "done"
    print(_progress_line(runs, elapsed) + "   all done")
    for run in runs:
        verdict = "correct" if run.correct() else f"WRONG (expected {run.expected()})"
        print(f"{run.name}: {run.results} {verdict}")
    if shares:
        total_weight = sum(run.weight for run in runs)
        mean = {run.name: sum(s[run.name] for s in shares) / len(shares) for run in runs}
        print("while all three tenants had jobs waiting, their shares of the pool were: "
              + ", ".join(f"{run.name} {mean[run.name]:.0%} (entitled {run.weight / total_weight:.0%})"
                          for run in runs))
    print(f"{sum(r.count for r in runs)} jobs of {JOB_SECONDS:g}s in {elapsed:.1f}s; stopped.",
          flush=True)


async def _in_thread(run: TenantRun, address: Address, secret_file: Path, start: threading.Barrier) -> None:
    # abandon_on_cancel: Ctrl-C must not wait for a client blocked on a result.
    await trio.to_thread.run_sync(_run_tenant, run, address, secret_file, start, abandon_on_cancel=True)


def _weights(runs: list[TenantRun]) -> str:
    return ", ".join(f"{run.name} {run.weight}" for run in runs)


def _policy_file(state_dir: Path, policy: str) -> Path:
    """A policy file in SPEC's format giving the demo tenants their weights."""
    path = state_dir / "policy.toml"
    lines = [f'policy = "{policy}"', ""]
    for name, weight in TENANT_WEIGHTS.items():
        lines += [f"[tenants.{name}]", f"weight = {weight}", ""]
    path.write_text("\n".join(lines))
    return path


def run_demo(*, cpus: str | int | None = None, jobs: int = 40, policy: str | None = None,
             log_level: str = "warning") -> int:
    """Run the demo; return the exit code (0: every tenant got its correct results)."""
    from fairpool.cli import (
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        EXIT_OK,
        local_node_config,
        run_daemon,
    )
    from fairpool.config import ConfigError
    from fairpool.logs import configure_logging

    if jobs < 1:
        raise ConfigError(f"bad value for --jobs: expected an integer >= 1, got {jobs}")
    with tempfile.TemporaryDirectory(prefix="fairpool-demo-") as tmp:
        state_dir = Path(tmp)
        policy = policy or "fair-share"
        overrides: dict[str, Any] = {"listen": "127.0.0.1:0", "state_dir": state_dir,
                                     "log_level": log_level, "policy": policy}
        if policy is not None and policy != "fifo":
            overrides["policy_file"] = _policy_file(state_dir, policy)
        scheduler = load_scheduler_config(None, overrides)
        node = local_node_config(scheduler, cpus)
        configure_logging(scheduler.log_format, scheduler.log_level)
        runs = [TenantRun(name, weight, jobs) for name, weight in TENANT_WEIGHTS.items()]
        # Clients write their recover files in the working directory: keep them in tmp.
        cwd = os.getcwd()
        os.chdir(state_dir)
        try:
            outcome = Outcome()
            code = run_daemon("demo", lambda: _demo(scheduler, node, runs, outcome))
        finally:
            os.chdir(cwd)
    if code != EXIT_OK:
        return code
    if outcome.status == "interrupted":  # a signal cancelled the run before the end
        print("demo interrupted")
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.status == "done" and all(run.correct() for run in runs) else EXIT_FAILED
