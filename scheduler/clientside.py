"""The client half of SchedulerState: clusters, submits, acknowledgements, cancels, closes."""

from __future__ import annotations

import math
from collections import defaultdict

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    CancelTasks,
    ClusterClosed,
    ClusterOpened,
    Error,
    JobResult,
    JobStarted,
    JobSubmit,
    OpenCluster,
    Queued,
    Submit,
)
from fairpool.messages import CancelTasks as _CancelTasks  # noqa: F401
from fairpool.scheduler.events import Log, Persist, Send
from fairpool.scheduler.journalrecords import (
    RAcked,
    RClusterClosed,
    RClusterNodes,
    RClusterOpened,
    RJobsQueued,
)
from fairpool.scheduler.records import ClusterRecord, ConnRecord, JobRecord
from fairpool.scheduler.statebase import StateBase

NOT_FOUND = "no such cluster"  # also the answer for another tenant's cluster: same words


def bad_options(spec: JobSubmit) -> str:
    """Why a job's options are refused ("" if they are fine): NaN, infinite or negative amounts
    would poison the nodes' bookkeeping and every policy's arithmetic."""
    options = spec.options
    if options is None:
        return ""
    for name, value in (("cpus", options.cpus), ("timeout", options.timeout)):
        if not (math.isfinite(value) and value >= 0):
            return f"job {spec.uid}: bad options: {name} must be a finite number >= 0, not {value!r}"
    for name, amount in (("memory", options.memory), ("gpus", options.gpus)):
        if amount < 0:
            return f"job {spec.uid}: bad options: {name} must be >= 0, not {amount!r}"
    return ""


