"""fairpool's side: a ``SharedJobCluster`` client against a running scheduler + node.

Runs in fairpool's own python as a subprocess of bench/throughput.py, which
starts ``fairpool scheduler`` and ``fairpool node`` first, and prints one
result line (see measure.py): per-job futures (throughput, latency) and the
bulk ``cluster.map`` path. The scheduler's RSS is read by the driver, which
owns the scheduler process.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import Future
from importlib.metadata import PackageNotFoundError, version

import measure


def f(x: int) -> int:
    return x * 2


def _fairpool_version() -> str:
    try:
        return version("fairpool")
    except PackageNotFoundError:
        return "unknown"


def _async_latency(args: argparse.Namespace) -> dict[str, float]:
    """The same sequential round trips with the trio-native client: no thread hand-off."""
    import time

    import trio

    from fairpool import AsyncSharedJobCluster

    async def run() -> list[float]:
        samples: list[float] = []
        async with AsyncSharedJobCluster(f, scheduler=args.scheduler, secret_file=args.secret_file) as cluster:
            for x in range(args.latency_jobs):
                start = time.perf_counter()
                job = await cluster.submit(x)
                if await job != 2 * x:
                    raise ValueError(f"wrong result for {x}")
                if x >= args.latency_discard:
                    samples.append((time.perf_counter() - start) * 1000.0)
        return samples

    measure.phase("async latency")
    samples = trio.run(run)
    import statistics

    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": cuts[49], "p99_ms": cuts[98], "samples": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    measure.add_common_args(parser)
    parser.add_argument("--scheduler", required=True, help="HOST:PORT")
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--no-map", action="store_true")
    args = parser.parse_args()

    from fairpool import SharedJobCluster

    measure.phase("connect")
    cluster = SharedJobCluster(f, scheduler=args.scheduler, secret_file=args.secret_file)

    def wait(job: Future[int]) -> int:
        return job.result()

    warmup_errors = measure.warm_up(cluster.submit, wait, args.warmup_jobs)
    thr = measure.throughput(cluster.submit, wait, args.jobs)
    bulk = None if args.no_map else measure.bulk(cluster.map, args.jobs)
    lat = measure.latency(cluster.submit, wait, args.latency_jobs, args.latency_discard)
    async_lat = _async_latency(args)
    measure.emit(
        {
            "throughput": thr,
            "map": bulk,
            "latency": lat,
            "async_latency": async_lat,
            "warmup_jobs": args.warmup_jobs,
            "warmup_errors": warmup_errors,
            "versions": {"python": sys.version.split()[0], "fairpool": _fairpool_version()},
        }
    )
    measure.phase("close")
    cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
