"""One tenant's queued jobs, in the order its jobs go: in-tenant priority, then FIFO.

A heap with lazy deletion: a cancelled or dispatched job is dropped from the
index at once and from the heap when it surfaces, except at the top, which is
kept alive (dead entries below it are dropped as soon as they surface), so
that reading the head, which every decision does several times, costs O(1). Every push gets a fresh
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
    """``heap[0]``, when there is one, is the head entry: the policies' hot paths read it directly."""

    __slots__ = ("by_priority", "heap", "live", "_aside", "_gen")

    def __init__(self, by_priority: bool = True) -> None:
        self.by_priority = by_priority
        self.heap: list[_Entry] = []  # read-only outside: heap[0] is alive
        self.live: dict[str, int] = {}  # uid -> generation of its live entry (read-only outside)
        self._aside: list[_Entry] = []
        self._gen = 0

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, uid: object) -> bool:
        return uid in self.live

    def _order(self, job: QueuedJob) -> tuple[int, int]:
        return (-job.priority if self.by_priority else 0, job.seq)

    def push(self, job: QueuedJob) -> bool:
        """Queue a job; True when it is now the head. A job already queued is left alone."""
        if job.uid in self.live:
            return False
        self._gen += 1
        entry = (-job.priority if self.by_priority else 0, job.seq, self._gen, job)
        self.live[job.uid] = self._gen
        heapq.heappush(self.heap, entry)
        return self.heap[0] is entry

    def remove(self, uid: str) -> bool:
        """Drop a queued job; True when it was there."""
        if self.live.pop(uid, None) is None:
            return False
        heap, live = self.heap, self.live
        if heap and heap[0][3].uid == uid:  # the top is always alive: this is the job's entry
            heapq.heappop(heap)
            while heap and live.get(heap[0][3].uid) != heap[0][2]:
                heapq.heappop(heap)
        if len(heap) > 2 * len(live) + 64:
            self.compact()
        return True

    def _alive(self, entry: _Entry) -> bool:
        return self.live.get(entry[3].uid) == entry[2]

    def _drop_dead_top(self) -> None:
        heap, live = self.heap, self.live
        while heap and live.get(heap[0][3].uid) != heap[0][2]:
            heapq.heappop(heap)

    def head(self) -> QueuedJob | None:
        """The job this tenant sends next (None when all are set aside or none queued)."""
        heap = self.heap
        return heap[0][3] if heap else None

    def head_order(self) -> tuple[int, int] | None:
        heap = self.heap
        if not heap:
            return None
        entry = heap[0]
        return (entry[0], entry[1])

    def set_aside_head(self) -> None:
        if self.heap:
            self._aside.append(heapq.heappop(self.heap))
            self._drop_dead_top()

    def restore_aside(self) -> None:
        for entry in self._aside:
            if self._alive(entry):
                heapq.heappush(self.heap, entry)
        self._aside.clear()

    def jobs(self) -> Iterator[QueuedJob]:
        """Queued jobs in this tenant's order, lazily: the first k cost O(k log k).

        Walks the heap array in order through a small frontier heap of indices
        (a parent is smaller than its children), so a listing of the head of a
        long queue copies nothing. The queue must not change meanwhile.
        """
        heap = self.heap
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
        return sum(1 for e in self.heap + self._aside if self._alive(e) and (e[0], e[1]) < mine)

    def compact(self) -> None:
        """Rebuild the heap without its dead entries (bounded memory)."""
        self.heap = [e for e in self.heap if self._alive(e)]
        heapq.heapify(self.heap)
