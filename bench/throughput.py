"""fairpool's throughput benchmark against dispy, Dask and a ProcessPoolExecutor.

Same work for all (``f(x) = x * 2``), measured by the same loop
(bench/peers/measure.py): N jobs submitted one at a time with a future each
and then awaited (jobs/s), and sequential single-job round trips (p50/p99).
Each repeat measures every system once, in a rotating order, so that the
drift of a shared machine falls on all of them alike; the figures are the
medians over the repeats. dispy and Dask run in their own venv
(bench/.venv-peers, created from PyPI on first use), never in fairpool's.

    .venv/bin/python bench/throughput.py                  # everything, N=5000, 3 repeats
    .venv/bin/python bench/throughput.py --skip-peers     # fairpool + pool only
    .venv/bin/python bench/throughput.py --only dispy,dask --jobs 2000 --json out.json
    .venv/bin/python bench/throughput.py --compiled ...   # fairpool as ``pip install .`` builds it

Exit status: 0 when the run completed (a peer that hung is a result), 1 when
fairpool or the pool baseline produced no figures, 2 on bad options, 130 on
Ctrl-C (every subprocess is killed in every case).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from compiled_venv import policies_build, reexec_compiled  # noqa: E402
from harness import Outcome  # noqa: E402
from peers_venv import PEER_REQUIREMENTS, ensure_peers_venv  # noqa: E402
from systems import MEASURE, NEEDS_PEERS, Settings  # noqa: E402

ORDER = ("fairpool", "fairpool-fairshare", "fairpool-nojournal", "dispy", "dask", "pool")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput and latency of fairpool vs dispy, Dask and ProcessPoolExecutor."
    )
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per throughput run (5000)")
    parser.add_argument(
        "--latency-jobs", type=int, default=500, help="round trips per latency run (500)"
    )
    parser.add_argument(
        "--latency-discard", type=int, default=50, help="first round trips discarded (50)"
    )
    parser.add_argument(
        "--warmup-jobs", type=int, default=100, help="untimed jobs before timing (100)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repeats; medians are reported (3)")
    parser.add_argument("--only", default=",".join(ORDER), help="comma list of: " + ",".join(ORDER))
    parser.add_argument(
        "--skip-peers", action="store_true", help="fairpool and pool only; no peers venv"
    )
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds one measurement may take before it is reported hung "
                        "(default 60 + jobs/100 + latency-jobs/50)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, state)")
    parser.add_argument("--compiled", action="store_true",
                        help="run fairpool from a regular install of this checkout (policies compiled, "
                        "bench/.venv-compiled), as pip install . builds it")  # fmt: skip
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(ORDER))
    if unknown or not systems:
        parser.error(f"--only: unknown system(s) {unknown}; choose from {', '.join(ORDER)}")
    if args.skip_peers:
        systems = [s for s in systems if s not in NEEDS_PEERS]
    args.systems = [s for s in ORDER if s in systems]
    if not args.systems:
        parser.error("nothing to run")
    if args.jobs < 1 or args.repeat < 1 or args.latency_jobs - args.latency_discard < 2:
        parser.error("need --jobs >= 1, --repeat >= 1 and --latency-jobs >= --latency-discard + 2")
    if args.deadline is None:
        args.deadline = 60 + args.jobs / 100 + args.latency_jobs / 50
    return args


def _raise_interrupt(signum: int, frame: Any) -> NoReturn:
    # SIGTERM/SIGHUP take the same path as Ctrl-C, so every subprocess is killed
    raise KeyboardInterrupt


def _one_line(outcome: Outcome, seconds: float) -> str:
    f = outcome.figures
    if outcome.status != "ok":
        return f"{outcome.status}: {outcome.detail}"
    text = (
        f"{f['throughput']['jobs_s']:,.0f} jobs/s, p50 {f['latency']['p50_ms']:.2f} ms, "
        f"p99 {f['latency']['p99_ms']:.2f} ms"
    )
    if f.get("map"):
        text += f", map {f['map']['jobs_s']:,.0f} jobs/s"
    if f.get("scheduler_rss_mb") is not None:
        text += f", RSS {f['scheduler_rss_mb']:.1f} MB"
    if outcome.detail:
        text += f" [{outcome.detail}]"
    return text + f"  ({seconds:.0f} s)"


def _run(args: argparse.Namespace, settings: Settings, root: Path) -> dict[str, list[Outcome]]:
    outcomes: dict[str, list[Outcome]] = {name: [] for name in args.systems}
    count = len(args.systems)
    for rep in range(args.repeat):
        shift = rep % count
        for name in args.systems[shift:] + args.systems[:shift]:
            work = root / f"r{rep + 1}-{name}"
            work.mkdir()
            print(f"[{rep + 1}/{args.repeat}] {name:9s} ", end="", flush=True)
            if name in NEEDS_PEERS and settings.peers_python is None:
                outcome = Outcome("failed", detail="peers venv unavailable")
                started = time.monotonic()
            else:
                started = time.monotonic()
                outcome = MEASURE[name](settings, work)
            print(_one_line(outcome, time.monotonic() - started), flush=True)
            outcomes[name].append(outcome)
    return outcomes


def _document(
    args: argparse.Namespace,
    settings: Settings,
    outcomes: dict[str, list[Outcome]],
    summaries: dict[str, dict[str, Any]],
    started: datetime.datetime,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    return {
        "started_utc": started.isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "settings": {
            "jobs": settings.jobs,
            "latency_jobs": settings.latency_jobs,
            "latency_discard": settings.latency_discard,
            "warmup_jobs": settings.warmup_jobs,
            "repeat": args.repeat,
            "deadline_s": settings.deadline_s,
            "systems": args.systems,
            "peer_requirements": list(PEER_REQUIREMENTS),
        },
        "systems": {
            name: {"summary": summaries[name], "runs": [asdict(o) for o in outcomes[name]]}
            for name in outcomes
        },
        "ratios": report.ratios(summaries),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.compiled:
        reexec_compiled(__file__, [a for a in (sys.argv[1:] if argv is None else argv) if a != "--compiled"])
    # explicit, because a shell starting us in the background sets SIGINT to ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    peers_python: Path | None = None
    if NEEDS_PEERS & set(args.systems):
        try:
            peers_python = ensure_peers_venv()
        except (RuntimeError, OSError) as exc:
            print(f"peers venv unavailable, dispy and Dask are skipped: {exc}", file=sys.stderr)
    settings = Settings(
        jobs=args.jobs,
        latency_jobs=args.latency_jobs,
        latency_discard=args.latency_discard,
        warmup_jobs=args.warmup_jobs,
        deadline_s=args.deadline,
        peers_python=peers_python,
    )
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="fairpool-bench-"))
    print(
        f"{args.jobs} jobs, {args.latency_jobs} round trips ({args.latency_discard} discarded), "
        f"{args.repeat} repeats of {', '.join(args.systems)}; run dir {root}; "
        f"policies {policies_build()}",
        flush=True,
    )
    interrupted = False
    outcomes: dict[str, list[Outcome]] = {}
    try:
        outcomes = _run(args, settings, root)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: every subprocess was stopped", file=sys.stderr)
    finally:
        everything_ok = not interrupted and all(
            o.status == "ok" for runs in outcomes.values() for o in runs
        )
        if args.keep or not everything_ok:
            print(f"logs and state kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if interrupted:
        return 130

    summaries = {name: report.summarize(runs) for name, runs in outcomes.items()}
    print()
    print(report.table(summaries))
    for line in report.ratio_lines(report.ratios(summaries)):
        print(line)
    print(report.version_line(summaries))
    before, after = load_before[0], os.getloadavg()[0]
    print(f"1-min load average: {before:.2f} before, {after:.2f} after ({os.cpu_count()} CPUs)")
    for name, s in summaries.items():
        if s.get("sched_cpu_us_per_job") is not None:
            print(f"scheduler CPU per job, {report.LABELS[name]}: {s['sched_cpu_us_per_job']:.1f} µs "
                  "(median over repeats; warm-up, per-job, map and latency jobs)")
    for name, s in summaries.items():
        if s["rss_of"]:
            print(f"RSS of {report.LABELS[name]}: {s['rss_of']}")
    for name, s in summaries.items():
        for detail in s["details"]:
            print(f"note ({name}): {detail}")
    if args.json is not None:
        doc = _document(args, settings, outcomes, summaries, started, load_before)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"figures written to {args.json}")
    own = [name for name in ("fairpool", "pool") if name in summaries]
    return 1 if any(summaries[name]["ok"] == 0 for name in own) else 0


if __name__ == "__main__":
    sys.exit(main())
