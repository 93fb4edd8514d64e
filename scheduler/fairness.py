"""How fairness is measured (POLICIES.md): pure functions, and the ledger they read.

- ``water_fill``: what each tenant is entitled to now: weighted max-min
  fairness of the capacity in use among the tenants that want some, under
  their demand (what they run plus what their waiting jobs ask for) and caps
  (``limit_cap``: their max_running and max), higher tiers first;
- ``d_abs`` = ``max_i |a_i - e_i|`` and ``jain_index`` = ``(sum x)^2 / (n sum x^2)``
  over ``x_i = a_i / e_i``;
- ``percentile`` (linear interpolation between closest ranks);
- ``ShareLedger``: charged slot-seconds received and entitled, per tenant, in
  bins of a fixed width, so that any window is a sum of bins:
  ``shares(lo, hi)`` and ``newcomer(...)`` (the time a tenant arriving later
  needs to reach ``threshold`` of its entitlement, and from when on its share
  stays within ``tolerance`` of it in every sliding window).

A tenant's entitlement over a window is its instantaneous entitlement
integrated over the window, normalized like the received shares (each sums to
1 over the tenants): before a tenant arrives it is entitled to nothing, so
windows that straddle an arrival compare like with like.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fairpool.policies.resources import Resources, charge
from fairpool.policies.tenants import TenantConfig

_EPSILON = 1e-12


@dataclass(frozen=True)
class Claim:
    """One tenant's claim on the pool at an instant, in charge units (pool fractions)."""

    weight: float
    demand: float = math.inf  # what it runs plus what its waiting jobs ask for (inf: no end to it)
    cap: float = math.inf  # what its own limits (max, max_running) let it run at most
    tier: int = 0  # strict tiers: a higher one is served first (the priority policy)


def water_fill(claims: Mapping[str, Claim], total: float) -> dict[str, float]:
    """Split ``total`` by weighted max-min fairness, tier by tier from the highest.

    Within a tier, tenants are served in increasing order of ``limit / weight``
    (``limit = min(demand, cap)``), each getting ``min(limit, weight * left /
    weights left)``: what one does not need goes to the others by weight.
    The priority policy's ``min`` guarantees are not modelled.
    """
    given = dict.fromkeys(claims, 0.0)
    left = total
    for tier in sorted({c.tier for c in claims.values()}, reverse=True):
        if left <= _EPSILON:
            break
        names = [n for n, c in claims.items() if c.tier == tier and c.weight > 0]
        names.sort(key=lambda n: (min(claims[n].demand, claims[n].cap) / claims[n].weight, n))
        weights = sum(claims[n].weight for n in names)
        for name in names:
            claim = claims[name]
            fair = left * claim.weight / weights if weights > 0 else 0.0
            give = max(min(claim.demand, claim.cap, fair), 0.0)
            given[name] = give
            left -= give
            weights -= claim.weight
    return given


def limit_cap(config: TenantConfig | None, unit: Resources, capacity: Resources) -> float:
    """The most a tenant's own limits (max_running, max) let it run, in pool fractions,
    were all its jobs like ``unit`` (inf: no limit)."""
    if config is None:
        return math.inf
    fits = math.inf if config.max_running is None else float(config.max_running)
    if config.max is not None:
        for limit, need in ((config.max.cpus, unit.cpus), (config.max.memory, unit.memory),
                            (config.max.gpus, unit.gpus)):
            if limit and need:
                fits = min(fits, math.floor(limit / need + 1e-9))
    return fits * charge(unit, capacity) if fits < math.inf else math.inf


def d_abs(actual: Mapping[str, float], entitled: Mapping[str, float]) -> float | None:
    """``max_i |a_i - e_i|`` over every tenant in either mapping (None: no tenant)."""
    names = set(actual) | set(entitled)
    if not names:
        return None
    return max(abs(actual.get(n, 0.0) - entitled.get(n, 0.0)) for n in names)


def jain_index(xs: Iterable[float]) -> float | None:
    """``(sum x)^2 / (n * sum x^2)``: 1 when all equal, 1/n when one has everything (None: empty)."""
    values = list(xs)
    squares = sum(x * x for x in values)
    if not values or squares <= 0:
        return None
    return sum(values) ** 2 / (len(values) * squares)


def fairness_ratios(actual: Mapping[str, float], entitled: Mapping[str, float]) -> dict[str, float]:
    """``x_i = a_i / e_i`` for the tenants entitled to something."""
    return {n: actual.get(n, 0.0) / e for n, e in sorted(entitled.items()) if e > _EPSILON}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of sorted ``values``, linearly interpolated (None: empty)."""
    if not values:
        return None
    rank = (len(values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def _normalized(sums: Mapping[str, float]) -> dict[str, float]:
    total = sum(sums.values())
    if total <= _EPSILON:
        return {}
    return {n: v / total for n, v in sorted(sums.items()) if v > _EPSILON}


@dataclass(frozen=True)
class Newcomer:
    """A late tenant's convergence, in seconds after its arrival (None: never within the run)."""

    arrival: float
    reach: float | None  # first at ``threshold`` of its entitlement (an instant)
    settle: float | None  # within ``tolerance`` of its entitlement in every sliding window from then on


