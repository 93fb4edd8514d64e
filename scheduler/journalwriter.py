"""Group commit, and holding back what may only be said once it is durable.

The state task appends records as it produces them (``append``) and hands
every outgoing message to ``send``. A message marked durable (a QUEUED
acknowledgement, the echo that lets a node forget its results) waits until
one fsync covers every record appended before it (and durable messages
keep their order); other messages go at once, so that the fsync stays off
every job's round trip. A durable message waits ``DURABLE_GRACE`` before it
asks for an fsync, and a parked ``Queued`` loses the jobs whose results its
client got meanwhile (``drop_answered``): a job that ends within the grace
costs no fsync and no ``Queued`` of its own -- its result says more than the
acknowledgement would, and its records are written with the next group
commit, at most ``LAZY_COMMIT`` later. ``run_commits`` is the one
task that fsyncs — in a worker thread, since the OS gives no async fsync —
covering whatever accumulated meanwhile: one fsync for a whole burst of
submits. It also compacts the journal when it has grown past its limit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import structlog
import trio

from fairpool.messages import JobsUpdate, Message, Queued
from fairpool.scheduler.journal import JournalFile
from fairpool.scheduler.journalrecords import JournalRecord

log = structlog.get_logger("fairpool.scheduler.journal")

Deliver = Callable[[int, Message], None]

#: Records that no acknowledgement waits on are written within this many seconds.
LAZY_COMMIT = 0.01
#: A durable message asks for an fsync this many seconds after it is parked: jobs that end
#: sooner need none (see ``drop_answered``), and a burst of submits shares one.
DURABLE_GRACE = 0.002


def drop_answered(parked: Message, sent: Message) -> Message | None:
    """``parked`` once ``sent`` went out before it: a Queued without the jobs whose results were sent."""
    if isinstance(parked, Queued) and isinstance(sent, JobsUpdate) and sent.results:
        ended = {result.uid for result in sent.results}
        left = [uid for uid in parked.uids if uid not in ended]
        if len(left) < len(parked.uids):
            return Queued(parked.cluster_id, left, parked.at) if left else None
    return parked


class JournalWriter:
    def __init__(self, journal: JournalFile, deliver: Deliver, *, compact_bytes: int,
                 snapshot: Callable[[], list[JournalRecord]]) -> None:
        self.journal = journal
        self._deliver = deliver
        self._snapshot = snapshot
        self.compact_bytes = compact_bytes
        self._floor = journal.size  # compaction waits until the log has grown past this
        self._pending: list[JournalRecord] = []  # appended by the state task, not yet written
        self._appended = 0  # records appended since start (written or pending)
        self._synced = 0  # of those, how many are on disk
        self._parked: dict[int, deque[tuple[int, Message]]] = {}
        self._wakeup = trio.Event()  # something is not on disk yet
        self.fsyncs = 0
        self.compactions = 0
        self.on_sync: Callable[[float], None] | None = None  # told each group commit's seconds (metrics)

    def append(self, record: JournalRecord) -> None:
        # Only memory here: the file is written and synced by run_commits in a worker thread, so
        # the state task never blocks on the disk (a write waits while an fsync runs).
        self._pending.append(record)
        self._appended += 1

    def send(self, conn: int, message: Message, durable: bool) -> None:
        if durable:
            if self._appended > self._synced:
                parked = self._parked.get(conn)
                if parked is None:
                    parked = self._parked[conn] = deque()
                parked.append((self._appended, message))
                self._wakeup.set()
                return
            if self._parked.get(conn):
                self._parked[conn].append((0, message))  # durable ones keep their order
                return
        # Not durable: it need not wait. A job's result may so reach its client before the job's
        # QUEUED does (the client has the result then: nothing is lost); the fsync stays off the
        # round trip of every job.
        parked = self._parked.get(conn)
        if parked:
            self._supersede(conn, parked, message)
        self._deliver(conn, message)

    def _supersede(self, conn: int, parked: deque[tuple[int, Message]], sent: Message) -> None:
        kept: deque[tuple[int, Message]] = deque()
        for upto, message in parked:
            still = drop_answered(message, sent)
            if still is not None:
                kept.append((upto, still))
        if kept:
            self._parked[conn] = kept
        else:
            del self._parked[conn]

    @property
    def unsynced(self) -> int:
        """Records appended that are not on disk yet."""
        return self._appended - self._synced

    def forget(self, conn: int) -> None:
        self._parked.pop(conn, None)

    def end_of_batch(self) -> None:
        """The state task finished a batch: have what it produced written and synced soon."""
        if self._appended > self._synced:
            self._wakeup.set()

    def flush(self) -> None:
        """Write and sync everything now, blocking (at shutdown, and before compacting)."""
        self._write_and_sync(self._take())

    def _take(self) -> tuple[list[JournalRecord], int]:
        records, self._pending = self._pending, []
        return records, self._appended

    def _write_and_sync(self, batch: tuple[list[JournalRecord], int]) -> None:
        records, upto = batch
        self.journal.append(records)
        self.journal.sync()
        self._synced = max(self._synced, upto)

    async def run_commits(self) -> None:
        while True:
            await self._wakeup.wait()
            # Nobody waits on these records yet (a crash before they are written loses nothing
            # acknowledged): let them gather, and keep the fsync's cost off busy moments.
            await trio.sleep(DURABLE_GRACE if self._parked else LAZY_COMMIT)
            self._wakeup = trio.Event()
            if self._appended > self._synced:
                # Everything pending goes in one write and one fsync: the group commit.
                started = time.perf_counter()
                await trio.to_thread.run_sync(self._write_and_sync, self._take())
                self.fsyncs += 1
                if self.on_sync is not None:
                    self.on_sync(time.perf_counter() - started)
            self._release()
            if self.journal.size > max(self.compact_bytes, 2 * self._floor):
                self.compact()

    def compact(self) -> None:
        """Rewrite the journal as a snapshot of the live state (synchronous: nothing else runs)."""
        self.flush()
        before = self.journal.size
        self.journal.replace_with(self._snapshot())
        self._floor = self.journal.size
        self.compactions += 1
        log.info("journal compacted", bytes_before=before, bytes_after=self.journal.size)
        self._release()

    def _release(self) -> None:
        synced = self._synced
        for conn in list(self._parked):
            parked = self._parked[conn]
            while parked and parked[0][0] <= synced:
                self._deliver(conn, parked.popleft()[1])
            if not parked:
                del self._parked[conn]
