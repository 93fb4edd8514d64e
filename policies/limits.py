"""Quotas and limits: the filter every policy shares.

From the policy file, per tenant (and per group: a parent's limits bound the
sum over its subtree):

- ``max_queued``: a submit beyond it is refused (``admit``);
- ``max_running`` and ``max`` resources: a job that would go beyond them is
  held (``hold``) and its tenant sits the decision round out; a job that asks
  for more than ``max`` on its own could never run, and is refused at submit.

Each answer is one line that names the limit, e.g. "tenant alice is at
max_running=16", so ``fairpool admin why`` can show it as it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from .base import QueuedJob
from .resources import NOTHING, Resources, exceeds
from .tenants import TenantConfig, TenantTree

_UNITS = {"cpus": "cpus", "memory": "bytes of memory", "gpus": "gpus"}


def _who(name: str, tenant: str) -> str:
    return f"tenant {name}" if name == tenant else f"group {name} (of tenant {tenant})"


def _amount(resources: Resources, kind: str) -> str:
    value = getattr(resources, kind)
    return f"{value:g}" if isinstance(value, float) else str(value)


class Limits:
    """Counts of queued and running jobs and held resources, for the limited tenants only.

    A tenant with no limit on its path costs nothing per job; ``reset``
    recounts from the jobs when the settings change.
    """

    def __init__(self, tenants: Mapping[str, TenantConfig] | None = None) -> None:
        self.tree = TenantTree(tenants)
        self._queued: Counter[str] = Counter()  # per limited tenant and limited ancestor
        self._running: Counter[str] = Counter()
        self._alloc: dict[str, Resources] = {}
        self._limited: set[str] = set()
        self.limited = False  # any limit at all: when not, the Dispatcher need not call in
        self._watch: dict[str, tuple[str, ...]] = {}  # tenant -> the limited names on its path
        self._index()

    def reset(self, tenants: Mapping[str, TenantConfig], queued: Iterable[QueuedJob],
              running: Iterable[QueuedJob]) -> None:
        """New settings: recount from the jobs queued and running now."""
        self.tree = TenantTree(tenants)
        self._queued, self._running, self._alloc = Counter(), Counter(), {}
        self._index()
        for job in queued:
            self.queued(job)
        for job in running:
            self.started(job)

    def _index(self) -> None:
        self._limited = {name for name, config in self.tree.declared.items()
                         if config.max_running is not None or config.max_queued is not None
                         or config.max is not None}
        self.limited = bool(self._limited)
        self._watch = {}

    def _path(self, tenant: str) -> tuple[str, ...]:
        """The limited names on the tenant's path, top first (empty: nothing to check)."""
        found = self._watch.get(tenant)
        if found is None:
            found = self._watch[tenant] = tuple(n for n in self.tree.path(tenant) if n in self._limited)
        return found

    def _add(self, counts: Counter[str], tenant: str, n: int) -> None:
        for name in self._path(tenant):
            counts[name] += n
            if counts[name] <= 0:
                del counts[name]

    # --- events -------------------------------------------------------------

    def queued(self, job: QueuedJob) -> None:
        self._add(self._queued, job.tenant, 1)

    def unqueued(self, job: QueuedJob) -> None:
        self._add(self._queued, job.tenant, -1)

    def started(self, job: QueuedJob) -> None:
        path = self._path(job.tenant)
        if not path:
            return
        self._add(self._running, job.tenant, 1)
        resources = Resources.of(job)
        for name in path:
            self._alloc[name] = self._alloc.get(name, NOTHING) + resources

    def finished(self, job: QueuedJob) -> None:
        path = self._path(job.tenant)
        if not path:
            return
        self._add(self._running, job.tenant, -1)
        resources = Resources.of(job)
        for name in path:
            left = self._alloc.get(name, NOTHING) - resources
            if self._running.get(name, 0) > 0:
                self._alloc[name] = left
            else:
                self._alloc.pop(name, None)  # nothing running: exactly nothing held

    # --- answers ------------------------------------------------------------

    def admit(self, job: QueuedJob) -> str | None:
        """Why a NEW job is refused at submit (None: accepted). Requeues are not asked."""
        for name in self._path(job.tenant):
            config = self.tree.declared[name]
            if config.max_queued is not None and self._queued.get(name, 0) >= config.max_queued:
                return f"{_who(name, job.tenant)} is at max_queued={config.max_queued}"
            if config.max is not None:
                kind = exceeds(Resources.of(job), config.max)
                if kind is not None:
                    return (f"job {job.uid} asks for {_amount(Resources.of(job), kind)} {_UNITS[kind]}, "
                            f"more than {_who(name, job.tenant)}'s max {kind}={_amount(config.max, kind)}")
        return None

    def hold(self, job: QueuedJob) -> str | None:
        """Why this queued job may not start now (None: it may)."""
        for name in self._path(job.tenant):
            config = self.tree.declared[name]
            if config.max_running is not None and self._running.get(name, 0) >= config.max_running:
                return f"{_who(name, job.tenant)} is at max_running={config.max_running}"
            if config.max is not None:
                held = self._alloc.get(name, NOTHING)
                kind = exceeds(held + Resources.of(job), config.max)
                if kind is not None:
                    return (f"{_who(name, job.tenant)} would exceed max {kind}={_amount(config.max, kind)} "
                            f"(holds {_amount(held, kind)}, job {job.uid} asks for {_amount(Resources.of(job), kind)})")
        return None
