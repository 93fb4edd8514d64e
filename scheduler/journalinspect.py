"""Reading a journal offline for ``fairpool admin journal inspect``: what is in it, and where it breaks.

``read_journal`` is the authority on where the intact records end (a torn
tail) or where the journal is corrupt (``JournalCorrupt`` with its offset);
the daemon refuses to start on corruption. Here the same file is read for a
human: every intact record up to the bad one, each as its offset, length,
kind and key fields (ids, names, counts, times). Tenant data — payloads,
cluster specs, job output — is never shown, only its size in bytes and,
for payloads in the payload store beside the log, where they lie
(``segment:offset+length``). The store is summed up (its segments and
bytes) and every payload the journal refers to is read back and checked:
one that does not is reported (``bad``) like corruption.

``inspect_journal(path) -> Inspection``; ``Inspection.to_dict(limit)`` is
the ``--json`` document, ``render(inspection, limit)`` the readable table.
"""

from __future__ import annotations

import mmap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairpool.messages import JobResult, JobSubmit
from fairpool.scheduler.journal import HEADER, JournalCorrupt, read_journal
from fairpool.scheduler.journalrecords import (
    JournalRecord,
    PayloadRef,
    RAcked,
    RAssigned,
    RClusterClosed,
    RClusterOpened,
    RClusterOpenedRef,
    RecordError,
    RJobsQueued,
    RJobsQueuedRef,
    RPolicy,
    RPolicyState,
    RRequeued,
    RResults,
    RResultsRef,
    RTenantToken,
    decode_record,
    payload_refs,
)
from fairpool.scheduler.payloadstore import (
    PAYLOADS_DIR,
    PayloadCorrupt,
    read_payload,
    segment_files,
    segment_name,
)

UIDS_SHOWN = 3  # in the table; --json lists every uid (and every payload reference)
BAD_SHOWN = 10  # payloads that do not read back, in the table


class JournalChanged(Exception):
    """The file changed between two reads (a running scheduler compacted it): read it again."""


@dataclass(frozen=True)
class Entry:
    """One intact record, as shown: never its payload bytes."""

    offset: int
    length: int  # the record's body, without its 8-byte header
    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class PayloadUsage:
    """The payload store beside the journal, and how the journal's references to it read back."""

    directory: Path
    segments: dict[str, int]  # file name -> bytes
    refs: int  # references in the intact records
    referenced_bytes: int  # the payloads they name (dead ones included until the next compaction)
    bad: list[tuple[str, str]]  # (reference, why it does not read back)

    @property
    def size(self) -> int:
        return sum(self.segments.values())

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.directory), "bytes": self.size, "segments": dict(self.segments),
                "refs": self.refs, "referenced_bytes": self.referenced_bytes,
                "bad": [{"ref": ref, "error": error} for ref, error in self.bad]}


@dataclass(frozen=True)
class Inspection:
    path: Path
    size: int
    entries: list[Entry]
    intact_end: int  # where the intact records end
    corrupt_offset: int | None = None
    corrupt_error: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    payloads: PayloadUsage | None = None

    @property
    def corrupt(self) -> bool:
        """The journal is corrupt, or a payload it refers to does not read back: the daemon would refuse."""
        return self.corrupt_offset is not None or bool(self.payloads and self.payloads.bad)

    @property
    def torn_bytes(self) -> int:
        """Bytes after the intact records that are not corruption: a write cut short by a crash."""
        return 0 if self.corrupt_offset is not None else self.size - self.intact_end

    def shown(self, limit: int | None) -> list[Entry]:
        return self.entries if limit is None else self.entries[-limit:] if limit > 0 else []

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "size": self.size,
            "intact_end": self.intact_end,
            "total": len(self.entries),
            "counts": dict(self.counts),
            "records": [{"offset": e.offset, "length": e.length, "kind": e.kind, **e.fields}
                        for e in self.shown(limit)],
            "torn": {"offset": self.intact_end, "bytes": self.torn_bytes} if self.torn_bytes else None,
            "corrupt": ({"offset": self.corrupt_offset, "error": self.corrupt_error}
                        if self.corrupt_offset is not None else None),
            "payloads": self.payloads.to_dict() if self.payloads is not None else None,
        }


