"""End-to-end fairness on a real pool: each tenant's share of slot-seconds against its entitlement.

``fairpool scheduler`` (journal on, the policy file naming the policy and the
tenants' weights), one ``fairpool node --cpus N`` and one client process per
tenant (bench/fairclient.py: a ``SharedJobCluster`` keeping ``--in-flight``
sleep jobs outstanding, so every tenant is backlogged all the time). All
clients start submitting at one instant and stop ``--seconds`` later.

Afterwards the scheduler is stopped and its journal read with fairpool's own
reader (``read_journal``): ``RResults`` give each job's node, ``started_at``
and ``finished_at``, ``RJobsQueued`` its cluster and ``RClusterOpened`` the
cluster's tenant. The clients' ``Job`` objects carry the same timestamps; they
are the source only when the journal lacks some finished job (compaction drops
acknowledged results; the scheduler is given a compaction threshold the run
cannot reach), and the output says which source was used.

Every job is charged ``1/N`` of the pool per second it ran (POLICIES.md:
``c(r)``); shares and entitlements (the weights, water-filled: every tenant
is backlogged) go into ``scheduler.fairness.ShareLedger``; per window after
the warm-up, ``d_abs`` and ``jain_index`` of that module. Utilization is busy
slot-seconds over ``N`` times the wall time. Targets (issue 5): D_abs <= 0.03
per 10 s window, Jain >= 0.99 over the run, utilization >= 85% with 50 ms
jobs. They are printed as met or missed; nothing is asserted.

    .venv/bin/python bench/fairness.py                                  # fair-share, 60 s, 4 slots
    .venv/bin/python bench/fairness.py --policy fair-share,fifo --json /tmp/fairness.json
    .venv/bin/python bench/fairness.py --seconds 20 --cpus 2 --weights 1,1 --job-seconds 0.1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fairreport import Analysis, analyse, describe  # noqa: E402 - bench/ on the path first
from harness import Processes, tail, wait_until  # noqa: E402

from fairpool.admin import AdminError, call, resolve_credentials  # noqa: E402
from fairpool.scheduler.journal import JOURNAL_NAME, read_journal  # noqa: E402
from fairpool.scheduler.journalrecords import (  # noqa: E402
    RClusterOpened,
    RClusterOpenedRef,
    RJobsQueued,
    RJobsQueuedRef,
    RResults,
    RResultsRef,
)

FAIRPOOL = Path(sys.executable).parent / "fairpool"
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
START_TIMEOUT = 30.0
GO_DELAY = 0.5  # seconds between the go file and the common start instant

#: One finished job: (tenant, node, started_at, finished_at), the node's wall clock.
JobSpan = tuple[str, str, float, float]


@dataclass
class PolicyRun:
    policy: str
    analysis: Analysis | None = None
    source: str = ""  # where the job spans came from
    journal_results: int = 0
    client_results: int = 0
    failed: int = 0
    unfinished: int = 0
    timestamp_mismatches: int = 0  # jobs whose journal and client timestamps differ
    load_before: float = 0.0
    load_after: float = 0.0
    started_utc: str = ""
    workdir: str = ""
    problems: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    # a user's FAIRPOOL_* settings must not redirect the benchmark's clients or daemons
    return {k: v for k, v in os.environ.items() if not k.startswith("FAIRPOOL_")}


def _policy_file(policy: str, tenants: dict[str, float]) -> str:
    lines = [f'policy = "{policy}"', ""]
    for name, weight in tenants.items():
        lines += [f"[tenants.{name}]", f"weight = {weight:g}", ""]
    return "\n".join(lines)


def _read_text(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


def journal_spans(state_dir: Path) -> dict[str, JobSpan]:
    """Every job that ended with a start and an end, by uid, from the scheduler's journal."""
    contents = read_journal(state_dir / JOURNAL_NAME)
    tenant_of_cluster: dict[str, str] = {}
    cluster_of_job: dict[str, str] = {}
    ended: list[tuple[str, str, float, float]] = []  # uid, node, started, finished
    for record in contents.records:
        match record:
            case RClusterOpened() | RClusterOpenedRef():
                tenant_of_cluster[record.cluster_id] = record.tenant
            case RJobsQueued() | RJobsQueuedRef():
                for job in record.jobs:
                    cluster_of_job[job.uid] = record.cluster_id
            case RResults() | RResultsRef():
                stored = record.stored if isinstance(record, RResultsRef) else []
                for r in [*record.results, *stored]:
                    if r.started_at and r.finished_at > r.started_at:
                        ended.append((r.uid, r.node, r.started_at, r.finished_at))
    spans: dict[str, JobSpan] = {}
    for uid, node, started, finished in ended:
        tenant = tenant_of_cluster.get(cluster_of_job.get(uid, ""))
        if tenant is not None:
            spans[uid] = (tenant, node, started, finished)
    return spans


