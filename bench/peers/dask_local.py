"""Peer: Dask distributed, ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``.

Runs in the peers venv (bench/.venv-peers) as a subprocess of
bench/throughput.py and prints one result line (see measure.py). Everything
binds to 127.0.0.1 on ports the OS picks; no dashboard. With LocalCluster the
scheduler lives in this process, beside the client, so the RSS reported is
that of the process hosting both.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import measure


def f(x: int) -> int:
    return x * 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    measure.add_common_args(parser)
    parser.add_argument("--local-directory", required=True)
    args = parser.parse_args()

    import dask
    import distributed
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
        worker_dashboard_address=None,
        local_directory=args.local_directory,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    client.wait_for_workers(2, timeout=60)

    def submit(x: int) -> Any:
        # pure=False: identical calls must not be deduplicated into one task
        return client.submit(f, x, pure=False)

    def wait(fut: Any) -> Any:
        return fut.result()

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
            "rss_of": "LocalCluster scheduler + client process",
            "versions": {
                "python": sys.version.split()[0],
                "dask": dask.__version__,
                "distributed": distributed.__version__,
            },
        }
    )
    measure.phase("close")
    client.close()
    cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
