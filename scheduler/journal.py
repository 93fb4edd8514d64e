"""The journal file: append-only, length + CRC framed records, group-committed.

On disk, each record is ``[u32 length][u32 crc32(body)][body]`` with a
msgpack body (``fairpool.scheduler.journalrecords``). ``read_journal``
returns every intact record and where the intact part ends: a torn tail (a
record cut short, or a last record whose CRC fails, as a crash mid-write
leaves it) is reported so the caller can cut it; a bad record with intact
data after it is corruption in the middle and raises ``JournalCorrupt``
naming the file and offset — the daemon must not guess past it.

``JournalFile`` appends without syncing; ``sync()`` makes everything
appended so far durable. The trio shell calls ``sync`` in a worker thread
(trio has no async fsync), one call for whatever accumulated meanwhile:
that is the group commit.
"""

from __future__ import annotations

import gc
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fairpool.scheduler.journalrecords import (
    JournalRecord,
    RecordError,
    decode_record,
    encode_record,
)

HEADER = struct.Struct(">II")
MAX_RECORD = 1 << 31
JOURNAL_NAME = "journal.log"


class JournalCorrupt(Exception):
    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"journal {path} is corrupt at offset {offset}: {reason}; "
                         f"inspect it with 'fairpool admin journal inspect --state-dir {path.parent}'")
        self.path = path
        self.offset = offset


@dataclass(frozen=True)
class JournalContents:
    records: list[JournalRecord]
    offsets: list[int]
    intact_end: int  # the byte offset where the intact records end
    size: int  # the file's size: bigger than intact_end when the tail is torn

    @property
    def torn(self) -> bool:
        return self.size > self.intact_end


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body), zlib.crc32(body)) + body


@contextmanager
def collector_paused() -> Iterator[None]:
    """Reading, replaying and snapshotting a journal make objects by the hundred thousand and next to
    no cyclic garbage: each pass of the cycle collector meanwhile would walk them all to free nothing."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def read_journal(path: Path) -> JournalContents:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalContents([], [], 0, 0)
    with collector_paused():
        return _read(path, data)


def _read(path: Path, data: bytes) -> JournalContents:
    records: list[JournalRecord] = []
    offsets: list[int] = []
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < HEADER.size:
            break  # a header cut short: torn tail
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if length == 0:  # no record is empty: zeros a crash left at the end, or damage
            if not any(data[pos:]):
                break
            raise JournalCorrupt(path, pos, "empty record")
        if end > size:
            if length > MAX_RECORD or _has_record_after(data, pos + HEADER.size):
                raise JournalCorrupt(path, pos, f"record length {length} runs past the end of the file")
            break  # the last record was being written: torn tail
        body = data[pos + HEADER.size:end]
        if zlib.crc32(body) != crc:
            if end == size or not any(data[end:]):
                break  # the last write did not complete: torn tail
            raise JournalCorrupt(path, pos, "checksum mismatch")
        try:
            records.append(decode_record(body))
        except RecordError as exc:
            raise JournalCorrupt(path, pos, str(exc)) from None
        offsets.append(pos)
        pos = end
    return JournalContents(records, offsets, pos, size)


def _has_record_after(data: bytes, start: int) -> bool:
    """Whether an intact record begins anywhere after ``start`` (then a bad length is not a torn tail)."""
    for pos in range(start, len(data) - HEADER.size + 1):
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if length and end <= len(data) and zlib.crc32(data[pos + HEADER.size:end]) == crc:
            return True
    return False


class JournalFile:
    """The open journal: append (buffered by the OS), sync, and rewrite as a snapshot."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self._fd).st_size
        self.appended = 0  # records appended since open
        self.synced = 0  # records known durable

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self.size = size
        self._sync_fd()

    def append(self, records: list[JournalRecord]) -> int:
        """Write records (not yet durable); return the count a ``sync`` must cover."""
        if records:
            data = b"".join(frame(encode_record(r)) for r in records)
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self.size += len(data)
            self.appended += len(records)
        return self.appended

    def sync(self) -> int:
        """Make every record appended so far durable (blocking: call from a worker thread)."""
        target = self.appended
        self._sync_fd()
        self.synced = max(self.synced, target)
        return target

    def sync_later(self) -> Callable[[], int]:
        """What makes every record appended so far durable, to run later without any lock (on a
        duplicate of the descriptor, so that a compaction meanwhile cannot pull it away)."""
        target = self.appended
        fd = os.dup(self._fd)

        def sync() -> int:
            try:
                self._fsync(fd)
            finally:
                os.close(fd)
            self.synced = max(self.synced, target)
            return target

        return sync

    def _sync_fd(self) -> None:
        self._fsync(self._fd)

    def _fsync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)

    def replace_with(self, records: list[JournalRecord]) -> None:
        """Compaction: atomically replace the file by ``records`` (a snapshot of the live state)."""
        tmp = self.path.with_suffix(".compact")
        with open(tmp, "wb") as f:
            f.write(b"".join(frame(encode_record(r)) for r in records))
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.fsync:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself must survive a crash
            finally:
                os.close(dir_fd)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        self.size = os.fstat(self._fd).st_size
        self.synced = self.appended  # everything is in the durable snapshot now

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
