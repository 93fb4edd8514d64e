"""Group commit, and holding back what may only be said once it is durable.

The state task appends records as it produces them (``append``) and hands
every outgoing message to ``send``. A message marked durable (a QUEUED
acknowledgement, the echo that lets a node forget its results) waits until
one fsync covers every record appended before it; messages to the same
peer behind it wait too, so nothing overtakes it. ``run_commits`` is the one
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


class JournalWriter:
    def __init__(self, journal: JournalFile, deliver: Deliver, *, compact_bytes: int,
                 snapshot: Callable[[], list[JournalRecord]]) -> None:
        self.journal = journal
        self._deliver = deliver
        self._snapshot = snapshot
        self.compact_bytes = compact_bytes
        self._floor = journal.size  # compaction waits until the log has grown past this
        self._pending: list[JournalRecord] = []
        self._parked: dict[int, deque[tuple[int, Message]]] = {}
        self._wakeup = trio.Event()
        self.fsyncs = 0
        self.compactions = 0

    def append(self, record: JournalRecord) -> None:
        self._pending.append(record)

    def send(self, conn: int, message: Message, durable: bool) -> None:
        parked = self._parked.get(conn)
        if durable:
            self._write_pending()
            if self.journal.appended > self.journal.synced:
                if parked is None:
                    parked = self._parked[conn] = deque()
                parked.append((self.journal.appended, message))
                self._wakeup.set()
                return
        if parked:
            parked.append((0, message))  # behind a durable one: keep the order
        else:
            self._deliver(conn, message)

    def forget(self, conn: int) -> None:
        self._parked.pop(conn, None)

    def end_of_batch(self) -> None:
        """The state task finished a batch: write what it produced, and have it synced soon."""
        self._write_pending()
        if self.journal.appended > self.journal.synced:
            self._wakeup.set()

    def _write_pending(self) -> None:
        if self._pending:
            records, self._pending = self._pending, []
            self.journal.append(records)

    async def run_commits(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._write_pending()
            if self.journal.appended > self.journal.synced:
                await trio.to_thread.run_sync(self.journal.sync)
                self.fsyncs += 1
            self._release()
            if self.journal.size > max(self.compact_bytes, 2 * self._floor):
                self.compact()

    def compact(self) -> None:
        """Rewrite the journal as a snapshot of the live state (synchronous: nothing else runs)."""
        self._write_pending()
        before = self.journal.size
        self.journal.replace_with(self._snapshot())
        self._floor = self.journal.size
        self.compactions += 1
        log.info("journal compacted", bytes_before=before, bytes_after=self.journal.size)
        self._release()

    def _release(self) -> None:
        synced = self.journal.synced
        for conn in list(self._parked):
            parked = self._parked[conn]
            while parked and parked[0][0] <= synced:
                self._deliver(conn, parked.popleft()[1])
            if not parked:
                del self._parked[conn]
