"""The payload store: segments, references, torn tails, corruption, and the group commit's order.

Store-level tests use ``PayloadStore`` alone; the writer's use real files
with the fsyncs recorded. Purging: test_payload_purge.py; replay after
crashes: test_payload_replay.py.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from payloadhistory import History, big

from fairpool.messages import JobResult, JobSubmit, Queued, encode
from fairpool.scheduler.journal import HEADER, JOURNAL_NAME, JournalFile, read_journal
from fairpool.scheduler.journalrecords import (
    INLINE_MAX,
    PayloadRef,
    RClusterOpened,
    RClusterOpenedRef,
    RecordError,
    RJobsQueued,
    RJobsQueuedRef,
    RResults,
    RResultsRef,
    decode_result,
    encode_result,
    payload_refs,
)
from fairpool.scheduler.journalwriter import JournalWriter
from fairpool.scheduler.payloadstore import (
    PAYLOADS_DIR,
    PayloadCorrupt,
    PayloadStore,
    first_unbacked,
    segment_files,
)


def opened(tmp_path: Path, **kwargs: int) -> PayloadStore:
    store = PayloadStore(tmp_path / PAYLOADS_DIR, **kwargs)  # type: ignore[arg-type]
    store.open(())
    return store


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The file name of every fsync, in order."""
    names: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        names.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield names


# --- put, sync, read -----------------------------------------------------------------------


def test_payloads_read_back_from_their_references_after_sync(tmp_path: Path) -> None:
    store = opened(tmp_path)
    payloads = [big(f"p{i}", 40 + i) for i in range(5)]
    refs = [store.put("job", f"c1.{i}", p, p) for i, p in enumerate(payloads)]
    store.sync()
    assert [store.read(ref) for ref in refs] == payloads
    assert [ref.offset for ref in refs] == [sum(HEADER.size + len(p) for p in payloads[:i]) for i in range(5)]
    assert store.size == (tmp_path / PAYLOADS_DIR / "seg-000001.dat").stat().st_size


def test_a_segment_file_is_frames_like_the_journal(tmp_path: Path) -> None:
    store = opened(tmp_path)
    ref = store.put("job", "c1.0", b"x" * 50, b"")
    store.sync()
    data = (tmp_path / PAYLOADS_DIR / "seg-000001.dat").read_bytes()
    assert HEADER.unpack_from(data, 0) == (50, ref.crc) and data[HEADER.size:] == b"x" * 50


def test_a_new_segment_begins_past_segment_bytes(tmp_path: Path) -> None:
    store = opened(tmp_path, segment_bytes=200)
    refs = [store.put("job", f"c1.{i}", big(str(i), 80), b"") for i in range(5)]
    store.sync()
    assert [r.segment for r in refs] == [1, 1, 2, 2, 3]
    assert sorted(segment_files(tmp_path / PAYLOADS_DIR)) == [1, 2, 3]
    assert [store.read(r) for r in refs] == [big(str(i), 80) for i in range(5)]


def test_segment_files_are_private_to_their_owner(tmp_path: Path) -> None:
    store = opened(tmp_path)
    store.put("job", "c1.0", b"x" * 40, b"")
    store.sync()
    assert os.stat(tmp_path / PAYLOADS_DIR / "seg-000001.dat").st_mode & 0o077 == 0
    assert os.stat(tmp_path / PAYLOADS_DIR).st_mode & 0o077 == 0


def test_sync_fsyncs_each_segment_written_once_and_the_directory_for_a_new_one(tmp_path: Path,
                                                                             fsyncs: list[str]) -> None:
    store = opened(tmp_path, segment_bytes=200)
    fsyncs.clear()
    for i in range(4):
        store.put("job", f"c1.{i}", big(str(i), 80), b"")
    store.sync()
    assert fsyncs == ["seg-000001.dat", "seg-000002.dat", PAYLOADS_DIR]
    fsyncs.clear()
    store.sync()  # nothing put since: nothing to sync
    store.put("job", "c1.9", b"y" * 10, b"")  # fits in the second
    store.sync()
    assert fsyncs == ["seg-000002.dat"]


def test_place_returns_the_reference_already_held_for_the_same_payload(tmp_path: Path) -> None:
    store = opened(tmp_path)
    payload = big("a", 64)
    ref = store.place("job", "c1.0", payload)
    assert store.place("job", "c1.0", payload) == ref
    assert store.place("job", "c1.0", bytes(payload)) == ref  # an equal copy: same crc and length
    assert store.place("job", "c1.0", big("b", 64)) != ref  # the uid was reused for other arguments
    assert store.size == 2 * (HEADER.size + 64)


