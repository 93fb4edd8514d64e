"""Baseline: the same jobs on ``concurrent.futures.ProcessPoolExecutor(2)``, no network.

Runs in fairpool's own python as a subprocess of bench/throughput.py and prints
one result line (see measure.py). The RSS reported is this (the submitting)
process's own, the analogue of a scheduler's.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import Future, ProcessPoolExecutor

import measure


def f(x: int) -> int:
    return x * 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    measure.add_common_args(parser)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    def wait(fut: Future[int]) -> int:
        return fut.result()

    with ProcessPoolExecutor(args.workers) as pool:

        def submit(x: int) -> Future[int]:
            return pool.submit(f, x)

        warmup_errors = measure.warm_up(submit, wait, args.warmup_jobs)
        thr = measure.throughput(submit, wait, args.jobs)
        lat = measure.latency(submit, wait, args.latency_jobs, args.latency_discard)
        measure.emit(
            {
                "throughput": thr,
                "latency": lat,
                "warmup_jobs": args.warmup_jobs,
                "warmup_errors": warmup_errors,
                "scheduler_rss_mb": measure.rss_mb(),
                "rss_of": "submitting process",
                "versions": {"python": sys.version.split()[0]},
            }
        )
        measure.phase("close")
    return 0


if __name__ == "__main__":
    sys.exit(main())
