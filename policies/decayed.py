"""decayed-usage: rank tenants by their decayed past usage (Slurm, HTCondor).

Usage decays with half-life ``H`` and grows by what the tenant's running jobs
are charged: ``U_i(t+d) = U_i * 2^(-d/H) + integral of c_i``. The tenant with
the smallest ``U_i / S_i`` goes next, ``S_i`` its normalized share along its
tree path (``fairpool.policies.tenants``); ``ranking = "fair-tree"`` compares
level by level instead (Slurm's Fair Tree: every child of a sibling account
that used less of its share goes before every child of one that used more).
Explanations show Slurm's fair-share factor ``F = 2^(-U/S)`` (U normalized
over all usage: 1 unused, 0.5 exactly at its share, 0.25 at twice it).

Usage survives restarts (``snapshot``) and decays across the downtime. A
newcomer with no usage takes every freed slot for about
``(H/ln 2) * ln(1 + w_new/W_others)``; ``credit_cap`` (pool-seconds, written
as a duration: "the whole pool for this long") limits how far below the
front-runner a tenant that becomes backlogged may start.

Exponential decay multiplies every usage by the same factor, so it never
changes the order; usage is kept scaled by ``2^((t - t0)/H)`` and only the
running tenants' usage moves between events (rebased now and then to keep the
numbers small). Ancestors hold the sums of their subtrees, for fair-tree.

The ranking reads usage at the current time rounded down to ``H / 2^20`` (82
ms for a day's half-life), as Slurm recomputes its priorities every few
minutes: within that step the running tenants' keys stand still, so a
decision does not re-rank every one of them whose usage moved by a few
millionths since the last one. The error is at most that step's usage, a
millionth of a half-life's; usage itself (``usage``, snapshots) is exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from math import exp2  # (compiled: a module global, not an attribute read per call)
from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

from .core import NO_HEAD, PolicyBase
from .heap import Key
from .options import Option
from .resources import Resources
from .running import RunningJob
from .tenants import TenantConfig

RANKINGS = ("classic", "fair-tree")
_REBASE = 40.0  # half-lives between rebases: 2^40 keeps plenty of float precision
_RANK_STEPS = 2.0**20  # ranking time resolution: this many steps per half-life


class _Usage:
    """A tree node's scaled usage ``u`` at time ``t``, growing at ``rate`` (its subtree's)."""

    __slots__ = ("u", "rate", "t", "g", "running")

    def __init__(self, t: float, g: float) -> None:
        self.u = 0.0
        self.rate = 0.0
        self.t = t
        self.g = g  # the scale 2^((t - t0)/H) at t: a key need not compute it again
        self.running = 0


@mypyc_attr(allow_interpreted_subclasses=True)  # third-party policies build on it
class DecayedUsagePolicy(PolicyBase):
    name = "decayed-usage"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("half_life", "duration", 86400.0, "usage halves in this time"),
        Option("credit_cap", "optional-duration", None,
               "at most this many seconds of the whole pool of advantage for a returning or new tenant"),
        Option("ranking", "choice", "classic", "classic: U/S along the tree path; fair-tree: level by level",
               RANKINGS),
    )

    def __init__(self, half_life: float = 86400.0, credit_cap: float | None = None,
                 ranking: str = "classic") -> None:
        super().__init__()
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0, got {half_life!r}")
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
        self.half_life = half_life
        self.credit_cap = credit_cap
        self.ranking_mode = ranking
        self._t0 = 0.0  # relative time where the scale is 1
        self._nodes: dict[str, _Usage] = {}
        self._depth = 1
        self._carried: dict[str, float] = {}
        self._scale_at: tuple[float, float] = (math.nan, 1.0)  # (t, 2^((t - t0)/H)): one exp2 per time
        self._per_scale = half_life / math.log(2)
        self._rank_step = half_life / _RANK_STEPS
        self._classic = ranking == "classic"

    # --- scaled usage -------------------------------------------------------

    def _grow(self, t: float) -> float:
        at, scale = self._scale_at
        if t != at:
            scale = exp2((t - self._t0) / self.half_life)
            self._scale_at = (t, scale)
        return scale

    def _value(self, name: str, t: float) -> float:
        node = self._nodes.get(name)
        return 0.0 if node is None else self._usage_at(node, t)

    def _usage_at(self, node: _Usage, t: float) -> float:
        """A node's scaled usage at ``t`` (not before its last settling)."""
        if node.rate and t > node.t:
            return node.u + node.rate * self._per_scale * (self._grow(t) - node.g)
        return node.u

    def _settle(self, name: str, t: float) -> _Usage:
        """The node brought up to ``t`` (every start and finish settles its tenant's path)."""
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = _Usage(t, self._grow(t))
        elif t > node.t:
            node.u = self._usage_at(node, t)
            node.t = t
            node.g = self._grow(t)
        return node

    def _add_rate(self, tenant: str, rate: float, count: int, t: float) -> _Usage:
        """The tenant's path settled and its rate changed; the tenant's own node (the path's last)."""
        node: _Usage | None = None
        for name in self.tree.path(tenant):
            node = self._settle(name, t)
            node.running += count
            node.rate = node.rate + rate if node.running else 0.0
        assert node is not None  # (a path ends with the tenant itself)
        return node

    def _add_usage(self, tenant: str, scaled: float, t: float) -> None:
        for name in self.tree.path(tenant):
            self._settle(name, t).u += scaled

    def _maybe_rebase(self, t: float) -> None:
        if (t - self._t0) / self.half_life < _REBASE:
            return
        own = self._own_usage(t)
        self._t0 = t
        self._scale_at = (math.nan, 1.0)
        self._load_usage(own, t)
        self._rebuild()

    def _own_usage(self, t: float) -> dict[str, float]:
        """Each node's own usage (its subtree less its children's), in absolute pool-seconds."""
        scale = self._grow(t)
        own: dict[str, float] = {}
        for name in self.tree.known():
            value = self._value(name, t) - sum(self._value(c, t) for c in self.tree.children(name))
            if value > 0:
                own[name] = value / scale
        return own

    def _load_usage(self, own: Mapping[str, float], t: float) -> None:
        """Rebuild the nodes from own usage (absolute, at ``t``) and the running jobs."""
        scale = self._grow(t)
        self._nodes = {}
        for name, usage in sorted(own.items()):
            self.tree.add(name)
            self._add_usage(name, usage * scale, t)
        for name in sorted(self._tenants):
            state = self._tenants[name]
            if state.running:
                self._add_rate(name, state.rate, state.running, t)
        self._depth = max((len(self.tree.path(n)) for n in self.tree.known()), default=1)

    # --- what the tenants see -----------------------------------------------

    def _history(self) -> set[str]:
        return {name for name, node in self._nodes.items() if node.u > 0 or node.running}

    def usage(self, tenant: str, now: float | None = None) -> float:
        """Decayed usage in pool-seconds (a whole pool for one second is 1)."""
        t = self._rel(self._now if now is None else now)
        return self._value(tenant, t) / self._grow(t)

    def normalized_usage(self, tenant: str) -> float:
        t = self._rel(self._now)
        total = sum(self._value(top, t) for top in self.tree.children(None))
        return self._value(tenant, t) / total if total > 0 else 0.0

    def factor(self, tenant: str) -> float:
        """Slurm's fair-share factor ``F = 2^(-U/S)``, U normalized over all usage."""
        return fairshare_factor(self.normalized_usage(tenant), self.tree.share(tenant))

    def _key(self, tenant: str) -> Key:
        t = self._rel(self._now)
        t -= t % self._rank_step  # (the module's docstring says why)
        if self._classic:
            # U/w orders tenants as U/S does (S = w / the total weight) and does not move when a
            # tenant joins; head_order inlined: every decision computes several keys
            node = self._nodes.get(tenant)
            usage = 0.0 if node is None else self._usage_at(node, t)
            state = self._tenants.get(tenant)
            head = state.queue.first if state is not None else None
            if head is None:
                return (usage / self.tree.weight(tenant), *NO_HEAD)
            return (usage / self.tree.weight(tenant), head[0], head[1])
        path = self.tree.path(tenant)
        levels = [self._value(name, t) / self.tree.level_share(name) for name in path]
        levels += [0.0] * (self._depth - len(levels))
        return (*levels, *self.head_order(tenant))

    # --- events -------------------------------------------------------------

    def configure(self, tenants: Mapping[str, TenantConfig] | None = None,
                  capacity: Resources | None = None) -> None:
        # each tenant's own usage, summed along the OLD tree, is carried into the new one
        self._flush()
        self._carried = self._own_usage(self._rel(self._now))
        super().configure(tenants, capacity)

    def _on_configured(self) -> None:
        t = self._rel(self._now)
        self._load_usage(self._carried, t)
        self._carried = {}

    def begin_round(self, now: float) -> None:
        super().begin_round(now)
        self._maybe_rebase(self._rel(self._now))

    def _on_backlogged(self, tenant: str) -> None:
        if self.credit_cap is None:
            return
        t = self._rel(self._now)
        others = [o for o in sorted(self._tenants) if o != tenant and self.backlogged(o)]
        if not others:
            return
        front = min(self._value(o, t) / self.tree.share(o) for o in others)
        floor = front * self.tree.share(tenant) - self.credit_cap * self._grow(t)
        mine = self._value(tenant, t)
        if floor > mine:
            self._add_usage(tenant, floor - mine, t)

    def _on_started(self, run: RunningJob, resumed: bool) -> None:
        t = self._rel(run.started)
        self._maybe_rebase(t)
        node = self._add_rate(run.tenant, run.charge, 1, t)
        if node.t > t and self._origin is not None:
            # Its tenant's usage was settled past this start (a job replayed after a restart, its
            # start not journaled): usage accrues from there, and _on_finished charges the rest.
            run.started = self._origin + node.t

    def _on_finished(self, run: RunningJob, now: float, runtime: float) -> None:
        t = self._rel(now)
        self._add_rate(run.tenant, -run.charge, -1, t)
        # Usage accrued from the start as seen here (run.started); what ran is the runtime the node
        # measured, when known: a job replayed after a restart was seen to start at its submit.
        seen = now - run.started
        if runtime != seen and seen >= 0.0:
            self._add_usage(run.tenant, run.charge * (runtime - seen) * self._grow(t), t)

    # --- views and persistence ------------------------------------------------

    def _figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        share = self.tree.share(tenant)
        words = (f"usage {self.usage(tenant):.4g} pool-seconds, share {share:.3g}, "
                 f"fair-share factor {self.factor(tenant):.3f}")
        return share, self.normalized_usage(tenant), words

    def _state(self) -> dict[str, Any]:
        t = self._rel(self._now)
        return {"half_life": self.half_life, "usage": dict(sorted(self._own_usage(t).items()))}

    def _load(self, state: Mapping[str, Any], now: float) -> None:
        at = float(state["at"])
        decay = math.exp2(-max(now - at, 0.0) / self.half_life)  # usage decays across the downtime
        own = {str(name): float(usage) * decay for name, usage in dict(state["usage"]).items()}
        self._t0 = self._rel(now)
        self._scale_at = (math.nan, 1.0)
        self._load_usage(own, self._t0)


def fairshare_factor(normalized_usage: float, share: float) -> float:
    """``F = 2^(-U/S)``: 1 with no usage, 0.5 at exactly its share, 0.25 at twice it."""
    if share <= 0:
        return 0.0
    return math.exp2(-normalized_usage / share)
