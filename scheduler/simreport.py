"""What a simulation reports: per-tenant shares, D_abs, Jain, newcomers, waits, speed.

Frozen dataclasses with ``to_dict()`` (plain JSON-able data, for
``--json``) and ``__str__`` (a readable table). Every figure but the
wall-clock timing of ``handle()`` is a deterministic function of the policy
file and the workload: ``to_dict(timing=False)`` leaves the timing out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fairpool.scheduler.fairness import ShareLedger, d_abs, fairness_ratios, jain_index, percentile
from fairpool.scheduler.workload import Workload


@dataclass(frozen=True)
class TenantFigures:
    tenant: str
    weight: float
    submitted: int
    started: int
    finished: int
    refused: int  # by its limits (max_queued) or because no node could run the job
    share: float  # of the charged slot-seconds over the measured period
    entitlement: float  # what water-filling of the weights entitles it to over that period
    wait_p50: float | None  # seconds from submit to start on a node, over the jobs started
    wait_p90: float | None
    wait_p99: float | None
    arrival: float | None  # its first submit
    reach: float | None = None  # newcomers only: seconds to reach threshold of its entitlement
    settle: float | None = None  # ... and to stay within tolerance of it
    newcomer: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant, "weight": self.weight, "submitted": self.submitted,
            "started": self.started, "finished": self.finished, "refused": self.refused,
            "share": self.share, "entitlement": self.entitlement,
            "wait": {"p50": self.wait_p50, "p90": self.wait_p90, "p99": self.wait_p99},
            "arrival": self.arrival, "newcomer": self.newcomer,
            "convergence": {"reach": self.reach, "settle": self.settle} if self.newcomer else None,
        }


@dataclass(frozen=True)
class WindowFigures:
    start: float
    end: float
    shares: dict[str, float]
    entitlements: dict[str, float]
    d_abs: float | None
    jain: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "shares": dict(self.shares),
                "entitlements": dict(self.entitlements), "d_abs": self.d_abs, "jain": self.jain}


@dataclass(frozen=True)
class Performance:
    """The real SchedulerState's speed on this workload (wall clock of its handle() calls).

    Decisions per second counts the jobs dispatched over the time spent in the
    handle() calls that dispatched some (each such call also takes in the
    stimulus that freed the room: a node's progress, a submit); the time of
    every call, submits of large backlogs included, is ``handle_seconds``.
    """

    handle_calls: int
    handle_seconds: float
    decisions: int  # jobs dispatched to nodes
    dispatch_calls: int  # handle() calls that dispatched
    dispatch_seconds: float

    @property
    def decisions_per_second(self) -> float | None:
        return self.decisions / self.dispatch_seconds if self.dispatch_seconds > 0 else None

    def to_dict(self, timing: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"handle_calls": self.handle_calls, "decisions": self.decisions,
                               "dispatch_calls": self.dispatch_calls}
        if timing:
            out["handle_seconds"] = self.handle_seconds
            out["dispatch_seconds"] = self.dispatch_seconds
            out["decisions_per_second"] = self.decisions_per_second
        return out


@dataclass(frozen=True)
class SimulationReport:
    policy: str
    nodes: int
    cpus: int
    duration: float
    measured_from: float  # the warm-up's end
    window: float
    tenants: tuple[TenantFigures, ...]
    windows: tuple[WindowFigures, ...]
    d_abs: float | None  # over the whole measured period
    jain: float | None
    performance: Performance
    problems: tuple[str, ...] = ()  # what the state said that a sane run never makes it say

    @property
    def worst_d_abs(self) -> float | None:
        values = [w.d_abs for w in self.windows if w.d_abs is not None]
        return max(values) if values else None

    @property
    def worst_jain(self) -> float | None:
        values = [w.jain for w in self.windows if w.jain is not None]
        return min(values) if values else None

    def tenant(self, name: str) -> TenantFigures:
        for figures in self.tenants:
            if figures.tenant == name:
                return figures
        raise KeyError(name)

    def shares(self) -> dict[str, float]:
        return {t.tenant: t.share for t in self.tenants}

    def to_dict(self, timing: bool = True) -> dict[str, Any]:
        return {
            "policy": self.policy, "nodes": self.nodes, "cpus": self.cpus, "duration": self.duration,
            "measured_from": self.measured_from, "window": self.window,
            "d_abs": self.d_abs, "jain": self.jain,
            "worst_window": {"d_abs": self.worst_d_abs, "jain": self.worst_jain},
            "tenants": [t.to_dict() for t in self.tenants],
            "windows": [w.to_dict() for w in self.windows],
            "performance": self.performance.to_dict(timing),
            "problems": list(self.problems),
        }

    def __str__(self) -> str:
        lines = [f"policy {self.policy} on {self.nodes} node(s), {self.cpus} cpus: {_s(self.duration)} simulated, "
                 f"measured from {_s(self.measured_from)} in {len(self.windows)} window(s) of {_s(self.window)}"]
        header = ("tenant", "weight", "submitted", "started", "share", "entitled", "a/e",
                  "wait p50", "p90", "p99", "newcomer reach", "settle")
        rows: list[tuple[str, ...]] = [header]
        for t in self.tenants:
            ratio = f"{t.share / t.entitlement:.3f}" if t.entitlement > 0 else "-"
            rows.append((t.tenant, f"{t.weight:g}", str(t.submitted), str(t.started), f"{t.share:.4f}",
                         f"{t.entitlement:.4f}", ratio, _s(t.wait_p50), _s(t.wait_p90), _s(t.wait_p99),
                         _s(t.reach, "never") if t.newcomer else "", _s(t.settle, "never") if t.newcomer else ""))
        lines += _table(rows)
        lines.append(f"D_abs {_f(self.d_abs)} (worst window {_f(self.worst_d_abs)}), "
                     f"Jain's index {_f(self.jain)} (worst window {_f(self.worst_jain)})")
        if self.windows:
            names = sorted({n for w in self.windows for n in w.shares} | {n for w in self.windows for n in w.entitlements})
            shown = names[:8]
            rows = [("window", "D_abs", "Jain", *shown)]
            for w in self.windows:
                rows.append((f"{w.start:g}-{w.end:g}s", _f(w.d_abs), _f(w.jain),
                             *(f"{w.shares.get(n, 0.0):.3f}/{w.entitlements.get(n, 0.0):.3f}" for n in shown)))
            lines.append("per window, share/entitled" + (f" (first {len(shown)} of {len(names)} tenants)"
                                                          if len(names) > len(shown) else "") + ":")
            lines += _table(rows)
        p = self.performance
        rate = f"{p.decisions_per_second:,.0f} decisions/s" if p.decisions_per_second else "-"
        lines.append(f"scheduler: {p.decisions} jobs dispatched by {p.dispatch_calls} of {p.handle_calls} "
                     f"handle() calls, {p.dispatch_seconds:.3f}s in those ({p.handle_seconds:.3f}s in all): {rate}")
        for problem in self.problems:
            lines.append(f"problem: {problem}")
        return "\n".join(lines)


@dataclass(frozen=True)
class TenantTally:
    """What the simulator counted for one tenant; ``build_report`` turns it into figures."""

    tenant: str
    weight: float
    submitted: int
    started: int
    finished: int
    refused: int
    waits: tuple[float, ...]  # seconds from submit to start, of every job started
    arrival: float | None  # its first submit
    start: float  # its earliest stream's start


def build_report(policy: str, workload: Workload, ledger: ShareLedger, tallies: Sequence[TenantTally],
                 performance: Performance, problems: Sequence[str]) -> SimulationReport:
    """The figures of a run: windows after the warm-up, the measured period, each tenant's."""
    measure = workload.measure
    lo = ledger.bin_of(measure.warmup)
    span = max(1, round(measure.window / ledger.resolution))
    windows = []
    for start in range(lo, ledger.bins - span + 1, span):
        got, due = ledger.shares(start, start + span)
        windows.append(WindowFigures(start * ledger.resolution, (start + span) * ledger.resolution, got, due,
                                     d_abs(got, due), jain_index(fairness_ratios(got, due).values())))
    got, due = ledger.shares(lo, ledger.bins)
    first = min((t.start for t in tallies), default=0.0)
    figures = []
    for tally in sorted(tallies, key=lambda t: t.tenant):
        waits = sorted(tally.waits)
        reach = settle = None
        newcomer = tally.start > first and tally.arrival is not None
        if newcomer and tally.arrival is not None:
            late = ledger.newcomer(tally.tenant, tally.arrival, measure.sliding, measure.threshold,
                                   measure.tolerance)
            reach, settle = late.reach, late.settle
        figures.append(TenantFigures(
            tally.tenant, tally.weight, tally.submitted, tally.started, tally.finished, tally.refused,
            got.get(tally.tenant, 0.0), due.get(tally.tenant, 0.0), percentile(waits, 50),
            percentile(waits, 90), percentile(waits, 99), tally.arrival, reach, settle, newcomer))
    return SimulationReport(
        policy, len(workload.nodes), sum(n.cpus for n in workload.nodes), workload.duration,
        lo * ledger.resolution, span * ledger.resolution, tuple(figures), tuple(windows),
        d_abs(got, due), jain_index(fairness_ratios(got, due).values()), performance, tuple(problems))


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _s(seconds: float | None, missing: str = "-") -> str:
    if seconds is None:
        return missing
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s" if seconds < 100 else f"{seconds:.0f}s"