def client_spans(outputs: list[dict[str, Any]]) -> dict[str, JobSpan]:
    spans: dict[str, JobSpan] = {}
    for out in outputs:
        for uid, _status, node, started, finished in out["jobs"]:
            if started and finished and finished > started:
                spans[uid] = (out["tenant"], node, started, finished)
    return spans


def _wait_node_up(address: str, secret: Path, cpus: int) -> None:
    creds = resolve_credentials(scheduler=address, secret_file=secret)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        nodes = call(creds, "nodes.list", timeout=5)
        if any(n["state"] == "up" and n["cpus"] == cpus for n in nodes):
            return
        time.sleep(0.1)
    raise RuntimeError(f"no node with {cpus} cpus up within {START_TIMEOUT:g}s")


def run_policy(policy: str, args: argparse.Namespace, root: Path) -> PolicyRun:
    """Stand the pool up under ``policy``, saturate it for ``args.seconds``, tear it down, measure."""
    run = PolicyRun(policy, workdir=str(root))
    state = root / "sched"
    state.mkdir(parents=True)
    policy_path, config = root / "policy.toml", root / "scheduler.toml"
    policy_path.write_text(_policy_file(policy, args.tenants))
    # compaction would drop acknowledged results from the journal: keep it out of reach
    config.write_text('journal = true\ncompact_bytes = "16G"\nlog_level = "warning"\n')
    env = _env()
    outputs: list[dict[str, Any]] = []
    with Processes(root) as procs:
        sched = procs.start("scheduler", [str(FAIRPOOL), "scheduler", "--listen", "127.0.0.1:0",
                                          "--state-dir", str(state), "--config", str(config),
                                          "--policy-file", str(policy_path)], cwd=root, env=env)
        secret = state / "secret"
        wait_until(lambda: _read_text(state / "scheduler.address") is not None and secret.exists()
                   or sched.poll() is not None, START_TIMEOUT)
        address = _read_text(state / "scheduler.address")
        if address is None or sched.poll() is not None:
            raise RuntimeError(f"the scheduler did not start: {tail(root / 'scheduler.err')}")
        procs.start("node", [str(FAIRPOOL), "node", "--scheduler", address, "--cpus", str(args.cpus),
                             "--name", "bench-node", "--secret-file", str(secret), "--state-dir",
                             str(root / "node"), "--log-level", "warning"], cwd=root, env=env)
        _wait_node_up(address, secret, args.cpus)
        go = root / "go.json"
        clients = []
        for name in args.tenants:
            clients.append(procs.start(f"client-{name}", [
                sys.executable, str(HERE / "fairclient.py"), "--scheduler", address, "--secret-file", str(secret),
                "--tenant", name, "--in-flight", str(args.in_flight), "--job-seconds", str(args.job_seconds),
                "--ready", str(root / f"{name}.ready"), "--go", str(go), "--out", str(root / f"{name}.json"),
            ], cwd=root, env=env))
        ready = wait_until(lambda: all((root / f"{n}.ready").exists() for n in args.tenants)
                           or any(c.poll() is not None for c in clients), START_TIMEOUT)
        if not ready or any(c.poll() is not None for c in clients):
            raise RuntimeError("a client did not connect: " + "; ".join(
                tail(root / f"client-{n}.err", 3) for n in args.tenants))
        run.load_before = os.getloadavg()[0]
        run.started_utc = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        start = time.time() + GO_DELAY
        stop = start + args.seconds
        go.write_text(json.dumps([start, stop]))
        if not wait_until(lambda: all(c.poll() is not None for c in clients), args.seconds + 180, 0.2):
            raise RuntimeError("the clients did not finish within the deadline")
        run.load_after = os.getloadavg()[0]
        for name, client in zip(args.tenants, clients, strict=True):
            out = root / f"{name}.json"
            if client.returncode != 0 or not out.exists():
                raise RuntimeError(f"client {name} exited {client.returncode}: {tail(root / f'client-{name}.err')}")
            outputs.append(json.loads(out.read_text()))
        procs.stop(sched, grace_s=15.0)  # SIGTERM: the scheduler writes what it holds and exits
    from_journal = journal_spans(state)
    from_clients = client_spans(outputs)
    run.journal_results, run.client_results = len(from_journal), len(from_clients)
    run.failed = sum(o["failed"] for o in outputs)
    run.unfinished = sum(o["unfinished"] for o in outputs)
    run.timestamp_mismatches = sum(1 for uid, span in from_clients.items()
                                   if uid in from_journal and from_journal[uid] != span)
    missing = set(from_clients) - set(from_journal)
    if missing:
        run.source = (f"clients' Job objects (the journal lacks {len(missing)} of the "
                      f"{len(from_clients)} finished jobs)")
        spans = from_clients
    else:
        run.source = f"scheduler journal ({len(from_journal)} results; the clients saw the same jobs)"
        spans = from_journal
    run.analysis = analyse(list(spans.values()), start=start, seconds=args.seconds, slots=args.cpus,
                           weights=args.tenants, window=args.window, warmup=args.warmup)
    return run


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="fair-share", help="a policy, or a comma list run one after the other")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients submit (60)")
    parser.add_argument("--cpus", type=int, default=4, help="the node's slots (4)")
    parser.add_argument("--job-seconds", type=float, default=0.05, help="each job sleeps this long (0.05)")
    parser.add_argument("--weights", default="1,2,3", help="tenants' weights: alice,bob,carol,... (1,2,3)")
    parser.add_argument("--in-flight", type=int, default=None, help="jobs each client keeps outstanding (2 x cpus)")
    parser.add_argument("--window", type=float, default=10.0, help="measurement window, seconds (10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds left out at the start (one window)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, journal)")
    args = parser.parse_args(argv)
    try:
        weights = [float(w) for w in args.weights.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--weights: numbers expected, got {args.weights!r}")
    if not weights or len(weights) > len(NAMES) or min(weights) <= 0:
        parser.error(f"--weights: 1 to {len(NAMES)} positive weights")
    args.tenants = dict(zip(NAMES, weights, strict=False))
    args.policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    args.in_flight = args.in_flight or 2 * args.cpus
    args.warmup = args.window if args.warmup is None else args.warmup
    if args.seconds < args.warmup + args.window or args.cpus < 1 or args.job_seconds <= 0:
        parser.error("need --seconds >= warm-up + one window, --cpus >= 1, --job-seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    base = Path(tempfile.mkdtemp(prefix="fairpool-fairness-"))
    runs: list[PolicyRun] = []
    status = 0
    for policy in args.policies:
        print(f"{policy}: {args.seconds:g} s, {len(args.tenants)} tenants (weights "
              f"{', '.join(f'{n} {w:g}' for n, w in args.tenants.items())}), {args.cpus} slots, "
              f"{args.job_seconds * 1000:g} ms jobs, {args.in_flight} in flight per tenant ...", flush=True)
        try:
            run = run_policy(policy, args, base / policy)
        except (RuntimeError, AdminError, OSError) as exc:
            print(f"{policy}: failed: {exc} (logs in {base / policy})", file=sys.stderr)
            status = 1
            continue
        runs.append(run)
        print(describe(run, args), flush=True)
    if args.json is not None:
        doc = {"settings": {k: v for k, v in vars(args).items() if k not in ("json",)},
               "cpus_here": os.cpu_count(), "runs": [_as_dict(r) for r in runs]}
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    if args.keep or status:
        print(f"logs and journals kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return status


def _as_dict(run: PolicyRun) -> dict[str, Any]:
    out = {k: v for k, v in vars(run).items() if k != "analysis"}
    out["analysis"] = run.analysis.to_dict() if run.analysis is not None else None
    return out


if __name__ == "__main__":
    sys.exit(main())
