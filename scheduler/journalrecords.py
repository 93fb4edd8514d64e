"""What the journal records: one frozen struct per kind of acknowledged state change.

The state emits records with their payloads inline (a cluster's spec, a job's
arguments, a result): opaque bytes the journal never unpickles. The journal
writes a payload bigger than ``INLINE_MAX`` to the payload store
(``fairpool.scheduler.payloadstore``) and the record in its stored shape
(``RClusterOpenedRef``, ``RJobsQueuedRef``, ``RResultsRef``, new tags) names
it by a ``PayloadRef``: compaction then rewrites a few bytes of reference, not
the payload, and replay reads only the payloads still alive at its end. Small
payloads stay inline, and a record with none bigger keeps its inline shape
(the only shape of journals written before the store, still read as they were).
A result goes to the store whole (payload, output, traceback: all the
tenant's), encoded by ``encode_result``; its stored shape keeps what replay
needs without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from fairpool.largefields import decode_views
from fairpool.messages import JobOptions, JobResult, JobSubmit, MessageError

#: Payloads up to this many bytes stay in the record: a reference (13-20 bytes) and its
#: frame in the store (8) would cost as much as the bytes and add a read at replay.
INLINE_MAX = 32


class Record(msgspec.Struct, frozen=True, tag=True, array_like=True):
    pass


class RClusterOpened(Record, frozen=True):
    cluster_id: str
    tenant: str
    name: str
    spec: bytes
    reentrant: bool
    priority: int
    at: float


class RJobsQueued(Record, frozen=True):
    """Jobs acknowledged QUEUED; ``seqs[i]`` is ``jobs[i]``'s submit sequence (queue order)."""

    cluster_id: str
    jobs: list[JobSubmit]
    seqs: list[int]
    at: float


class RAssigned(Record, frozen=True):
    """Jobs handed to a node (by name, in one run of that node: ``session``)."""

    node: str
    session: str
    uids: list[str]


class RRequeued(Record, frozen=True):
    """Jobs back in the queue (their node was lost and they may run again)."""

    uids: list[str]


class RResults(Record, frozen=True):
    results: list[JobResult]


class RAcked(Record, frozen=True):
    """The client holds these results: forget the jobs."""

    uids: list[str]


class RClusterClosed(Record, frozen=True):
    cluster_id: str


class RClusterNodes(Record, frozen=True):
    """Where a cluster may run: allowed node patterns (None: any) and per-node caps."""

    cluster_id: str
    allowed: list[str] | None
    node_cpus: dict[str, int]


class RTenant(Record, frozen=True):
    """A tenant's settings changed live (``tenants set``); ``removed``: back to the defaults."""

    name: str
    weight: float = 1.0
    tier: int = 0
    max_running: int | None = None
    max_queued: int | None = None
    parent: str | None = None
    removed: bool = False


class RNodeDrained(Record, frozen=True):
    """An admin drained (or undrained) a node: it stays so across reconnects and restarts."""

    name: str
    drained: bool


class RTenantToken(Record, frozen=True):
    """A tenant's token was issued or replaced (``tenants add``), or revoked: empty keys.

    Only what ``fairpool.tokens.token_keys`` derives is kept, never the token:
    these keys cannot be used to connect.
    """

    tenant: str
    stored_key: bytes = b""
    server_key: bytes = b""

    @property
    def revoked(self) -> bool:
        return not self.stored_key

    def __repr__(self) -> str:
        return f"RTenantToken({self.tenant!r}, {'revoked' if self.revoked else 'keys=...'})"


class RPolicy(Record, frozen=True):
    """The policy was switched live (``policy set`` / ``policy reload``): it outlives a restart."""

    name: str


class RPolicyState(Record, frozen=True):
    """The policy's own books when the journal was compacted (``Policy.snapshot()``: fair-share's
    tags, decayed usage, deficits, runtime estimates): what the jobs it no longer holds were
    charged, so that a restart keeps who has had its share. The records after it charge on."""

    state: dict[str, Any]


# --- the stored shapes: payloads in the payload store ---------------------------------------