class ShareLedger:
    """Charged slot-seconds received and entitled per tenant, in bins of ``resolution`` seconds."""

    def __init__(self, duration: float, resolution: float) -> None:
        self.resolution = resolution
        self.bins = max(1, math.ceil(duration / resolution - 1e-9))
        self.received: dict[str, list[float]] = {}
        self.entitled: dict[str, list[float]] = {}
        self._totals: tuple[list[float], list[float]] | None = None  # prefix sums over all tenants

    def _row(self, table: dict[str, list[float]], tenant: str) -> list[float]:
        self._totals = None
        row = table.get(tenant)
        if row is None:
            row = table[tenant] = [0.0] * self.bins
        return row

    def bin_of(self, t: float) -> int:
        return min(max(int(t / self.resolution + 1e-9), 0), self.bins)

    def add_usage(self, tenant: str, start: float, end: float, rate: float) -> None:
        """A job charged ``rate`` pool-seconds per second ran from ``start`` to ``end``."""
        if end <= start or rate <= 0:
            return
        row = self._row(self.received, tenant)
        width = self.resolution
        first = self.bin_of(start)
        last = min(self.bin_of(end), self.bins - 1)
        for index in range(first, last + 1):
            overlap = min(end, (index + 1) * width) - max(start, index * width)
            if overlap > 0:
                row[index] += rate * overlap

    def add_entitlement(self, index: int, entitled: Mapping[str, float]) -> None:
        """Bin ``index``: the instantaneous entitlements sampled in it, held for its width."""
        for tenant, rate in entitled.items():
            if rate > 0:
                self._row(self.entitled, tenant)[index] += rate * self.resolution

    def shares(self, lo: int, hi: int) -> tuple[dict[str, float], dict[str, float]]:
        """(received shares, entitled shares) over bins ``lo <= i < hi``, each summing to 1."""
        got = {n: sum(row[lo:hi]) for n, row in self.received.items()}
        due = {n: sum(row[lo:hi]) for n, row in self.entitled.items()}
        return _normalized(got), _normalized(due)

    def newcomer(self, tenant: str, arrival: float, sliding: float, threshold: float,
                 tolerance: float) -> Newcomer:
        """How a tenant that arrives at ``arrival`` converges to its entitlement.

        ``reach``: the end of the first bin (an instant, at the ledger's
        resolution) in which its share is at least ``threshold`` of its
        entitlement. ``settle``: the time from which every window of
        ``sliding`` seconds has its share within ``tolerance`` of its
        entitlement; windows are placed by their start, so the figure does not
        lag by the window's length.
        """
        first = self.bin_of(arrival)
        span = max(1, round(sliding / self.resolution))
        mine_got = _prefix(self.received.get(tenant, [0.0] * self.bins))
        mine_due = _prefix(self.entitled.get(tenant, [0.0] * self.bins))
        if self._totals is None:
            self._totals = (_prefix(_column_sums(self.received.values(), self.bins)),
                            _prefix(_column_sums(self.entitled.values(), self.bins)))
        all_got, all_due = self._totals

        def ratio(lo: int, hi: int) -> float | None:
            """Its share over bins lo..hi divided by its entitled share (None: entitled to nothing)."""
            due, total_due = mine_due[hi] - mine_due[lo], all_due[hi] - all_due[lo]
            if due <= _EPSILON or total_due <= _EPSILON:
                return None
            total_got = all_got[hi] - all_got[lo]
            got = (mine_got[hi] - mine_got[lo]) / total_got if total_got > _EPSILON else 0.0
            return got / (due / total_due)

        reach: float | None = None
        for hi in range(first + 1, self.bins + 1):
            now = ratio(hi - 1, hi)
            if now is not None and now >= threshold:
                reach = max(hi * self.resolution - arrival, 0.0)
                break
        last = self.bins - span  # the start of the last whole window
        judged = [(lo, r) for lo in range(first, last + 1) if (r := ratio(lo, lo + span)) is not None]
        bad = [lo for lo, r in judged if abs(r - 1.0) > tolerance]
        settle: float | None
        if not judged or bad and bad[-1] >= judged[-1][0]:
            settle = None  # still off in the last window judged
        else:
            settle = max((bad[-1] + 1 if bad else first) * self.resolution - arrival, 0.0)
        return Newcomer(arrival, reach, settle)


def _prefix(row: Sequence[float]) -> list[float]:
    sums = [0.0]
    for value in row:
        sums.append(sums[-1] + value)
    return sums


def _column_sums(rows: Iterable[list[float]], width: int) -> list[float]:
    totals = [0.0] * width
    for row in rows:
        for i, value in enumerate(row):
            totals[i] += value
    return totals
