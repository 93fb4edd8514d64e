"""Tenants ordered by a key that may grow on its own: ``TenantHeap``, a min-heap of lower bounds.

A policy's key for a tenant (a virtual tag, a decayed usage, a dominant share,
with the head job's sequence last to break ties) changes all the time, mostly
upwards: dispatching charges the tenant, running jobs accrue usage. Pushing
every change would cost a heap operation per tenant per event; instead an
entry's key is a LOWER BOUND of the tenant's key. When the smallest entry
surfaces, the key is recomputed: if it grew, the entry goes back with the new
key; if not, that tenant really is the smallest. A key that DROPS (a job
finished early, a requeued older job) must be pushed again by the policy.
That keeps a decision at O(log tenants) amortized, whatever the number of
tenants. A policy's keys all have one length, and are above ``LOWEST`` (the
bound a lone tenant gets: it needs no key until another joins).

Two builds of it, which order tenants identically (by key, then by when each
was last keyed): ``TupleHeap`` here, entries as tuples on ``heapq`` (the
fastest in pure Python; a pushed entry supersedes the tenant's older one,
dropped when it surfaces), and ``NodeHeap`` (``nodeheap``), one node per
tenant with its key as native floats, updated in place, for the compiled
build, where comparing tuples through the object protocol was the largest
single cost of a decision.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Set
from typing import Any

Key = tuple[float, ...]
LOWEST: Key = (float("-inf"),)  # below every key
_Entry = tuple[Any, ...]  # (*key, counter, tenant)


class TenantHeap:
    """The interface ``PolicyBase`` uses, and setting tenants aside for a round."""

    __slots__ = ("_key", "aside")

    def __init__(self, key: Callable[[str], Key]) -> None:
        self._key = key
        self.aside: list[str] = []  # popped this round because the caller skips them (read-only outside)

    def __contains__(self, tenant: object) -> bool:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def push(self, tenant: str, key: Key | None = None) -> None:
        """(Re)insert with the tenant's current key (``key``: already computed)."""
        raise NotImplementedError

    def lower(self, tenant: str) -> None:
        """The tenant's key may have changed either way: re-keyed only if it dropped (a grown key
        is found out when the tenant surfaces)."""
        raise NotImplementedError

    def discard(self, tenant: str) -> None:
        raise NotImplementedError

    def reset(self, tenants: Iterable[str]) -> None:
        raise NotImplementedError

    def pop_best(self, skip: Set[str]) -> str | None:
        """Take out the tenant with the smallest key not in ``skip`` (those are set aside).

        The tenant returned is out of the heap: the caller pushes it back (or
        sets it aside, or discards it) once it has acted on it.
        """
        raise NotImplementedError

    def goes_first(self, key: Key) -> bool:
        """Whether a tenant out of the heap with this key is no bigger than every key in it (an
        equal key goes first: the tenant out of the heap is the one being served). True when
        the heap is empty."""
        raise NotImplementedError

    def _first_key(self, tenant: str, *, alone: bool) -> Key:
        # Alone, a tenant needs no key: any lower bound will do until another joins, and a lone
        # tenant (one client on the pool) then costs no key computation at all.
        return LOWEST if alone else self._key(tenant)

    def set_aside(self, tenant: str) -> None:
        self.discard(tenant)
        self.aside.append(tenant)

    def restore_aside(self, alive: Callable[[str], bool]) -> None:
        """Put the tenants set aside last round back (those still competing)."""
        if not self.aside:
            return
        aside, self.aside = self.aside, []
        for tenant in aside:
            if tenant not in self and alive(tenant):
                self.push(tenant)


class TupleHeap(TenantHeap):
    """Entries ``(*key, counter, tenant)`` on ``heapq``; a stale entry is dropped when it surfaces."""

    __slots__ = ("_heap", "_live", "_counter")

    def __init__(self, key: Callable[[str], Key]) -> None:
        super().__init__(key)
        # An entry is the key with (counter, tenant) appended, flat: heap operations compare
        # entries, and flat tuples compare faster than nested ones.
        self._heap: list[_Entry] = []
        self._live: dict[str, _Entry] = {}  # tenant -> its one live entry
        self._counter = 0

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._live

    def __len__(self) -> int:
        return len(self._live)

    def push(self, tenant: str, key: Key | None = None) -> None:
        self._counter += 1
        if key is None:
            key = self._first_key(tenant, alone=not self._live)
        entry = key + (self._counter, tenant)
        self._live[tenant] = entry
        heapq.heappush(self._heap, entry)
        if not self._counter & 63 and len(self._heap) > 2 * len(self._live) + 64:
            self._compact()

    def lower(self, tenant: str) -> None:
        entry = self._live.get(tenant)
        if entry is None:
            self.push(tenant)
        elif entry[0] != LOWEST[0]:  # (an entry at the lowest bound cannot be lowered)
            key = self._key(tenant)
            if key < entry:  # (a key equal to the entry's is its prefix: smaller, a harmless push)
                self.push(tenant, key)

    def discard(self, tenant: str) -> None:
        self._live.pop(tenant, None)

    def reset(self, tenants: Iterable[str]) -> None:
        self._heap.clear()
        self._live.clear()
        self.aside.clear()
        for tenant in tenants:
            self._counter += 1
            entry = self._key(tenant) + (self._counter, tenant)
            self._live[tenant] = entry
            self._heap.append(entry)
        heapq.heapify(self._heap)

    def pop_best(self, skip: Set[str]) -> str | None:
        heap, live = self._heap, self._live
        while heap:
            entry = heap[0]
            tenant: str = entry[-1]
            if live.get(tenant) is not entry:
                heapq.heappop(heap)
                continue
            if len(live) > 1:  # (alone, it is the smallest whatever its key)
                fresh = self._key(tenant)
                # grew since it was pushed: not known to be the smallest yet. (Against the whole
                # entry: a key equal to the entry's is its prefix, so smaller, as the key alone.)
                if fresh > entry:
                    self._counter += 1
                    entry = live[tenant] = fresh + (self._counter, tenant)
                    heapq.heapreplace(heap, entry)
                    continue
            heapq.heappop(heap)
            del live[tenant]
            if tenant in skip:
                self.aside.append(tenant)
                continue
            return tenant
        return None

    def goes_first(self, key: Key) -> bool:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][-1]) is not heap[0]:  # stale entries on top
            heapq.heappop(heap)
        # (against the whole entry: a key equal to the entry's is its prefix, so smaller)
        return not heap or key <= heap[0]

    def _compact(self) -> None:
        live = self._live
        self._heap = [e for e in self._heap if live.get(e[-1]) is e]
        heapq.heapify(self._heap)