def test_a_payload_that_is_a_view_of_its_frame_is_placed_known_again_and_read_back(tmp_path: Path) -> None:
    """A large frame's payload reaches the store as a memoryview into the frame (decode_views)."""
    store = opened(tmp_path)
    frame = bytearray(b"head" + big("v", 2 << 20) + b"tail")
    view = memoryview(frame)[4:-4].toreadonly()
    ref = store.place("job", "c1.0", view)
    assert store.place("job", "c1.0", view) == ref
    assert store.place("job", "c1.0", view.tobytes()) == ref  # an equal copy: same crc and length
    store.sync()
    assert store.read(ref) == big("v", 2 << 20)


def test_a_result_with_a_large_payload_is_stored_as_encode_result_writes_it(tmp_path: Path) -> None:
    """The result's encoding is put in pieces around its payload (not joined): the same bytes."""
    result = JobResult("c1.0", "FINISHED", big("r", 3 << 20), stdout="out", finished_at=2.5)
    store = opened(tmp_path)
    ref = store.place("result", "c1.0", result)
    store.sync()
    assert store.read(ref) == encode_result(result)
    assert decode_result(store.read(ref)) == result
    assert (ref.length, ref.crc) == (len(encode_result(result)), zlib.crc32(encode_result(result)))


def test_a_large_stored_result_is_loaded_with_its_payload_a_view_of_the_bytes_read_not_a_copy(
        tmp_path: Path) -> None:
    result = JobResult("c1.0", "FINISHED", big("r", 3 << 20), stdout="out", finished_at=2.5)
    store = opened(tmp_path)
    ref = store.place("result", "c1.0", result)
    store.sync()
    store.close()
    reopened = PayloadStore(tmp_path / PAYLOADS_DIR)
    reopened.open([ref])
    loaded = reopened.load_result("c1.0", ref)
    assert loaded == result
    assert isinstance(loaded.payload, memoryview) and loaded.payload.readonly
    assert type(loaded.payload.obj) is bytes and len(loaded.payload.obj) == ref.length  # the one copy read
    assert reopened.place("result", "c1.0", loaded) == ref  # known again: nothing written twice
    reopened.close()


def test_stored_bytes_that_are_not_a_result_are_refused_as_undecodable() -> None:
    with pytest.raises(RecordError, match="undecodable result: a Queued message"):
        decode_result(encode(Queued("c1", ["c1.0"], 1.0)), 1)


# --- opening after a crash ------------------------------------------------------------------


def test_open_cuts_what_no_durable_record_refers_to_and_appends_after_it(tmp_path: Path) -> None:
    store = opened(tmp_path)
    refs = [store.put("job", f"c1.{i}", big(str(i), 60), b"") for i in range(3)]
    store.sync()
    store.close()
    segment = tmp_path / PAYLOADS_DIR / "seg-000001.dat"
    with open(segment, "ab") as f:
        f.write(b"\x00\x00\x01torn")  # a frame cut short by the crash
    again = PayloadStore(tmp_path / PAYLOADS_DIR)
    again.open(refs[:2])  # the log's last record (naming the third payload) was torn
    end = refs[1].offset + HEADER.size + 60
    assert segment.stat().st_size == end
    new = again.put("job", "c1.9", big("9", 50), b"")
    again.sync()
    assert new.offset == end
    assert [again.read(r) for r in (*refs[:2], new)] == [big("0", 60), big("1", 60), big("9", 50)]


def test_open_deletes_segments_nothing_refers_to(tmp_path: Path) -> None:
    store = opened(tmp_path, segment_bytes=100)
    refs = [store.put("job", f"c1.{i}", big(str(i), 80), b"") for i in range(3)]
    store.sync()
    store.close()
    again = PayloadStore(tmp_path / PAYLOADS_DIR, segment_bytes=100)
    again.open([refs[1]])
    assert sorted(segment_files(tmp_path / PAYLOADS_DIR)) == [2]
    assert again.read(refs[1]) == big("1", 80)
    assert again.put("job", "c1.9", b"z" * 40, b"").segment == 4  # numbers are not reused


def test_open_goes_on_in_the_last_segment(tmp_path: Path) -> None:
    store = opened(tmp_path)
    ref = store.put("job", "c1.0", b"a" * 40, b"")
    store.sync()
    store.close()
    again = PayloadStore(tmp_path / PAYLOADS_DIR)
    again.open([ref])
    new = again.put("job", "c1.1", b"b" * 40, b"")
    assert (new.segment, new.offset) == (1, HEADER.size + 40)


def test_open_does_not_append_to_a_segment_shorter_than_what_refers_to_it(tmp_path: Path) -> None:
    store = opened(tmp_path)
    refs = [store.put("job", f"c1.{i}", big(str(i), 60), b"") for i in range(2)]
    store.sync()
    store.close()
    os.truncate(tmp_path / PAYLOADS_DIR / "seg-000001.dat", refs[1].offset + 20)  # damaged: lost its tail
    again = PayloadStore(tmp_path / PAYLOADS_DIR)
    again.open(refs)
    assert again.put("job", "c1.9", b"z" * 40, b"").segment == 2  # new payloads never land on a referenced offset
    again.sync()
    with pytest.raises(PayloadCorrupt):
        again.read(refs[1])


