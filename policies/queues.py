"""One tenant's queued jobs, in the order its jobs go: in-tenant priority, then FIFO.

Jobs mostly arrive in the order they go (same priority, rising sequence), so
they are kept in two places: a run of entries appended in order (a deque: the
head leaves in O(1), however long the queue) and a heap for the few that
arrive out of order (a requeued job, a higher priority). ``first``, the head
entry, is the smaller of the two fronts and is kept up to date on every
change, since every decision reads it several times.

Deletion is lazy: a cancelled or dispatched job is dropped from the index at
once and from its structure when it reaches the front. Every push gets a
fresh generation number, so an entry never compares jobs and a job requeued
after it left is told apart from its dead entry. Jobs passed over for one
decision round (``set_aside_head``) stay queued and come back with
``restore_aside``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from heapq import heappop, heappush  # (compiled: module globals, not an attribute read per call)
from typing import Any

from .base import QueuedJob

# (-priority or 0, seq, generation, job). Typed as a plain tuple on purpose: compiled (mypyc),
# a fixed-shape tuple is unboxed and boxed anew wherever it is stored, and ``first`` is told
# apart from the other entries by identity.
_Entry = tuple[Any, ...]


def _before(order: int, seq: int, entry: _Entry) -> bool:
    """Whether a new entry ``(order, seq, generation, job)`` goes before ``entry``."""
    other: int = entry[0]
    if order != other:
        return order < other
    other_seq: int = entry[1]
    return seq < other_seq


class TenantQueue:
    """``first`` (the head entry, None when nothing can go) and ``live`` are read-only outside."""

    __slots__ = ("by_priority", "first", "live", "_run", "_heap", "_aside", "_gen")

    def __init__(self, by_priority: bool = True) -> None:
        self.by_priority = by_priority
        self.first: _Entry | None = None
        self.live: dict[str, int] = {}  # uid -> generation of its live entry
        self._run: deque[_Entry] = deque()  # ascending: each appended entry above the last
        self._heap: list[_Entry] = []  # the entries that came out of order
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
        uid = job.uid
        live = self.live
        if uid in live:
            return False
        self._gen += 1
        order: int = -job.priority if self.by_priority else 0
        seq: int = job.seq
        entry: _Entry = (order, seq, self._gen, job)
        live[uid] = self._gen
        run = self._run
        # (order, seq) compared as ints, not the entries as tuples: on a tie the newer entry (a
        # higher generation) is the bigger one
        if run and _before(order, seq, run[-1]):
            heappush(self._heap, entry)
        else:
            run.append(entry)
        first = self.first
        if first is None or _before(order, seq, first):
            self.first = entry
            return True
        return False

    def remove(self, uid: str, *, head: bool = False) -> bool:
        """Drop a queued job; True when it was there. ``head``: the caller knows it is the head
        job (``first``), as a dispatched job is: spares reading the head's uid."""
        live = self.live
        if uid not in live:
            return False
        del live[uid]  # (not pop(uid, None): compiled, a call by name)
        first = self.first
        if first is not None and (head or first[3].uid == uid):  # ``first`` is alive: the job's own
            run = self._run
            if run and run[0] is first:
                run.popleft()
            else:
                heappop(self._heap)
            self._refresh()
        if len(self._run) + len(self._heap) > 2 * len(self.live) + 64:
            self.compact()
        return True

    def _alive(self, entry: _Entry) -> bool:
        generation: int = entry[2]
        return self.live.get(entry[3].uid) == generation

    def _refresh(self) -> None:
        """Drop dead entries from both fronts; ``first`` becomes the smaller one."""
        run, heap, live = self._run, self._heap, self.live
        front: _Entry | None = None
        while run:
            front = run[0]
            if live.get(front[3].uid) == front[2]:
                break
            run.popleft()
            front = None
        if not heap:
            self.first = front
            return
        while heap:
            top = heap[0]
            if live.get(top[3].uid) == top[2]:
                self.first = top if front is None or top < front else front
                return
            heappop(heap)
        self.first = front

    def head(self) -> QueuedJob | None:
        """The job this tenant sends next (None when all are set aside or none queued)."""
        first = self.first
        return first[3] if first is not None else None

    def head_order(self) -> tuple[int, int] | None:
        first = self.first
        return (first[0], first[1]) if first is not None else None

    def set_aside_head(self) -> None:
        first = self.first
        if first is None:
            return
        if self._run and self._run[0] is first:
            self._run.popleft()
        else:
            heappop(self._heap)
        self._aside.append(first)
        self._refresh()

    def restore_aside(self) -> None:
        for entry in self._aside:
            if self._alive(entry):
                heappush(self._heap, entry)
        self._aside.clear()
        self._refresh()

    def _heap_in_order(self) -> Iterator[_Entry]:
        """The heap's entries in order without popping: a frontier of indices (a parent is
        smaller than its children), so the first k cost O(k log k) and nothing is copied."""
        heap = self._heap
        frontier: list[tuple[_Entry, int]] = [(heap[0], 0)] if heap else []
        while frontier:
            entry, i = heappop(frontier)
            yield entry
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heappush(frontier, (heap[child], child))

    def jobs(self) -> Iterator[QueuedJob]:
        """Queued jobs in this tenant's order, lazily. The queue must not change meanwhile."""
        for entry in heapq.merge(self._run, self._heap_in_order(), sorted(self._aside)):
            if self._alive(entry):
                yield entry[3]

    def ahead_of(self, job: QueuedJob) -> int:
        """How many of this tenant's queued jobs go before ``job``."""
        mine = self._order(job)
        return sum(1 for entries in (self._run, self._heap, self._aside) for e in entries
                   if self._alive(e) and (e[0], e[1]) < mine)

    def compact(self) -> None:
        """Drop the dead entries (bounded memory)."""
        self._run = deque(e for e in self._run if self._alive(e))
        self._heap = [e for e in self._heap if self._alive(e)]
        heapq.heapify(self._heap)
        self._refresh()
