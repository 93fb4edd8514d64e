"""One tenant's queued jobs, in the order its jobs go: in-tenant priority, then FIFO.

A heap with lazy deletion: a cancelled or dispatched job is dropped from the
index at once and from the heap when it surfaces. Every push gets a fresh
generation number, so an entry never compares jobs and a job requeued after
it left is told apart from its dead entry. Jobs passed over for one decision
round (``set_aside_head``) stay queued and come back with ``restore_aside``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from .base import QueuedJob

_Entry = tuple[int, int, int, QueuedJob]  # (-priority or 0, seq, generation, job)


class TenantQueue:
    __slots__ = ("by_priority", "_heap", "_live", "_aside", "_gen")

    def __init__(self, by_priority: bool = True) -> None:
        self.by_priority = by_priority
        self._heap: list[_Entry] = []
        self._live: dict[str, int] = {}  # uid -> generation of its live entry
        self._aside: list[_Entry] = []
        self._gen = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, uid: object) -> bool:
        return uid in self._live

    def _order(self, job: QueuedJob) -> tuple[int, int]:
        return (-job.priority if self.by_priority else 0, job.seq)

    def push(self, job: QueuedJob) -> bool:
        """Queue a job; True when it is now the head. A job already queued is left alone."""
        if job.uid in self._live:
            return False
        self._gen += 1
        entry = (*self._order(job), self._gen, job)
        self._live[job.uid] = self._gen
        heapq.heappush(self._heap, entry)
        return self._head_entry() is entry

    def remove(self, uid: str) -> bool:
        """Drop a queued job; True when it was there."""
        return self._live.pop(uid, None) is not None

    def _alive(self, entry: _Entry) -> bool:
        return self._live.get(entry[3].uid) == entry[2]

    def _head_entry(self) -> _Entry | None:
        heap = self._heap
        while heap and not self._alive(heap[0]):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def head(self) -> QueuedJob | None:
        """The job this tenant sends next (None when all are set aside or none queued)."""
        entry = self._head_entry()
        return entry[3] if entry is not None else None

    def head_order(self) -> tuple[int, int] | None:
        entry = self._head_entry()
        return (entry[0], entry[1]) if entry is not None else None

    def set_aside_head(self) -> None:
        entry = self._head_entry()
        if entry is not None:
            self._aside.append(heapq.heappop(self._heap))

    def restore_aside(self) -> None:
        for entry in self._aside:
            if self._alive(entry):
                heapq.heappush(self._heap, entry)
        self._aside.clear()

    def jobs(self) -> Iterator[QueuedJob]:
        """Queued jobs in this tenant's order, lazily: the first k cost O(k log k).

        Walks the heap array in order through a small frontier heap of indices
        (a parent is smaller than its children), so a listing of the head of a
        long queue copies nothing. The queue must not change meanwhile.
        """
        heap = self._heap
        frontier: list[tuple[tuple[int, int, int], int]] = []
        if heap:
            frontier.append((heap[0][:3], 0))
        aside = sorted(self._aside, key=lambda e: e[:3])
        a = 0
        while frontier or a < len(aside):
            if frontier and (a >= len(aside) or frontier[0][0] < aside[a][:3]):
                _, i = heapq.heappop(frontier)
                entry = heap[i]
                for child in (2 * i + 1, 2 * i + 2):
                    if child < len(heap):
                        heapq.heappush(frontier, (heap[child][:3], child))
            else:
                entry = aside[a]
                a += 1
            if self._alive(entry):
                yield entry[3]

    def ahead_of(self, job: QueuedJob) -> int:
        """How many of this tenant's queued jobs go before ``job``."""
        mine = self._order(job)
        return sum(1 for e in self._heap + self._aside if self._alive(e) and (e[0], e[1]) < mine)

    def compact(self) -> None:
        """Rebuild the heap when dead entries outnumber the live ones (bounded memory)."""
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in self._heap if self._alive(e)]
            heapq.heapify(self._heap)
