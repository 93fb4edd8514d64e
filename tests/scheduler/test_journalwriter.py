"""JournalWriter under trio: group commit, durable sends held until synced, compaction.

A real JournalFile in ``tmp_path``; what the writer delivers is recorded with
the count of records durable at that moment, so "only after the sync" is a
plain comparison.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio
import trio.testing
from conftest import async_wait_for

from fairpool.messages import Dispatch, Heartbeat, JobResult, JobsUpdate, Message, Queued
from fairpool.scheduler.journal import JournalFile, frame, read_journal
from fairpool.scheduler.journalrecords import JournalRecord, RAcked, RClusterOpened, encode_record
from fairpool.scheduler.journalwriter import JournalWriter

BIG = 1 << 30  # compact_bytes that is never reached


class Wire:
    """The deliver callback: what went to which connection, and how much was durable then."""

    def __init__(self) -> None:
        self.journal: JournalFile | None = None
        self.sent: list[tuple[int, Message, int]] = []

    def __call__(self, conn: int, message: Message) -> None:
        assert self.journal is not None
        self.sent.append((conn, message, self.journal.synced))

    def to(self, conn: int) -> list[Message]:
        return [m for c, m, _ in self.sent if c == conn]


class GatedJournal(JournalFile):
    """A JournalFile whose fsync waits until the test opens the gate."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _fsync(self, fd: int) -> None:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        super()._fsync(fd)


def make_writer(tmp_path: Path, *, compact_bytes: int = BIG, journal: JournalFile | None = None,
                snapshot: Callable[[], list[JournalRecord]] = list) -> tuple[JournalWriter, Wire]:
    wire = Wire()
    wire.journal = journal or JournalFile(tmp_path / "journal.log")
    return JournalWriter(wire.journal, wire, compact_bytes=compact_bytes, snapshot=snapshot), wire


@asynccontextmanager
async def committing(writer: JournalWriter) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run_commits)
        await trio.testing.wait_all_tasks_blocked()
        yield
        nursery.cancel_scope.cancel()


# Waits for a condition set by another task or the fsync thread, with a deadline.
until = partial(async_wait_for, timeout=10.0, interval=0.001)


def opened(n: int) -> RClusterOpened:
    return RClusterOpened(f"c{n}", "alice", "x", b"spec", False, 0, float(n))


def queued(n: int) -> Queued:
    return Queued("c1", [f"c1.{n}"], float(n))


# --- durable sends ----------------------------------------------------------------------------------


async def test_durable_send_is_delivered_only_after_the_sync_covering_earlier_records(tmp_path: Path) -> None:
    writer, wire = make_writer(tmp_path)
    writer.append(opened(1))
    writer.send(1, queued(1), durable=True)
    assert wire.sent == []
    assert (writer.unsynced, writer.journal.size) == (1, 0)  # held in memory: the commit task writes it
    async with committing(writer):
        await until(lambda: wire.sent)
    assert wire.sent == [(1, queued(1), 1)]
    assert writer.fsyncs == 1
    assert read_journal(writer.journal.path).records == [opened(1)]


async def test_durable_send_with_nothing_unsynced_goes_at_once(tmp_path: Path) -> None:
    writer, wire = make_writer(tmp_path)
    writer.send(1, Heartbeat(1.0), durable=True)
    assert wire.sent == [(1, Heartbeat(1.0), 0)]
    assert writer.fsyncs == 0


async def test_a_later_message_that_need_not_be_durable_is_not_held_behind_a_durable_one(tmp_path: Path) -> None:
    """A result must not wait for the fsync of its job's QUEUED: the fsync stays off the round trip."""
    writer, wire = make_writer(tmp_path)
    writer.append(opened(1))
    writer.send(1, queued(1), durable=True)
    later = Dispatch([], [])
    writer.send(1, later, durable=False)
    assert wire.to(1) == [later]
    async with committing(writer):
        await until(lambda: len(wire.sent) == 2)
    assert wire.to(1) == [later, queued(1)]


async def test_a_parked_queued_is_dropped_when_its_jobs_result_went_out_first(tmp_path: Path) -> None:
    """A job that ends within the grace costs its client no Queued: the result says more."""
    writer, wire = make_writer(tmp_path)
    writer.append(opened(1))
    writer.send(1, queued(1), durable=True)
    result = JobsUpdate([], [JobResult("c1.1", "FINISHED")])
    writer.send(1, result, durable=False)
    async with committing(writer):
        await until(lambda: writer.unsynced == 0)
    assert wire.to(1) == [result]
    assert read_journal(writer.journal.path).records == [opened(1)]  # the records are still written


async def test_a_parked_queued_keeps_the_jobs_whose_results_did_not_go_out(tmp_path: Path) -> None:
    writer, wire = make_writer(tmp_path)
    writer.append(opened(1))
    writer.send(1, Queued("c1", ["c1.1", "c1.2"], 1.0), durable=True)
    result = JobsUpdate([], [JobResult("c1.1", "FINISHED")])
    writer.send(1, result, durable=False)
    async with committing(writer):
        await until(lambda: len(wire.to(1)) == 2)
    assert wire.to(1) == [result, Queued("c1", ["c1.2"], 1.0)]
    assert wire.sent[-1][2] == 1  # and only once synced


async def test_durable_messages_to_one_connection_keep_their_order(tmp_path: Path) -> None:
    writer, wire = make_writer(tmp_path)
    writer.append(opened(1))
    writer.send(1, queued(1), durable=True)
    writer.append(opened(2))
    writer.send(1, queued(2), durable=True)
    async with committing(writer):
        await until(lambda: len(wire.sent) == 2)
    assert wire.to(1) == [queued(1), queued(2)]