class ClientSide(StateBase):
    def _owned_cluster(self, conn: ConnRecord, cluster_id: str) -> ClusterRecord | None:
        cluster = self.clusters.get(cluster_id)
        if cluster is None or cluster.tenant != conn.tenant:
            self._out.append(Send(conn.conn, Error(NOT_FOUND, cluster_id)))
            return None
        return cluster

    def _open_cluster(self, conn: ConnRecord, message: OpenCluster, now: float) -> None:
        cluster = self.clusters.get(message.cluster_id)
        too_big = self.oversize(f"cluster {message.cluster_id}: its spec (computation and depends)", message.spec)
        if cluster is None and too_big:  # never stored, never journaled
            self._out.append(Send(conn.conn, Error(too_big, message.cluster_id)))
            return
        if cluster is None:
            cluster = ClusterRecord(message.cluster_id, conn.tenant, message.name, message.spec,
                                    message.reentrant, message.priority, conn.conn, now)
            cluster.allowed = list(message.nodes) if message.nodes is not None else None
            self.clusters[cluster.cluster_id] = cluster
            self._out.append(Persist(RClusterOpened(cluster.cluster_id, cluster.tenant, cluster.name,
                                                    cluster.spec, cluster.reentrant, cluster.priority, now)))
            if cluster.allowed is not None:
                self._out.append(Persist(RClusterNodes(cluster.cluster_id, cluster.allowed, {})))
            self._out.append(Log("info", "cluster opened", (("cluster", cluster.cluster_id),
                                                              ("tenant", conn.tenant), ("client", conn.name))))
            self._out.append(Send(conn.conn, ClusterOpened(cluster.cluster_id, self.max_payload)))
            return
        if cluster.tenant != conn.tenant:
            self._out.append(Send(conn.conn, Error(NOT_FOUND, message.cluster_id)))
            return
        # Re-attach: this connection now hears the cluster's news, and everything
        # not yet acknowledged is told again (the client ignores what it knew).
        cluster.conn = conn.conn
        self._out.append(Log("info", "cluster reattached", (("cluster", cluster.cluster_id),
                                                              ("tenant", conn.tenant), ("client", conn.name))))
        self._out.append(Send(conn.conn, ClusterOpened(cluster.cluster_id, self.max_payload)))
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
        admitted: list[JobRecord] = []
        refused: list[JobResult] = []
        for spec in message.jobs:
            if not spec.uid.startswith(prefix):
                self._out.append(Send(conn.conn, Error(f"job uid {spec.uid!r} must start with {prefix!r}", spec.uid)))
                continue
            other = self.jobs.get(spec.uid)
            if other is not None and other.cluster_id != cluster.cluster_id:
                self._out.append(Send(conn.conn, Error(f"job uid {spec.uid!r} is taken", spec.uid)))
                continue
            if spec.uid in cluster.jobs:  # a resend after a reconnect: acknowledged again only
                uids.append(spec.uid)
                continue
            too_big = self.oversize(f"job {spec.uid}: its payload", spec.payload) or bad_options(spec)
            if too_big:  # never queued, nothing journaled; the client fails the job with this reason
                self._out.append(Send(conn.conn, Error(too_big, spec.uid)))
                continue
            job = JobRecord(spec.uid, cluster.cluster_id, cluster.tenant, spec.payload, self._seq + 1,
                            cluster.priority, now, spec.options)
            limit = self._unfit_reason(job) or self.dispatcher.admit(job)
            if limit:  # no node could ever run it, or a tenant limit: never queued, nothing journaled
                refused.append(JobResult(spec.uid, JobStatus.FAILED.value, reason=f"refused: {limit}",
                                         finished_at=now))
                continue
            self._seq += 1
            uids.append(spec.uid)
            new.append(spec)
            admitted.append(job)
            cluster.jobs[job.uid] = job
            self.jobs[job.uid] = job
            self.dispatcher.enqueue(job)  # before the next job's admission: max_queued counts it
        if new:
            self._out.append(Persist(RJobsQueued(cluster.cluster_id, new, [job.seq for job in admitted], now)))
            if self.log_jobs:
                for job in admitted:
                    self.log_job("debug", "job queued", job)
        if refused:
            self._results[conn.conn].extend(refused)
        if uids:
            # QUEUED is a promise that the job is in the journal: sent once the record is on disk.
            self._out.append(Send(conn.conn, Queued(cluster.cluster_id, uids, now), durable=True))

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

    def _cancel(self, conn: ConnRecord, uids: list[str], now: float) -> None:
        jobs = (self.jobs.get(uid) for uid in uids)
        # Not found, not yours, or over: nothing to do (and nothing to tell apart).
        self.cancel_jobs([j for j in jobs if j is not None and j.tenant == conn.tenant and not j.status.is_final], now)

    def cancel_jobs(self, jobs: list[JobRecord], now: float) -> None:
        """Queued: removed at once; on a node: the node is told to kill them (they end CANCELLED)."""
        by_node: dict[int, list[str]] = defaultdict(list)
        for job in jobs:
            uid = job.uid
            if job.node_conn is None:
                if not job.node:  # (a job of a lost node is not in the queue: it just ends)
                    self.dispatcher.dequeue(job)
                self._finish(job, JobResult(job.uid, JobStatus.CANCELLED.value, reason="cancelled", finished_at=now), now)
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

    def _close_cluster(self, conn: ConnRecord, cluster_id: str, now: float) -> None:
        cluster = self._owned_cluster(conn, cluster_id)
        if cluster is None:
            return
        cluster.closed = True
        self._out.append(Persist(RClusterClosed(cluster_id)))
        for job in list(cluster.jobs.values()):
            if job.status is JobStatus.QUEUED and job.node_conn is None:  # not yet on a node
                if not job.node:
                    self.dispatcher.dequeue(job)
                self._finish(job, JobResult(job.uid, JobStatus.CANCELLED.value, reason="cluster closed",
                                            finished_at=now), now)
        self._maybe_release(cluster)
        self._flush_updates(conn.conn)  # the cancellations reach the client before ClusterClosed
        self._out.append(Send(conn.conn, ClusterClosed(cluster_id)))
        self._maybe_forget(cluster)

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
        self._out.append(Persist(RAcked([job.uid for job in expired])))
        for cluster in sorted({self.clusters[j.cluster_id] for j in expired}, key=lambda c: c.cluster_id):
            self._out.append(Log("warning", "results purged after the retention time",
                                 (("cluster", cluster.cluster_id), ("tenant", cluster.tenant),
                                  ("jobs", sum(1 for j in expired if j.cluster_id == cluster.cluster_id)),
                                  ("retention_s", self.result_retention))))
            if not cluster.jobs and (cluster.closed or not cluster.unfinished()):
                cluster.closed = cluster.released = True
                self._out.append(Persist(RClusterClosed(cluster.cluster_id)))
                self._maybe_forget(cluster)
