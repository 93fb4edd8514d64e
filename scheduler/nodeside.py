"""The node half of SchedulerState: joining, progress, loss and reclaim, and dispatch."""

from __future__ import annotations

import math
from collections import defaultdict

import msgspec

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    CancelTasks,
    ClusterDef,
    Dispatch,
    JobResult,
    JobStarted,
    NodeDrain,
    NodeProgress,
    NodeReady,
    Task,
)
from fairpool.policies.base import QueuedJob
from fairpool.policies.dispatcher import Placement
from fairpool.scheduler.events import Close, Log, Persist, Send
from fairpool.scheduler.journalrecords import RAssigned, RRequeued, RResults
from fairpool.scheduler.placement import NodePicker
from fairpool.scheduler.records import ConnRecord, JobRecord, NodeRecord
from fairpool.scheduler.statebase import StateBase

_NODE_FINAL = frozenset({JobStatus.FINISHED.value, JobStatus.FAILED.value})
#: Task payload bytes per Dispatch message: large jobs go in several, so that no frame nears the node's limit.
DISPATCH_BYTES = 16 * 1024 * 1024


def _by_size(tasks: list[Task]) -> list[list[Task]]:
    """``tasks`` in runs of at most DISPATCH_BYTES of payload (a larger task alone)."""
    parts: list[list[Task]] = [[]]
    size = 0
    for task in tasks:
        if parts[-1] and size + len(task.payload) > DISPATCH_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(task)
        size += len(task.payload)
    return parts


