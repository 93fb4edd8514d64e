"""Replay with the payload store after crashes: at every commit boundary and at many offsets in between.

A recorded history (``History``: one group commit per step, payloads in
several segments) is cut as a crash would leave it: the log at one offset,
the store at another (its segments in order, the one at the cut shortened,
later ones never written), with or without garbage after the cuts. Whatever
the pair, replay never crashes and never invents a record: it brings back
exactly the records intact in the log, or — only when the store was cut
below what those records refer to, which the commit order (segments fsynced
before the log) rules out — it refuses with PayloadCorrupt. Then the old
(inline) format, compaction's own crash windows, and corruption.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from payloadhistory import History, big, reopen, replayed, view

from fairpool.config import SchedulerConfig
from fairpool.messages import JobSubmit
from fairpool.scheduler.daemon import SchedulerServer
from fairpool.scheduler.journal import HEADER, JOURNAL_NAME, JournalFile, read_journal
from fairpool.scheduler.journalrecords import (
    JournalRecord,
    RClusterOpened,
    RClusterOpenedRef,
    RJobsQueued,
    RJobsQueuedRef,
    payload_refs,
)
from fairpool.scheduler.payloadstore import PAYLOADS_DIR, PayloadCorrupt, segment_files

SEGMENT = 600  # small segments: the history spans several
GARBAGE = b"\x00\x00\x01\x00\xde\xad\xbe\xef torn"  # what a torn write left in a segment
ZEROS = b"\x00" * 16  # ... and at the end of the log (read_journal takes other bytes after a bad record for damage)


def recorded(state_dir: Path) -> History:
    """Two tenants' clusters, big and small payloads, a node that runs, loses and finishes jobs, acks, a close."""
    h = History(state_dir, segment_bytes=SEGMENT)
    alice = h.open_cluster("a1", "alice", spec_size=300)
    h.commit()
    h.submit(alice, "a1", [10, 60, 200, 31, 33, 120])
    h.commit()
    node = h.node("n1", cpus=2)
    h.commit()
    ran = h.assigned(node)
    h.finish(node, "n1", ran[:1], size=150)
    h.commit()
    h.ack(alice, ran[:1])
    bob = h.open_cluster("b1", "bob", spec_size=20)  # a spec small enough to stay inline
    h.submit(bob, "b1", [400, 5])
    h.commit()
    h.disconnect(node)  # what it held waits for it, then is requeued or abandoned
    h.tick(30.0)
    h.commit()
    node = h.node("n2", cpus=4)
    h.finish(node, "n2", h.assigned(node)[:3], size=90)
    h.commit()
    h.close(bob, "b1")
    h.ack(alice, [uid for uid, job in h.state.jobs.items() if job.result is not None and uid.startswith("a1.")])
    h.commit()
    h.close_files()
    return h


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return recorded(tmp_path_factory.mktemp("history"))


