"""Jobs whose node went away: held until it comes back or its deadline passes.

A node's connection can drop while the node goes on running its jobs (a
network blip, a half-open link, or a scheduler restart, after which every
assigned job is held here). The node reconnects with the same session and
claims what it still holds; a node that restarted (new session) or never
returns loses them, and the scheduler requeues or abandons them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from fairpool.scheduler.records import JobRecord


@dataclass
class _Held:
    node: str
    session: str
    deadline: float
    reason: str
    jobs: dict[str, JobRecord] = field(default_factory=dict)


class Orphans:
    def __init__(self) -> None:
        self._held: dict[tuple[str, str], _Held] = {}

    def __len__(self) -> int:
        return sum(len(h.jobs) for h in self._held.values())

    def hold(self, node: str, session: str, deadline: float, jobs: Iterable[JobRecord], reason: str) -> None:
        held = self._held.get((node, session))
        if held is None:
            held = self._held[(node, session)] = _Held(node, session, deadline, reason)
        else:
            held.deadline = max(held.deadline, deadline)
        for job in jobs:
            held.jobs[job.uid] = job

    def release(self, job: JobRecord) -> bool:
        """Take one job out (it ended or was requeued by other means); whether it was held."""
        for held in self._held.values():
            if held.jobs.pop(job.uid, None) is not None:
                return True
        return False

    def claim(self, node: str, session: str) -> tuple[dict[str, JobRecord], list[tuple[str, list[JobRecord], str]]]:
        """A node came back: the jobs of its current session, and those of its earlier runs (lost)."""
        mine: dict[str, JobRecord] = {}
        lost: list[tuple[str, list[JobRecord], str]] = []
        for key in [k for k in self._held if k[0] == node]:
            held = self._held.pop(key)
            if held.session == session:
                mine.update(held.jobs)
            else:
                lost.append((held.session, list(held.jobs.values()), "the node restarted"))
        return mine, lost

    def expire(self, now: float) -> list[tuple[str, str, list[JobRecord], str]]:
        gone = [k for k, h in self._held.items() if h.deadline <= now]
        return [(h.node, h.session, list(h.jobs.values()), h.reason) for h in (self._held.pop(k) for k in gone)]

    def set_deadlines(self, deadline: float) -> None:
        """After a restart, every held node gets the same time to come back."""
        for held in self._held.values():
            if held.deadline == math.inf:
                held.deadline = deadline

    def by_node(self) -> Iterator[tuple[str, str, list[JobRecord]]]:
        for held in self._held.values():
            yield held.node, held.session, list(held.jobs.values())
