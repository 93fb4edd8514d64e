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

from mypy_extensions import mypyc_attr

from . import compiled
from .base import NO_FIT_SKIP_TENANT, Explanation, QueuedJob, wait_reason
from .estimates import RuntimeEstimates
from .heap import Key, TenantHeap, TupleHeap
from .nodeheap import NodeHeap
from .options import Option
from .resources import NOTHING, Resources
from .running import RunningJob, TenantState
from .tenants import TenantConfig, TenantTree

SNAPSHOT_VERSION = 1
NO_HEAD = (float("inf"), float("inf"))  # the (priority, sequence) of an empty queue: last


@mypyc_attr(allow_interpreted_subclasses=True)  # third-party policies build on it
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
        # (the heap that is fastest in this build: heap.py says why there are two)
        self._heap: TenantHeap = NodeHeap(self._key) if compiled() else TupleHeap(self._key)
        self._current: str | None = None  # returned by next_tenant, not yet back in the heap
        self._aside_jobs: set[str] = set()  # tenants with jobs passed over this round
        # From a restored snapshot: when it was taken, and the estimate each job running then was
        # charged at dispatch (a resumed job is charged on from there, not from scratch).
        self._snapshot_at: float | None = None
        self._resumable: dict[str, float] = {}

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

    def booked(self) -> set[str]:
        """Tenants the policy keeps books on (jobs seen, or a history restored from the journal
        that weighs on their next jobs): the listings show them when they have no jobs."""
        return set(self._tenants) | self._history()

    def _history(self) -> set[str]:
        return set()

    # --- helpers ------------------------------------------------------------

    def _rel(self, now: float) -> float:
        # Only an event sets the origin (_advance): before the first one, ``_now`` is no time at all
        # (0.0), and an origin at 0 would make times relative to 1970 (decayed usage's 2^(t/H)
        # overflowed at the scheduler's first decision).
        return now - self._origin if self._origin is not None else 0.0

    def _tenant(self, name: str) -> TenantState:
        state = self._tenants.get(name)
        if state is None:
            state = self._tenants[name] = TenantState(self.by_priority)
            if self.tree.add(name):
                self._on_tree_grew()
            self._on_new_tenant(name, state)
        return state

    def _on_new_tenant(self, name: str, state: TenantState) -> None:
        """A tenant's state was made (its first job): a subclass may hang its books on it."""

    def _on_tree_grew(self) -> None:
        """A new tenant joined the tree: only policies using normalized shares care."""

    def backlogged(self, tenant: str) -> bool:
        state = self._tenants.get(tenant)
        return state is not None and bool(state.queue.live)

    def head_order(self, tenant: str) -> tuple[float, float]:
        """The tie-breaker part of a key: the head job's (priority, sequence)."""
        state = self._tenants.get(tenant)
        entry = state.queue.first if state is not None else None
        return (entry[0], entry[1]) if entry is not None else NO_HEAD

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
        if self._finishes:
            self._flush()
        if now > self._now:
            self._now = now
        if self._origin is None:
            self._origin = now

    def _repush(self, tenant: str, *, either_way: bool = False) -> None:
        """A tenant's key may have dropped: give it a fresh heap entry. ``either_way``: it may have
        moved either way (a completion), and an entry is made only if it dropped, since the heap
        finds out about a grown key by itself."""
        if tenant != self._current:
            state = self._tenants.get(tenant)
            if state is not None and state.queue.live:
                if either_way:
                    self._heap.lower(tenant)
                else:
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
        tenant = job.tenant
        state = self._tenants.get(tenant) or self._tenant(tenant)
        queue = state.queue
        was_empty = not queue.live
        if job.uid in queue.live:
            return
        became_head = queue.push(job)
        self._queued += 1
        if was_empty:
            self._on_backlogged(tenant)
        if was_empty or became_head:
            self._repush(tenant)

    def _unqueue(self, job: QueuedJob, uid: str, tenant: str) -> TenantState | None:
        """Take a job out of its tenant's queue; its tenant's state (None: no such tenant)."""
        state = self._tenants.get(tenant)
        if state is None:
            return None
        queue = state.queue
        first = queue.first
        was_head = first is not None and first[3] is job
        if not queue.remove(uid, head=was_head):
            return state
        self._queued -= 1
        if not queue.live:
            self._heap.discard(tenant)
            if self._current == tenant:
                self._current = None
            self._on_idle(tenant)
        elif was_head and tenant != self._current:
            self._repush(tenant)  # the next job may be an older one: a smaller key
        return state

    def dequeue(self, job: QueuedJob) -> None:
        self._unqueue(job, job.uid, job.tenant)

    def on_start(self, job: QueuedJob, now: float, *, resumed: bool = False) -> None:
        if self._finishes or now > self._now or self._origin is None:
            self._advance(now)
        uid, tenant = job.uid, job.tenant
        state = self._unqueue(job, uid, tenant) or self._tenant(tenant)
        if uid in self._running:
            return
        estimate = self.estimates.by_tenant.get(tenant)
        if estimate is None:
            estimate = self.estimates.get(tenant)
        if resumed and self._resumable:
            estimate = self._resumable.pop(uid, estimate)
        run = RunningJob(job, uid, tenant, now, self.capacity, estimate, state)
        self._running[uid] = run
        state.running += 1
        state.rate += run.charge
        state.cpus += run.cpus
        state.memory += run.memory
        state.gpus += run.gpus
        self._on_started(run, resumed)

    def on_finish(self, job: QueuedJob, now: float, runtime: float | None = None) -> None:
        uid = job.uid
        if uid in self._running:
            self._finishes.append((now, job.seq, uid, runtime))

    def _flush(self) -> None:
        if not self._finishes:
            return
        finishes, self._finishes = self._finishes, []
        if len(finishes) == 1:  # the common case: no ordering, one tenant
            now, _, uid, runtime = finishes[0]
            tenant = self._apply_finish(now, uid, runtime)
            if tenant is not None:
                self._repush(tenant, either_way=True)
            return
        finishes.sort()
        touched: dict[str, None] = {}  # tenants whose keys may have dropped, in first-finish order
        for now, _, uid, runtime in finishes:
            tenant = self._apply_finish(now, uid, runtime)
            if tenant is not None:
                touched[tenant] = None
        # One fresh heap entry per tenant, with its key after all of these completions: a push per
        # completion made a burst of N results cost N heap pushes (and key computations) per tenant.
        for tenant in touched:
            self._repush(tenant, either_way=True)

    def _apply_finish(self, now: float, uid: str, runtime: float | None) -> str | None:
        """One completion's accounting; its tenant (None: the job was not running)."""
        # (get and del, not pop(uid, None): compiled, that pop is a call by name, several times dearer)
        run = self._running.get(uid)
        if run is None:
            return None
        del self._running[uid]
        state = run.state
        state.running -= 1
        if state.running == 0:
            state.rate = state.cpus = 0.0  # no float drift left behind
            state.memory = state.gpus = 0
        else:
            state.rate -= run.charge
            state.cpus -= run.cpus
            state.memory -= run.memory
            state.gpus -= run.gpus
        if now > self._now:
            self._now = now
        took = runtime if runtime is not None else now - run.started
        if took < 0.0:
            took = 0.0
        self.estimates.observe(run.tenant, took)
        self._on_finished(run, now, took)
        return run.tenant

    # --- decisions ----------------------------------------------------------

    def begin_round(self, now: float) -> None:
        self._advance(now)
        if self._aside_jobs:
            for name in sorted(self._aside_jobs):
                self._tenants[name].queue.restore_aside()
                self._repush(name)  # its head may be an earlier job again: a smaller key
            self._aside_jobs.clear()
        # The tenant that took the last slot stays current, out of the heap: next_tenant weighs
        # its fresh key against the heap's smallest entry, a heap push and pop fewer per round.
        if self._heap.aside:
            self._heap.restore_aside(self.backlogged)

    def next_tenant(self, skip: Set[str]) -> str | None:
        current = self._current
        if current is not None:
            self._current = None
            if self.backlogged(current):
                if current in skip:
                    self._heap.set_aside(current)
                else:
                    # The common case, one tenant taking several slots in a row: if its key is
                    # still no bigger than a lower bound of every other key, it is the smallest.
                    if not self._heap:  # no other tenant waits
                        self._current = current
                        return current
                    key = self._key(current)
                    if self._heap.goes_first(key):
                        self._current = current
                        return current
                    self._heap.push(current, key)
        while True:
            tenant = self._heap.pop_best(skip)
            if tenant is None:
                return None
            if self._tenants[tenant].queue.first is None:  # every job passed over this round
                self._heap.set_aside(tenant)
                continue
            self._current = tenant
            return tenant

    def pick_job(self, tenant: str) -> QueuedJob | None:
        state = self._tenants.get(tenant)
        entry = state.queue.first if state is not None else None
        return entry[3] if entry is not None else None

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
        return Explanation(self.name, job.uid, job.tenant, True, rank, len(ranking), ahead,
                           entitlement, received, wait_reason(rank, len(ranking), ahead, words))

    def snapshot(self) -> dict[str, Any]:
        self._flush()
        running = {uid: run.estimate for uid, run in sorted(self._running.items())}
        return {"policy": self.name, "version": SNAPSHOT_VERSION, "at": self._now,
                "estimates": self.estimates.to_dict(), "running": running, **self._state()}

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
            self._snapshot_at = float(state.get("at", now))
            self._resumable = {str(u): float(e) for u, e in dict(state.get("running", {})).items()}
            self._advance(now)
            self._load(state, now)
        except (TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise ValueError(f"malformed {self.name} policy snapshot: {exc}") from None
        self._rebuild()
        return True
