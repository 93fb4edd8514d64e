"""One tenant's client process of the fairness benchmark: keeps the pool saturated with short jobs.

It opens a ``SharedJobCluster`` as ``--tenant``, says it is connected (writes
``--ready``), waits for the driver's ``--go`` file (the wall-clock instant to
start and to stop submitting), then keeps ``--in-flight`` sleep jobs
outstanding: each time one ends, another is submitted, so the tenant always
has jobs queued behind the ones running. After the stop instant it submits
no more and waits for the outstanding ones. It writes ``--out``: one row per
job, ``[uid, status, node, started_at, finished_at]`` as the client's
``Job`` saw them (the node's wall-clock timestamps), so that the driver can
check the journal against them or use them when the journal lacks results.

    python bench/fairclient.py --scheduler 127.0.0.1:PORT --secret-file S --tenant alice \\
        --in-flight 8 --job-seconds 0.05 --ready r --go g --out alice.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Any

from fairpool import SharedJobCluster

GO_TIMEOUT = 120.0  # the driver starts every client, then says go
DRAIN_TIMEOUT = 120.0  # after the stop instant: the outstanding jobs must end within this


def sleep_for(seconds: float) -> None:
    """The job: holds its slot for ``seconds`` without using a core (so more slots than cores is fine)."""
    time.sleep(seconds)


def _wait_for_go(go: Path) -> tuple[float, float]:
    deadline = time.monotonic() + GO_TIMEOUT
    while time.monotonic() < deadline:
        try:
            start, stop = json.loads(go.read_text())
            return float(start), float(stop)
        except (OSError, ValueError):
            time.sleep(0.01)
    raise RuntimeError(f"no go file {go} within {GO_TIMEOUT:g}s")


def _row(job: Any) -> list[Any]:
    return [job.uid, job.status.value, job.node, job.started_at, job.finished_at]


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[list[Any]] = []
    failed = 0
    with SharedJobCluster(sleep_for, scheduler=args.scheduler, secret_file=args.secret_file,
                          tenant=args.tenant, name=f"fairness-{args.tenant}") as cluster:
        args.ready.write_text("ready\n")
        start, stop = _wait_for_go(args.go)
        time.sleep(max(0.0, start - time.time()))
        pending: set[Any] = set()
        while time.time() < stop:
            while len(pending) < args.in_flight:
                pending.add(cluster.submit(args.job_seconds))
            done, pending = wait(pending, timeout=max(0.0, min(1.0, stop - time.time())),
                                 return_when=FIRST_COMPLETED)
            for job in done:
                failed += job.exception() is not None
                rows.append(_row(job))
        done, pending = wait(pending, timeout=DRAIN_TIMEOUT)
        for job in done:
            failed += job.exception() is not None
            rows.append(_row(job))
        unfinished = len(pending)
    return {"tenant": args.tenant, "cluster_id": cluster.cluster_id, "jobs": rows, "failed": failed,
            "unfinished": unfinished}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--in-flight", type=int, required=True, help="jobs kept outstanding")
    parser.add_argument("--job-seconds", type=float, required=True, help="each job sleeps this long")
    parser.add_argument("--ready", type=Path, required=True, help="written once connected")
    parser.add_argument("--go", type=Path, required=True, help="the driver writes [start, stop] (time.time()) here")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run(args)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
