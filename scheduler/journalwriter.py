"""Group commit, and holding back what may only be said once it is durable.

The state task appends records as it produces them (``append``) and hands
every outgoing message to ``send``. A message marked durable (a QUEUED
acknowledgement, the echo that lets a node forget its results) waits until
one fsync covers every record appended before it (and durable messages
keep their order); other messages go at once, so that the fsync stays off
every job's round trip. ``run_commits`` is the one
task that fsyncs — in a worker thread, since the OS gives no async fsync —
covering whatever accumulated meanwhile: one fsync for a whole burst of
submits. It also compacts the journal when it has grown past its limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import structlog
import trio

from fairpool.messages import Message
from fairpool.scheduler.journal import JournalFile
from fairpool.scheduler.journalrecords import JournalRecord

log = structlog.get_logger("fairpool.scheduler.journal")

Deliver = Callable[[int, Message], None]

#: Records that no acknowledgement waits on are written within this many seconds.
LAZY_COMMIT = 0.01


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
        self._urgent = trio.Event()  # ...and someone waits for it
        self.fsyncs = 0
        self.compactions = 0

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
                self._urgent.set()
                return
            if self._parked.get(conn):
                self._parked[conn].append((0, message))  # durable ones keep their order
                return
        # Not durable: it need not wait. A job's result may so reach its client before the job's
        # QUEUED does (the client has the result then: nothing is lost); the fsync stays off the
        # round trip of every job.
        self._deliver(conn, message)

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
            if not self._urgent.is_set():
                # Nobody waits on these records (a crash before they are written loses nothing
                # acknowledged): let them gather, and keep the fsync's cost off busy moments.
                with trio.move_on_after(LAZY_COMMIT):
                    await self._urgent.wait()
            self._wakeup = trio.Event()
            self._urgent = trio.Event()
            if self._appended > self._synced:
                # Everything pending goes in one write and one fsync: the group commit.
                await trio.to_thread.run_sync(self._write_and_sync, self._take())
                self.fsyncs += 1
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
