"""The client program of the torture harness: one process per client slot, run as a script.

``client`` opens a ``SharedJobCluster`` (reentrant or not), submits its jobs
in seeded batches and waits for every result; ``recover`` takes over a
killed client's cluster from the recover file in the same directory, by
``recover_jobs`` or ``SharedJobCluster.reattach``. Either may be SIGKILLed
at any moment, so everything it knows goes to files in its directory the
moment it knows it (one ``write`` of one line each, O_APPEND):

- ``ledger``: one line per *run* of a job, written by the job itself on the node;
- ``results.jsonl``: one line per final result this process saw;
- ``snapshots.jsonl``: the recover file as read before a takeover or a close
  (job numbers the scheduler acknowledged QUEUED, results the client took);
- ``report-<label>.json``: the process's own summary, written once at its end.

It runs as ``__main__`` on purpose: cloudpickle then ships ``torture_job``
by value, so the nodes need not import this file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

LEDGER = "ledger"
RESULTS = "results.jsonl"
SNAPSHOTS = "snapshots.jsonl"
CLUSTER_FILE = "cluster"
OPEN_DEADLINE = 60.0  # the scheduler may be restarting while a client opens
EXIT_UNFINISHED = 3  # jobs still pending when the wait gave up


def torture_job(ledger: str, tag: str, i: int, pause: float) -> tuple[str, int]:
    """The workload: record this run in the ledger first (a run that dies half-way still counts)."""
    import os
    import time

    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    time.sleep(pause)
    return tag, i * 3


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line in one write: a kill leaves whole lines or a torn last one, never a mix."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def outcome(job: Any) -> dict[str, Any]:
    """A final job as a JSON record: its status, and its value or the reason it did not finish."""
    record: dict[str, Any] = {"uid": job.uid, "status": str(job.status)}
    if job.status == "FINISHED":
        record["value"] = list(job.result(timeout=0))
    else:
        record["reason"] = job.status_reason
    return record


class ResultLog:
    """Final results as they arrive (the ``job_status`` callback); a second final result is counted."""

    def __init__(self, home: Path, label: str) -> None:
        self.path = home / RESULTS
        self.label = label
        self.finals: Counter[str] = Counter()

    def on_status(self, job: Any) -> None:
        if job.status.is_final:
            self.finals[job.uid] += 1
            self.record(job)

    def record(self, job: Any) -> None:
        append_line(self.path, dict(outcome(job), by=self.label))

    def doubles(self) -> list[str]:
        return sorted(uid for uid, count in self.finals.items() if count > 1)


def snapshot(home: Path, recover_file: Path, label: str) -> dict[str, Any]:
    """What the recover file says now, appended to ``snapshots.jsonl`` and returned."""
    from fairpool.clients.recover import read_recover_state

    state = read_recover_state(recover_file)
    record = {"cluster_id": state.info.cluster_id, "queued": sorted(state.queued), "sent": state.sent,
              "received": sorted(state.received), "by": label}
    append_line(home / SNAPSHOTS, record)
    return record


def with_retry(opener: Any, deadline: float) -> tuple[Any, int]:
    """``opener()`` until it connects (a scheduler being restarted refuses for a moment)."""
    from fairpool.clients.errors import ClusterNotFound, SchedulerConnectionError

    attempts = 0
    while True:
        attempts += 1
        try:
            return opener(), attempts
        except ClusterNotFound:
            raise
        except SchedulerConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def write_report(home: Path, label: str, report: dict[str, Any]) -> None:
    path = home / f"report-{label}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, path)


def run_client(args: argparse.Namespace) -> int:
    from fairpool import SharedJobCluster

    home, rng = Path(args.home), random.Random(args.seed)
    log = ResultLog(home, args.label)
    began = time.monotonic()
    cluster, attempts = with_retry(lambda: SharedJobCluster(
        torture_job, scheduler=args.scheduler, secret_file=args.secret_file, tenant=args.tenant,
        reentrant=args.reentrant, job_status=log.on_status, name=args.tag), began + OPEN_DEADLINE)
    with cluster:
        (home / CLUSTER_FILE).write_text(cluster.cluster_id)
        jobs = []
        while len(jobs) < args.jobs:  # seeded batches and pauses: kills land mid-submission too
            for _ in range(min(rng.randint(1, 40), args.jobs - len(jobs))):
                i = len(jobs)
                jobs.append(cluster.submit(str(home / LEDGER), args.tag, i,
                                           rng.uniform(args.pause_min, args.pause_max)))
            time.sleep(rng.uniform(0.0, 0.05))
        ended = cluster.wait(timeout=args.timeout)
        seen = snapshot(home, Path(cluster.recover_file), args.label) if cluster.recover_file else {}
        finals = {job.uid: outcome(job) for job in jobs if job.status.is_final}
        write_report(home, args.label, {
            "role": "client", "cluster_id": cluster.cluster_id, "submitted": [job.uid for job in jobs],
            "queued": seen.get("queued", []), "results": finals, "ended": ended,
            "open_attempts": attempts, "doubles": log.doubles()})
    return 0 if ended else EXIT_UNFINISHED


def run_recover(args: argparse.Namespace) -> int:
    from fairpool import SharedJobCluster, recover_jobs
    from fairpool.clients.errors import ClusterNotFound, NoRecoverFile
    from fairpool.clients.recover import latest_recover_file

    home = Path(args.home)
    os.chdir(home)  # recover_jobs and reattach find the recover file in the working directory
    try:
        found = latest_recover_file(home)
    except NoRecoverFile:
        write_report(home, args.label, {"role": args.mode, "cluster_id": None, "why": "no recover file"})
        return 0
    cid = found.info.cluster_id
    seen = snapshot(home, found.path, args.label)
    log = ResultLog(home, args.label)
    deadline = time.monotonic() + args.timeout
    report: dict[str, Any] = {"role": args.mode, "cluster_id": cid, "queued": seen["queued"]}
    try:
        if args.mode == "reattach":
            cluster, report["open_attempts"] = with_retry(
                lambda: SharedJobCluster.reattach(cid, job_status=log.on_status), time.monotonic() + OPEN_DEADLINE)
            with cluster:
                ended = cluster.wait(timeout=args.timeout)
                jobs = cluster.jobs()
        else:
            while True:  # recover_jobs hangs up at its timeout; a later call collects the rest
                jobs, _ = with_retry(lambda: recover_jobs(cid, timeout=min(30.0, args.timeout)),
                                     time.monotonic() + OPEN_DEADLINE)
                for job in jobs:
                    if job.status.is_final:
                        log.record(job)
                ended = all(job.status.is_final for job in jobs)
                if ended or time.monotonic() > deadline:
                    break
    except ClusterNotFound as exc:  # the dead client had closed it already: nothing left to take
        write_report(home, args.label, dict(report, why=f"cluster not found: {exc}", ended=True))
        return 0
    report.update(results={job.uid: outcome(job) for job in jobs if job.status.is_final},
                  ended=ended, doubles=log.doubles())
    write_report(home, args.label, report)
    return 0 if ended else EXIT_UNFINISHED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["client", "reattach", "recover_jobs"])
    parser.add_argument("--home", required=True, help="this client slot's directory (and working directory)")
    parser.add_argument("--label", required=True, help="names this process's report")
    parser.add_argument("--scheduler", default=None)
    parser.add_argument("--secret-file", default=None)
    parser.add_argument("--tenant", default=None)
    parser.add_argument("--tag", default="", help="returned by every job, to check results against")
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--reentrant", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause-min", type=float, default=0.0)
    parser.add_argument("--pause-max", type=float, default=0.03)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the jobs to end")
    args = parser.parse_args(argv)
    return run_client(args) if args.mode == "client" else run_recover(args)


if __name__ == "__main__":
    sys.exit(main())
