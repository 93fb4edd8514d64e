"""The payload store: the tenants' payloads beside the journal, each written once, purged with its job.

A journal record names a payload by its ``PayloadRef``, a frame in a segment file
(``fairpool.scheduler.payloadsegments``), so compaction rewrites the reference
and never the payload, and replay reads only the payloads still alive at its end.

Payloads are keyed by what they belong to — ("job", uid) for a job's arguments, ("result", uid),
("cluster", id) for a spec — not by a content hash: those ids are already unique and immutable while
their owner lives, so each payload is written once without hashing every byte on the hot path, and it
dies exactly when its owner does (an acknowledged result, an ended job, a forgotten cluster) with no
reference counts. What two jobs share is stored twice; they seldom share anything but the cluster's
spec, stored once.

Durability: ``put`` only buffers and hands out the reference; ``sync`` writes and fsyncs each
segment it touched, once, and the directory when it made a segment. The journal writer syncs the
store before the log that refers to it, so a durable record never names bytes that are not durable:
on ``open``, bytes after a segment's last referenced payload can only be a torn write or payloads of
records that never became durable, and are cut; a segment nothing refers to is deleted.

Purging: the index (``kind`` -> key -> reference and the object it was
made from) forgets a payload when its owner dies (``forget``). At
compaction (``begin_compaction`` ... ``end_compaction``) the live payloads
of mostly dead segments are written again into the current one, the
snapshot's references are the only live ones, and every other segment is
deleted once the snapshot is durable: disk use stays bounded by what lives.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from fairpool.largefields import Buffer, encode_parts
from fairpool.messages import JobResult
from fairpool.scheduler.journal import HEADER
from fairpool.scheduler.journalrecords import PayloadRef, RecordError, decode_result
from fairpool.scheduler.payloadsegments import (
    PAYLOADS_DIR,
    SEGMENT_BYTES,
    WRITE_ALONE,
    PayloadCorrupt,
    Segment,
    first_unbacked,
    read_payload,
    segment_files,
    segment_name,
    write_frames,
)

# What the segment files' module holds is imported from here too (the journal's tools, tests, bench).
__all__ = ["KINDS", "MOSTLY_DEAD", "PAYLOADS_DIR", "SEGMENT_BYTES", "WRITE_ALONE", "PayloadCorrupt", "PayloadStore",
           "Source", "first_unbacked", "read_payload", "segment_files", "segment_name"]

log = structlog.get_logger("fairpool.scheduler.journal")

#: At compaction, a segment whose live payloads fill less than this share of it is emptied:
#: they are written again into the current segment, and it is deleted.
MOSTLY_DEAD = 0.25
KINDS = ("cluster", "job", "result")

#: What a payload is made from: a job's or a cluster's bytes (a ``memoryview`` when it came in a large
#: frame: see ``fairpool.largefields.decode_views``), or a result, encoded when it is put.
Source = bytes | memoryview | JobResult


class _Index:
    """kind -> key -> the payload's reference, and the object it was made from (``place`` knows it by
    identity). Two plain dicts, no tuple per payload: fewer objects for the collector to walk."""

    __slots__ = ("refs", "sources")

    def __init__(self) -> None:
        self.refs: dict[str, dict[str, PayloadRef]] = {kind: {} for kind in KINDS}
        self.sources: dict[str, dict[str, Source]] = {kind: {} for kind in KINDS}

    def set(self, kind: str, key: str, ref: PayloadRef, source: Source) -> None:
        self.refs[kind][key] = ref
        self.sources[kind][key] = source

    def pop(self, kind: str, key: str) -> None:
        if self.refs[kind].pop(key, None) is not None:
            del self.sources[kind][key]

    def all_refs(self) -> list[PayloadRef]:
        return [ref for refs in self.refs.values() for ref in refs.values()]


class PayloadStore:
    def __init__(self, directory: Path, *, fsync: bool = True, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._segments: dict[int, Segment] = {}
        self._dirty: dict[int, Segment] = {}  # with frames put or written since the last sync
        self._bytes = 0  # in every segment, written or buffered
        self._highest = 0  # the highest segment number seen: numbers are never reused
        self._current = self._new_segment()  # (``open`` finds where to go on)
        self._new_files = False  # a segment was created: the directory needs an fsync
        self._index = _Index()
        self._maps: dict[int, mmap.mmap] = {}
        self._relocate: set[int] = set()  # while compacting: segments being emptied
        self._used: _Index | None = None  # while compacting: what the snapshot refers to

    # --- opening --------------------------------------------------------------------------------

    def open(self, referenced: Iterable[PayloadRef]) -> None:
        """Take the directory as the durable journal left it: ``referenced`` is every reference it holds."""
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True)
            self._sync_dir(self.directory.parent)
        ends: dict[int, int] = {}
        for ref in referenced:
            ends[ref.segment] = max(ends.get(ref.segment, 0), ref.offset + HEADER.size + ref.length)
        files = segment_files(self.directory)
        self._segments.clear()
        self._bytes = 0
        for number, path in sorted(files.items()):
            size = path.stat().st_size
            end = ends.get(number)
            if end is None:
                log.info("payload segment deleted: no journal record refers to it", file=str(path), bytes=size)
                path.unlink()
                continue
            if size > end:  # written, never referenced by a durable record: a crash mid-commit
                log.warning("payload segment tail cut (a crash mid-write)", file=str(path), offset=end,
                            bytes_cut=size - end)
                os.truncate(path, end)
                size = end
            self._segments[number] = Segment(number, path, size)
            self._bytes += size
        self._highest = max(files, default=0)
        last = max(self._segments, default=0)
        # Go on in the last segment, unless it is full or damaged (shorter than what refers to it).
        if last and last == self._highest and ends[last] == self._segments[last].size < self.segment_bytes:
            self._current = self._segments[last]
        else:
            self._current = self._new_segment()

    def _new_segment(self) -> Segment:
        self._highest += 1
        segment = Segment(self._highest, self.directory / segment_name(self._highest), 0)
        self._segments[segment.number] = segment
        return segment

    # --- writing ---------------------------------------------------------------------------------

    def put(self, kind: str, key: str, data: bytes | memoryview | list[Buffer], source: Source) -> PayloadRef:
        """Buffer ``data`` (made from ``source``; pieces to be joined, if a list) as the payload
        ``kind``/``key``: durable after ``sync``."""
        pieces = data if isinstance(data, list) else [data]
        length = sum(len(piece) for piece in pieces)
        segment = self._current
        framed = HEADER.size + length
        if segment.size and segment.size + framed > self.segment_bytes:
            segment = self._roll()
        crc = 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
        ref = PayloadRef(segment.number, segment.size, length, crc)
        if not segment.pending:
            self._dirty[segment.number] = segment
        segment.pending += (HEADER.pack(length, crc), *pieces)
        segment.size += framed
        self._bytes += framed
        self._index.set(kind, key, ref, source)
        if self._used is not None:
            self._used.set(kind, key, ref, source)
        return ref

    def place(self, kind: str, key: str, source: Source) -> PayloadRef:
        """The reference for ``source``: the one the store already holds for it, else a new ``put``."""
        ref = self._held(kind, key, source)
        if ref is not None and ref.segment not in self._relocate:
            if self._used is not None:
                self._used.set(kind, key, ref, source)  # (the state's object: known by identity next time)
            return ref
        if isinstance(source, JobResult):
            # The result's encoding in pieces, a large payload among them as it is (not copied into
            # one bytes): ``encode_result``'s bytes, written as they lie.
            return self.put(kind, key, encode_parts(source, WRITE_ALONE), source)
        return self.put(kind, key, source, source)

    def _held(self, kind: str, key: str, source: Source) -> PayloadRef | None:
        """The reference of what the store holds as ``kind``/``key``, if that is ``source``."""
        ref = self._index.refs[kind].get(key)
        if ref is None:
            return None
        held = self._index.sources[kind][key]
        if held is source or (not isinstance(source, JobResult) and ref.length == len(source)
                              and ref.crc == zlib.crc32(source)):
            return ref
        return None

    def forget(self, kind: str, keys: list[str]) -> None:
        """Their owners are gone: these payloads are dead (their bytes go with their segments)."""
        if self._index.refs[kind]:  # (most jobs' payloads are small enough to stay inline: none held)
            for key in keys:
                self._index.pop(kind, key)

    def _roll(self) -> Segment:
        self._current = self._new_segment()
        return self._current

    def write(self) -> None:
        """Write what was put, without syncing: it then survives this process's death (not the machine's)."""
        for segment in list(self._dirty.values()):
            self._write(segment)

    def sync_later(self) -> Callable[[], None]:
        """Write what was put; return what makes it durable, to run later without any lock: the
        fsyncs of the segments written (on duplicate descriptors) and of the directory."""
        self.write()
        fds: list[int] = []
        for segment in list(self._dirty.values()):
            if segment.unsynced:
                fds.append(os.dup(segment.fd))
                segment.unsynced = False
                if segment is not self._current:
                    os.close(segment.fd)
                    segment.fd = -1
        self._dirty.clear()
        new_files, self._new_files = self._new_files, False

        def sync() -> None:
            try:
                if self.fsync:
                    for fd in fds:
                        os.fsync(fd)
            finally:
                for fd in fds:
                    os.close(fd)
            if new_files:
                self._sync_dir(self.directory)

        return sync

    def sync(self) -> None:
        """Write what was put and make it durable: one fsync per segment written (blocking)."""
        for segment in list(self._dirty.values()):
            self._write(segment)
            if segment.unsynced:
                if self.fsync:
                    os.fsync(segment.fd)
                segment.unsynced = False
                if segment is not self._current:
                    os.close(segment.fd)
                    segment.fd = -1
        self._dirty.clear()
        if self._new_files:
            self._sync_dir(self.directory)  # a new segment's name must survive a crash too
            self._new_files = False

    def _write(self, segment: Segment) -> None:
        if not segment.pending:
            return
        if segment.fd < 0:
            self._new_files |= not segment.path.exists()
            segment.fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        write_frames(segment.fd, segment.pending)
        segment.pending.clear()
        segment.unsynced = True
        self._dirty[segment.number] = segment

    def _sync_dir(self, directory: Path) -> None:
        if self.fsync:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- reading (at replay) -----------------------------------------------------------------------

    def read(self, ref: PayloadRef) -> bytes:
        """The payload ``ref`` names, checked (``PayloadCorrupt`` if it does not read back)."""
        mapped = self._maps.get(ref.segment)
        start = ref.offset + HEADER.size
        if mapped is not None and len(mapped) >= start + ref.length:  # the common case, kept lean (replay)
            payload = mapped[start:start + ref.length]
            if zlib.crc32(payload) == ref.crc and HEADER.unpack_from(mapped, ref.offset) == (ref.length, ref.crc):
                return payload
        return read_payload(*self._map(ref), ref)  # (raises, or reads what was just mapped)

    def load_many(self, kind: str, keys: list[str], wanted: list[PayloadRef]) -> list[bytes]:
        """Read live payloads at replay (``keys[i]``'s at ``wanted[i]``), in order; the store holds them from
        now on (``place`` finds them at the next compaction). The loop is ``read``'s common case, inline:
        there may be millions."""
        refs, sources = self._index.refs[kind], self._index.sources[kind]
        maps, crc32, unpack, header = self._maps, zlib.crc32, HEADER.unpack_from, HEADER.size
        loaded: list[bytes] = []
        for key, ref in zip(keys, wanted, strict=True):
            mapped = maps.get(ref.segment)
            start = ref.offset + header
            end = start + ref.length
            if (mapped is None or len(mapped) < end or crc32(payload := mapped[start:end]) != ref.crc
                    or unpack(mapped, ref.offset) != (ref.length, ref.crc)):
                payload = self.read(ref)
            refs[key] = ref
            sources[key] = payload
            loaded.append(payload)
        return loaded

    def _map(self, ref: PayloadRef) -> tuple[Path, bytes | mmap.mmap]:
        path = self.directory / segment_name(ref.segment)
        segment = self._segments.get(ref.segment)
        if segment is not None:
            self._write(segment)  # put but not yet written: readable (not durable) all the same
        mapped = self._maps.pop(ref.segment, None)
        if mapped is not None:
            mapped.close()
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size < ref.offset + HEADER.size + ref.length:
                    return path, f.read()  # too short: read_payload says so
                mapped = self._maps[ref.segment] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise PayloadCorrupt(path, ref.offset, "its segment file is missing") from None
        return path, mapped

    def load_result(self, key: str, ref: PayloadRef) -> JobResult:
        data = self.read(ref)  # (a copy out of the mapped segment, checked)
        try:
            # A large payload stays a view of that copy (most of it): not copied out of it once more.
            result = decode_result(data, max(WRITE_ALONE, len(data) // 2) if len(data) >= WRITE_ALONE else 0)
        except RecordError as exc:
            raise PayloadCorrupt(self.directory / segment_name(ref.segment), ref.offset, str(exc)) from None
        self._index.set("result", key, ref, result)
        return result

    def release_maps(self) -> None:
        """Unmap what replay read (a deleted segment's space is freed only once it is unmapped)."""
        for mapped in self._maps.values():
            mapped.close()
        self._maps.clear()

    # --- compaction ------------------------------------------------------------------------------

    def begin_compaction(self, live: Iterable[tuple[str, str, Source]]) -> set[int]:
        """Start a compaction whose snapshot holds the ``live`` payloads (kind, key, source): the segments
        to empty, those where what lives fills under MOSTLY_DEAD of them."""
        counted: Counter[int] = Counter()
        for kind, key, source in live:
            ref = self._held(kind, key, source)
            if ref is not None:
                counted[ref.segment] += HEADER.size + ref.length
        self._relocate = {n for n, s in self._segments.items() if s.size and counted[n] < MOSTLY_DEAD * s.size}
        if self._current.number in self._relocate:
            self._roll()  # its live payloads must go elsewhere: a fresh segment
        self._used = _Index()
        return set(self._relocate)

    def end_compaction(self, durable: bool) -> list[Path]:
        """The compaction ends; ``durable``: its snapshot is on disk, so delete what it does not refer to."""
        used, self._used, self._relocate = self._used, None, set()
        if not durable or used is None:
            return []
        self._index = used
        self.release_maps()
        referenced = {ref.segment for ref in used.all_refs()}
        deleted = []
        for number, segment in list(self._segments.items()):
            if number not in referenced and segment is not self._current:
                if segment.fd >= 0:
                    os.close(segment.fd)
                segment.path.unlink(missing_ok=True)
                del self._segments[number]
                self._bytes -= segment.size
                deleted.append(segment.path)
        if deleted:
            self._sync_dir(self.directory)
        return deleted

    # --- sizes -----------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes in the segments (written or buffered)."""
        return self._bytes

    def segments(self) -> dict[int, int]:
        """Segment number -> its bytes."""
        return {number: segment.size for number, segment in sorted(self._segments.items())}

    def live_bytes(self) -> int:
        """Bytes (frames) of the payloads the store holds as alive."""
        return sum(HEADER.size + ref.length for ref in self._index.all_refs())

    def close(self) -> None:
        self.release_maps()
        for segment in self._segments.values():
            if segment.fd >= 0:
                os.close(segment.fd)
                segment.fd = -1
