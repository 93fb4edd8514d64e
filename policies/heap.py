"""Tenants ordered by a key that may grow on its own: a lazy, versioned min-heap.

A policy's key for a tenant (a virtual tag, a decayed usage, a dominant share,
with the head job's sequence last to break ties) changes all the time, mostly
upwards: dispatching charges the tenant, running jobs accrue usage. Pushing
every change would cost a heap operation per tenant per event; instead an
entry's key is a LOWER BOUND of the tenant's key. When the smallest entry
surfaces, the key is recomputed: if it grew, the entry goes back with the new
key; if not, that tenant really is the smallest. A key that DROPS (a job
finished early, a requeued older job) must be pushed again by the policy; the
newer entry then supersedes the older one by its version. That keeps a
decision at O(log tenants) amortized, whatever the number of tenants.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Set

Key = tuple[float, ...]


class TenantHeap:
    __slots__ = ("_key", "_heap", "_version", "_counter", "_aside")

    def __init__(self, key: Callable[[str], Key]) -> None:
        self._key = key
        self._heap: list[tuple[Key, int, str]] = []
        self._version: dict[str, int] = {}  # tenant -> counter of its one live entry
        self._counter = 0
        self._aside: list[str] = []  # popped this round because the caller skips them

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._version

    def __len__(self) -> int:
        return len(self._version)

    def push(self, tenant: str) -> None:
        """(Re)insert with the tenant's current key; an older entry becomes stale."""
        self._counter += 1
        self._version[tenant] = self._counter
        heapq.heappush(self._heap, (self._key(tenant), self._counter, tenant))
        if len(self._heap) > 2 * len(self._version) + 64:
            self._compact()

    def discard(self, tenant: str) -> None:
        self._version.pop(tenant, None)

    def reset(self, tenants: Iterable[str]) -> None:
        self._heap.clear()
        self._version.clear()
        self._aside.clear()
        for tenant in tenants:
            self._counter += 1
            self._version[tenant] = self._counter
            self._heap.append((self._key(tenant), self._counter, tenant))
        heapq.heapify(self._heap)

    def pop_best(self, skip: Set[str]) -> str | None:
        """Take out the tenant with the smallest key not in ``skip`` (those are set aside).

        The tenant returned has no entry any more: the caller pushes it back
        (or sets it aside, or discards it) once it has acted on it.
        """
        heap = self._heap
        while heap:
            key, counter, tenant = heap[0]
            if self._version.get(tenant) != counter:
                heapq.heappop(heap)
                continue
            fresh = self._key(tenant)
            if fresh > key:  # grew since it was pushed: not known to be the smallest yet
                self._counter += 1
                self._version[tenant] = self._counter
                heapq.heapreplace(heap, (fresh, self._counter, tenant))
                continue
            heapq.heappop(heap)
            del self._version[tenant]
            if tenant in skip:
                self._aside.append(tenant)
                continue
            return tenant
        return None

    def peek_key(self) -> Key | None:
        """A lower bound of every live entry's key (None: empty); stale entries on top are dropped."""
        heap = self._heap
        while heap and self._version.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def set_aside(self, tenant: str) -> None:
        self.discard(tenant)
        self._aside.append(tenant)

    def restore_aside(self, alive: Callable[[str], bool]) -> None:
        """Put the tenants set aside last round back (those still competing)."""
        aside, self._aside = self._aside, []
        for tenant in aside:
            if tenant not in self._version and alive(tenant):
                self.push(tenant)

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._version.get(e[2]) == e[1]]
        heapq.heapify(self._heap)
