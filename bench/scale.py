"""Scale on one machine: a hundred simulated nodes, twenty client processes, one real scheduler.

``fairpool scheduler`` runs as usual (journal on, fsync on); ``simnodes.py``
runs the nodes as trio tasks of one process, each with its own connection
speaking the node protocol and running jobs in-process; ``simclient.py`` is
one tenant's ``SharedJobCluster`` per process, submitting small jobs in
batches. While they work, an admin session asks the scheduler ``status``
every ``--interval`` seconds (and, every tenth time, opens a fresh
connection for it, handshake included, as ``fairpool admin status`` does).
The clients and the node fleet stand in for other machines: they run at
``--nice`` 10, so that on one small machine they do not crowd out the
scheduler being measured (which, like the sampling process, runs at normal priority).

Reported: jobs and jobs/s; ``status`` latency p50/p99/max over the samples
taken while jobs were in flight (target: p99 under 100 ms); the scheduler's
CPU seconds over the load (utime+stime from ``/proc/PID/stat``) and per job;
its RSS before and after, and its peak (VmHWM). Checked: every client got
every result right, and every submitted job ran exactly once (the fleet
counts runs by uid). Exit 0 when correct and within the target, 1 otherwise.

    .venv/bin/python bench/scale.py                        # 100 nodes, 20 clients, 15 s of load
    .venv/bin/python bench/scale.py --nodes 20 --clients 4 --jobs 200 --json /tmp/scale.json

``run_scale(...)`` is what ``tests/e2e/test_scale_small.py`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Processes, tail  # noqa: E402 - bench/ on the path first

from fairpool.admin import AdminError, admin_session, request_async, resolve_credentials  # noqa: E402

FAIRPOOL = Path(sys.executable).parent / "fairpool"
START_TIMEOUT = 30.0
P99_TARGET_MS = 100.0
FRESH_EVERY = 10  # one status sample in this many is asked over a new connection
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ScaleReport:
    nodes: int
    clients: int
    jobs: int = 0
    seconds: float = 0.0
    jobs_per_second: float = 0.0
    status_samples: int = 0
    status_p50_ms: float = 0.0
    status_p99_ms: float = 0.0
    status_max_ms: float = 0.0
    fresh_status_p50_ms: float = 0.0
    fresh_status_max_ms: float = 0.0
    sched_cpu_s: float = 0.0
    sched_cpu_ms_per_job: float = 0.0
    sched_rss_mb_before: float = 0.0
    sched_rss_mb_after: float = 0.0
    sched_rss_mb_peak: float = 0.0
    load_average: float = 0.0  # of the machine, over the last minute, when the load ended
    wrong_or_failed: int = 0
    never_ran: int = 0
    ran_twice: int = 0
    ran_unsubmitted: int = 0
    nodes_lost: list[str] = field(default_factory=list)
    workdir: str = ""  # logs and state of the run

    @property
    def correct(self) -> bool:
        return self.jobs > 0 and not (self.wrong_or_failed or self.never_ran or self.ran_twice
                                      or self.ran_unsubmitted or self.nodes_lost)

    @property
    def within_target(self) -> bool:
        return self.status_samples > 0 and self.status_p99_ms < P99_TARGET_MS


# --- the scheduler process, seen from /proc --------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def memory_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_for_file(path: Path, timeout: float, what: str, alive: Any) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if alive.poll() is not None:
            raise RuntimeError(f"{what} exited ({alive.returncode}) before writing {path}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} wrote no {path} within {timeout:g}s")


# --- sampling ----------------------------------------------------------------------------


def _percentile(samples: list[float], q: int) -> float:
    if len(samples) < 2:
        return samples[0] if samples else 0.0
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def _sample_status(address: str, secret_file: Path, clients: list[Any], interval: float,
                         deadline: float) -> tuple[list[float], list[float]]:
    """Ask ``status`` until every client process has exited; (ms under load, ms with a fresh connection)."""
    creds = resolve_credentials(scheduler=address, secret_file=secret_file)
    loaded: list[float] = []
    fresh: list[float] = []
    count = 0
    async with admin_session(creds) as session:
        while any(c.poll() is None for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the clients did not finish within the deadline")
            count += 1
            start = time.perf_counter()
            if count % FRESH_EVERY:
                status = await session.request("status")
                elapsed = (time.perf_counter() - start) * 1000
                if status["queued"] or status["running"]:
                    loaded.append(elapsed)
            else:
                await request_async(creds, "status", timeout=30)
                fresh.append((time.perf_counter() - start) * 1000)
            await trio.sleep(interval)
    return loaded, fresh


# --- one run -----------------------------------------------------------------------------


def run_scale(*, nodes: int = 100, clients: int = 20, jobs: int = 0, duration: float = 15.0, batch: int = 50,
              cpus: int = 2, hold: float = 0.0, policy: str = "fair-share", interval: float = 0.02,
              nice: int = 10, workdir: Path | None = None, deadline: float = 600.0) -> ScaleReport:
    """Start everything, run the load, stop everything, and say what was measured and checked."""
    root = Path(tempfile.mkdtemp(prefix="fairpool-scale-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    report = ScaleReport(nodes, clients, workdir=str(root))
    with Processes(root) as procs:
        state = root / "sched"
        scheduler = procs.start("scheduler", [str(FAIRPOOL), "scheduler", "--listen", "127.0.0.1:0",
                                              "--state-dir", str(state), "--log-level", "warning",
                                              "--policy", policy], cwd=root)
        address = _wait_for_file(state / "scheduler.address", START_TIMEOUT, "the scheduler", scheduler)
        secret = state / "secret"
        stats = root / "simnodes.json"
        niced = ["nice", "-n", str(nice)] if nice else []
        fleet = procs.start("simnodes", [*niced, sys.executable, str(HERE / "simnodes.py"), "--scheduler", address,
                                         "--secret-file", str(secret), "--nodes", str(nodes), "--cpus", str(cpus),
                                         "--hold", str(hold), "--stats", str(stats),
                                         "--ready", str(root / "nodes.ready")], cwd=root)
        _wait_for_file(root / "nodes.ready", START_TIMEOUT + nodes * 0.2, "the simulated nodes", fleet)

        report.sched_rss_mb_before = memory_mb(scheduler.pid, "VmRSS")
        cpu_before = cpu_seconds(scheduler.pid)
        began = time.monotonic()
        limit = ["--jobs", str(jobs)] if jobs else ["--duration", str(duration)]
        workers = [procs.start(f"client{k}", [*niced, sys.executable, str(HERE / "simclient.py"), "--scheduler", address,
                                               "--secret-file", str(secret), "--tenant", f"t{k}", *limit,
                                               "--batch", str(batch), "--out", str(root / f"client{k}.json")],
                               cwd=root) for k in range(clients)]
        loaded, fresh = trio.run(_sample_status, address, secret, workers, interval, began + deadline)
        report.seconds = time.monotonic() - began
        report.sched_cpu_s = cpu_seconds(scheduler.pid) - cpu_before
        report.sched_rss_mb_after = memory_mb(scheduler.pid, "VmRSS")
        report.sched_rss_mb_peak = memory_mb(scheduler.pid, "VmHWM")
        report.load_average = os.getloadavg()[0]

        fleet.send_signal(signal.SIGTERM)  # it writes the run counts, then exits
        fleet.wait(30)
        submitted: set[str] = set()
        for k, worker in enumerate(workers):
            out = root / f"client{k}.json"
            if not out.exists():
                raise RuntimeError(f"client{k} exited {worker.returncode} without results: "
                                   f"{tail(root / f'client{k}.err')}")
            data = json.loads(out.read_text())
            submitted.update(data["uids"])
            report.wrong_or_failed += data["wrong"] + data["failed"]
        counted = json.loads(stats.read_text())
        runs: dict[str, int] = counted["runs"]
        report.nodes_lost = counted["lost"]

    report.jobs = len(submitted)
    report.jobs_per_second = report.jobs / report.seconds if report.seconds else 0.0
    report.never_ran = len(submitted - set(runs))
    report.ran_twice = sum(1 for count in runs.values() if count > 1)
    report.ran_unsubmitted = len(set(runs) - submitted)
    report.sched_cpu_ms_per_job = report.sched_cpu_s * 1000 / report.jobs if report.jobs else 0.0
    report.status_samples = len(loaded)
    report.status_p50_ms = _percentile(loaded, 50)
    report.status_p99_ms = _percentile(loaded, 99)
    report.status_max_ms = max(loaded, default=0.0)
    report.fresh_status_p50_ms = _percentile(fresh, 50)
    report.fresh_status_max_ms = max(fresh, default=0.0)
    return report


def describe(report: ScaleReport) -> str:
    r = report
    return "\n".join([
        f"fairpool scale: {r.nodes} simulated nodes, {r.clients} client processes, one scheduler "
        f"({os.cpu_count()} cpus here, load average {r.load_average:.1f} at the end)",
        f"  jobs                 {r.jobs} in {r.seconds:.1f} s ({r.jobs_per_second:.0f} jobs/s, client start-up included)",
        f"  admin status         p50 {r.status_p50_ms:.1f} ms, p99 {r.status_p99_ms:.1f} ms, "
        f"max {r.status_max_ms:.1f} ms over {r.status_samples} samples under load "
        f"(target p99 < {P99_TARGET_MS:g} ms: {'met' if r.within_target else 'MISSED'})",
        f"  status, new conn.    p50 {r.fresh_status_p50_ms:.1f} ms, max {r.fresh_status_max_ms:.1f} ms "
        "(connect + handshake + request)",
        f"  scheduler CPU        {r.sched_cpu_s:.2f} s over the load, {r.sched_cpu_ms_per_job * 1000:.0f} µs per job",
        f"  scheduler RSS        {r.sched_rss_mb_before:.1f} MB before, {r.sched_rss_mb_after:.1f} MB after, "
        f"peak {r.sched_rss_mb_peak:.1f} MB",
        f"  correctness          {'every job ran exactly once, every result right' if r.correct else 'FAILED'}: "
        f"{r.wrong_or_failed} wrong/failed, {r.never_ran} never ran, {r.ran_twice} ran twice, "
        f"{r.ran_unsubmitted} ran unsubmitted, {len(r.nodes_lost)} node connections lost",
        f"  logs and state       {r.workdir}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=0, help="jobs per client (default: run for --duration)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds each client submits for")
    parser.add_argument("--batch", type=int, default=50, help="jobs a client submits before awaiting them")
    parser.add_argument("--cpus", type=int, default=2, help="cpus per simulated node")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds a batch of jobs 'runs' on a node")
    parser.add_argument("--policy", default="fair-share")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between status samples")
    parser.add_argument("--nice", type=int, default=10,
                        help="niceness of the clients and nodes, which stand in for other machines (0: none)")
    parser.add_argument("--workdir", type=Path, help="keep logs and state here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        report = run_scale(nodes=args.nodes, clients=args.clients, jobs=args.jobs, duration=args.duration,
                           batch=args.batch, cpus=args.cpus, hold=args.hold, policy=args.policy,
                           interval=args.interval, nice=args.nice, workdir=args.workdir)
    except (RuntimeError, AdminError, OSError) as exc:
        print(f"scale: failed: {exc}", file=sys.stderr)
        return 1
    print(describe(report))
    if args.json:
        args.json.write_text(json.dumps(dict(asdict(report), correct=report.correct,
                                             within_target=report.within_target), indent=2))
    return 0 if report.correct and report.within_target else 1


if __name__ == "__main__":
    sys.exit(main())
