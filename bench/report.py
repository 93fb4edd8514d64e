"""Turns the benchmark's raw outcomes into medians, the printed table and the ratios.

Each system's figures are the medians over its successful repeats, taken per
figure (jobs/s, p50, p99, RSS). Errors are summed over all repeats; a repeat
that hung or failed contributes no figure but is counted and shown, so a
dispy hang reads as "hung" in the table instead of vanishing from it.
"""

from __future__ import annotations

import statistics
from typing import Any

from harness import Outcome

LABELS = {
    "fairpool": "fairpool (per-job futures)",
    "fairpool map": "fairpool map",
    "fairpool-nojournal": "fairpool, journal off",
    "fairpool-nojournal map": "fairpool map, journal off",
    "fairpool async": "fairpool, trio client",
    "fairpool-nojournal async": "fairpool, trio client, journal off",
    "fairpool-fairshare": "fairpool, fair-share policy",
    "fairpool-fairshare map": "fairpool map, fair-share policy",
    "fairpool-fairshare async": "fairpool, trio client, fair-share",
    "dispy": "dispy SharedJobCluster",
    "dask": "Dask LocalCluster",
    "pool": "ProcessPoolExecutor(2)",
}
PEERS_COMPARED = ("fairpool-fairshare", "fairpool-nojournal", "dispy", "dask")


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _counted(figures: dict[str, Any], key: str) -> int:
    """Sum ``errors`` (or ``jobs``) over the warm-up and every timed part of one run."""
    total = int(figures.get(f"warmup_{key}") or 0)
    for part in ("throughput", "latency", "map"):
        block = figures.get(part)
        if isinstance(block, dict):
            total += int(block.get(key) or 0)
    return total


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Medians over the ok repeats of one system, plus counts of what went wrong."""
    ok = [o.figures for o in outcomes if o.status == "ok"]

    def pick(part: str, key: str) -> float | None:
        return _median([(f.get(part) or {}).get(key) for f in ok])

    return {
        "runs": len(outcomes),
        "ok": len(ok),
        "hung": sum(o.status == "hung" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "jobs_s": pick("throughput", "jobs_s"),
        "map_jobs_s": pick("map", "jobs_s"),
        "p50_ms": pick("latency", "p50_ms"),
        "p99_ms": pick("latency", "p99_ms"),
        "async_p50_ms": pick("async_latency", "p50_ms"),
        "async_p99_ms": pick("async_latency", "p99_ms"),
        "scheduler_rss_mb": _median([f.get("scheduler_rss_mb") for f in ok]),
        "sched_cpu_us_per_job": _median([
            f["scheduler_cpu_s"] * 1e6 / _counted(f, "jobs")
            for f in ok
            if f.get("scheduler_cpu_s") is not None and _counted(f, "jobs")
        ]),
        "rss_of": next((f["rss_of"] for f in ok if f.get("rss_of")), None),
        "job_errors": sum(_counted(f, "errors") for f in ok),
        "jobs_checked": sum(_counted(f, "jobs") for f in ok),
        "versions": next((f["versions"] for f in ok if f.get("versions")), {}),
        "details": [o.detail for o in outcomes if o.detail],
    }


def ratios(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """fairpool / peer for throughput (higher is better) and latency (lower is better)."""
    mine = summaries.get("fairpool")
    out: dict[str, dict[str, float | None]] = {}
    if mine is None:
        return out
    for peer in PEERS_COMPARED:
        theirs = summaries.get(peer)
        if theirs is None:
            continue

        def ratio(
            key: str, other_key: str | None = None, *, theirs: dict[str, Any] = theirs
        ) -> float | None:
            a, b = mine.get(key), theirs.get(other_key or key)
            return a / b if a is not None and b else None

        out[f"fairpool/{peer}"] = {
            "throughput": ratio("jobs_s"),
            "map_throughput": ratio("map_jobs_s", "jobs_s"),
            "p50_latency": ratio("p50_ms"),
            "p99_latency": ratio("p99_ms"),
        }
    return out


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _status(summary: dict[str, Any]) -> str:
    text = f"{summary['ok']}/{summary['runs']} ok"
    if summary["hung"]:
        text += f", {summary['hung']} hung"
    if summary["failed"]:
        text += f", {summary['failed']} failed"
    return text


def table(summaries: dict[str, dict[str, Any]]) -> str:
    """The human-readable table: one row per system (and one for fairpool's map)."""
    header = ("system", "jobs/s", "p50 ms", "p99 ms", "sched RSS MB", "failed jobs", "runs")
    rows: list[tuple[str, ...]] = []
    for name, s in summaries.items():
        no_figures = s["ok"] == 0
        rows.append((
            LABELS.get(name, name),
            ("hung" if s["hung"] else "failed") if no_figures else _num(s["jobs_s"], 0),
            _num(s["p50_ms"], 2),
            _num(s["p99_ms"], 2),
            _num(s["scheduler_rss_mb"], 1),
            "-" if no_figures else f"{s['job_errors']}/{s['jobs_checked']}",
            _status(s),
        ))  # fmt: skip
        if name.startswith("fairpool") and s["map_jobs_s"] is not None:
            rows.append((LABELS[f"{name} map"], _num(s["map_jobs_s"], 0), "", "", "", "", ""))
        if name.startswith("fairpool") and s.get("async_p50_ms") is not None:
            rows.append((LABELS[f"{name} async"], "", _num(s["async_p50_ms"], 2), _num(s["async_p99_ms"], 2),
                         "", "", ""))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratio_lines(found: dict[str, dict[str, float | None]]) -> list[str]:
    lines = []
    for pair, r in found.items():
        parts = []
        if r["throughput"] is not None:
            parts.append(f"throughput {r['throughput']:.2f}x")
        if r["map_throughput"] is not None:
            parts.append(f"map vs their per-job {r['map_throughput']:.2f}x")
        if r["p50_latency"] is not None:
            parts.append(f"p50 latency {r['p50_latency']:.2f}x")
        if r["p99_latency"] is not None:
            parts.append(f"p99 latency {r['p99_latency']:.2f}x")
        if parts:
            lines.append(f"{pair}: " + ", ".join(parts))
    if lines:
        lines.append("(throughput: higher is better for fairpool; latency: lower is better)")
    return lines


def version_line(summaries: dict[str, dict[str, Any]]) -> str:
    found: dict[str, str] = {}
    for s in summaries.values():
        found.update(s["versions"])
    return "versions: " + ", ".join(f"{k} {v}" for k, v in sorted(found.items()))
