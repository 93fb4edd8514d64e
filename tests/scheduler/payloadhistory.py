"""A scheduler's history written to a real journal and payload store, one group commit per step.

``History`` drives a ``SchedulerState`` with big payloads (specs, arguments,
results over ``INLINE_MAX``, so they go to the store) and hands what it
persisted to a ``JournalWriter`` with a ``PayloadStore`` in ``state_dir``;
``commit()`` is one group commit. ``view(state)`` is what a restart must
bring back; ``reopen(state_dir)`` replays the directory as the daemon does.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from fairpool.handshake import Peer
from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    CancelJobs,
    CloseCluster,
    JobResult,
    JobSubmit,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Submit,
)
from fairpool.policies.fifo import FifoPolicy
from fairpool.scheduler.events import Connected, Disconnected, Persist, Received, Stimulus, Tick
from fairpool.scheduler.journal import JOURNAL_NAME, JournalFile, read_journal
from fairpool.scheduler.journalrecords import JournalRecord, payload_refs
from fairpool.scheduler.journalwriter import JournalWriter
from fairpool.scheduler.payloadstore import PAYLOADS_DIR, SEGMENT_BYTES, PayloadStore
from fairpool.scheduler.replay import replay, snapshot
from fairpool.scheduler.state import SchedulerState

TIMEOUT = 10.0
NOW = 1000.0


def big(tag: str, size: int = 100) -> bytes:
    """``size`` bytes that name ``tag`` (so a payload read from the wrong place shows)."""
    return (tag.encode() + b"|" + bytes(range(256)) * (size // 256 + 1))[:size]


def new_state(result_retention: float = 7 * 24 * 3600.0) -> SchedulerState:
    return SchedulerState(FifoPolicy(), heartbeat_timeout=TIMEOUT, result_retention=result_retention)


class History:
    def __init__(self, state_dir: Path, *, segment_bytes: int = SEGMENT_BYTES, compact_bytes: int = 1 << 62,
                 result_retention: float = 7 * 24 * 3600.0) -> None:
        self.state_dir = state_dir
        self.state = new_state(result_retention)
        self.now = NOW
        self._ids = itertools.count(1)
        self.records: list[JournalRecord] = []  # every record the state persisted (inline payloads)
        self._written = 0
        self.store = PayloadStore(state_dir / PAYLOADS_DIR, fsync=False, segment_bytes=segment_bytes)
        self.store.open(())
        self.journal = JournalFile(state_dir / JOURNAL_NAME, fsync=False)
        self.writer = JournalWriter(self.journal, lambda _conn, _message: None, compact_bytes=compact_bytes,
                                    snapshot=lambda: snapshot(self.state), store=self.store)
        self.commits: list[tuple[int, int, dict[int, int]]] = []  # (records, log bytes, segment -> bytes)

    # --- stimuli ---------------------------------------------------------------------------

    def handle(self, stimulus: Stimulus) -> None:
        self.records += [i.record for i in self.state.handle(stimulus) if isinstance(i, Persist)]

    def connect(self, role: str, tenant: str = "", name: str = "") -> int:
        conn = next(self._ids)
        self.handle(Connected(conn, Peer(role, tenant, name), self.now))
        return conn

    def send(self, conn: int, *messages: Any) -> None:
        self.handle(Received(conn, messages, self.now))

    def open_cluster(self, cluster_id: str, tenant: str = "alice", spec_size: int = 200) -> int:
        conn = self.connect("client", tenant, f"{tenant}-laptop")
        self.send(conn, OpenCluster(cluster_id, "test", big("spec:" + cluster_id, spec_size)))
        return conn

    def submit(self, conn: int, cluster_id: str, sizes: list[int], first: int = 0) -> list[str]:
        uids = [f"{cluster_id}.{first + i}" for i in range(len(sizes))]
        self.send(conn, Submit(cluster_id, [JobSubmit(uid, big("args:" + uid, size))
                                            for uid, size in zip(uids, sizes, strict=True)]))
        return uids

    def node(self, name: str, cpus: int) -> int:
        conn = self.connect("node", "", name)
        self.send(conn, NodeReady(name, cpus))
        return conn

    def finish(self, node: int, name: str, uids: list[str], size: int = 120) -> None:
        self.send(node, NodeProgress([], [JobResult(uid, JobStatus.FINISHED.value, big("result:" + uid, size),
                                                    stdout="out " + uid, started_at=self.now - 1, finished_at=self.now,
                                                    node=name) for uid in uids]))

    def ack(self, conn: int, uids: list[str]) -> None:
        self.send(conn, AckResults(uids))

    def cancel(self, conn: int, uids: list[str]) -> None:
        self.send(conn, CancelJobs(uids))

    def close(self, conn: int, cluster_id: str) -> None:
        self.send(conn, CloseCluster(cluster_id))

    def disconnect(self, conn: int) -> None:
        self.handle(Disconnected(conn, "gone", self.now))

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.handle(Tick(self.now))

    def assigned(self, node: int) -> list[str]:
        return sorted(self.state.nodes[node].assigned)

    def run_all(self, node: int, name: str, size: int = 120) -> list[str]:
        """The node finishes whatever it is given until nothing is left: the uids it ran."""
        ran: list[str] = []
        while uids := self.assigned(node):
            self.finish(node, name, uids, size)
            ran += uids
        return ran

    # --- the journal -----------------------------------------------------------------------

    def commit(self) -> None:
        """One group commit of what the state persisted since the last."""
        for record in self.records[self._written:]:
            self.writer.append(record)
        self._written = len(self.records)
        self.writer.flush()
        self.commits.append((len(self.records), self.journal.size, self.store.segments()))

    def close_files(self) -> None:
        self.writer.close()


def view(state: SchedulerState) -> dict[str, Any]:
    """What a restart must bring back (RUNNING reads as QUEUED: starts are not journaled)."""
    return {
        "clusters": {cid: (c.tenant, c.name, c.spec, c.reentrant, c.closed, sorted(c.jobs))
                     for cid, c in state.clusters.items()},
        "jobs": {uid: (j.cluster_id, j.payload, j.seq, j.cpus,
                       JobStatus.QUEUED if j.status is JobStatus.RUNNING else j.status, j.result)
                 for uid, j in state.jobs.items()},
        "queue": [job.uid for job in state.policy.order()],
        "orphans": sorted((name, session, sorted(j.uid for j in jobs))
                          for name, session, jobs in state.orphans.by_node() if jobs),
    }


def replayed(records: list[JournalRecord], now: float = NOW) -> SchedulerState:
    """The state ``records`` (inline payloads) replay to, in memory."""
    state = new_state()
    replay(state, records, now)
    return state


def reopen(state_dir: Path, now: float = NOW, segment_bytes: int = SEGMENT_BYTES) -> tuple[SchedulerState, PayloadStore]:
    """Replay ``state_dir`` as the daemon does at start (PayloadCorrupt/JournalCorrupt propagate)."""
    contents = read_journal(state_dir / JOURNAL_NAME)
    store = PayloadStore(state_dir / PAYLOADS_DIR, fsync=False, segment_bytes=segment_bytes)
    store.open(ref for record in contents.records for ref in payload_refs(record))
    state = new_state()
    replay(state, contents.records, now, store)
    return state, store


def disk_use(state_dir: Path) -> int:
    """Bytes of the log and every payload segment."""
    log = (state_dir / JOURNAL_NAME).stat().st_size
    return log + sum(p.stat().st_size for p in (state_dir / PAYLOADS_DIR).glob("seg-*.dat"))