# gc=False: they hold no containers, so no cycles; replay makes one per job, and a collector
# walking hundreds of thousands of them finds nothing to free.
class PayloadRef(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Where a payload lies in the store: its segment's number, its frame's offset, its length and crc32."""

    segment: int
    offset: int
    length: int
    crc: int

    def __str__(self) -> str:
        return f"{self.segment}:{self.offset}+{self.length}"


class StoredJob(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A queued job as written: its arguments inline (small) or in the store."""

    uid: str
    payload: bytes | PayloadRef
    options: JobOptions | None = None


class StoredResult(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A result whose whole body is in the store; what replay needs of it stays here."""

    uid: str
    status: str
    ref: PayloadRef
    node: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0


class RClusterOpenedRef(Record, frozen=True):
    """``RClusterOpened`` with its spec in the store."""

    cluster_id: str
    tenant: str
    name: str
    spec: PayloadRef
    reentrant: bool
    priority: int
    at: float


class RJobsQueuedRef(Record, frozen=True):
    """``RJobsQueued`` with the bigger arguments in the store."""

    cluster_id: str
    jobs: list[StoredJob]
    seqs: list[int]
    at: float


class RResultsRef(Record, frozen=True):
    """``RResults`` with the bigger results in the store (``stored``), the small ones inline."""

    results: list[JobResult]
    stored: list[StoredResult]


JournalRecord = (
    RClusterOpened | RJobsQueued | RAssigned | RRequeued | RResults | RAcked | RClusterClosed | RPolicy | RTenant
    | RPolicyState | RClusterNodes | RNodeDrained | RTenantToken | RClusterOpenedRef | RJobsQueuedRef | RResultsRef
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[JournalRecord] = msgspec.msgpack.Decoder(JournalRecord)


class RecordError(ValueError):
    pass


def encode_record(record: JournalRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes) -> JournalRecord:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise RecordError(f"undecodable record: {exc}") from None


# --- between the two shapes ---------------------------------------------------------------------

#: Stores one payload: (kind, key, source) -> its reference. ``kind`` is "cluster", "job" or "result",
#: ``key`` the cluster id or job uid; ``source`` is the payload's bytes, or the JobResult (encoded there).
Place = Callable[[str, str, bytes | JobResult], PayloadRef]

_result_encoder = msgspec.msgpack.Encoder()
_result_decoder = msgspec.msgpack.Decoder(JobResult)


def encode_result(result: JobResult) -> bytes:
    return _result_encoder.encode(result)


def decode_result(data: bytes, keep: int = 0) -> JobResult:
    """The result ``encode_result`` wrote; with ``keep``, its payload, if of at least ``keep`` bytes, a
    read-only view into ``data`` (kept alive by it) rather than a copy (``largefields.decode_views``)."""
    if keep:
        try:
            result = decode_views(data, keep)
        except MessageError as exc:
            raise RecordError(f"undecodable result: {exc}") from None
        if type(result) is not JobResult:
            raise RecordError(f"undecodable result: a {type(result).__name__} message")
        return result
    try:
        return _result_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise RecordError(f"undecodable result: {exc}") from None


def result_bytes(result: JobResult) -> int:
    """The tenant's bytes in a result (roughly, for strings): what decides whether it goes to the store."""
    return len(result.payload) + len(result.stdout) + len(result.stderr) + len(result.traceback)


def to_stored(record: JournalRecord, place: Place) -> JournalRecord:
    """``record`` as the journal writes it: every payload over ``INLINE_MAX`` given to ``place``."""
    match record:
        case RClusterOpened(cluster_id, tenant, name, spec, reentrant, priority, at) if len(spec) > INLINE_MAX:
            return RClusterOpenedRef(cluster_id, tenant, name, place("cluster", cluster_id, spec), reentrant,
                                     priority, at)
        case RJobsQueued(cluster_id, jobs, seqs, at) if any(len(job.payload) > INLINE_MAX for job in jobs):
            return RJobsQueuedRef(cluster_id, [
                StoredJob(job.uid, place("job", job.uid, job.payload) if len(job.payload) > INLINE_MAX
                          else job.payload, job.options) for job in jobs], seqs, at)
        case RResults(results) if any(len(r.payload) + len(r.stdout) + len(r.stderr) + len(r.traceback) > INLINE_MAX
                                      for r in results):  # (result_bytes, inline: this runs for every result)
            return RResultsRef(
                [r for r in results if result_bytes(r) <= INLINE_MAX],
                [StoredResult(r.uid, r.status, place("result", r.uid, r), r.node, r.started_at, r.finished_at)
                 for r in results if result_bytes(r) > INLINE_MAX])
    return record


def stored_payloads(record: JournalRecord) -> Iterator[tuple[str, str, bytes | JobResult]]:
    """The (kind, key, source) of each payload ``to_stored`` gives to the store."""
    match record:
        case RClusterOpened(cluster_id=cluster_id, spec=spec) if len(spec) > INLINE_MAX:
            yield "cluster", cluster_id, spec
        case RJobsQueued(jobs=jobs):
            for job in jobs:
                if len(job.payload) > INLINE_MAX:
                    yield "job", job.uid, job.payload
        case RResults(results=results):
            for result in results:
                if result_bytes(result) > INLINE_MAX:
                    yield "result", result.uid, result


def payload_refs(record: JournalRecord) -> Iterator[PayloadRef]:
    """Every payload the record refers to in the store."""
    match record:
        case RClusterOpenedRef():
            yield record.spec
        case RJobsQueuedRef():
            for job in record.jobs:
                if isinstance(job.payload, PayloadRef):
                    yield job.payload
        case RResultsRef():
            for stored in record.stored:
                yield stored.ref


def dead_payloads(record: JournalRecord) -> list[tuple[str, list[str]]]:
    """The payloads nothing needs once ``record`` is written, as (kind, keys): acknowledged (or expired)
    results and their arguments, and the arguments of jobs that ended."""
    match record:
        case RAcked(uids):
            return [("job", uids), ("result", uids)]
        case RResults(results):
            return [("job", [result.uid for result in results])]
    return []