def inspect_journal(path: Path) -> Inspection:
    """Every intact record of ``path`` up to a torn tail or a corrupt record; FileNotFoundError if none."""
    if not path.is_file():
        raise FileNotFoundError(f"no journal at {path}")
    corrupt: JournalCorrupt | None = None
    try:
        contents = read_journal(path)
        end, size = contents.intact_end, contents.size
    except JournalCorrupt as exc:
        corrupt, end = exc, exc.offset
        size = path.stat().st_size
    data = path.read_bytes()[:end]
    refs: list[PayloadRef] = []
    entries = list(_walk(data, refs))
    return Inspection(path, size, entries, end, corrupt.offset if corrupt else None,
                      str(corrupt) if corrupt else "", dict(Counter(e.kind for e in entries)),
                      inspect_payloads(path.parent / PAYLOADS_DIR, refs))


def inspect_payloads(directory: Path, refs: list[PayloadRef]) -> PayloadUsage | None:
    """The store's segments, and each of ``refs`` read back (None: no store, and nothing refers to one)."""
    files = segment_files(directory)
    if not files and not refs:
        return None
    bad: list[tuple[str, str]] = []
    maps: dict[int, mmap.mmap | bytes] = {}
    try:
        for ref in refs:
            if ref.segment not in maps:
                maps[ref.segment] = _map(files.get(ref.segment))
            try:
                read_payload(directory / segment_name(ref.segment), maps[ref.segment], ref)
            except PayloadCorrupt as exc:
                bad.append((str(ref), str(exc)))
    finally:
        for mapped in maps.values():
            if isinstance(mapped, mmap.mmap):
                mapped.close()
    return PayloadUsage(directory, {path.name: path.stat().st_size for _n, path in sorted(files.items())},
                        len(refs), sum(ref.length for ref in refs), bad)


def _map(path: Path | None) -> mmap.mmap | bytes:
    """A segment's bytes to check references against (none if it is missing or empty)."""
    if path is None:
        return b""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b""


def _walk(data: bytes, refs: list[PayloadRef]) -> list[Entry]:
    """The records of ``data``, known intact (read_journal said so): stop if that is no longer true.

    The payload references they hold are added to ``refs``."""
    entries: list[Entry] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER.size:
            raise JournalChanged("the journal changed while it was read (compacted?): run inspect again")
        length, _crc = HEADER.unpack_from(data, pos)
        body = data[pos + HEADER.size:pos + HEADER.size + length]
        try:
            record = decode_record(body)
        except RecordError:
            raise JournalChanged("the journal changed while it was read (compacted?): run inspect again") from None
        kind, fields = describe_record(record)
        entries.append(Entry(pos, length, kind, fields))
        refs.extend(payload_refs(record))
        pos += HEADER.size + length
    return entries


def describe_record(record: JournalRecord) -> tuple[str, dict[str, Any]]:
    """The record's kind and key fields; tenant data only as sizes (``*_bytes``)."""
    match record:
        case RClusterOpened():
            return "cluster-opened", {"cluster_id": record.cluster_id, "tenant": record.tenant,
                                      "name": record.name, "reentrant": record.reentrant,
                                      "priority": record.priority, "spec_bytes": len(record.spec),
                                      "at": record.at}
        case RJobsQueued():
            return "jobs-queued", {"cluster_id": record.cluster_id, "jobs": len(record.jobs),
                                   "uids": [j.uid for j in record.jobs],
                                   "seqs": [min(record.seqs), max(record.seqs)] if record.seqs else [],
                                   "payload_bytes": _submit_bytes(record.jobs), "at": record.at}
        case RAssigned():
            return "assigned", {"node": record.node, "session": record.session, "jobs": len(record.uids),
                                "uids": list(record.uids)}
        case RRequeued():
            return "requeued", {"jobs": len(record.uids), "uids": list(record.uids)}
        case RResults():
            return "results", {"jobs": len(record.results), "uids": [r.uid for r in record.results],
                               "statuses": dict(Counter(r.status for r in record.results)),
                               "nodes": sorted({r.node for r in record.results if r.node}),
                               "payload_bytes": sum(len(r.payload) for r in record.results),
                               "output_bytes": _output_bytes(record.results)}
        case RAcked():
            return "acked", {"jobs": len(record.uids), "uids": list(record.uids)}
        case RClusterClosed():
            return "cluster-closed", {"cluster_id": record.cluster_id}
        case RPolicy():
            return "policy", {"name": record.name}
        case RPolicyState():
            return "policy-state", {"policy": record.state.get("policy"), "at": record.state.get("at")}
        case RTenantToken():
            return "tenant-token", {"tenant": record.tenant, "revoked": record.revoked}  # never the keys
        case RClusterOpenedRef():
            return "cluster-opened", {"cluster_id": record.cluster_id, "tenant": record.tenant,
                                      "name": record.name, "reentrant": record.reentrant,
                                      "priority": record.priority, "spec_bytes": record.spec.length,
                                      "refs": [str(record.spec)], "at": record.at}
        case RJobsQueuedRef():
            sizes = [j.payload.length if isinstance(j.payload, PayloadRef) else len(j.payload) for j in record.jobs]
            return "jobs-queued", {"cluster_id": record.cluster_id, "jobs": len(record.jobs),
                                   "uids": [j.uid for j in record.jobs],
                                   "seqs": [min(record.seqs), max(record.seqs)] if record.seqs else [],
                                   "payload_bytes": sum(sizes), "at": record.at,
                                   "refs": [str(j.payload) for j in record.jobs if isinstance(j.payload, PayloadRef)]}
        case RResultsRef():
            everyone = [(r.uid, r.status, r.node) for r in record.results]
            everyone += [(r.uid, r.status, r.node) for r in record.stored]
            return "results", {"jobs": len(everyone), "uids": [uid for uid, _s, _n in everyone],
                               "statuses": dict(Counter(status for _u, status, _n in everyone)),
                               "nodes": sorted({node for _u, _s, node in everyone if node}),
                               "payload_bytes": sum(len(r.payload) for r in record.results),
                               "output_bytes": _output_bytes(record.results),
                               "stored_bytes": sum(r.ref.length for r in record.stored),  # payloads and output
                               "refs": [str(r.ref) for r in record.stored]}
    return type(record).__name__, {}  # a kind newer than this reader


