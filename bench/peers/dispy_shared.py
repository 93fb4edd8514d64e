"""Peer: dispy 4.15.2 ``SharedJobCluster`` against a running dispyscheduler + dispynode.

Runs in the peers venv as a subprocess of bench/throughput.py, which starts
the two daemons (through dispy_daemon.py) first, and prints one result line
(see measure.py). The client is set up as /work/shared/ANCHORS.md says dispy
4.15.2 needs on Python 3.11: ``ip_addr`` given (it crashes without), its own
``client_port`` (dispyscheduler holds the base port), everything on 127.0.0.1.
A job counts as an error unless it ends Finished with result ``2 * x``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import measure
from dispy_daemon import patch_loopback


def f(x: int) -> int:  # dispy ships this function's source text to the node
    return x * 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    measure.add_common_args(parser)
    parser.add_argument("--dispy-port", type=int, required=True)
    parser.add_argument("--client-port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()

    patch_loopback()
    import dispy

    cluster = dispy.SharedJobCluster(
        f,
        nodes=["127.0.0.1"],
        ip_addr="127.0.0.1",
        ext_ip_addr="127.0.0.1",
        scheduler_host="127.0.0.1",
        dispy_port=args.dispy_port,
        client_port=args.client_port,
        secret=args.secret,
        loglevel=logging.WARNING,
    )

    status_names = {v: k for k, v in vars(dispy.DispyJob).items() if isinstance(v, int)}

    def wait(job: Any) -> Any:
        result = job()
        if job.status != dispy.DispyJob.Finished:
            detail = (job.exception or "").strip().splitlines()[-1:] or [""]
            name = status_names.get(job.status, str(job.status))
            raise RuntimeError(f"job ended {name}: {detail[0]}")
        return result

    warmup_errors = measure.warm_up(cluster.submit, wait, args.warmup_jobs)
    thr = measure.throughput(cluster.submit, wait, args.jobs)
    lat = measure.latency(cluster.submit, wait, args.latency_jobs, args.latency_discard)
    measure.emit(
        {
            "throughput": thr,
            "latency": lat,
            "warmup_jobs": args.warmup_jobs,
            "warmup_errors": warmup_errors,
            "versions": {"python": sys.version.split()[0], "dispy": dispy.__version__},
        }
    )
    measure.phase("close")
    cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
