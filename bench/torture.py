"""Torture, long form: rounds of client work while the scheduler, nodes and clients are SIGKILLed.

One real ``fairpool scheduler`` and ``--nodes`` real ``fairpool node``
daemons run for the whole time. Rounds follow one another until
``--minutes`` have passed: each starts ``--clients`` client processes of
``--jobs-per-client`` jobs (half the slots reentrant, half not, alternating
from round to round). Meanwhile, at seeded random moments (exponential gaps,
``--kills-per-minute`` on average; the kinds take turns in a shuffled order),
the harness SIGKILLs the scheduler (restarted at once, same address), a node
(restarted after up to 2 s, as a new run of the node) or a client process
(the first client of a slot or a recoverer: a new process takes its cluster
over with ``recover_jobs`` or ``SharedJobCluster.reattach``, in turn).

After each round, every slot is judged from the clients' own records (the
recover files' acknowledged QUEUED jobs, the results each process saw) and
the jobs' own ledger of runs: every acknowledged job has exactly one final
result; a FINISHED one is right and was run; a non-reentrant job ran at most
once (ABANDONED, when its node was lost, is a final result: it may have run
unheard of); reentrant reruns are counted and reported. The harness is
``tests/torturelib.py`` (shared with the CI short form,
``tests/e2e/test_torture.py``).

    .venv/bin/python bench/torture.py                          # 5 minutes, seed 1
    .venv/bin/python bench/torture.py --seed 7 --minutes 1 --kills-per-minute 12 --json /tmp/torture.json

Exit status: 0 with no violation, 1 with any (or if the harness could not
run), 2 on bad options, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import pytest  # noqa: E402 - conftest's daemons report a failed start through pytest.fail
from conftest import TEST_SCHEDULER_CONFIG, Daemon, SchedulerProcess  # noqa: E402
from torturelib import Pool, RateChaos, run_round  # noqa: E402
from tortureverify import SlotVerdict  # noqa: E402

SHOWN_VIOLATIONS = 20


@dataclass
class TortureReport:
    seed: int
    minutes: float
    clients: int
    nodes: int
    jobs_per_client: int
    kills_per_minute: float
    rounds: int = 0
    seconds: float = 0.0
    kills: dict[str, int] = field(default_factory=dict)
    skipped_kills: int = 0
    totals: SlotVerdict = field(default_factory=lambda: SlotVerdict(slots=0))
    round_seconds: list[float] = field(default_factory=list)
    workdir: str = ""

    @property
    def violations(self) -> list[str]:
        return self.totals.violations


def start_pool(root: Path, nodes: int, cpus: int, rng: random.Random, heartbeat_timeout: float) -> Pool:
    """The scheduler (short heartbeats, as in the tests) and its nodes, logs and state under ``root``."""
    settings = dict(TEST_SCHEDULER_CONFIG, heartbeat_timeout=heartbeat_timeout)
    config = root / "scheduler.toml"
    config.write_text("".join(f"{key} = {value!r}\n" for key, value in settings.items()))
    scheduler = SchedulerProcess(root / "sched", log_dir=root,
                                 extra_args=["--config", str(config), "--log-level", "info"])
    scheduler.start()
    daemons = []
    for k in range(nodes):
        name = f"n{k + 1}"
        node = Daemon("node", f"node-{name}", [
            "--scheduler", scheduler.address, "--secret-file", str(scheduler.secret_file), "--cpus", str(cpus),
            "--name", name, "--state-dir", str(root / f"node-{name}"), "--log-level", "info"], log_dir=root, name=name)
        node.start()
        daemons.append(node)
    return Pool(scheduler, daemons, rng)


def stop_pool(pool: Pool) -> None:
    for node in pool.nodes:
        node.stop()
    pool.scheduler.stop()


def run(args: argparse.Namespace, root: Path) -> TortureReport:
    report = TortureReport(args.seed, args.minutes, args.clients, args.nodes, args.jobs_per_client,
                           args.kills_per_minute, workdir=str(root))
    rng = random.Random(args.seed)
    began = time.monotonic()
    until = began + args.minutes * 60
    kills: Counter[str] = Counter()
    pool = start_pool(root, args.nodes, args.cpus, rng, args.heartbeat_timeout)
    try:
        chaos = RateChaos(rng, args.kills_per_minute, until)
        while time.monotonic() < until:
            report.rounds += 1
            result = run_round(pool, chaos, rng, root=root, number=report.rounds, clients=args.clients,
                               jobs=args.jobs_per_client, timeout=args.round_timeout)
            kills.update(result.kills)
            report.skipped_kills += result.skipped_kills
            report.totals.add(result.verdict)
            report.round_seconds.append(round(result.seconds, 2))
            print(f"round {result.number}: {result.seconds:.1f} s, {result.verdict.promised} jobs, "
                  f"kills {dict(result.kills)}, {len(result.verdict.violations)} violations", flush=True)
    finally:
        stop_pool(pool)
    report.seconds = time.monotonic() - began
    report.kills = {kind: kills[kind] for kind in ("scheduler", "node", "client")}
    return report


def describe(report: TortureReport) -> str:
    r, t = report, report.totals
    lines = [
        f"fairpool torture: seed {r.seed}, {r.minutes:g} min, {r.clients} clients x {r.jobs_per_client} jobs "
        f"per round, {r.nodes} nodes, {r.kills_per_minute:g} kills/min",
        f"  rounds           {r.rounds} ({t.slots} client slots) in {r.seconds:.1f} s wall time",
        f"  jobs             {t.submitted} submitted, {t.promised} acknowledged; final: {t.finished} FINISHED, "
        f"{t.abandoned} ABANDONED (non-reentrant, node lost), {t.taken_by_killed_client} taken by a killed client",
        f"  kills (SIGKILL)  scheduler {r.kills['scheduler']}, node {r.kills['node']}, client {r.kills['client']}"
        + (f" ({r.skipped_kills} skipped: no victim alive)" if r.skipped_kills else ""),
        *(f"    ABANDONED: {count} x {reason!r}" for reason, count in sorted(t.abandon_reasons.items())),
        f"  recoveries       {t.recoveries} takeovers of a killed client's cluster (recover_jobs / reattach)",
        f"  runs             {t.runs} runs; {t.reruns} reruns of reentrant jobs; {t.unpromised_runs} runs of jobs "
        f"sent but never acknowledged; {t.redelivered} results delivered again after a client kill",
        f"  violations       {len(t.violations)}",
    ]
    lines += [f"    {v}" for v in t.violations[:SHOWN_VIOLATIONS]]
    if len(t.violations) > SHOWN_VIOLATIONS:
        lines.append(f"    ... and {len(t.violations) - SHOWN_VIOLATIONS} more (see --json)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="replays the same choices of what dies, and when")
    parser.add_argument("--minutes", type=float, default=5.0, help="no round starts after this; kills stop too")
    parser.add_argument("--clients", type=int, default=3, help="client slots per round")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="cpus per node")
    parser.add_argument("--jobs-per-client", type=int, default=300)
    parser.add_argument("--kills-per-minute", type=float, default=6.0, help="all kinds together")
    parser.add_argument("--heartbeat-timeout", type=float, default=3.0, help="the scheduler's, in seconds")
    parser.add_argument("--round-timeout", type=float, default=300.0, help="a round still running then is a violation")
    parser.add_argument("--workdir", type=Path, help="logs and state here (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir even when there was no violation")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if min(args.clients, args.nodes, args.cpus, args.jobs_per_client) < 1 or args.kills_per_minute <= 0:
        parser.error("--clients, --nodes, --cpus, --jobs-per-client and --kills-per-minute must be positive")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="fairpool-torture-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args, root)
    except (OSError, pytest.fail.Exception) as exc:
        print(f"torture: the harness failed: {exc}\n(logs in {root})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # (every process it started is stopped on the way out)
        print(f"torture: interrupted (logs in {root})", file=sys.stderr)
        return 130
    print(describe(report))
    if args.json:
        data: dict[str, Any] = asdict(report)
        data.update(violations=report.violations, violation_count=len(report.violations))
        args.json.write_text(json.dumps(data, indent=2))
    if not report.violations and not args.keep and args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
        print(f"  logs and state   {root} (removed: no violation; --keep keeps it)")
    else:
        print(f"  logs and state   {root}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
