"""The daemon shell and its journal, without sockets: replay on start, torn tails cut, corruption
refused, and a QUEUED acknowledgement leaving only once its record is on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from fairpool.config import SchedulerConfig
from fairpool.handshake import Peer
from fairpool.messages import ClusterOpened, JobSubmit, Message, OpenCluster, Queued, Submit
from fairpool.scheduler.daemon import SchedulerServer, _Link
from fairpool.scheduler.events import Connected, Received
from fairpool.scheduler.journal import (
    JOURNAL_NAME,
    JournalCorrupt,
    JournalFile,
    frame,
    read_journal,
)
from fairpool.scheduler.journalrecords import (
    JournalRecord,
    RClusterOpened,
    RJobsQueued,
    encode_record,
)
from fairpool.scheduler.replay import snapshot

RECORDS: list[JournalRecord] = [
    RClusterOpened("c1", "alice", "test", b"spec", False, 0, 1.0),
    RJobsQueued("c1", [JobSubmit("c1.0", b"a"), JobSubmit("c1.1", b"b")], [1, 2], 2.0),
]


def server(state_dir: Path) -> SchedulerServer:
    return SchedulerServer(SchedulerConfig(state_dir=state_dir, journal_fsync=False), b"secret")


def write(state_dir: Path, data: bytes) -> Path:
    path = state_dir / JOURNAL_NAME
    path.write_bytes(data)
    return path


def framed(records: list[JournalRecord]) -> bytes:
    return b"".join(frame(encode_record(r)) for r in records)


def test_a_fresh_state_dir_starts_empty_with_a_journal(tmp_path: Path) -> None:
    sched = server(tmp_path)
    sched.open_journal()
    assert sched.writer is not None and sched.writer.compactions == 0
    assert sched.state.jobs == {} and (tmp_path / JOURNAL_NAME).exists()


def test_the_journal_is_replayed_and_compacted_on_start(tmp_path: Path) -> None:
    path = write(tmp_path, framed(RECORDS + RECORDS[1:]))  # a duplicate submit record: compaction drops it
    sched = server(tmp_path)
    sched.open_journal()
    assert [job.uid for job in sched.state.policy.order()] == ["c1.0", "c1.1"]
    assert sched.writer is not None and sched.writer.compactions == 1
    assert read_journal(path).records == snapshot(sched.state)


def test_a_torn_tail_is_cut_on_start(tmp_path: Path) -> None:
    data = framed(RECORDS)
    write(tmp_path, data + frame(encode_record(RECORDS[1]))[:-4])
    sched = server(tmp_path)
    sched.open_journal()
    assert sorted(sched.state.jobs) == ["c1.0", "c1.1"]
    contents = read_journal(tmp_path / JOURNAL_NAME)
    assert not contents.torn and contents.records == snapshot(sched.state)


def test_corruption_in_the_middle_stops_the_start(tmp_path: Path) -> None:
    damaged = bytearray(framed(RECORDS + RECORDS[1:]))
    damaged[len(frame(encode_record(RECORDS[0]))) + 10] ^= 0xFF
    write(tmp_path, bytes(damaged))
    with pytest.raises(JournalCorrupt):
        server(tmp_path).open_journal()


class Recorder:
    """Stands in for a connection's Outbox: what was put, and how many records were durable then."""

    def __init__(self, journal: JournalFile) -> None:
        self.journal = journal
        self.put_log: list[tuple[Message, int]] = []

    def put(self, message: Message) -> None:
        self.put_log.append((message, self.journal.synced))

    put_quietly = put  # the state task's batch queues without waking the writer...

    def flush_now(self) -> None:  # ...and sends at the batch's end
        pass


async def test_queued_leaves_the_shell_only_once_its_record_is_in_the_journal(tmp_path: Path) -> None:
    sched = SchedulerServer(SchedulerConfig(state_dir=tmp_path), b"secret")  # with fsync
    sched.open_journal()
    assert sched.writer is not None
    recorder = Recorder(sched.writer.journal)
    async with trio.open_nursery() as nursery:
        sched._links[1] = _Link(recorder, nursery.cancel_scope, "alice")  # type: ignore[arg-type]
        nursery.start_soon(sched.run_state)
        nursery.start_soon(sched.writer.run_commits)
        await sched._send_inbox.send(Connected(1, Peer("client", "alice", "laptop"), 1.0))
        await sched._send_inbox.send(Received(1, (OpenCluster("c1", "t", b"s"),
                                                  Submit("c1", [JobSubmit("c1.0", b"x")])), 2.0))
        with trio.fail_after(10):
            while True:
                if any(isinstance(m, Queued) for m, _ in recorder.put_log):
                    break
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert [type(m) for m, _ in recorder.put_log] == [ClusterOpened, Queued]
    assert recorder.put_log[1][1] == 2  # both records (the cluster's and the submit's) were durable by then
    assert [type(r) for r in read_journal(tmp_path / JOURNAL_NAME).records] == [RClusterOpened, RJobsQueued]