def cuts(bounds: list[int]) -> list[int]:
    """Each boundary, a byte either side of it, and the middle of each stretch between two."""
    points = set(bounds)
    for a, b in zip(bounds, bounds[1:], strict=False):
        points |= {a + 1, b - 1, (a + b) // 2}
    return sorted(p for p in points if 0 <= p <= bounds[-1])


def crash(source: Path, target: Path, log_cut: int, store_cut: int, garbage: bool) -> None:
    """``target`` as a crash could leave ``source``: the log cut at ``log_cut``, the segments (in order,
    as one stream) at ``store_cut``; ``garbage``: a torn write after each cut (zeros in the log)."""
    target.mkdir()
    (target / PAYLOADS_DIR).mkdir()
    log = (source / JOURNAL_NAME).read_bytes()
    (target / JOURNAL_NAME).write_bytes(log[:log_cut] + (ZEROS if garbage and log_cut < len(log) else b""))
    start = 0
    for _number, path in sorted(segment_files(source / PAYLOADS_DIR).items()):
        data = path.read_bytes()
        if start > store_cut:
            break
        kept = data[:store_cut - start]
        torn = garbage and len(kept) < len(data)
        (target / PAYLOADS_DIR / path.name).write_bytes(kept + (GARBAGE if torn else b""))
        start += len(data)


def store_ends(source: Path) -> dict[int, int]:
    """Segment number -> where it starts in the stream of all segments."""
    starts, start = {}, 0
    for number, path in sorted(segment_files(source / PAYLOADS_DIR).items()):
        starts[number] = start
        start += path.stat().st_size
    return starts


def test_the_history_spans_segments_with_every_stored_shape(history: History) -> None:
    kinds = {type(r).__name__ for r in read_journal(history.state_dir / JOURNAL_NAME).records}
    assert {"RClusterOpenedRef", "RClusterOpened", "RJobsQueuedRef", "RResultsRef", "RAcked"} <= kinds
    assert len(segment_files(history.state_dir / PAYLOADS_DIR)) >= 3


def test_replay_after_a_crash_at_any_log_and_store_offsets_brings_back_exactly_the_durable_records(
        history: History, tmp_path: Path) -> None:
    source = history.state_dir
    full = read_journal(source / JOURNAL_NAME)
    starts = store_ends(source)
    log_bounds = [0, *(size for _n, size, _segs in history.commits)]
    store_bounds = [0, *(sum(segs.values()) for _n, _size, segs in history.commits)]
    outcomes = {"replayed": 0, "refused": 0}
    case = 0
    ends = [*full.offsets[1:], full.intact_end]  # where each record ends
    # For the first k records: the state they replay to, and how much of the store they refer to.
    expected = [view(replayed(history.records[:k])) for k in range(len(full.records) + 1)]
    needed = [max((starts[ref.segment] + ref.offset + HEADER.size + ref.length
                   for record in full.records[:k] for ref in payload_refs(record)), default=0)
              for k in range(len(full.records) + 1)]
    for log_cut in cuts(log_bounds):
        intact = sum(1 for end in ends if end <= log_cut)
        for store_cut in cuts(store_bounds):
            for garbage in (False, True) if store_cut in store_bounds or log_cut in log_bounds else (False,):
                case += 1
                target = tmp_path / f"case{case}"
                crash(source, target, log_cut, store_cut, garbage)
                where = f"log cut at {log_cut}, store at {store_cut}, garbage {garbage}"
                # None invented, none lost (zeros after a cut may complete a record that ended in zeros).
                k = len(read_journal(target / JOURNAL_NAME).records)
                assert read_journal(target / JOURNAL_NAME).records == full.records[:k] and k >= intact, where
                try:
                    state, store = reopen(target)
                except PayloadCorrupt:
                    assert store_cut < needed[k], f"{where}: the store held every payload referred to"
                    outcomes["refused"] += 1
                else:
                    store.close()
                    assert view(state) == expected[k], where  # every record's effect, exactly
                    outcomes["replayed"] += 1
                shutil.rmtree(target)
    assert outcomes["replayed"] > 300 and outcomes["refused"] > 100  # both kinds were tried, many times


def test_after_a_crash_the_journal_goes_on_and_compacts_to_the_same_state(history: History, tmp_path: Path) -> None:
    """At each commit boundary, with the next commit's payloads written but not its records: cut, go on."""
    source = history.state_dir
    for i, (_n, log_size, _segments) in enumerate(history.commits[:-1]):
        target = tmp_path / f"at{i}"
        crash(source, target, log_size, sum(history.commits[i + 1][2].values()), garbage=True)
        sched = SchedulerServer(SchedulerConfig(state_dir=target, journal_fsync=False), b"secret")
        sched.open_journal()  # cuts the torn tails, replays, compacts
        assert sched.writer is not None
        expected = view(replayed(history.records[:history.commits[i][0]]))
        assert view(sched.state) == expected, f"commit {i}"
        sched.writer.close()
        state, store = reopen(target)
        store.close()
        assert view(state) == expected, f"commit {i}, reopened after the compaction"


# --- the previous format -----------------------------------------------------------------------------


def test_a_journal_with_inline_payloads_replays_and_compacts_into_the_store(tmp_path: Path) -> None:
    inline: list[JournalRecord] = [
        RClusterOpened("c1", "alice", "old", big("spec", 500), False, 0, 1.0),
        RJobsQueued("c1", [JobSubmit(f"c1.{i}", big(f"args{i}", 100 + i)) for i in range(5)], [1, 2, 3, 4, 5], 2.0),
    ]
    journal = JournalFile(tmp_path / JOURNAL_NAME, fsync=False)
    journal.append(inline)  # as a scheduler from before the store wrote it
    journal.close()
    sched = SchedulerServer(SchedulerConfig(state_dir=tmp_path, journal_fsync=False), b"secret")
    sched.open_journal()
    assert sched.writer is not None
    expected = view(replayed(inline))
    assert view(sched.state) == expected
    sched.writer.close()
    compacted = read_journal(tmp_path / JOURNAL_NAME).records
    assert {type(r) for r in compacted} >= {RClusterOpenedRef, RJobsQueuedRef}
    assert len(segment_files(tmp_path / PAYLOADS_DIR)) == 1
    state, store = reopen(tmp_path)
    store.close()
    assert view(state) == expected


# --- compaction's crash windows ------------------------------------------------------------------------


def emptied(tmp_path: Path) -> History:
    """A history whose first segment is mostly dead: compaction moves its live payloads and deletes it."""
    h = History(tmp_path, segment_bytes=1 << 20)
    conn = h.open_cluster("c1", spec_size=100)
    uids = h.submit(conn, "c1", [200] * 20)
    h.cancel(conn, uids[:18])
    h.ack(conn, uids[:18])
    h.commit()
    return h


def test_a_crash_before_the_snapshot_is_renamed_in_leaves_the_old_journal_whole(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    h = emptied(tmp_path)
    before = view(h.state)

    def crash_now(self: JournalFile, records: list[JournalRecord]) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr(JournalFile, "replace_with", crash_now)
    with pytest.raises(OSError):
        h.writer.compact()  # the live payloads were copied to a new segment, fsynced: never referred to
    assert sorted(segment_files(tmp_path / PAYLOADS_DIR)) == [1, 2]
    state, store = reopen(tmp_path)
    store.close()
    assert view(state) == before
    assert sorted(segment_files(tmp_path / PAYLOADS_DIR)) == [1]  # the copies nothing refers to: gone
    monkeypatch.undo()
    h.close_files()


def test_a_crash_after_the_snapshot_but_before_the_old_segments_go_loses_nothing(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    h = emptied(tmp_path)
    before = view(h.state)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # killed before the deletions
    h.writer.compact()
    monkeypatch.undo()
    assert sorted(segment_files(tmp_path / PAYLOADS_DIR)) == [1, 2]
    state, store = reopen(tmp_path)
    store.close()
    assert view(state) == before
    assert sorted(segment_files(tmp_path / PAYLOADS_DIR)) == [2]  # deleted at the start instead
    h.close_files()


# --- corruption ------------------------------------------------------------------------------------------


def test_a_damaged_live_payload_stops_the_start_naming_the_file_and_offset(tmp_path: Path) -> None:
    h = History(tmp_path)
    conn = h.open_cluster("c1", spec_size=100)
    h.submit(conn, "c1", [200, 200])
    h.commit()
    h.close_files()
    segment = tmp_path / PAYLOADS_DIR / "seg-000001.dat"
    data = bytearray(segment.read_bytes())
    second = 2 * HEADER.size + 100 + 200
    data[second + HEADER.size + 50] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(PayloadCorrupt) as caught:
        SchedulerServer(SchedulerConfig(state_dir=tmp_path, journal_fsync=False), b"secret").open_journal()
    assert f"payload store {segment} is corrupt at offset {second}: checksum mismatch" in str(caught.value)


def test_replay_reads_only_the_payloads_still_alive(tmp_path: Path) -> None:
    h = History(tmp_path)
    conn = h.open_cluster("c1", spec_size=100)
    uids = h.submit(conn, "c1", [200, 200])
    h.cancel(conn, uids[:1])
    h.ack(conn, uids[:1])  # the first job's arguments are dead: never read again
    h.commit()
    h.close_files()
    segment = tmp_path / PAYLOADS_DIR / "seg-000001.dat"
    data = bytearray(segment.read_bytes())
    data[HEADER.size + 100 + HEADER.size + 50] ^= 0xFF  # inside the dead payload
    segment.write_bytes(bytes(data))
    state, store = reopen(tmp_path)
    store.close()
    assert list(state.jobs) == [uids[1]] and state.jobs[uids[1]].payload == big("args:" + uids[1], 200)
