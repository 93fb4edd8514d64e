"""StateBase: what SchedulerState holds, and the bookkeeping both its halves share.

The data (connections, nodes, clusters, jobs, orphans, the dispatcher) and
the output buffers of one ``handle`` step live here, with the few
operations that client and node handlers both need: finishing a job,
releasing and forgetting clusters, telling clients about nodes. Pure: no
clock, no I/O, no unpickling.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    FileChunk,
    JobProvisional,
    JobResult,
    JobStarted,
    JobsUpdate,
    NodeEvent,
    ReleaseCluster,
)
from fairpool.newsbatch import split_news
from fairpool.policies.base import Policy
from fairpool.policies.dispatcher import Dispatcher
from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig
from fairpool.scheduler.events import Instruction, Log, Persist, Send
from fairpool.scheduler.journalrecords import JournalRecord, RPolicy, RResults, RTenant
from fairpool.scheduler.orphans import Orphans
from fairpool.scheduler.records import ClusterRecord, ConnRecord, JobRecord, NodeRecord
from fairpool.tokens import TokenKeys, new_token


class StateBase:
    def __init__(self, policy: Policy, *, heartbeat_timeout: float = 10.0,
                 result_retention: float = 7 * 24 * 3600.0, max_payload: int = 0) -> None:
        self.dispatcher = Dispatcher(policy)
        self.heartbeat_timeout = heartbeat_timeout
        self.result_retention = result_retention
        self.max_payload = max_payload  # bytes of one job payload, spec or result (0: no limit here)
        self.conns: dict[int, ConnRecord] = {}
        self.nodes: dict[int, NodeRecord] = {}
        self.clusters: dict[str, ClusterRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.orphans = Orphans()
        self.drained: set[str] = set()  # node names an admin drained (they stay so if they reconnect)
        # tenant -> what we keep of its token (never the token). Changed in place only: the shell's
        # handshakes hold its bound ``get``.
        self.tokens: dict[str, TokenKeys] = {}
        # The one source of randomness in the core (``tenants add``); tests may pin it.
        self.make_token: Callable[[], str] = new_token
        self.finished_total = 0
        # A debug line per job step (queued, dispatched, requeued, ended): the shell turns it on at
        # log level debug only, since building them costs on the hot path. Abandoned jobs are always told.
        self.log_jobs = False
        self._seq = 0
        self._out: list[Instruction] = []
        # per handle() call: what each client connection should hear, sent as one JobsUpdate
        self._started: dict[int, list[JobStarted]] = defaultdict(list)
        self._results: dict[int, list[JobResult]] = defaultdict(list)
        self._extras: dict[int, tuple[list[JobProvisional], list[FileChunk]]] = {}
        self._dropped = False  # a connection was dropped in the current step
        self._last_words: dict[int, Send] = {}  # the Error told to a connection before we close it

    @property
    def policy(self) -> Policy:
        return self.dispatcher.policy

    def oversize(self, what: str, payload: bytes) -> str:
        """Why ``payload`` is refused as too big ("" if it is not): ``what`` names it for the peer."""
        if 0 < self.max_payload < len(payload):
            return (f"{what} is {len(payload)} bytes, over the scheduler's limit of {self.max_payload} bytes "
                    "(max_payload_size)")
        return ""

    def _take_output(self) -> list[Instruction]:
        for conn in set(self._started) | set(self._results) | set(self._extras):
            self._flush_updates(conn)
        out, self._out = self._out, []
        if self._dropped:
            # A connection dropped during this step: what was queued for it has no one to go to,
            # except the last words (Error) to a connection we close ourselves.
            keep = self._last_words
            out = [i for i in out if not isinstance(i, Send) or i.conn in self.conns or i is keep.get(i.conn)]
            keep.clear()
        return out

    def _flush_updates(self, conn: int) -> None:
        """Emit what ``conn`` should hear about its jobs now: one JobsUpdate, or several if it
        is large (a client reattaching after an outage is told every result not acknowledged)."""
        started = self._started.pop(conn, [])
        results = self._results.pop(conn, [])
        provisional, files = self._extras.pop(conn, ([], []))
        if (started or results or provisional or files) and conn in self.conns:
            for part in split_news(started, results, provisional, files):
                self._out.append(Send(conn, JobsUpdate(*part)))

    def log_job(self, level: str, event: str, job: JobRecord, node: str = "", **fields: object) -> None:
        """A log line about one job: always with its uid, tenant, cluster and node (see fairpool.logs)."""
        self._out.append(Log(level, event, (("job", job.uid), ("tenant", job.tenant), ("cluster", job.cluster_id),
                                            ("node", node or job.node), *fields.items())))

    def _finish(self, job: JobRecord, result: JobResult, now: float, persist: bool = True) -> None:
        if result.status == JobStatus.ABANDONED.value:
            self.log_job("warning", "job abandoned", job, result.node, reason=result.reason)
        elif self.log_jobs:
            self.log_job("debug", "job ended", job, result.node, status=result.status, reason=result.reason)
        if persist:
            self._out.append(Persist(RResults([result])))
        if job.node and job.node_conn is None:
            self.orphans.release(job)
        runtime = result.finished_at - result.started_at if result.finished_at and result.started_at else None
        self.dispatcher.finished(job, now, runtime)
        job.status = JobStatus(result.status)
        job.result = result
        job.payload = b""  # the arguments are not needed any more
        job.node_conn = None
        self.finished_total += 1
        cluster = self.clusters[job.cluster_id]
        cluster.ended[result.status] += 1
        if result.node:
            done = cluster.node_time.setdefault(result.node, [0, 0.0])
            done[0] += 1
            done[1] += max(result.finished_at - result.started_at, 0.0) if result.started_at else 0.0
        if cluster.conn is not None:
            self._results[cluster.conn].append(result)
        if cluster.closed:
            self._maybe_release(cluster)

    def _maybe_release(self, cluster: ClusterRecord) -> None:
        """Tell nodes to run cleanup once a closed cluster has nothing left on them."""
        if not cluster.closed or cluster.released or cluster.unfinished():
            return
        cluster.released = True
        for node_conn in cluster.nodes_with_spec:
            if node_conn in self.nodes:
                self._out.append(Send(node_conn, ReleaseCluster(cluster.cluster_id)))
        cluster.nodes_with_spec.clear()

    def _maybe_forget(self, cluster: ClusterRecord) -> None:
        if cluster.closed and cluster.released and not cluster.jobs:
            del self.clusters[cluster.cluster_id]

    def _node_event(self, event: str, node: NodeRecord) -> None:
        message = NodeEvent(event, node.name, node.cpus)
        for conn in {c.conn for c in self.clusters.values() if c.conn is not None}:
            self._out.append(Send(conn, message))

    def set_policy(self, policy: Policy, now: float) -> None:
        """Switch policy live: queued and running jobs carry over; the switch is journaled."""
        self.dispatcher.replace_policy(policy, now)
        self._out.append(Persist(RPolicy(policy.name)))
        self._out.append(Log("info", "policy switched", (("policy", policy.name),)))

    def persist(self, record: JournalRecord) -> None:
        self._out.append(Persist(record))

    def release_on(self, cluster: ClusterRecord, node: NodeRecord) -> None:
        """The node runs the cluster's cleanup now; its next job there brings the definition (and setup) again."""
        if node.conn in cluster.nodes_with_spec:
            cluster.nodes_with_spec.discard(node.conn)
            self._out.append(Send(node.conn, ReleaseCluster(cluster.cluster_id)))

    def set_tenant(self, record: RTenant) -> None:
        """A tenant's settings changed live; journaled, so the change outlives a restart."""
        apply_tenant(self.dispatcher, record)
        self._out.append(Persist(record))
        self._out.append(Log("info", "tenant removed" if record.removed else "tenant set",
                             (("tenant", record.name), ("weight", record.weight))))

    def capacity_changed(self) -> None:
        up = [n for n in self.nodes.values() if n.state == "up"]
        self.dispatcher.configure(capacity=Resources(float(sum(n.cpus for n in up)),
                                                     sum(n.memory for n in up), sum(n.gpus for n in up)))

    def restore_seq(self, seq: int) -> None:
        """Replay: submit sequences continue after the highest one journaled."""
        self._seq = max(self._seq, seq)

    def statistics(self) -> dict[str, Any]:
        running = sum(len(n.assigned) for n in self.nodes.values())
        return {
            "nodes": len(self.nodes),
            "cpus": sum(n.cpus for n in self.nodes.values()),
            "queued": len(self.dispatcher),
            "running": running,
            "finished": self.finished_total,
            "clusters": len(self.clusters),
            "connections": len(self.conns),
            "policy": self.policy.name,
        }


def apply_tenant(dispatcher: Dispatcher, record: RTenant) -> None:
    tenants = dict(dispatcher.tenants)
    if record.removed:
        tenants.pop(record.name, None)
    else:
        tenants[record.name] = TenantConfig(record.name, record.weight, record.tier, None, None,
                                            record.max_running, record.max_queued, record.parent)
    dispatcher.configure(tenants=tenants)