class NodeSide(StateBase):
    def _violation(self, conn: ConnRecord, reason: str) -> None:
        raise NotImplementedError  # SchedulerState's

    def _node_ready(self, conn: ConnRecord, message: NodeReady, now: float) -> None:
        if conn.node is not None:
            self._violation(conn, "NodeReady sent twice")
            return
        if message.cpus < 1:
            self._violation(conn, f"node advertises {message.cpus} cpus")
            return
        if message.memory < 0 or message.gpus < 0:
            self._violation(conn, f"node advertises {message.memory} bytes of memory and {message.gpus} gpus")
            return
        name = message.name or conn.name
        for old in [n for n in self.nodes.values() if n.name == name and n.session == message.session]:
            # The same node process, back before its old connection was seen to die: that one
            # is dead, and the jobs it had are this connection's to claim.
            self._out.append(Close(old.conn, "the node reconnected"))
            self._drop_conn(old.conn, "the node reconnected", now)
        node = NodeRecord(conn.conn, name, message.cpus, message.memory, message.gpus, now, message.session)
        if node.name in self.drained:
            node.state = "drained"
        conn.node = node
        self.nodes[conn.conn] = node
        self._out.append(Log("info", "node joined", (("node", node.name), ("cpus", node.cpus))))
        self._reclaim(node, sorted(set(message.held)), now)
        self._node_event("joined", node)
        self.capacity_changed()

    def _reclaim(self, node: NodeRecord, held: list[str], now: float) -> None:
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
                self.dispatcher.dequeue(job)  # dispatched just before a crash: it is there already
                self.dispatcher.resume(job, now)
            node.assign(job)
            job.node_conn = node.conn
            job.node = node.name
            job.maybe_started = True  # the node holds it: it may run it before we hear so
            self.clusters[job.cluster_id].nodes_with_spec.add(node.conn)
            adopted.append(uid)
        for job in mine.values():
            job.status = JobStatus.QUEUED  # not held: it never reached the node
            job.maybe_started = False
            never_received.append(job)
        self._resolve_orphans(never_received, node.name, "never received", now)
        if adopted:
            self._out.append(Persist(RAssigned(node.name, node.session, adopted)))
            cancels = [uid for uid in adopted if self.jobs[uid].cancel_requested]
            if cancels:
                self._out.append(Send(node.conn, CancelTasks(cancels, "cancelled by the client")))
        if stale:
            self._out.append(Send(node.conn, CancelTasks(stale, "unknown to the scheduler")))

    def _node_progress(self, conn: ConnRecord, progress: NodeProgress, now: float) -> None:
        started, results = progress.started, progress.results
        node = conn.node
        if node is None:
            self._violation(conn, "NodeProgress before NodeReady")
            return
        bad = next((r.status for r in results if r.status not in _NODE_FINAL), None)
        if bad is not None:  # refuse the whole message: nothing of it is applied
            self._violation(conn, f"job status {bad!r} from a node")
            return
        times = [t for r in results for t in (r.started_at, r.finished_at)]
        times += [e.started_at for e in started] + [p.at for p in progress.provisional]
        if not all(map(math.isfinite, times)):  # NaN or infinity would poison runtimes, capacity, policies
            self._violation(conn, "a timestamp that is not a finite number, from a node")
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
            too_big = self.oversize(f"job {value.uid}: a provisional result", value.payload)
            if too_big:
                dropped = node.assigned.get(value.uid)
                if dropped is not None:  # (one of a job not ours any more goes without a word)
                    self.log_job("warning", "provisional result dropped", dropped, node.name, reason=too_big)
            elif conn_id is not None:
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
            too_big = self.oversize("the job's result", result.payload)
            if too_big:  # neither kept nor journaled: the job ends FAILED, saying why
                result = msgspec.structs.replace(result, status=JobStatus.FAILED.value, payload=b"", reason=too_big)
            if job.cancel_requested and result.status == JobStatus.FAILED.value:
                result = msgspec.structs.replace(result, status=JobStatus.CANCELLED.value)
            if result.node != node.name:
                result = msgspec.structs.replace(result, node=node.name)
            self._finish(job, result, now, persist=False)
            finished.append(result)
        if finished:
            self._out.append(Persist(RResults(finished)))
        if node.state == "draining" and not node.assigned:
            node.state = "drained"
            self._out.append(Log("info", "node drained", (("node", node.name),)))

    def _node_drain(self, conn: ConnRecord, message: NodeDrain, now: float) -> None:
        """The node takes no new jobs (or takes them again), and gives back the jobs it names."""
        node = conn.node
        if node is None:
            self._violation(conn, "NodeDrain before NodeReady")
            return
        reason = message.reason or "the node asked"
        handed = [job for uid in message.handback if (job := node.unassign(uid)) is not None]
        for job in handed:
            # The node tells its started news before it hands a job back: one we never heard
            # of starting is one it never started.
            job.maybe_started = job.status is not JobStatus.QUEUED
        if handed:
            self._resolve_orphans(handed, node.name, f"handed back ({reason})", now)
        if message.draining and node.state == "up":
            node.state = "draining"
            self._out.append(Log("info", "node draining", (("node", node.name), ("reason", reason))))
        elif not message.draining and node.state != "up" and node.name not in self.drained:
            node.state = "up"  # (an admin's drain is not the node's to lift)
            self._out.append(Log("info", "node takes jobs again", (("node", node.name), ("reason", reason))))
        if node.state == "draining" and not node.assigned:
            node.state = "drained"
        self.capacity_changed()

    def _client_of(self, node: NodeRecord, uid: str) -> int | None:
        """The attached client connection of a job running on ``node`` (None: not ours, or detached)."""
        job = node.assigned.get(uid)
        return None if job is None else self.clusters[job.cluster_id].conn

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
        self.capacity_changed()
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
            if job.cancel_requested:  # the client wanted it stopped: it is
                self._finish(job, JobResult(job.uid, JobStatus.CANCELLED.value, reason="cancelled",
                                            finished_at=now, node=node), now)
                continue
            may_have_run = job.status is not JobStatus.QUEUED or job.maybe_started
            if not may_have_run or self.clusters[job.cluster_id].reentrant:
                job.status = JobStatus.QUEUED  # never started, or safe to run again
                self.dispatcher.finished(job, now)
                self.dispatcher.enqueue(job)
                requeued.append(job.uid)
                if self.log_jobs:
                    self.log_job("debug", "job requeued", job, node, reason=reason)
            else:
                self._finish(job, now=now, result=JobResult(job.uid, JobStatus.ABANDONED.value,
                                            reason=f"node {node} lost: {reason}",
                                            started_at=job.started_at, finished_at=now, node=node))
        if requeued:
            self._out.append(Persist(RRequeued(requeued)))
            self._out.append(Log("info", "jobs requeued", (("node", node), ("jobs", len(requeued)))))

    def _check_heartbeats(self, now: float) -> None:
        for name, _session, jobs, reason in self.orphans.expire(now):
            self._resolve_orphans(jobs, name, f"{reason}; it did not come back", now)
        for conn in list(self.conns.values()):
            if now - conn.last_seen > self.heartbeat_timeout:
                reason = f"no heartbeat for {now - conn.last_seen:.1f}s"
                self._out.append(Close(conn.conn, reason))
                self._drop_conn(conn.conn, reason, now)

    def _schedule(self, now: float) -> None:
        if not self.nodes or not len(self.dispatcher):
            return
        room = sum(max(node.room(), 0) for node in self.nodes.values())
        if room <= 0:
            return
        picker = NodePicker(list(self.nodes.values()))
        chosen: list[tuple[JobRecord, NodeRecord]] = []

        def place(queued: QueuedJob) -> Placement:
            nonlocal room
            if room <= 0:
                return Placement.FULL
            job = queued if isinstance(queued, JobRecord) else self.jobs[queued.uid]
            node = picker.pick(job, self.clusters[job.cluster_id])
            if node is None:
                return Placement.NO_FIT  # waits for room; the policy may try others
            before = max(node.room(), 0)
            node.assign(job)
            room -= before - max(node.room(), 0)
            chosen.append((job, node))
            return Placement.PLACED

        # At most as many as there is room for: the policy need not rank one more only to hear
        # FULL (a pass a job ends is the common case: room for one). A job of a fraction of a
        # cpu beyond that waits for the next pass.
        self.dispatcher.next_jobs(now, place, limit=room)
        tasks: dict[int, list[Task]] = defaultdict(list)
        defs: dict[int, list[ClusterDef]] = defaultdict(list)
        for job, node in chosen:
            job.node_conn = node.conn
            job.node = node.name
            # From here it may run before we hear so (a node cut off runs its queue on): if the
            # node is lost, only its own word (_reclaim, a hand-back) says it never started.
            job.maybe_started = True
            cluster = self.clusters[job.cluster_id]
            if node.conn not in cluster.nodes_with_spec:
                cluster.nodes_with_spec.add(node.conn)
                defs[node.conn].append(ClusterDef(cluster.cluster_id, cluster.spec, cluster.tenant, self.max_payload))
            tasks[node.conn].append(Task(job.uid, job.cluster_id, job.payload, job.timeout))
            if self.log_jobs:
                self.log_job("debug", "job dispatched", job)
        for node_conn, node_tasks in tasks.items():
            node = self.nodes[node_conn]
            # Dispatch need not wait for the record: a crash before it is durable leaves the
            # job QUEUED, and the node, when it reconnects, says it holds it (_reclaim).
            self._out.append(Persist(RAssigned(node.name, node.session, [t.uid for t in node_tasks])))
            for part in _by_size(node_tasks):  # (the cluster definitions go in the first)
                self._out.append(Send(node_conn, Dispatch(defs.pop(node_conn, []), part)))
