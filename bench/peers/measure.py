"""The measurement loop every benchmarked system runs: warm-up, throughput, latency.

Owns the one definition of what a figure means, so that fairpool, dispy, Dask
and the ProcessPoolExecutor baseline are measured by the same code. It is
imported by the helper scripts beside it, in fairpool's own venv and in the
peers venv alike, so it uses the standard library only.

A system is given as two callables: ``submit(x)`` starts one job computing
``x * 2`` and returns a handle, ``wait(handle)`` blocks until the job ended and
returns its result (or raises). A job whose result is not ``2 * x`` counts as
an error rather than aborting the run: dispy returns a few trivial jobs as
Terminated, and the report must show that rather than hide it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "


def phase(name: str) -> None:
    """Tell the driver (through stderr) which phase runs, so a hang names its phase."""
    print(f"bench-phase: {name}", file=sys.stderr, flush=True)


def _check(x: int, wait: Callable[[Any], Any], handle: Any) -> bool:
    try:
        return bool(wait(handle) == 2 * x)
    except Exception as exc:  # a failed job is a figure, not a crash of the bench
        print(f"bench-job-error: x={x}: {exc!r}", file=sys.stderr, flush=True)
        return False


def warm_up(submit: Callable[[int], Any], wait: Callable[[Any], Any], n_jobs: int) -> int:
    """Run ``n_jobs`` untimed jobs so connections, code shipping and worker start are paid."""
    phase("warm-up")
    handles = [(x, submit(x)) for x in range(n_jobs)]
    return sum(not _check(x, wait, h) for x, h in handles)


def throughput(
    submit: Callable[[int], Any], wait: Callable[[Any], Any], n_jobs: int
) -> dict[str, float]:
    """Submit ``n_jobs`` one at a time (one future each), then await them all."""
    phase("throughput")
    start = time.perf_counter()
    handles = [submit(x) for x in range(n_jobs)]
    submitted = time.perf_counter()
    errors = sum(not _check(x, wait, h) for x, h in enumerate(handles))
    elapsed = time.perf_counter() - start
    return {
        "jobs": n_jobs,
        "jobs_s": n_jobs / elapsed,
        "seconds": elapsed,
        "submit_seconds": submitted - start,
        "errors": errors,
    }


def bulk(run_all: Callable[[Iterable[int]], Iterable[Any]], n_jobs: int) -> dict[str, float]:
    """Time a bulk path (``map``) over ``range(n_jobs)``, results consumed in order."""
    phase("map")
    start = time.perf_counter()
    results = list(run_all(range(n_jobs)))
    elapsed = time.perf_counter() - start
    errors = sum(r != 2 * x for x, r in zip(range(n_jobs), results, strict=False))
    errors += max(0, n_jobs - len(results))
    return {"jobs": n_jobs, "jobs_s": n_jobs / elapsed, "seconds": elapsed, "errors": errors}


def latency(
    submit: Callable[[int], Any], wait: Callable[[Any], Any], n_jobs: int, n_discard: int
) -> dict[str, float]:
    """Sequential round trips: submit one job, wait for it, repeat; the first ones discarded."""
    phase("latency")
    samples: list[float] = []
    errors = 0
    for x in range(n_jobs):
        start = time.perf_counter()
        ok = _check(x, wait, submit(x))
        elapsed = time.perf_counter() - start
        errors += not ok
        if x >= n_discard:
            samples.append(elapsed * 1000.0)
    if len(samples) < 2:
        raise ValueError("latency needs at least 2 samples after the discarded warm-up")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "jobs": n_jobs,
        "p50_ms": cuts[49],
        "p99_ms": cuts[98],
        "mean_ms": statistics.fmean(samples),
        "samples": len(samples),
        "errors": errors,
    }


def rss_mb(pid: int | None = None) -> float | None:
    """Resident set size of a process in MB (VmRSS of /proc/PID/status), None if gone."""
    path = f"/proc/{pid if pid is not None else os.getpid()}/status"
    try:
        with open(path, encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def emit(figures: dict[str, Any]) -> None:
    """Hand the figures to the driver: one prefixed JSON line on stdout, flushed at once.

    Printed before the system is shut down, so that a hang while closing (dispy)
    does not lose figures already measured.
    """
    phase("emitted")
    sys.stdout.write(RESULT_PREFIX + json.dumps(figures) + "\n")
    sys.stdout.flush()


def add_common_args(parser: Any) -> None:
    """The options every helper script takes, passed on by the driver."""
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--latency-jobs", type=int, required=True)
    parser.add_argument("--latency-discard", type=int, required=True)
    parser.add_argument("--warmup-jobs", type=int, required=True)