def test_open_begins_a_new_segment_after_a_full_one(tmp_path: Path) -> None:
    store = opened(tmp_path, segment_bytes=60)
    ref = store.put("job", "c1.0", b"a" * 60, b"")
    store.sync()
    store.close()
    again = PayloadStore(tmp_path / PAYLOADS_DIR, segment_bytes=60)
    again.open([ref])
    assert again.put("job", "c1.1", b"b" * 40, b"").segment == 2


# --- corruption --------------------------------------------------------------------------------


def damaged(tmp_path: Path, at: int) -> tuple[PayloadStore, list[PayloadRef], Path]:
    store = opened(tmp_path)
    refs = [store.put("job", f"c1.{i}", big(str(i), 60), b"") for i in range(3)]
    store.sync()
    store.close()
    segment = tmp_path / PAYLOADS_DIR / "seg-000001.dat"
    data = bytearray(segment.read_bytes())
    data[at] ^= 0xFF
    segment.write_bytes(bytes(data))
    again = PayloadStore(tmp_path / PAYLOADS_DIR)
    again.open(refs)
    return again, refs, segment


@pytest.mark.parametrize("where", ["header", "payload"])
def test_a_damaged_payload_is_payload_corrupt_naming_its_file_and_offset(tmp_path: Path, where: str) -> None:
    start = HEADER.size + 60  # the second frame
    store, refs, segment = damaged(tmp_path, start + (1 if where == "header" else HEADER.size + 10))
    assert store.read(refs[0]) == big("0", 60)  # the others are fine
    with pytest.raises(PayloadCorrupt) as caught:
        store.read(refs[1])
    assert (caught.value.path, caught.value.offset) == (segment, start)
    assert f"payload store {segment} is corrupt at offset {start}" in str(caught.value)
    assert f"--state-dir {tmp_path}" in str(caught.value)


def test_a_missing_segment_is_payload_corrupt(tmp_path: Path) -> None:
    store = opened(tmp_path)
    with pytest.raises(PayloadCorrupt, match="segment file is missing"):
        store.read(PayloadRef(7, 0, 10, 0))


def test_a_segment_shorter_than_a_reference_is_payload_corrupt(tmp_path: Path) -> None:
    store = opened(tmp_path)
    ref = store.put("job", "c1.0", b"a" * 40, b"")
    store.sync()
    with pytest.raises(PayloadCorrupt, match="runs past the end of the file"):
        store.read(PayloadRef(1, ref.offset, 400, ref.crc))


# --- the group commit -----------------------------------------------------------------------------


def writer_on(tmp_path: Path, store: PayloadStore, sent: list[tuple[object, list[str]]] | None = None,
              fsyncs: list[str] | None = None) -> JournalWriter:
    def deliver(_conn: int, message: object) -> None:
        if sent is not None:
            sent.append((message, list(fsyncs or [])))

    return JournalWriter(JournalFile(tmp_path / JOURNAL_NAME, fsync=store.fsync), deliver, compact_bytes=1 << 62,
                         snapshot=list, store=store)


async def test_a_group_commit_fsyncs_the_segment_then_the_log_once_each_before_acknowledging(
        tmp_path: Path, fsyncs: list[str]) -> None:
    sent: list[tuple[object, list[str]]] = []
    store = opened(tmp_path)
    writer = writer_on(tmp_path, store, sent, fsyncs)
    fsyncs.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run_commits)
        for n in range(50):  # one batch of the state task: many submits
            writer.append(RJobsQueued("c1", [JobSubmit(f"c1.{n}", big(str(n), 100))], [n + 1], 1.0))
            writer.send(1, Queued("c1", [f"c1.{n}"], 1.0), durable=True)
        writer.end_of_batch()
        with trio.fail_after(10):
            while len(sent) < 50:  # noqa: ASYNC110 - the deliver callback has no event to wait on
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    # One commit: the payloads (and the new segment's name) first, then the log, each once.
    in_order = ["seg-000001.dat", PAYLOADS_DIR, JOURNAL_NAME]
    assert fsyncs == in_order
    assert all(synced == in_order for _message, synced in sent)
    records = read_journal(tmp_path / JOURNAL_NAME).records
    assert [type(r) for r in records] == [RJobsQueuedRef] * 50
    assert [store.read(ref) for r in records for ref in payload_refs(r)] == [big(str(n), 100) for n in range(50)]