def _submit_bytes(jobs: list[JobSubmit]) -> int:
    return sum(len(j.payload) for j in jobs)


def _output_bytes(results: list[JobResult]) -> int:
    # stdout, stderr and tracebacks are the tenant's too: sizes only.
    return sum(len(r.stdout.encode()) + len(r.stderr.encode()) + len(r.traceback.encode()) for r in results)


# --- the readable form -------------------------------------------------------------------


def render(inspection: Inspection, limit: int | None = None) -> str:
    """Header lines, one aligned row per record shown, then the torn-tail or corruption line."""
    shown = inspection.shown(limit)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(inspection.counts.items()))
    lines = [f"journal  {inspection.path} ({inspection.size} bytes)",
             f"records  {len(inspection.entries)} intact" + (f": {counts}" if counts else "")]
    if len(shown) < len(inspection.entries):
        lines.append(f"showing  the last {len(shown)} (--limit {limit})")
    rows = [("OFFSET", "LENGTH", "KIND", "DETAILS")]
    rows += [(str(e.offset), str(e.length), e.kind, _details(e.fields)) for e in shown]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines += [f"{o:>{widths[0]}}  {n:>{widths[1]}}  {k:<{widths[2]}}  {d}".rstrip() for o, n, k, d in rows]
    if inspection.torn_bytes:
        lines.append(f"torn tail: {inspection.torn_bytes} bytes at offset {inspection.intact_end} "
                     "(a write cut short by a crash; the scheduler cuts it when it starts)")
    if inspection.corrupt_offset is not None:
        lines.append(f"CORRUPT: {inspection.corrupt_error}")
    usage = inspection.payloads
    if usage is not None:
        lines.append(f"payloads {usage.directory} ({len(usage.segments)} segments, {usage.size} bytes; "
                     f"{usage.refs} references to {usage.referenced_bytes} bytes)")
        lines += [f"BAD PAYLOAD {ref}: {error}" for ref, error in usage.bad[:BAD_SHOWN]]
        if len(usage.bad) > BAD_SHOWN:
            lines.append(f"... and {len(usage.bad) - BAD_SHOWN} more bad payloads (--json lists them all)")
    return "\n".join(lines)


def _details(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if key in ("uids", "refs"):
            more = f" +{len(value) - UIDS_SHOWN} more" if len(value) > UIDS_SHOWN else ""
            parts.append(f"{key}={','.join(value[:UIDS_SHOWN])}{more}")
        elif key == "at":
            parts.append(f"at={_when(value)}")
        elif key == "seqs" and value:
            parts.append(f"seqs={value[0]}..{value[1]}")
        elif isinstance(value, dict):
            parts.append(f"{key}=" + ",".join(f"{k}:{v}" for k, v in value.items()))
        elif isinstance(value, list):
            parts.append(f"{key}=" + ",".join(str(v) for v in value))
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"
