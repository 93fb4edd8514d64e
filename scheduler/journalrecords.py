"""What the journal records: one frozen struct per kind of acknowledged state change.

Payloads (functions, arguments, results) are stored inside the records, once
each, as the opaque bytes the clients sent: the journal never unpickles.
Compaction rewrites only what is still alive, so a payload is purged when
the client has acknowledged its result.
"""

from __future__ import annotations

import msgspec

from fairpool.messages import JobResult, JobSubmit


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


class RPolicy(Record, frozen=True):
    """The policy was switched live (``policy set`` / ``policy reload``): it outlives a restart."""

    name: str


JournalRecord = (
    RClusterOpened | RJobsQueued | RAssigned | RRequeued | RResults | RAcked | RClusterClosed | RPolicy | RTenant
    | RClusterNodes | RNodeDrained
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
