"""The fairness benchmark's figures: job spans in, shares per window, D_abs, Jain, utilization out.

Pure: ``analyse`` takes the finished jobs of one run (tenant, node, started_at,
finished_at on the node's wall clock) and the run's start instant, and fills
``scheduler.fairness.ShareLedger`` -- each job charged ``1/slots`` of the
pool per second, clipped to the run -- with entitlements from
``water_fill`` of the weights (every tenant backlogged all the run). Windows
of ``window`` seconds follow the warm-up; each gets ``d_abs`` and
``jain_index`` (over ``a_i / e_i``) from ``scheduler.fairness``, the
measured period as a whole too. Utilization is busy slot-seconds over
``slots`` times the wall time. ``describe`` prints them, with issue 5's
targets marked met or missed.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fairpool.scheduler.fairness import (
    Claim,
    ShareLedger,
    d_abs,
    fairness_ratios,
    jain_index,
    water_fill,
)

if TYPE_CHECKING:
    from fairness import PolicyRun

RESOLUTION = 0.1  # seconds per ledger bin
D_ABS_TARGET = 0.03  # per window
JAIN_TARGET = 0.99  # over the run
UTILIZATION_TARGET = 0.85


@dataclass(frozen=True)
class Window:
    start: float  # seconds after the common start
    end: float
    shares: dict[str, float]
    entitled: dict[str, float]
    d_abs: float | None
    jain: float | None
    utilization: float
    started: dict[str, int]  # jobs that started in the window, per tenant


@dataclass(frozen=True)
class Analysis:
    slots: int
    seconds: float
    warmup: float
    windows: tuple[Window, ...]
    shares: dict[str, float]  # over the measured period (after the warm-up)
    entitled: dict[str, float]
    d_abs: float | None
    jain: float | None
    utilization: float  # over the measured period
    utilization_all: float  # over the whole run, warm-up included
    jobs: dict[str, int]  # finished jobs per tenant (that ran inside the run)
    started: dict[str, int]  # of those, the ones that started after the warm-up
    mean_runtime: float | None  # seconds, node-measured, of those jobs

    @property
    def worst_d_abs(self) -> float | None:
        values = [w.d_abs for w in self.windows if w.d_abs is not None]
        return max(values) if values else None

    @property
    def worst_jain(self) -> float | None:
        values = [w.jain for w in self.windows if w.jain is not None]
        return min(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["worst_window"] = {"d_abs": self.worst_d_abs, "jain": self.worst_jain}
        return out


def analyse(spans: Sequence[tuple[str, str, float, float]], *, start: float, seconds: float, slots: int,
            weights: Mapping[str, float], window: float, warmup: float) -> Analysis:
    """The figures of one run; ``spans`` are (tenant, node, started_at, finished_at)."""
    ledger = ShareLedger(seconds, RESOLUTION)
    started_in: dict[int, dict[str, int]] = {}
    jobs = dict.fromkeys(weights, 0)
    runtime = 0.0
    for tenant, _node, began, ended in spans:
        lo, hi = max(began - start, 0.0), min(ended - start, seconds)
        if hi <= lo:
            continue
        ledger.add_usage(tenant, lo, hi, 1.0 / slots)
        bin_started = started_in.setdefault(ledger.bin_of(began - start), {})
        bin_started[tenant] = bin_started.get(tenant, 0) + 1
        jobs[tenant] = jobs.get(tenant, 0) + 1
        runtime += ended - began
    due_now = water_fill({name: Claim(weight) for name, weight in weights.items()}, 1.0)
    for index in range(ledger.bins):
        ledger.add_entitlement(index, due_now)
    first = ledger.bin_of(warmup)
    span = max(1, round(window / RESOLUTION))
    windows = []
    for lo in range(first, ledger.bins - span + 1, span):
        got, due = ledger.shares(lo, lo + span)
        windows.append(Window(lo * RESOLUTION, (lo + span) * RESOLUTION, got, due, d_abs(got, due),
                              jain_index(fairness_ratios(got, due).values()),
                              _busy(ledger, lo, lo + span) / (span * RESOLUTION),
                              _started(started_in, lo, lo + span)))
    got, due = ledger.shares(first, ledger.bins)
    measured = (ledger.bins - first) * RESOLUTION
    finished = sum(jobs.values())
    return Analysis(slots, seconds, first * RESOLUTION, tuple(windows), got, due, d_abs(got, due),
                    jain_index(fairness_ratios(got, due).values()),
                    _busy(ledger, first, ledger.bins) / measured if measured > 0 else 0.0,
                    _busy(ledger, 0, ledger.bins) / (ledger.bins * RESOLUTION), jobs,
                    _started(started_in, first, ledger.bins + 1), runtime / finished if finished else None)


def _started(started_in: Mapping[int, Mapping[str, int]], lo: int, hi: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for index in range(lo, hi):
        for tenant, count in started_in.get(index, {}).items():
            counts[tenant] = counts.get(tenant, 0) + count
    return counts


def _busy(ledger: ShareLedger, lo: int, hi: int) -> float:
    """Charged pool-seconds in bins lo..hi (slot-seconds / slots): over the span's length, the utilization."""
    return sum(sum(row[lo:hi]) for row in ledger.received.values())


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def describe(run: PolicyRun, args: argparse.Namespace) -> str:
    a = run.analysis
    if a is None:
        return f"{run.policy}: no figures"
    names = list(args.tenants)
    header = ["window", "D_abs", "Jain", "util", *(f"{n} share/entitled (jobs)" for n in names)]
    rows = [header]
    for w in a.windows:
        rows.append([f"{w.start:g}-{w.end:g}s", _f(w.d_abs), _f(w.jain), f"{w.utilization:.1%}",
                     *(f"{w.shares.get(n, 0.0):.3f}/{w.entitled.get(n, 0.0):.3f} ({w.started.get(n, 0)})"
                       for n in names)])
    rows.append([f"{a.warmup:g}-{a.seconds:g}s", _f(a.d_abs), _f(a.jain), f"{a.utilization:.1%}",
                 *(f"{a.shares.get(n, 0.0):.3f}/{a.entitled.get(n, 0.0):.3f} ({a.started.get(n, 0)})"
                   for n in names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"policy {run.policy}: shares of slot-seconds per {args.window:g} s window after a "
             f"{a.warmup:g} s warm-up (source: {run.source})"]
    for k, row in enumerate(rows):
        if k == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    worst = a.worst_d_abs
    lines.append(
        f"summary {run.policy}: D_abs worst window {_f(worst)} (target <= {D_ABS_TARGET}: "
        f"{_met(worst is not None and worst <= D_ABS_TARGET)}), over the run {_f(a.d_abs)}; "
        f"Jain over the run {_f(a.jain)} (target >= {JAIN_TARGET}: {_met(a.jain is not None and a.jain >= JAIN_TARGET)}), "
        f"worst window {_f(a.worst_jain)}; utilization {a.utilization:.1%} after the warm-up "
        f"(target >= {UTILIZATION_TARGET:.0%}: {_met(a.utilization >= UTILIZATION_TARGET)}), "
        f"{a.utilization_all:.1%} over the whole run")
    runtime = f"{a.mean_runtime * 1000:.1f} ms" if a.mean_runtime is not None else "-"
    lines.append(
        f"  jobs {sum(a.jobs.values())} finished (mean node-measured runtime {runtime}), {run.failed} failed, "
        f"{run.unfinished} unfinished; journal results {run.journal_results}, client results "
        f"{run.client_results}, timestamps differing {run.timestamp_mismatches}; 1-min load average "
        f"{run.load_before:.2f} before, {run.load_after:.2f} after; started {run.started_utc}")
    return "\n".join(lines)
