"""The payload store's segment files: their names, their frames, reading a payload back checked, writing frames out.

``STATE_DIR/payloads/seg-NNNNNN.dat`` are append-only segment files of
frames framed as the journal's records are: ``[u32 length][u32 crc32][bytes]``.
A ``PayloadRef`` (segment, frame offset, length, crc32) names one frame; what
reads it back checks the frame against the reference and raises
``PayloadCorrupt`` (naming the file and offset) when it does not match.
Which payloads live, and when segments are made, synced and deleted, is the
store's business (``fairpool.scheduler.payloadstore``).
"""

from __future__ import annotations

import mmap
import os
import re
import zlib
from collections.abc import Iterable
from pathlib import Path

from fairpool.largefields import Buffer
from fairpool.scheduler.journal import HEADER, JournalCorrupt
from fairpool.scheduler.journalrecords import PayloadRef

PAYLOADS_DIR = "payloads"
#: A segment is sealed and the next one begun once it would grow past this.
SEGMENT_BYTES = 32 << 20
#: A payload of at least this many bytes is written as it lies, not joined with its neighbours first.
WRITE_ALONE = 1 << 20
_NAME = re.compile(r"seg-(\d{6,})\.dat")


class PayloadCorrupt(JournalCorrupt):
    """A payload a journal record refers to does not read back: the daemon must not start."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        Exception.__init__(self, f"payload store {path} is corrupt at offset {offset}: {reason}; inspect it with "
                                 f"'fairpool admin journal inspect --state-dir {path.parent.parent}'")
        self.path = path
        self.offset = offset


def first_unbacked(directory: Path, refs_per_record: Iterable[Iterable[PayloadRef]]) -> int | None:
    """The index of the first record referring to bytes its segment file does not hold, if any.

    Only a power loss can make one (a record that ``write_through`` wrote before the group
    commit synced the payloads it names): it and every record after it were never
    acknowledged, so start-up cuts the log there, as it cuts a torn tail.
    """
    sizes: dict[int, int] = {}
    for index, refs in enumerate(refs_per_record):
        for ref in refs:
            if ref.segment not in sizes:
                try:
                    sizes[ref.segment] = (directory / segment_name(ref.segment)).stat().st_size
                except FileNotFoundError:
                    sizes[ref.segment] = -1
            if ref.offset + HEADER.size + ref.length > sizes[ref.segment]:
                return index
    return None


def segment_name(number: int) -> str:
    return f"seg-{number:06d}.dat"


def segment_files(directory: Path) -> dict[int, Path]:
    """The segment files in ``directory`` by number (none if it does not exist)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    return {int(m.group(1)): directory / name for name in names if (m := _NAME.fullmatch(name))}


def read_payload(path: Path, data: bytes | mmap.mmap, ref: PayloadRef) -> bytes:
    """The payload ``ref`` names in ``data`` (the segment file ``path``'s bytes), checked against ``ref``."""
    end = ref.offset + HEADER.size + ref.length
    if len(data) < end:
        raise PayloadCorrupt(path, ref.offset, f"the payload runs past the end of the file ({len(data)} bytes)")
    if HEADER.unpack_from(data, ref.offset) != (ref.length, ref.crc):
        raise PayloadCorrupt(path, ref.offset, "the frame there is not the payload the journal refers to")
    payload = data[ref.offset + HEADER.size:end]
    if zlib.crc32(payload) != ref.crc:
        raise PayloadCorrupt(path, ref.offset, "checksum mismatch")
    return bytes(payload)


class Segment:
    """One segment file as the store keeps it open: its size, the frames put and not yet written, its descriptor."""

    __slots__ = ("number", "path", "size", "pending", "fd", "unsynced")

    def __init__(self, number: int, path: Path, size: int) -> None:
        self.number = number
        self.path = path
        self.size = size  # written or buffered
        self.pending: list[Buffer] = []  # frames put, not yet written
        self.fd = -1
        self.unsynced = False  # written since the last fsync


def write_frames(fd: int, pieces: list[Buffer]) -> None:
    """Write ``pieces`` in order: small ones joined (one write for many), a large one as it lies
    (joining it would copy it whole once more)."""
    batch: list[Buffer] = []
    for piece in pieces:
        if len(piece) >= WRITE_ALONE:
            _write_view(fd, memoryview(b"".join(batch)))
            batch.clear()
            _write_view(fd, memoryview(piece))
        else:
            batch.append(piece)
    _write_view(fd, memoryview(b"".join(batch)))


def _write_view(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]
