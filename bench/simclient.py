"""One client process of the scale benchmark: a tenant's SharedJobCluster submitting small jobs.

It submits ``--batch`` jobs at a time (a future each), waits for their
results, checks them, and goes on until it has run ``--jobs`` jobs or
``--duration`` seconds have passed (whichever is given; both: the first).
At the end it writes ``--out``: the uids of every job it submitted, how many
results were wrong or failed, and its batch round-trip times.

    python bench/simclient.py --scheduler 127.0.0.1:51350 --secret-file S --tenant t1 --jobs 500 --out c1.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fairpool import SharedJobCluster

RESULT_TIMEOUT = 120.0


def double(x: int) -> int:
    return x * 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--jobs", type=int, default=0, help="stop after this many jobs (0: no limit)")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: no limit)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.jobs and not args.duration:
        parser.error("give --jobs or --duration")

    uids: list[str] = []
    wrong = failed = 0
    round_trips: list[float] = []
    began = time.monotonic()
    with SharedJobCluster(double, scheduler=args.scheduler, secret_file=args.secret_file,
                          tenant=args.tenant, name=f"scale-{args.tenant}") as cluster:
        n = 0
        while (not args.jobs or n < args.jobs) and (not args.duration or time.monotonic() - began < args.duration):
            size = args.batch if not args.jobs else min(args.batch, args.jobs - n)
            start = time.monotonic()
            jobs = [cluster.submit(x) for x in range(n, n + size)]
            uids += [job.uid for job in jobs]
            for x, job in zip(range(n, n + size), jobs, strict=True):
                try:
                    wrong += job.result(timeout=RESULT_TIMEOUT) != 2 * x
                except Exception:  # noqa: BLE001 - counted, and the run goes on
                    failed += 1
            round_trips.append(time.monotonic() - start)
            n += size
    out = {"tenant": args.tenant, "uids": uids, "wrong": wrong, "failed": failed,
           "elapsed": time.monotonic() - began, "round_trips": round_trips}
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, args.out)
    return 0 if not wrong and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