def test_a_commit_of_records_without_payloads_fsyncs_only_the_log(tmp_path: Path, fsyncs: list[str]) -> None:
    writer = writer_on(tmp_path, opened(tmp_path))
    fsyncs.clear()
    writer.append(RJobsQueued("c1", [JobSubmit("c1.0", b"small")], [1], 1.0))
    writer.flush()
    assert fsyncs == [JOURNAL_NAME]


def test_payloads_up_to_inline_max_stay_in_their_record(tmp_path: Path) -> None:
    store = opened(tmp_path, fsync=False)
    writer = writer_on(tmp_path, store)
    small = [RClusterOpened("c1", "alice", "t", b"s" * INLINE_MAX, False, 0, 1.0),
             RJobsQueued("c1", [JobSubmit("c1.0", b"a" * INLINE_MAX)], [1], 1.0),
             RResults([JobResult("c1.0", "FINISHED", b"r" * 10, stdout="x" * 10)])]
    for record in small:
        writer.append(record)
    writer.flush()
    assert read_journal(tmp_path / JOURNAL_NAME).records == small  # the shapes journals always had
    assert (store.size, segment_files(tmp_path / PAYLOADS_DIR)) == (0, {})


def test_a_record_with_big_payloads_keeps_its_small_ones_inline(tmp_path: Path) -> None:
    store = opened(tmp_path, fsync=False)
    writer = writer_on(tmp_path, store)
    small_result = JobResult("c1.0", "FINISHED", b"r")
    big_result = JobResult("c1.1", "FAILED", b"", traceback="Traceback " * 20, node="n1", finished_at=5.0)
    logical = [RClusterOpened("c1", "alice", "t", big("spec", 300), False, 0, 1.0),
               RJobsQueued("c1", [JobSubmit("c1.0", b"a" * 10), JobSubmit("c1.1", big("b", 100))], [1, 2], 1.0),
               RResults([small_result, big_result])]
    for record in logical:
        writer.append(record)
    writer.flush()
    opened_, queued, results = read_journal(tmp_path / JOURNAL_NAME).records
    assert isinstance(opened_, RClusterOpenedRef) and store.read(opened_.spec) == big("spec", 300)
    assert isinstance(queued, RJobsQueuedRef) and queued.jobs[0].payload == b"a" * 10
    assert isinstance(queued.jobs[1].payload, PayloadRef) and store.read(queued.jobs[1].payload) == big("b", 100)
    assert isinstance(results, RResultsRef) and results.results == [small_result]
    assert [(s.uid, s.status, s.node, s.finished_at) for s in results.stored] == [("c1.1", "FAILED", "n1", 5.0)]


def test_compaction_refers_to_the_payloads_already_stored_and_writes_none_again(tmp_path: Path) -> None:
    history = History(tmp_path)
    conn = history.open_cluster("c1")
    history.submit(conn, "c1", [100] * 10)
    history.commit()
    stored = sorted(str(ref) for r in read_journal(tmp_path / JOURNAL_NAME).records for ref in payload_refs(r))
    segments = history.store.segments()
    history.writer.compact()
    assert history.store.segments() == segments
    assert sorted(str(ref) for r in read_journal(tmp_path / JOURNAL_NAME).records for ref in payload_refs(r)) == stored


def test_nothing_is_written_after_close(tmp_path: Path) -> None:
    """A commit thread that finishes after the shutdown's close() must not touch the closed files."""
    writer = writer_on(tmp_path, opened(tmp_path, fsync=False))
    writer.append(RJobsQueued("c1", [JobSubmit("c1.0", big("a", 100))], [1], 1.0))
    writer.close()
    size = (tmp_path / JOURNAL_NAME).stat().st_size
    writer.append(RJobsQueued("c1", [JobSubmit("c1.1", big("b", 100))], [2], 1.0))
    writer._batches.append(writer._take())
    writer._commit()  # what run_commits' thread would do
    writer.compact()
    writer.flush()
    assert (tmp_path / JOURNAL_NAME).stat().st_size == size
    assert len(read_journal(tmp_path / JOURNAL_NAME).records) == 1


def test_first_unbacked_finds_the_first_record_naming_bytes_no_segment_holds(tmp_path: Path) -> None:
    """A power loss after write_through: the log may name payloads the store never got to disk."""
    store = opened(tmp_path)
    held = store.put("job", "c1.1", big("a", 40), big("a", 40))
    store.sync()
    beyond = PayloadRef(held.segment, held.offset + 4096, 40, 0)
    elsewhere = PayloadRef(held.segment + 5, 0, 40, 0)
    directory = tmp_path / PAYLOADS_DIR
    assert first_unbacked(directory, [[held], [], [held]]) is None
    assert first_unbacked(directory, [[held], [beyond], [held]]) == 1
    assert first_unbacked(directory, [[], [held], [elsewhere]]) == 2
