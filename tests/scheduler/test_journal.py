"""The journal file: length + CRC framing, torn tails, corruption, and JournalFile's append/sync/replace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fairpool.messages import JobOptions, JobResult, JobSubmit
from fairpool.scheduler.journal import HEADER, JournalCorrupt, JournalFile, frame, read_journal
from fairpool.scheduler.journalrecords import (
    JournalRecord,
    RAcked,
    RAssigned,
    RClusterClosed,
    RClusterOpened,
    RecordError,
    RJobsQueued,
    RPolicy,
    RRequeued,
    RResults,
    RTenant,
    decode_record,
    encode_record,
)

RECORDS: list[JournalRecord] = [
    RClusterOpened("c1", "alice", "my computation", b"\x80spec\x00", True, 2, 1000.5),
    RJobsQueued("c1", [JobSubmit("c1.0", b"args\x00"), JobSubmit("c1.1", b"", JobOptions(2.0, 1 << 30, 1, 5.0, 3, "n9"))],
                [1, 2], 1001.0),
    RAssigned("n1", "session-1", ["c1.0", "c1.1"]),
    RRequeued(["c1.1"]),
    RResults([JobResult("c1.0", "FINISHED", b"\x00result", "out", "err", "", "", 0, 1001.0, 1002.0, "n1")]),
    RAcked(["c1.0"]),
    RClusterClosed("c1"),
    RTenant("alice", 2.5, 1, 4, 100, "research"),
    RTenant("bob", removed=True),
    RPolicy("fair-share"),
]


def write(path: Path, records: list[JournalRecord]) -> bytes:
    data = b"".join(frame(encode_record(r)) for r in records)
    path.write_bytes(data)
    return data


def offsets(records: list[JournalRecord]) -> list[int]:
    result, pos = [], 0
    for record in records:
        result.append(pos)
        pos += HEADER.size + len(encode_record(record))
    return result


# --- framing -----------------------------------------------------------------------------------


def test_every_record_kind_survives_the_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    data = write(path, RECORDS)
    contents = read_journal(path)
    assert contents.records == RECORDS
    assert contents.offsets == offsets(RECORDS)
    assert (contents.intact_end, contents.size, contents.torn) == (len(data), len(data), False)


def test_a_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    contents = read_journal(tmp_path / "journal.log")
    assert (contents.records, contents.intact_end, contents.torn) == ([], 0, False)


def test_undecodable_bytes_are_a_record_error() -> None:
    with pytest.raises(RecordError):
        decode_record(b"\x93\xa3not a record")


# --- torn tails ---------------------------------------------------------------------------------


LAST = HEADER.size + len(encode_record(RECORDS[-1]))


@pytest.mark.parametrize("kept", [pytest.param(k, id=f"kept-{k}") for k in range(1, LAST)])
def test_a_last_record_cut_at_any_byte_is_a_torn_tail(tmp_path: Path, kept: int) -> None:
    path = tmp_path / "journal.log"
    data = write(path, RECORDS)
    start = offsets(RECORDS)[-1]
    path.write_bytes(data[:start + kept])
    contents = read_journal(path)
    assert contents.records == RECORDS[:-1]
    assert (contents.intact_end, contents.size, contents.torn) == (start, start + kept, True)


def test_a_cut_between_records_is_not_torn(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    data = write(path, RECORDS)
    path.write_bytes(data[:offsets(RECORDS)[-1]])
    contents = read_journal(path)
    assert (contents.records, contents.torn) == (RECORDS[:-1], False)


def test_a_last_record_with_a_bad_checksum_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    data = bytearray(write(path, RECORDS))
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    contents = read_journal(path)
    assert (contents.records, contents.intact_end, contents.torn) == (RECORDS[:-1], offsets(RECORDS)[-1], True)


def test_a_half_written_last_record_followed_by_zeros_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    data = write(path, RECORDS)
    start = offsets(RECORDS)[-1]
    path.write_bytes(data[:start + HEADER.size + 1] + b"\0" * (len(data) - start - HEADER.size - 1))
    contents = read_journal(path)
    assert (contents.records, contents.intact_end, contents.torn) == (RECORDS[:-1], start, True)


@pytest.mark.parametrize("zeros", [
    1,
    HEADER.size - 1,
    HEADER.size,
    4096,
])
def test_a_zero_filled_tail_is_a_torn_tail(tmp_path: Path, zeros: int) -> None:
    path = tmp_path / "journal.log"
    data = write(path, RECORDS)
    path.write_bytes(data + b"\0" * zeros)
    contents = read_journal(path)
    assert (contents.records, contents.intact_end, contents.size, contents.torn) == (
        RECORDS, len(data), len(data) + zeros, True)


# --- corruption in the middle ----------------------------------------------------------------------


def test_any_damaged_byte_of_a_middle_record_is_corruption_at_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    data = write(path, RECORDS)
    middle = 3
    start, end = offsets(RECORDS)[middle], offsets(RECORDS)[middle + 1]
    for pos in range(start, end):
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        path.write_bytes(bytes(damaged))
        with pytest.raises(JournalCorrupt) as caught:
            read_journal(path)
        assert caught.value.offset == start, f"byte {pos} damaged"
        assert f"journal {path} is corrupt at offset {start}" in str(caught.value)


def test_an_intact_frame_that_does_not_decode_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    good = b"".join(frame(encode_record(r)) for r in RECORDS[:2])
    path.write_bytes(good + frame(b"\x91\xa5bogus") + frame(encode_record(RECORDS[2])))
    with pytest.raises(JournalCorrupt) as caught:
        read_journal(path)
    assert caught.value.offset == len(good)
    assert "undecodable record" in str(caught.value)


# --- JournalFile ------------------------------------------------------------------------------------


def test_appended_records_read_back_after_sync(tmp_path: Path) -> None:
    journal = JournalFile(tmp_path / "journal.log")
    assert journal.append(RECORDS[:3]) == 3
    assert journal.append(RECORDS[3:]) == len(RECORDS)
    assert (journal.appended, journal.synced) == (len(RECORDS), 0)
    assert journal.sync() == len(RECORDS)
    assert journal.synced == len(RECORDS)
    assert read_journal(journal.path).records == RECORDS
    assert journal.size == os.path.getsize(journal.path)
    journal.close()


def test_the_journal_file_is_private_to_its_owner(tmp_path: Path) -> None:
    journal = JournalFile(tmp_path / "journal.log")
    assert os.stat(journal.path).st_mode & 0o077 == 0
    journal.close()


def test_reopening_appends_after_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    write(path, RECORDS[:2])
    journal = JournalFile(path, fsync=False)
    assert journal.size == os.path.getsize(path)
    journal.append(RECORDS[2:])
    journal.close()
    assert read_journal(path).records == RECORDS


def test_truncate_cuts_a_torn_tail_and_appends_continue_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    data = write(path, RECORDS)
    path.write_bytes(data[:-3])
    contents = read_journal(path)
    journal = JournalFile(path)
    journal.truncate(contents.intact_end)
    journal.append([RAcked(["c1.9"])])
    journal.sync()
    journal.close()
    again = read_journal(path)
    assert (again.records, again.torn) == ([*RECORDS[:-1], RAcked(["c1.9"])], False)


def test_replace_with_swaps_in_the_snapshot_and_appends_continue_after_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    journal = JournalFile(path)
    journal.append(RECORDS)
    inode = os.stat(path).st_ino
    compacted = [RECORDS[0], RClusterClosed("c1")]
    journal.replace_with(compacted)
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["journal.log"]  # no temporary file left
    assert journal.size == os.path.getsize(path)
    assert journal.synced == journal.appended  # the snapshot covers everything appended
    journal.append([RAcked(["c1.0"])])
    journal.sync()
    journal.close()
    assert read_journal(path).records == [*compacted, RAcked(["c1.0"])]


def test_a_failed_compaction_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    journal = JournalFile(path)
    journal.append(RECORDS)
    journal.sync()
    with pytest.raises(TypeError):
        journal.replace_with([RECORDS[0], object()])  # type: ignore[list-item]
    journal.append([RAcked(["c1.1"])])
    journal.sync()
    journal.close()
    assert read_journal(path).records == [*RECORDS, RAcked(["c1.1"])]
