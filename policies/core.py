"""PolicyBase: the bookkeeping every built-in policy shares.

It keeps each tenant's queue (``TenantQueue``), its running jobs and their
charge, the tenant tree and the pool's capacity, and picks tenants from a
``TenantHeap`` by the subclass's ``_key``. A subclass supplies the key and
reacts to a few hooks; round-robin replaces the heap by its ring.

Events that commute in the real world must commute here too (POLICIES.md:
deterministic under any order of events with equal times). Enqueues do by
construction (queues and the heap order by sequence); completions add floats,
which do not, so ``on_finish`` only records the event, and the completions are
applied in (time, sequence) order before the next decision or read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from typing import Any, ClassVar

from .base import NO_FIT_SKIP_TENANT, Explanation, QueuedJob
from .estimates import RuntimeEstimates
from .heap import Key, TenantHeap
from .options import Option
from .queues import TenantQueue
from .resources import NOTHING, Resources, charge
from .tenants import TenantConfig, TenantTree

SNAPSHOT_VERSION = 1
_NO_HEAD = (float("inf"), float("inf"))


class RunningJob:
    __slots__ = ("uid", "tenant", "seq", "started", "charge", "estimate", "resources")

    def __init__(self, job: QueuedJob, started: float, charge: float, estimate: float) -> None:
        self.uid = job.uid
        self.tenant = job.tenant
        self.seq = job.seq
        self.started = started
        self.charge = charge  # c(r) at dispatch, pool-seconds per second
        self.estimate = estimate  # L_hat at dispatch, seconds
        self.resources = Resources.of(job)


class TenantState:
    __slots__ = ("queue", "running", "rate", "alloc")

    def __init__(self, by_priority: bool) -> None:
        self.queue = TenantQueue(by_priority)
        self.running = 0
        self.rate = 0.0  # sum of c(r) of its running jobs: its share of the pool now
        self.alloc = NOTHING  # resources its running jobs hold


class PolicyBase:
    name: ClassVar[str] = "base"
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    no_fit: str = NO_FIT_SKIP_TENANT
    by_priority: ClassVar[bool] = True  # in-tenant priority first, then FIFO

    def __init__(self, *, initial_estimate: float = 1.0) -> None:
        self.tree = TenantTree()
        self.capacity = NOTHING
        self.estimates = RuntimeEstimates(initial_estimate)
        self._tenants: dict[str, TenantState] = {}
        self._running: dict[str, RunningJob] = {}
        self._finishes: list[tuple[float, int, str, float | None]] = []
        self._queued = 0
        self._now = 0.0
        self._origin: float | None = None  # times are kept relative to the first one seen
        self._heap = TenantHeap(self._key)
        self._current: str | None = None  # returned by next_tenant, not yet back in the heap
        self._aside_jobs: set[str] = set()  # tenants with jobs passed over this round

    # --- hooks for subclasses -------------------------------------------------

    def _key(self, tenant: str) -> Key:
        """Smaller goes first; must only grow unless the subclass pushes the tenant again."""
        raise NotImplementedError

    def _on_backlogged(self, tenant: str) -> None:
        """Its queue went from empty to non-empty."""

    def _on_idle(self, tenant: str) -> None:
        """Its queue became empty."""

    def _on_started(self, run: RunningJob, resumed: bool) -> None: ...

    def _on_finished(self, run: RunningJob, now: float, runtime: float) -> None: ...

    def _on_configured(self) -> None:
        """Tenants, weights or capacity changed (keys may have dropped: the heap is rebuilt)."""

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: Mapping[str, Any], now: float) -> None: ...

    def _figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        """(entitlement, received share, the policy's own words) for explanations."""
        return None, None, ""

    def tenant_figures(self, tenant: str) -> tuple[float | None, float | None, str]:
        """A tenant's entitlement, received share and the policy's words (for listings)."""
        return self._figures(tenant)

    # --- helpers ------------------------------------------------------------

    def _rel(self, now: float) -> float:
        if self._origin is None:
            self._origin = now
        return now - self._origin

    def _tenant(self, name: str) -> TenantState:
        state = self._tenants.get(name)
        if state is None:
            state = self._tenants[name] = TenantState(self.by_priority)
            if self.tree.add(name):
                self._on_tree_grew()
        return state

    def _on_tree_grew(self) -> None:
        """A new tenant joined the tree: only policies using normalized shares care."""

    def backlogged(self, tenant: str) -> bool:
        state = self._tenants.get(tenant)
        return state is not None and len(state.queue) > 0

    def head_order(self, tenant: str) -> tuple[float, float]:
        """The tie-breaker part of a key: the head job's (priority, sequence)."""
        state = self._tenants.get(tenant)
        order = state.queue.head_order() if state is not None else None
        return order if order is not None else _NO_HEAD

    def running_rate(self, tenant: str) -> float:
        state = self._tenants.get(tenant)
        return state.rate if state is not None else 0.0

    def allocation(self, tenant: str) -> Resources:
        state = self._tenants.get(tenant)
        return state.alloc if state is not None else NOTHING

    def active(self) -> list[str]:
        """Tenants that are backlogged or running, by name."""
        return sorted(t for t, s in self._tenants.items() if s.running or len(s.queue))

    def _advance(self, now: float) -> None:
        self._flush()
        if now > self._now:
            self._now = now
        self._rel(now)

    def _repush(self, tenant: str) -> None:
        """A tenant's key may have dropped: give it a fresh heap entry."""
        if tenant != self._current and self.backlogged(tenant):
            self._heap.push(tenant)

    def _rebuild(self) -> None:
        self._current = None
        self._heap.reset(t for t in sorted(self._tenants) if self.backlogged(t))

    # --- events -------------------------------------------------------------

    def configure(self, tenants: Mapping[str, TenantConfig] | None = None,
                  capacity: Resources | None = None) -> None:
        self._flush()
        if tenants is not None:
            tree = TenantTree(tenants)
            for name in self._tenants:
                tree.add(name)
            self.tree = tree
        if capacity is not None:
            self.capacity = capacity
        self._on_configured()
        self._rebuild()

    def enqueue(self, job: QueuedJob) -> None:
        state = self._tenant(job.tenant)
        was_empty = not len(state.queue)
        if job.uid in state.queue:
            return
        became_head = state.queue.push(job)
        self._queued += 1
        if was_empty:
            self._on_backlogged(job.tenant)
        if was_empty or became_head:
            self._repush(job.tenant)

    def _unqueue(self, job: QueuedJob) -> bool:
        state = self._tenants.get(job.tenant)
        if state is None:
            return False
        was_head = state.queue.head() is job
        if not state.queue.remove(job.uid):
            return False
        self._queued -= 1
        if not len(state.queue):
            self._heap.discard(job.tenant)
            if self._current == job.tenant:
                self._current = None
            self._on_idle(job.tenant)
        elif was_head:
            self._repush(job.tenant)  # the next job may be an older one: a smaller key
        state.queue.compact()
        return True

    def dequeue(self, job: QueuedJob) -> None:
        self._unqueue(job)

    def on_start(self, job: QueuedJob, now: float, *, resumed: bool = False) -> None:
        self._advance(now)
        self._unqueue(job)
        if job.uid in self._running:
            return
        state = self._tenant(job.tenant)
        run = RunningJob(job, now, charge(job, self.capacity), self.estimates.get(job.tenant))
        self._running[job.uid] = run
        state.running += 1
        state.rate += run.charge
        state.alloc = state.alloc + run.resources
        self._on_started(run, resumed)

    def on_finish(self, job: QueuedJob, now: float, runtime: float | None = None) -> None:
        if job.uid in self._running:
            self._finishes.append((now, job.seq, job.uid, runtime))

    def _flush(self) -> None:
        if not self._finishes:
            return
        finishes, self._finishes = sorted(self._finishes), []
        touched: dict[str, None] = {}  # tenants whose keys may have dropped, in first-finish order
        for now, _, uid, runtime in finishes:
            run = self._running.pop(uid, None)
            if run is None:
                continue
            state = self._tenants[run.tenant]
            state.running -= 1
            if state.running == 0:
                state.rate, state.alloc = 0.0, NOTHING  # no float drift left behind
            else:
                state.rate -= run.charge
                state.alloc = state.alloc - run.resources
            if now > self._now:
                self._now = now
            took = runtime if runtime is not None else now - run.started
            took = max(took, 0.0)
            self.estimates.observe(run.tenant, took)
            self._on_finished(run, now, took)
            touched[run.tenant] = None
        # One fresh heap entry per tenant, with its key after all of these completions: a push per
        # completion made a burst of N results cost N heap pushes (and key computations) per tenant.
        for tenant in touched:
            self._repush(tenant)

    # --- decisions ----------------------------------------------------------

    def begin_round(self, now: float) -> None:
        self._advance(now)
        for name in sorted(self._aside_jobs):
            self._tenants[name].queue.restore_aside()
            self._repush(name)  # its head may be an earlier job again: a smaller key
        self._aside_jobs.clear()
        if self._current is not None:
            current, self._current = self._current, None
            self._repush(current)
        self._heap.restore_aside(self.backlogged)

    def next_tenant(self, skip: Set[str]) -> str | None:
        current = self._current
        if current is not None and current not in skip and self.backlogged(current):
            # The common case, one tenant taking several slots in a row: if its key is still
            # no bigger than a lower bound of every other key, it is still the smallest.
            bound = self._heap.peek_key()
            if bound is None or self._key(current) <= bound:
                return current
        self._current = None
        if current is not None and self.backlogged(current):
            if current in skip:
                self._heap.set_aside(current)
            else:
                self._heap.push(current)
        while True:
            tenant = self._heap.pop_best(skip)
            if tenant is None:
                return None
            if self._tenants[tenant].queue.head() is None:  # every job passed over this round
                self._heap.set_aside(tenant)
                continue
            self._current = tenant
            return tenant

    def pick_job(self, tenant: str) -> QueuedJob | None:
        state = self._tenants.get(tenant)
        return state.queue.head() if state is not None else None

    def pass_over(self, job: QueuedJob) -> None:
        state = self._tenants.get(job.tenant)
        if state is not None and state.queue.head() is job:
            state.queue.set_aside_head()
            self._aside_jobs.add(job.tenant)

    def hold(self, tenant: str) -> None:
        """Held by its own limits; policies that bank credit while backlogged must not."""

    # --- views --------------------------------------------------------------

    def __len__(self) -> int:
        return self._queued

    def ranking(self) -> list[str]:
        """Backlogged tenants, the next to go first (by the current keys)."""
        self._flush()
        backlogged = [t for t in self._tenants if self.backlogged(t)]
        return sorted(backlogged, key=lambda t: (self._key(t), t))

    def order(self) -> Iterator[QueuedJob]:
        for tenant in self.ranking():
            yield from self._tenants[tenant].queue.jobs()

    def explain(self, job: QueuedJob, now: float | None = None) -> Explanation:
        self._advance(self._now if now is None else now)
        state = self._tenants.get(job.tenant)
        entitlement, received, words = self._figures(job.tenant)
        queued = state is not None and job.uid in state.queue
        if not queued:
            reason = "running" if job.uid in self._running else "not queued"
            return Explanation(self.name, job.uid, job.tenant, False, None, 0, 0,
                               entitlement, received, reason)
        assert state is not None
        ranking = self.ranking()
        rank = ranking.index(job.tenant) + 1 if job.tenant in ranking else None
        ahead = state.queue.ahead_of(job)
        if rank == 1 and ahead == 0:
            reason = "next in line, waits for free capacity"
        elif rank == 1:
            reason = f"its tenant goes next; {ahead} of its own job(s) first"
        else:
            before = (rank or len(ranking) + 1) - 1
            reason = f"{before} tenant(s) go first"
            if ahead:
                reason += f", then {ahead} of its own job(s)"
        if words:
            reason += f"; {words}"
        return Explanation(self.name, job.uid, job.tenant, True, rank, len(ranking), ahead,
                           entitlement, received, reason)

    def snapshot(self) -> dict[str, Any]:
        self._flush()
        return {"policy": self.name, "version": SNAPSHOT_VERSION, "at": self._now,
                "estimates": self.estimates.to_dict(), **self._state()}

    def restore(self, state: Mapping[str, Any], now: float) -> bool:
        """Load a snapshot of this policy (True), or ignore another policy's (False).

        Call it before feeding the jobs back (queued: ``enqueue``; running:
        ``on_start(job, now, resumed=True)``). ValueError if it is malformed.
        """
        if state.get("policy") != self.name:
            return False
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"policy snapshot version {state.get('version')!r}, expected {SNAPSHOT_VERSION}")
        try:
            self.estimates.load(dict(state.get("estimates", {})))
            self._advance(now)
            self._load(state, now)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"malformed {self.name} policy snapshot: {exc}") from None
        self._rebuild()
        return True

    def entitlement_by_weight(self, tenant: str, among: list[str]) -> float | None:
        """``w_i / sum w`` over the active tenants (``tenant`` counted in)."""
        names = set(among) | {tenant}
        total = sum(self.tree.weight(t) for t in names)
        return self.tree.weight(tenant) / total if total > 0 else None
