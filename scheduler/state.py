"""SchedulerState: the whole scheduling logic as a pure state machine.

``handle(stimulus) -> list[Instruction]`` is the only entry point. It reads
no clock (stimuli carry ``now``), does no I/O and never looks inside tenant
payloads: functions, arguments and results are opaque bytes here (SPEC
promise 5). One trio task in ``fairpool.scheduler.daemon`` owns an instance;
the simulator and the tests drive the very same code synchronously.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    AnyMessage,
    CancelJobs,
    CancelTasks,
    CloseCluster,
    ClusterClosed,
    ClusterDef,
    ClusterOpened,
    Dispatch,
    Error,
    FileChunk,
    Heartbeat,
    JobProvisional,
    JobResult,
    JobStarted,
    JobSubmit,
    JobsUpdate,
    NodeEvent,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Queued,
    ReleaseCluster,
    Submit,
    Task,
)
from fairpool.policies.base import Policy
from fairpool.scheduler.events import (
    Close,
    Connected,
    Disconnected,
    Instruction,
    Log,
    Persist,
    Received,
    Send,
    Stimulus,
    Tick,
)
from fairpool.scheduler.journalrecords import (
    RAcked,
    RAssigned,
    RClusterClosed,
    RClusterOpened,
    RJobsQueued,
    RRequeued,
    RResults,
)
from fairpool.scheduler.orphans import Orphans
from fairpool.scheduler.records import ClusterRecord, ConnRecord, JobRecord, NodeRecord

_NODE_FINAL = frozenset({JobStatus.FINISHED.value, JobStatus.FAILED.value})
MAX_SKIPPED = 1000  # queued jobs passed over (no room for them) before a dispatch pass stops
NOT_FOUND = "no such cluster"  # also the answer for another tenant's cluster: same words


class SchedulerState:
    def __init__(self, policy: Policy, *, heartbeat_timeout: float = 10.0,
                 result_retention: float = 7 * 24 * 3600.0) -> None:
        self.policy = policy
        self.heartbeat_timeout = heartbeat_timeout
        self.result_retention = result_retention
        self.conns: dict[int, ConnRecord] = {}
        self.nodes: dict[int, NodeRecord] = {}
        self.clusters: dict[str, ClusterRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.orphans = Orphans()
        self.finished_total = 0
        self._seq = 0
        self._out: list[Instruction] = []
        # per handle() call: what each client connection should hear, sent as one JobsUpdate
        self._started: dict[int, list[JobStarted]] = defaultdict(list)
        self._results: dict[int, list[JobResult]] = defaultdict(list)
        self._extras: dict[int, tuple[list[JobProvisional], list[FileChunk]]] = {}
        self._dropped = False  # a connection was dropped in the current step
        self._last_words: dict[int, Send] = {}  # the Error told to a connection before we close it

    # --- entry point --------------------------------------------------------

    def handle(self, stimulus: Stimulus) -> list[Instruction]:
        self._dropped = False
        match stimulus:
            case Received(conn, messages, now):
                record = self.conns.get(conn)
                if record is not None:
                    record.last_seen = now
                    for message in messages:
                        if conn not in self.conns:
                            break  # closed by an earlier message of this batch
                        self._on_message(record, message, now)
            case Connected(conn, peer, now):
                self.conns[conn] = ConnRecord(conn, peer.role, peer.tenant, peer.name, now)
            case Disconnected(conn, reason, now):
                self._drop_conn(conn, reason, now)
            case Tick(now):
                self._check_heartbeats(now)
        self._schedule()
        return self._take_output()

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
        """Emit what ``conn`` should hear about its jobs now, as one JobsUpdate."""
        started = self._started.pop(conn, [])
        results = self._results.pop(conn, [])
        provisional, files = self._extras.pop(conn, ([], []))
        if (started or results or provisional or files) and conn in self.conns:
            self._out.append(Send(conn, JobsUpdate(started, results, provisional, files)))

    def _on_message(self, conn: ConnRecord, message: AnyMessage, now: float) -> None:
        match conn.role, message:
            case "node", Heartbeat():
                # Echoed once durable: the node may then forget every result it sent before.
                self._out.append(Send(conn.conn, message, durable=True))
            case _, Heartbeat():
                pass
            case "client", Submit():
                self._submit(conn, message, now)
            case "client", AckResults(uids):
                self._ack(conn, uids)
            case "client", OpenCluster():
                self._open_cluster(conn, message, now)
            case "client", CloseCluster(cluster_id):
                self._close_cluster(conn, cluster_id)
            case "client", CancelJobs(uids):
                self._cancel(conn, uids)
            case "node", NodeProgress():
                self._node_progress(conn, message)
            case "node", NodeReady():
                self._node_ready(conn, message, now)
            case role, _:
                self._violation(conn, f"{type(message).__name__} is not a {role} request")

    def _violation(self, conn: ConnRecord, reason: str) -> None:
        self._out.append(Log("warning", "protocol violation", (("peer", conn.name), ("reason", reason))))
        last_words = Send(conn.conn, Error(f"protocol violation: {reason}"))
        self._last_words[conn.conn] = last_words
        self._out.append(last_words)
        self._out.append(Close(conn.conn, reason))
        self._drop_conn(conn.conn, reason, conn.last_seen)

    # --- clients ------------------------------------------------------------

    def _owned_cluster(self, conn: ConnRecord, cluster_id: str) -> ClusterRecord | None:
        cluster = self.clusters.get(cluster_id)
        if cluster is None or cluster.tenant != conn.tenant:
            self._out.append(Send(conn.conn, Error(NOT_FOUND, cluster_id)))
            return None
        return cluster

    def _open_cluster(self, conn: ConnRecord, message: OpenCluster, now: float) -> None:
        cluster = self.clusters.get(message.cluster_id)
        if cluster is None:
            cluster = ClusterRecord(message.cluster_id, conn.tenant, message.name, message.spec,
                                    message.reentrant, message.priority, conn.conn, now)
            self.clusters[cluster.cluster_id] = cluster
            self._out.append(Persist(RClusterOpened(cluster.cluster_id, cluster.tenant, cluster.name,
                                                    cluster.spec, cluster.reentrant, cluster.priority, now)))
            self._out.append(Log("info", "cluster opened", (("cluster", cluster.cluster_id),
                                                              ("tenant", conn.tenant), ("client", conn.name))))
            self._out.append(Send(conn.conn, ClusterOpened(cluster.cluster_id)))
            return
        if cluster.tenant != conn.tenant:
            self._out.append(Send(conn.conn, Error(NOT_FOUND, message.cluster_id)))
            return
        # Re-attach: this connection now hears the cluster's news, and everything
        # not yet acknowledged is told again (the client ignores what it knew).
        cluster.conn = conn.conn
        self._out.append(Send(conn.conn, ClusterOpened(cluster.cluster_id)))
        for job in cluster.jobs.values():
            if job.result is not None:
                self._results[conn.conn].append(job.result)
            elif job.status is JobStatus.RUNNING:
                self._started[conn.conn].append(JobStarted(job.uid, job.node, job.started_at))

    def _submit(self, conn: ConnRecord, message: Submit, now: float) -> None:
        cluster = self._owned_cluster(conn, message.cluster_id)
        if cluster is None:
            return
        if cluster.closed:
            self._out.append(Send(conn.conn, Error("cluster is closed", cluster.cluster_id)))
            return
        prefix = cluster.cluster_id + "."
        uids: list[str] = []
        new: list[JobSubmit] = []
        for spec in message.jobs:
            if not spec.uid.startswith(prefix):
                self._out.append(Send(conn.conn, Error(f"job uid {spec.uid!r} must start with {prefix!r}", spec.uid)))
                continue
            other = self.jobs.get(spec.uid)
            if other is not None and other.cluster_id != cluster.cluster_id:
                self._out.append(Send(conn.conn, Error(f"job uid {spec.uid!r} is taken", spec.uid)))
                continue
            uids.append(spec.uid)
            if spec.uid not in cluster.jobs:  # else a resend after a reconnect: acknowledged again only
                new.append(spec)
        if new:
            first = self._seq + 1
            self._seq += len(new)
            self._out.append(Persist(RJobsQueued(cluster.cluster_id, new, list(range(first, self._seq + 1)), now)))
            for seq, spec in enumerate(new, first):
                self._add_job(cluster, spec, seq, now)
        if uids:
            # QUEUED is a promise that the job is in the journal: sent once the record is on disk.
            self._out.append(Send(conn.conn, Queued(cluster.cluster_id, uids, now), durable=True))

    def _add_job(self, cluster: ClusterRecord, spec: JobSubmit, seq: int, now: float) -> JobRecord:
        job = JobRecord(spec.uid, cluster.cluster_id, cluster.tenant, spec.payload, seq, cluster.priority, now,
                        spec.options)
        cluster.jobs[job.uid] = job
        self.jobs[job.uid] = job
        unfit = self._unfit_reason(job)
        if unfit:
            self._finish(job, JobResult(job.uid, JobStatus.FAILED.value, reason=unfit, finished_at=now))
        else:
            self.policy.enqueue(job)
        return job

    def _unfit_reason(self, job: JobRecord) -> str:
        """Why no node of the pool could ever run this job ("" if one could, or if there are none yet)."""
        if not self.nodes or any(node.could_ever_fit(job) for node in self.nodes.values()):
            return ""
        if job.pin and job.pin not in {n.name for n in self.nodes.values()}:
            return ""  # the named node may (re)join
        biggest = max(self.nodes.values(), key=lambda n: (n.cpus, n.memory, n.gpus))
        return (f"no node can run this job: it asks for {job.cpus:g} cpus, {job.memory} bytes of memory "
                f"and {job.gpus} gpus; the largest node ({biggest.name}) has {biggest.cpus} cpus, "
                f"{biggest.memory} bytes and {biggest.gpus} gpus")

    def _cancel(self, conn: ConnRecord, uids: list[str]) -> None:
        by_node: dict[int, list[str]] = defaultdict(list)
        for uid in uids:
            job = self.jobs.get(uid)
            if job is None or job.tenant != conn.tenant or job.status.is_final:
                continue  # not found, not yours, or over: nothing to do (and nothing to tell apart)
            if job.node_conn is None:
                self.policy.dequeue(job)
                self._finish(job, JobResult(job.uid, JobStatus.CANCELLED.value, reason="cancelled"))
            elif not job.cancel_requested:
                job.cancel_requested = True
                by_node[job.node_conn].append(uid)
        for node_conn, node_uids in by_node.items():
            self._out.append(Send(node_conn, CancelTasks(node_uids, "cancelled by the client")))

    def _ack(self, conn: ConnRecord, uids: list[str]) -> None:
        forgotten: list[str] = []
        for uid in uids:
            job = self.jobs.get(uid)
            if job is None or job.tenant != conn.tenant or job.result is None:
                continue
            forgotten.append(uid)
            del self.jobs[uid]
            cluster = self.clusters.get(job.cluster_id)
            if cluster is not None:
                cluster.jobs.pop(uid, None)
                self._maybe_forget(cluster)
        if forgotten:
            self._out.append(Persist(RAcked(forgotten)))

    def _close_cluster(self, conn: ConnRecord, cluster_id: str) -> None:
        cluster = self._owned_cluster(conn, cluster_id)
        if cluster is None:
            return
        cluster.closed = True
        self._out.append(Persist(RClusterClosed(cluster_id)))
        for job in list(cluster.jobs.values()):
            if job.status is JobStatus.QUEUED and job.node_conn is None:  # not yet on a node
                self.policy.dequeue(job)
                self._finish(job, JobResult(job.uid, JobStatus.CANCELLED.value, reason="cluster closed"))
        self._maybe_release(cluster)
        self._flush_updates(conn.conn)  # the cancellations reach the client before ClusterClosed
        self._out.append(Send(conn.conn, ClusterClosed(cluster_id)))
        self._maybe_forget(cluster)

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

    # --- nodes --------------------------------------------------------------

    def _node_ready(self, conn: ConnRecord, message: NodeReady, now: float) -> None:
        if conn.node is not None:
            self._violation(conn, "NodeReady sent twice")
            return
        if message.cpus < 1:
            self._violation(conn, f"node advertises {message.cpus} cpus")
            return
        node = NodeRecord(conn.conn, message.name or conn.name, message.cpus, message.memory, message.gpus,
                          now, message.session)
        conn.node = node
        self.nodes[conn.conn] = node
        self._out.append(Log("info", "node joined", (("node", node.name), ("cpus", node.cpus))))
        self._reclaim(node, set(message.held), now)
        self._node_event("joined", node)

    def _reclaim(self, node: NodeRecord, held: set[str], now: float) -> None:
        """A (re)joining node keeps the jobs it still holds; the rest of what it had is settled."""
        mine, lost = self.orphans.claim(node.name, node.session)
        for _session, jobs, reason in lost:
            self._resolve_orphans(jobs, node.name, reason, now)
        adopted: list[str] = []
        stale: list[str] = []
        never_received: list[JobRecord] = []
        for uid in held:
            job = mine.pop(uid, None)
            if job is None:
                job = self.jobs.get(uid)
                if job is None or job.status.is_final or job.node_conn is not None or job.node:
                    stale.append(uid)  # over, forgotten, or someone else's now: the node drops it
                    continue
                self.policy.dequeue(job)  # dispatched just before a crash: it is there already
            node.assign(job)
            job.node_conn = node.conn
            job.node = node.name
            self.clusters[job.cluster_id].nodes_with_spec.add(node.conn)
            adopted.append(uid)
        for job in mine.values():
            job.status = JobStatus.QUEUED  # not held: it never reached the node
            never_received.append(job)
        self._resolve_orphans(never_received, node.name, "never received", now)
        if adopted:
            self._out.append(Persist(RAssigned(node.name, node.session, adopted)))
            cancels = [uid for uid in adopted if self.jobs[uid].cancel_requested]
            if cancels:
                self._out.append(Send(node.conn, CancelTasks(cancels, "cancelled by the client")))
        if stale:
            self._out.append(Send(node.conn, CancelTasks(stale, "unknown to the scheduler")))

    def _node_event(self, event: str, node: NodeRecord) -> None:
        message = NodeEvent(event, node.name, node.cpus)
        for conn in {c.conn for c in self.clusters.values() if c.conn is not None}:
            self._out.append(Send(conn, message))

    def _node_progress(self, conn: ConnRecord, progress: NodeProgress) -> None:
        started, results = progress.started, progress.results
        node = conn.node
        if node is None:
            self._violation(conn, "NodeProgress before NodeReady")
            return
        bad = next((r.status for r in results if r.status not in _NODE_FINAL), None)
        if bad is not None:  # refuse the whole message: nothing of it is applied
            self._violation(conn, f"job status {bad!r} from a node")
            return
        for event in started:
            job = node.assigned.get(event.uid)
            if job is None or job.status is not JobStatus.QUEUED and job.status is not JobStatus.RUNNING:
                continue
            job.status = JobStatus.RUNNING
            job.started_at = event.started_at
            cluster = self.clusters[job.cluster_id]
            if cluster.conn is not None:
                self._started[cluster.conn].append(JobStarted(job.uid, node.name, event.started_at))
        for value in progress.provisional:
            conn_id = self._client_of(node, value.uid)
            if conn_id is not None:
                self._extras.setdefault(conn_id, ([], []))[0].append(value)
        for chunk in progress.files:
            conn_id = self._client_of(node, chunk.uid)
            if conn_id is not None:
                self._extras.setdefault(conn_id, ([], []))[1].append(chunk)
        finished: list[JobResult] = []
        for result in results:
            job = node.unassign(result.uid)
            if job is None:
                continue  # not ours (any more): e.g. abandoned after a timeout
            node.done += 1
            if result.finished_at and result.started_at:
                node.observe_runtime(result.finished_at - result.started_at)
            if job.cancel_requested and result.status == JobStatus.FAILED.value:
                result = msgspec.structs.replace(result, status=JobStatus.CANCELLED.value)
            if result.node != node.name:
                result = msgspec.structs.replace(result, node=node.name)
            self._finish(job, result, persist=False)
            finished.append(result)
        if finished:
            self._out.append(Persist(RResults(finished)))

    def _client_of(self, node: NodeRecord, uid: str) -> int | None:
        """The attached client connection of a job running on ``node`` (None: not ours, or detached)."""
        job = node.assigned.get(uid)
        return None if job is None else self.clusters[job.cluster_id].conn

    def _finish(self, job: JobRecord, result: JobResult, persist: bool = True) -> None:
        if persist:
            self._out.append(Persist(RResults([result])))
        if job.node and job.node_conn is None:
            self.orphans.release(job)
        job.status = JobStatus(result.status)
        job.result = result
        job.payload = b""  # the arguments are not needed any more
        job.node_conn = None
        self.finished_total += 1
        cluster = self.clusters[job.cluster_id]
        if cluster.conn is not None:
            self._results[cluster.conn].append(result)
        if cluster.closed:
            self._maybe_release(cluster)

    def _drop_conn(self, conn_id: int, reason: str, now: float) -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        self._dropped = True
        for cluster in self.clusters.values():
            if cluster.conn == conn_id:
                cluster.conn = None
            cluster.nodes_with_spec.discard(conn_id)
        node = self.nodes.pop(conn_id, None)
        if node is None:
            return
        self._out.append(Log("warning", "node disconnected", (("node", node.name), ("reason", reason),
                                                                ("jobs", len(node.assigned)))))
        self._node_event("failed" if node.assigned else "left", node)
        if node.assigned:
            # The node may still be running them: it has until the deadline to come back (same
            # session) and claim them; after that they are requeued or abandoned.
            for job in node.assigned.values():
                job.node_conn = None
            self.orphans.hold(node.name, node.session, now + self.heartbeat_timeout, node.assigned.values(),
                              reason)

    def _resolve_orphans(self, jobs: list[JobRecord], node: str, reason: str, now: float) -> None:
        """Jobs their node lost: back in the queue if they may run again, else ABANDONED."""
        requeued: list[str] = []
        for job in jobs:
            job.node_conn = None
            job.node = ""
            if job.status is JobStatus.QUEUED or self.clusters[job.cluster_id].reentrant:
                job.status = JobStatus.QUEUED  # never started, or safe to run again
                self.policy.enqueue(job)
                requeued.append(job.uid)
            else:
                self._finish(job, JobResult(job.uid, JobStatus.ABANDONED.value,
                                            reason=f"node {node} lost: {reason}",
                                            started_at=job.started_at, finished_at=now, node=node))
        if requeued:
            self._out.append(Persist(RRequeued(requeued)))
            self._out.append(Log("info", "jobs requeued", (("node", node), ("jobs", len(requeued)))))

    def _purge_expired(self, now: float) -> None:
        """Results nobody came for within the retention time are dropped (and the drop logged)."""
        horizon = now - self.result_retention
        expired = [job for cluster in self.clusters.values() if cluster.conn is None
                   for job in cluster.jobs.values()
                   if job.result is not None and 0 < job.result.finished_at < horizon]
        if not expired:
            return
        for job in expired:
            del self.jobs[job.uid]
            cluster = self.clusters[job.cluster_id]
            del cluster.jobs[job.uid]
        for cluster in {self.clusters[j.cluster_id] for j in expired}:
            self._out.append(Log("warning", "results purged after the retention time",
                                 (("cluster", cluster.cluster_id), ("tenant", cluster.tenant),
                                  ("jobs", sum(1 for j in expired if j.cluster_id == cluster.cluster_id)),
                                  ("retention_s", self.result_retention))))
            if not cluster.jobs and (cluster.closed or not cluster.unfinished()):
                cluster.closed = cluster.released = True
                self._maybe_forget(cluster)
        self._out.append(Persist(RAcked([job.uid for job in expired])))

    def _check_heartbeats(self, now: float) -> None:
        self._purge_expired(now)
        for name, _session, jobs, reason in self.orphans.expire(now):
            self._resolve_orphans(jobs, name, f"{reason}; it did not come back", now)
        for conn in list(self.conns.values()):
            if now - conn.last_seen > self.heartbeat_timeout:
                reason = f"no heartbeat for {now - conn.last_seen:.1f}s"
                self._out.append(Close(conn.conn, reason))
                self._drop_conn(conn.conn, reason, now)

    # --- scheduling ---------------------------------------------------------

    def _schedule(self) -> None:
        if not self.nodes or not len(self.policy):
            return
        room = sum(max(node.room(), 0) for node in self.nodes.values())
        if room <= 0:
            return
        nodes = list(self.nodes.values())
        chosen: list[tuple[JobRecord, NodeRecord]] = []
        skipped = 0
        for job in self.policy.order():
            fitting = [n for n in nodes if n.fits(job)]
            if not fitting:
                skipped += 1  # waits for room; later jobs may still fit (skip mode)
                if skipped >= MAX_SKIPPED:
                    break
                continue
            node = max(fitting, key=lambda n: n.cpus - n.used_cpus)  # spread: the emptiest node
            before = max(node.room(), 0)
            node.assign(job)
            room -= before - max(node.room(), 0)
            chosen.append((job, node))
            if room <= 0:
                break
        tasks: dict[int, list[Task]] = defaultdict(list)
        defs: dict[int, list[ClusterDef]] = defaultdict(list)
        for job, node in chosen:
            self.policy.dequeue(job)
            job.node_conn = node.conn
            job.node = node.name
            cluster = self.clusters[job.cluster_id]
            if node.conn not in cluster.nodes_with_spec:
                cluster.nodes_with_spec.add(node.conn)
                defs[node.conn].append(ClusterDef(cluster.cluster_id, cluster.spec))
            tasks[node.conn].append(Task(job.uid, job.cluster_id, job.payload, job.timeout))
        for node_conn, node_tasks in tasks.items():
            node = self.nodes[node_conn]
            # Dispatch need not wait for the record: a crash before it is durable leaves the
            # job QUEUED, and the node, when it reconnects, says it holds it (_reclaim).
            self._out.append(Persist(RAssigned(node.name, node.session, [t.uid for t in node_tasks])))
            self._out.append(Send(node_conn, Dispatch(defs.pop(node_conn, []), node_tasks)))

    def restore_seq(self, seq: int) -> None:
        """Replay: submit sequences continue after the highest one journaled."""
        self._seq = max(self._seq, seq)

    # --- views --------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        running = sum(len(n.assigned) for n in self.nodes.values())
        return {
            "nodes": len(self.nodes),
            "cpus": sum(n.cpus for n in self.nodes.values()),
            "queued": len(self.policy),
            "running": running,
            "finished": self.finished_total,
            "clusters": len(self.clusters),
            "connections": len(self.conns),
            "policy": self.policy.name,
        }