async def test_messages_to_other_connections_are_not_held(tmp_path: Path) -> None:
    writer, wire = make_writer(tmp_path)
    writer.append(opened(1))
    writer.send(1, queued(1), durable=True)
    writer.send(2, Dispatch([], []), durable=False)
    assert wire.sent == [(2, Dispatch([], []), 0)]


async def test_a_held_message_for_a_forgotten_connection_is_dropped(tmp_path: Path) -> None:
    writer, wire = make_writer(tmp_path)
    writer.append(opened(1))
    writer.send(1, queued(1), durable=True)
    writer.forget(1)
    writer.send(2, queued(2), durable=True)
    async with committing(writer):
        await until(lambda: wire.sent)
    assert [c for c, _, _ in wire.sent] == [2]


# --- group commit -------------------------------------------------------------------------------------


async def test_one_fsync_covers_a_burst_of_durable_sends(tmp_path: Path) -> None:
    writer, wire = make_writer(tmp_path)
    async with committing(writer):
        for n in range(200):  # one state-task batch: no checkpoint in between
            writer.append(opened(n))
            writer.send(n % 7, queued(n), durable=True)
        writer.end_of_batch()
        await until(lambda: len(wire.sent) == 200)
    assert writer.fsyncs == 1
    assert all(synced == 200 for _, _, synced in wire.sent)
    for conn in range(7):
        assert wire.to(conn) == [queued(n) for n in range(conn, 200, 7)]


async def test_end_of_batch_has_records_without_sends_synced(tmp_path: Path) -> None:
    writer, _ = make_writer(tmp_path)
    async with committing(writer):
        writer.append(RAcked(["c1.0"]))
        writer.end_of_batch()
        assert writer.unsynced == 1
        await until(lambda: writer.journal.synced == 1)
    assert writer.fsyncs == 1


async def test_a_record_appended_during_an_fsync_waits_for_the_next_one(tmp_path: Path) -> None:
    journal = GatedJournal(tmp_path / "journal.log")
    writer, wire = make_writer(tmp_path, journal=journal)
    async with committing(writer):
        writer.append(opened(1))
        writer.send(1, queued(1), durable=True)
        await until(journal.entered.is_set)  # the first fsync is under way
        writer.append(opened(2))
        writer.send(2, queued(2), durable=True)
        journal.gate.set()
        await until(lambda: len(wire.sent) == 2)
    assert wire.sent == [(1, queued(1), 1), (2, queued(2), 2)]
    assert writer.fsyncs == 2


# --- compaction ----------------------------------------------------------------------------------------


async def test_the_journal_is_compacted_once_it_grows_past_compact_bytes(tmp_path: Path) -> None:
    snapshot = [opened(0)]
    writer, wire = make_writer(tmp_path, compact_bytes=300, snapshot=lambda: snapshot)
    async with committing(writer):
        for n in range(3):
            writer.append(opened(n))
        writer.end_of_batch()
        await until(lambda: writer.journal.synced == 3)
        assert writer.compactions == 0  # under the limit
        for n in range(3, 20):
            writer.append(opened(n))
        writer.send(1, queued(1), durable=True)
        await until(lambda: wire.sent)
    assert writer.compactions == 1
    assert read_journal(writer.journal.path).records == snapshot
    writer.append(RAcked(["c1.0"]))
    writer.flush()
    assert read_journal(writer.journal.path).records == [*snapshot, RAcked(["c1.0"])]


async def test_a_journal_that_starts_big_is_compacted_only_once_it_doubles(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    start = JournalFile(path)
    start.append([opened(n) for n in range(10)])
    start.close()
    journal = JournalFile(path)
    size = journal.size
    writer, _ = make_writer(tmp_path, compact_bytes=100, journal=journal, snapshot=lambda: [opened(0)])
    async with committing(writer):
        n, grown = 10, size
        while grown + len(frame(encode_record(opened(n)))) <= 2 * size:  # up to twice its size
            grown += len(frame(encode_record(opened(n))))
            writer.append(opened(n))
            writer.end_of_batch()
            n += 1
        await until(lambda: writer.unsynced == 0)
        assert writer.compactions == 0 and writer.journal.size > writer.compact_bytes
        for m in range(n, n + 10):
            writer.append(opened(m))
        writer.end_of_batch()
        await until(lambda: writer.compactions == 1)
    assert read_journal(path).records == [opened(0)]


async def test_write_through_puts_records_in_the_file_before_any_commit(tmp_path: Path) -> None:
    """What a node is about to be told survives a SIGKILL of the scheduler: the OS has it."""
    writer, _ = make_writer(tmp_path)
    writer.append(opened(1))
    writer.append(opened(2))
    writer.write_through()
    assert read_journal(writer.journal.path).records == [opened(1), opened(2)]
    assert writer.fsyncs == 0 and writer.unsynced == 2  # written, not yet durable
    async with committing(writer):
        await until(lambda: writer.unsynced == 0)
    assert read_journal(writer.journal.path).records == [opened(1), opened(2)]  # written once


async def test_records_written_through_keep_their_order_with_a_later_commit(tmp_path: Path) -> None:
    writer, wire = make_writer(tmp_path)
    writer.append(opened(1))
    writer.write_through()
    writer.append(opened(2))
    writer.send(1, queued(2), durable=True)
    async with committing(writer):
        await until(lambda: wire.sent)
    assert read_journal(writer.journal.path).records == [opened(1), opened(2)]
    assert wire.sent == [(1, queued(2), 2)]
