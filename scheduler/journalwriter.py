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
submits. It also compacts the journal when it (or the payload store) has
grown past its limit.

With a payload store (``fairpool.scheduler.payloadstore``), each group commit
first puts the records' payloads in the store (``to_stored``), writes and
fsyncs the segments, and only then writes and fsyncs the log: a record is
durable only once what it refers to is — one fsync per file per commit.
Batches are taken in order by the state task and written in that order by
whoever holds the lock: the commit thread, or ``flush``/``compact`` on the
state task's thread (at shutdown, or an admin's compaction while a commit is
under way).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import structlog
import trio

from fairpool.messages import JobsUpdate, Message, Queued
from fairpool.scheduler.journal import JournalFile, collector_paused
from fairpool.scheduler.journalrecords import (
    JournalRecord,
    dead_payloads,
    stored_payloads,
    to_stored,
)
from fairpool.scheduler.payloadstore import PayloadStore

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
                 snapshot: Callable[[], list[JournalRecord]], store: PayloadStore | None = None) -> None:
        self.journal = journal
        self.store = store  # None: payloads stay inline in the records
        self._store_floor = store.size if store is not None else 0
        self._batches: deque[tuple[list[JournalRecord], int]] = deque()  # taken, not yet written
        self._lock = threading.Lock()  # one writer of the files at a time
        self.closed = False
        self._deliver = deliver
        self._snapshot = snapshot
        self.compact_bytes = compact_bytes
        self._floor = journal.size  # compaction waits until the log has grown past this
        self._pending: list[JournalRecord] = []  # appended by the state task, not yet written
        self._appended = 0  # records appended since start (written or pending)
        self._synced = 0  # of those, how many are on disk
        self._written = 0  # of those, how many were written (not synced) by write_through
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
        self._batches.append(self._take())
        with self._lock:
            if not self.closed:
                self._commit_taken()

    def _take(self) -> tuple[list[JournalRecord], int]:
        # On the state task's thread only: the one that appends.
        records, self._pending = self._pending, []
        return records, self._appended

    def _commit(self) -> None:
        """The group commit (in a worker thread): every batch taken so far, in one write and sync.

        Only the writes hold the lock: the fsyncs run after it is released, so that a
        ``write_through`` (on a job's round trip) never waits for a disk flush. The payloads'
        fsync still comes before the log's: a record is acknowledged only once both are done.
        """
        with self._lock:
            if self.closed:
                return
            records, upto = self._taken()
            upto = max(upto, self._written)
            if upto <= self._synced and not records:
                return
            store_sync = None
            if self.store is not None:
                records = self._stored(records, None)  # placed: sync_later writes them
                store_sync = self.store.sync_later()
            self.journal.append(records)
            self._written = max(self._written, upto)
            log_sync = self.journal.sync_later()
        if store_sync is not None:
            store_sync()
        log_sync()
        self._synced = max(self._synced, upto)

    def _commit_taken(self) -> None:
        records, upto = self._taken()
        if upto or self._written > self._synced:
            self._write_and_sync((records, max(upto, self._written)))

    def _taken(self) -> tuple[list[JournalRecord], int]:
        records: list[JournalRecord] = []
        upto = 0
        while self._batches:
            batch, upto = self._batches.popleft()
            records += batch
        return records, upto

    def write_through(self) -> None:
        """Write every record appended so far to the files now, without syncing (the state task calls
        this before it sends a Dispatch).

        A node may run a job the moment it gets it; were the scheduler killed before the
        job's assignment reached the file, its restart would take the job for queued and
        could give it to another node first: a non-reentrant job run twice. Written, the
        record survives the process (the OS holds it), though not a power loss before the
        next group commit (then replay cuts what the payloads written with it do not back).
        Blocks while a group commit holds the files (a write's worth, or an fsync's).
        """
        if not self._pending:
            return
        self._batches.append(self._take())
        self._wakeup.set()  # written is not durable: the group commit syncs it soon
        with self._lock:
            if self.closed:
                return
            records, upto = self._taken()
            if upto:
                self.journal.append(self._stored(records, self.store.write if self.store else None))
                self._written = max(self._written, upto)

    def _stored(self, records: list[JournalRecord], persist: Callable[[], None] | None) -> list[JournalRecord]:
        """``records`` with their payloads placed in the store, which ``persist`` then writes (or syncs)."""
        store = self.store
        if store is None or not records:
            return records
        stored: list[JournalRecord] = []
        for record in records:
            stored.append(to_stored(record, store.place))
            for kind, keys in dead_payloads(record):
                store.forget(kind, keys)
        if persist is not None:
            persist()
        return stored

    def _write_and_sync(self, batch: tuple[list[JournalRecord], int]) -> None:
        records, upto = batch
        # The payloads are durable before any record written from here on refers to them (and
        # those write_through wrote already are cut at start-up if theirs are not there).
        records = self._stored(records, self.store.sync if self.store else None)
        if self.store is not None and not records:
            self.store.sync()  # payloads of records write_through wrote
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
                # Everything pending goes in one write and one fsync (per file): the group commit.
                started = time.perf_counter()
                self._batches.append(self._take())
                await trio.to_thread.run_sync(self._commit)  # (waited for even when cancelled)
                if self.closed:
                    return  # shut down meanwhile (close() flushed the rest): the files are gone
                self.fsyncs += 1
                if self.on_sync is not None:
                    self.on_sync(time.perf_counter() - started)
            self._release()
            if self.should_compact():
                self.compact()

    def should_compact(self) -> bool:
        """The log, or the payload store, has grown past its limit and doubled since the last compaction."""
        if self.journal.size > max(self.compact_bytes, 2 * self._floor):
            return True
        return self.store is not None and self.store.size > max(self.compact_bytes, 2 * self._store_floor)

    def compact(self) -> None:
        """Rewrite the journal as a snapshot of the live state (synchronous: nothing else runs).

        With a store: the snapshot refers to the payloads already stored (the live ones of mostly
        dead segments written again first); once it is durable, segments it does not refer to go.
        """
        if self.closed:
            return
        self._batches.append(self._take())
        with self._lock, collector_paused():
            self._commit_taken()
            before = self.journal.size
            store = self.store
            if store is None:
                self.journal.replace_with(self._snapshot())
            else:
                store_before = store.size
                records = self._snapshot()
                store.begin_compaction(p for record in records for p in stored_payloads(record))
                durable = False
                try:
                    records = [to_stored(record, store.place) for record in records]
                    store.sync()  # copies moved out of emptied segments, before the snapshot names them
                    self.journal.replace_with(records)
                    durable = True
                finally:
                    deleted = store.end_compaction(durable)
                self._store_floor = store.size
        self._floor = self.journal.size
        self.compactions += 1
        if store is None:
            log.info("journal compacted", bytes_before=before, bytes_after=self.journal.size)
        else:
            log.info("journal compacted", bytes_before=before, bytes_after=self.journal.size,
                     payload_bytes_before=store_before, payload_bytes_after=store.size,
                     payload_segments_deleted=len(deleted))
        self._release()

    def close(self) -> None:
        """At shutdown: everything written and synced, the files closed; nothing is written after."""
        self.flush()
        with self._lock:
            self.closed = True
            self.journal.close()
            if self.store is not None:
                self.store.close()

    def _release(self) -> None:
        synced = self._synced
        for conn in list(self._parked):
            parked = self._parked[conn]
            while parked and parked[0][0] <= synced:
                self._deliver(conn, parked.popleft()[1])
            if not parked:
                del self._parked[conn]
