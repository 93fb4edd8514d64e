"""Progress a node holds for the scheduler: what is not sent yet, and what was sent but may not be read.

``HeldProgress`` collects what the worker pool reports (tasks started,
results, and what running jobs send: provisional results and file chunks),
hands it to a connection as ``NodeProgress`` messages, and keeps what it
handed over "recent" until the scheduler acknowledges it (by echoing one of
the node's heartbeats sent after it, once the scheduler journaled it),
``RESEND_WINDOW`` passes, or the recent batches exceed ``RESEND_BYTES``;
after a disconnect the recent batches are held again, ahead of the rest,
because bytes written just before the peer died may never have been read.
Results are the exception: they are kept until acknowledged, however long
the scheduler is away (it may be restarting), so none is ever lost.

Order is kept: a job's provisional results and files always leave in the
same message as its result or an earlier one, and a consumer applies a
message's ``provisional`` and ``files`` before its ``results``. A message
carries at most about ``MAX_PROGRESS_FILE_BYTES`` of payloads and file data: more goes in
several messages, files first, then provisional results, then results.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from fairpool.messages import FileChunk, JobProvisional, JobResult, JobStarted, NodeProgress
from fairpool.newsbatch import NEWS_BUDGET, news_size, split_news

#: Progress sent within this many seconds before a disconnect is sent again after reconnecting...
RESEND_WINDOW = 5.0
#: ...but no more than about this many bytes of it.
RESEND_BYTES = 256 * 1024 * 1024
#: Payloads, outputs and file data per NodeProgress message, so that a batch of large results or
#: a large file never makes one frame over the scheduler's limit.
MAX_PROGRESS_FILE_BYTES = NEWS_BUDGET

_Progress = tuple[list[JobStarted], list[JobResult], list[JobProvisional], list[FileChunk]]


class _Batch:
    """Progress handed to one connection in one go (one or more NodeProgress messages)."""

    __slots__ = ("seq", "when", "started", "results", "provisional", "files", "size")

    def __init__(self, seq: int, when: float, progress: _Progress) -> None:
        self.seq = seq
        self.when = when
        self.started, self.results, self.provisional, self.files = progress
        self.size = news_size(self.started, self.results, self.provisional, self.files)


class HeldProgress:
    """Progress not yet handed to a connection, and what was handed over but not known read."""

    def __init__(self, budget: int | None = None) -> None:
        # bytes per message: the module's default, or less for a pool whose frames are smaller
        self.budget = budget
        self.started: list[JobStarted] = []
        self.results: list[JobResult] = []
        self.provisional: list[JobProvisional] = []
        self.files: list[FileChunk] = []
        self._recent: deque[_Batch] = deque()
        self._recent_bytes = 0
        self._seq = 0
        self._unacknowledged: deque[tuple[int, JobResult]] = deque()  # results of batches aged out

    def add(
        self,
        started: list[JobStarted],
        results: list[JobResult],
        provisional: list[JobProvisional] | None = None,
        files: list[FileChunk] | None = None,
    ) -> None:
        self.started.extend(started)
        self.results.extend(results)
        if provisional:
            self.provisional.extend(provisional)
        if files:
            self.files.extend(files)

    def take(self) -> list[NodeProgress]:
        """What is held, as messages to send in this order (none if nothing is held)."""
        if not (self.started or self.results or self.provisional or self.files):
            return []
        if self.results and self.started:
            ended = {r.uid for r in self.results}
            self.started = [s for s in self.started if s.uid not in ended]  # the result says when it started
        progress: _Progress = (self.started, self.results, self.provisional, self.files)
        self.started, self.results, self.provisional, self.files = [], [], [], []
        self._seq += 1
        now = time.monotonic()
        batch = _Batch(self._seq, now, progress)
        self._recent.append(batch)
        self._recent_bytes += batch.size
        self._drop(lambda seq, when: when < now - RESEND_WINDOW or self._recent_bytes > RESEND_BYTES)
        return _messages(*progress, budget=self.budget)

    def mark(self) -> int:
        """The sequence number of the last batch handed over: a heartbeat sent now follows it."""
        return self._seq

    def acknowledged(self, upto: int) -> None:
        """The scheduler read (and journaled) every batch up to ``upto``: forget them."""
        self._drop(lambda seq, when: seq <= upto, acknowledged=True)
        kept = self._unacknowledged
        while kept and kept[0][0] <= upto:
            kept.popleft()

    def _drop(self, predicate: Callable[[int, float], bool], acknowledged: bool = False) -> None:
        recent = self._recent
        while recent and predicate(recent[0].seq, recent[0].when):
            batch = recent.popleft()
            self._recent_bytes -= batch.size
            if not acknowledged:
                self._unacknowledged.extend((batch.seq, r) for r in batch.results)

    def result_uids(self) -> set[str]:
        """Jobs whose result this node holds, sent or not, until the scheduler acknowledges it."""
        uids = {r.uid for r in self.results}
        uids.update(r.uid for batch in self._recent for r in batch.results)
        uids.update(r.uid for _, r in self._unacknowledged)
        return uids

    def connection_lost(self) -> None:
        """What went out recently may not have been read: hold it again, ahead of the rest."""
        started: list[JobStarted] = []
        results: list[JobResult] = []
        provisional: list[JobProvisional] = []
        files: list[FileChunk] = []
        results.extend(r for _, r in self._unacknowledged)
        self._unacknowledged.clear()
        for batch in self._recent:
            started.extend(batch.started)
            results.extend(batch.results)
            provisional.extend(batch.provisional)
            files.extend(batch.files)
        self._recent.clear()
        self._recent_bytes = 0
        self.started = started + self.started
        self.results = results + self.results
        self.provisional = provisional + self.provisional
        self.files = files + self.files


def _messages(
    started: list[JobStarted], results: list[JobResult], provisional: list[JobProvisional], files: list[FileChunk],
    budget: int | None = None,
) -> list[NodeProgress]:
    """One NodeProgress, or several if the batch is large (``fairpool.newsbatch``): files first,
    then provisional results, then results, so that a job's news never arrive after its result."""
    limit = MAX_PROGRESS_FILE_BYTES if budget is None else min(budget, MAX_PROGRESS_FILE_BYTES)
    return [NodeProgress(*part) for part in split_news(started, results, provisional, files, limit)]
