"""SchedulerState: the whole scheduling logic as a pure state machine.

``handle(stimulus) -> list[Instruction]`` is the only entry point. It reads
no clock (stimuli carry ``now``), does no I/O and never looks inside tenant
payloads: functions, arguments and results are opaque bytes here (SPEC
promise 5). One trio task in ``fairpool.scheduler.daemon`` owns an instance;
the simulator and the tests drive the very same code synchronously.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import islice
from typing import Any

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    AnyMessage,
    CloseCluster,
    ClusterClosed,
    ClusterDef,
    ClusterOpened,
    Dispatch,
    Error,
    Heartbeat,
    JobResult,
    JobStarted,
    JobsUpdate,
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
    Received,
    Send,
    Stimulus,
    Tick,
)
from fairpool.scheduler.records import ClusterRecord, ConnRecord, JobRecord, NodeRecord

_NODE_FINAL = frozenset({JobStatus.FINISHED.value, JobStatus.FAILED.value})
NOT_FOUND = "no such cluster"  # also the answer for another tenant's cluster: same words


class SchedulerState:
    def __init__(self, policy: Policy, *, heartbeat_timeout: float = 10.0) -> None:
        self.policy = policy
        self.heartbeat_timeout = heartbeat_timeout
        self.conns: dict[int, ConnRecord] = {}
        self.nodes: dict[int, NodeRecord] = {}
        self.clusters: dict[str, ClusterRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.finished_total = 0
        self._seq = 0
        self._out: list[Instruction] = []
        # per handle() call: what each client connection should hear, sent as one JobsUpdate
        self._started: dict[int, list[JobStarted]] = defaultdict(list)
        self._results: dict[int, list[JobResult]] = defaultdict(list)

    # --- entry point --------------------------------------------------------

    def handle(self, stimulus: Stimulus) -> list[Instruction]:
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
        for conn in set(self._started) | set(self._results):
            self._flush_updates(conn)
        out, self._out = self._out, []
        return out

    def _flush_updates(self, conn: int) -> None:
        """Emit what ``conn`` should hear about its jobs now, as one JobsUpdate."""
        started = self._started.pop(conn, [])
        results = self._results.pop(conn, [])
        if (started or results) and conn in self.conns:
            self._out.append(Send(conn, JobsUpdate(started, results)))

    def _on_message(self, conn: ConnRecord, message: AnyMessage, now: float) -> None:
        match conn.role, message:
            case "node", Heartbeat():
                # Echoed: the node then knows everything it sent before was received.
                self._out.append(Send(conn.conn, message))
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
            case "node", NodeProgress(started, results):
                self._node_progress(conn, started, results)
            case "node", NodeReady():
                self._node_ready(conn, message, now)
            case role, _:
                self._violation(conn, f"{type(message).__name__} is not a {role} request")

    def _violation(self, conn: ConnRecord, reason: str) -> None:
        self._out.append(Log("warning", "protocol violation", (("peer", conn.name), ("reason", reason))))
        self._out.append(Send(conn.conn, Error(f"protocol violation: {reason}")))
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
        for spec in message.jobs:
            if not spec.uid.startswith(prefix):
                self._out.append(Send(conn.conn, Error(f"job uid {spec.uid!r} must start with {prefix!r}", spec.uid)))
                continue
            other = self.jobs.get(spec.uid)
            if other is not None and other.cluster_id != cluster.cluster_id:
                self._out.append(Send(conn.conn, Error(f"job uid {spec.uid!r} is taken", spec.uid)))
                continue
            uids.append(spec.uid)
            if spec.uid in cluster.jobs:
                continue  # a resend after a reconnect: acknowledged again, not queued twice
            self._seq += 1
            job = JobRecord(spec.uid, cluster.cluster_id, cluster.tenant, spec.payload, self._seq,
                            cluster.priority, now)
            cluster.jobs[job.uid] = job
            self.jobs[job.uid] = job
            self.policy.enqueue(job)
        if uids:
            self._out.append(Send(conn.conn, Queued(cluster.cluster_id, uids, now)))

    def _ack(self, conn: ConnRecord, uids: list[str]) -> None:
        for uid in uids:
            job = self.jobs.get(uid)
            if job is None or job.tenant != conn.tenant or job.result is None:
                continue
            del self.jobs[uid]
            cluster = self.clusters.get(job.cluster_id)
            if cluster is not None:
                cluster.jobs.pop(uid, None)
                self._maybe_forget(cluster)

    def _close_cluster(self, conn: ConnRecord, cluster_id: str) -> None:
        cluster = self._owned_cluster(conn, cluster_id)
        if cluster is None:
            return
        cluster.closed = True
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
        node = NodeRecord(conn.conn, message.name or conn.name, message.cpus, message.memory, message.gpus, now)
        conn.node = node
        self.nodes[conn.conn] = node
        self._out.append(Log("info", "node joined", (("node", node.name), ("cpus", node.cpus))))

    def _node_progress(self, conn: ConnRecord, started: list[JobStarted], results: list[JobResult]) -> None:
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
        for result in results:
            job = node.assigned.pop(result.uid, None)
            if job is None:
                continue  # not ours (any more): e.g. abandoned after a timeout
            node.done += 1
            if result.finished_at and result.started_at:
                node.observe_runtime(result.finished_at - result.started_at)
            if result.node != node.name:
                result = _with_node(result, node.name)
            self._finish(job, result)

    def _finish(self, job: JobRecord, result: JobResult) -> None:
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
        for cluster in self.clusters.values():
            if cluster.conn == conn_id:
                cluster.conn = None
            cluster.nodes_with_spec.discard(conn_id)
        node = self.nodes.pop(conn_id, None)
        if node is None:
            return
        self._out.append(Log("warning", "node lost", (("node", node.name), ("reason", reason),
                                                        ("jobs", len(node.assigned)))))
        for job in node.assigned.values():
            cluster = self.clusters[job.cluster_id]
            if job.status is JobStatus.QUEUED or cluster.reentrant:
                # Never started (still prefetched), or safe to run again: back in the queue.
                job.status = JobStatus.QUEUED
                job.node_conn = None
                job.node = ""
                self.policy.enqueue(job)
            else:
                self._finish(job, JobResult(job.uid, JobStatus.ABANDONED.value,
                                            reason=f"node {node.name} lost: {reason}",
                                            started_at=job.started_at, finished_at=now, node=node.name))

    def _check_heartbeats(self, now: float) -> None:
        for conn in list(self.conns.values()):
            if now - conn.last_seen > self.heartbeat_timeout:
                reason = f"no heartbeat for {now - conn.last_seen:.1f}s"
                self._out.append(Close(conn.conn, reason))
                self._drop_conn(conn.conn, reason, now)

    # --- scheduling ---------------------------------------------------------

    def _schedule(self) -> None:
        if not self.nodes or not len(self.policy):
            return
        free = {conn: node.free() for conn, node in self.nodes.items()}
        total = sum(f for f in free.values() if f > 0)
        if total <= 0:
            return
        chosen = list(islice(self.policy.order(), total))
        tasks: dict[int, list[Task]] = defaultdict(list)
        defs: dict[int, list[ClusterDef]] = defaultdict(list)
        for job in chosen:
            node_conn = max(free, key=free.__getitem__)  # the emptiest node first
            if free[node_conn] <= 0:
                break
            free[node_conn] -= 1
            node = self.nodes[node_conn]
            self.policy.dequeue(job)
            job.node_conn = node_conn
            job.node = node.name
            node.assigned[job.uid] = job
            cluster = self.clusters[job.cluster_id]
            if node_conn not in cluster.nodes_with_spec:
                cluster.nodes_with_spec.add(node_conn)
                defs[node_conn].append(ClusterDef(cluster.cluster_id, cluster.spec))
            tasks[node_conn].append(Task(job.uid, job.cluster_id, job.payload))
        for node_conn, node_tasks in tasks.items():
            self._out.append(Send(node_conn, Dispatch(defs.pop(node_conn, []), node_tasks)))

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


def _with_node(result: JobResult, node: str) -> JobResult:
    return JobResult(result.uid, result.status, result.payload, result.stdout, result.stderr,
                     result.traceback, result.reason, result.exit_code, result.started_at,
                     result.finished_at, node)
