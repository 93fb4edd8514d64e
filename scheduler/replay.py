"""Journal records <-> SchedulerState: rebuild the state on start, and snapshot it to compact.

``replay(state, records)`` applies what the live state journaled, in order,
to a fresh state: clusters and jobs come back, queued jobs queue again in
their old order, jobs that were on nodes wait for their node to reclaim
them (``Orphans``), results wait for their client. ``snapshot(state)`` is
the shortest list of records that replays to the same state: compaction.
Both are pure, but for one read: records in their stored shape (payloads in
the payload store) are applied with each payload's ``PayloadRef`` standing in
for its bytes, and once every record is applied the payloads still alive —
specs of clusters that remain, arguments of jobs not ended, results not
acknowledged — and only those are read from the store (``load_payloads``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import cast

from fairpool.jobstatus import JobStatus
from fairpool.messages import JobOptions, JobResult, JobSubmit
from fairpool.policies.registry import make_policy
from fairpool.scheduler.journal import collector_paused
from fairpool.scheduler.journalrecords import (
    JournalRecord,
    PayloadRef,
    RAcked,
    RAssigned,
    RClusterClosed,
    RClusterNodes,
    RClusterOpened,
    RClusterOpenedRef,
    RJobsQueued,
    RJobsQueuedRef,
    RNodeDrained,
    RPolicy,
    RPolicyState,
    RRequeued,
    RResults,
    RResultsRef,
    RTenant,
    RTenantToken,
    StoredResult,
)
from fairpool.scheduler.payloadstore import PayloadStore
from fairpool.scheduler.records import ClusterRecord, JobRecord
from fairpool.scheduler.state import SchedulerState
from fairpool.scheduler.statebase import apply_tenant
from fairpool.tokens import TokenKeys

#: Beyond the heartbeat timeout, what a node's reconnect backoff may add after a restart.
RESTART_BACKOFF = 10.0


def restart_grace(heartbeat_timeout: float) -> float:
    """How long after a restart the nodes that held jobs have to come back for them."""
    return heartbeat_timeout + RESTART_BACKOFF


def replay(state: SchedulerState, records: list[JournalRecord], now: float,
           store: PayloadStore | None = None) -> None:
    """Apply ``records``; those in the stored shape need the ``store`` their payloads are in."""
    with collector_paused():
        for record in records:
            apply(state, record, now)
        # Every node that held jobs gets the same time from now to come back for them: its
        # reconnect attempts back off (up to a few seconds, with jitter) while we were down, so
        # a heartbeat timeout alone could give up on live nodes.
        state.orphans.set_deadlines(now + restart_grace(state.heartbeat_timeout))
        load_payloads(state, store)


def load_payloads(state: SchedulerState, store: PayloadStore | None) -> None:
    """Read the payloads that replay left as references and are still alive (PayloadCorrupt if one does not)."""
    # Parallel lists, not a tuple per payload: replay's objects are many, the collector's walks long.
    clusters = [c for c in state.clusters.values() if isinstance(cast(object, c.spec), PayloadRef)]
    jobs = [j for j in state.jobs.values() if isinstance(cast(object, j.payload), PayloadRef)]
    results = [j for j in state.jobs.values() if isinstance(j.result, StoredResult)]
    if not (clusters or jobs or results):
        return
    if store is None:
        raise ValueError("these journal records refer to a payload store: replay needs it")
    specs = store.load_many("cluster", [c.cluster_id for c in clusters], [cast(PayloadRef, c.spec) for c in clusters])
    for cluster, spec in zip(clusters, specs, strict=True):
        cluster.spec = spec
    payloads = store.load_many("job", [j.uid for j in jobs], [cast(PayloadRef, j.payload) for j in jobs])
    for job, payload in zip(jobs, payloads, strict=True):
        job.payload = payload
    for job in results:
        job.result = store.load_result(job.uid, cast(StoredResult, job.result).ref)
    store.release_maps()


def apply(state: SchedulerState, record: JournalRecord, now: float) -> None:
    match record:
        case RJobsQueued(cluster_id, jobs, seqs, at) | RJobsQueuedRef(cluster_id, jobs, seqs, at):
            cluster = state.clusters[cluster_id]
            # A StoredJob has a JobSubmit's fields, but its payload may be a PayloadRef: it stands in
            # for the stored arguments until load_payloads (if the job is still alive then).
            for spec, seq in zip(cast(list[JobSubmit], jobs), seqs, strict=True):
                queued = JobRecord(spec.uid, cluster_id, cluster.tenant, spec.payload, seq, cluster.priority, at,
                                   spec.options)
                cluster.jobs[queued.uid] = queued
                state.jobs[queued.uid] = queued
                state.dispatcher.enqueue(queued)
                state.restore_seq(seq)
        case RAssigned(node, session, uids):
            on_node = [state.jobs[uid] for uid in uids if uid in state.jobs]
            for held in on_node:
                if held.node:
                    state.orphans.release(held)  # reassigned (reclaimed after a reconnect)
                else:
                    state.dispatcher.dequeue(held)
                    state.dispatcher.resume(held, held.submitted_at)
                held.node = node
                held.node_conn = None
                held.maybe_started = True
            state.orphans.hold(node, session, math.inf, on_node, "the scheduler restarted")
        case RRequeued(uids):
            for uid in uids:
                requeued = state.jobs.get(uid)
                if requeued is not None and not requeued.status.is_final:
                    state.orphans.release(requeued)
                    requeued.node = ""
                    requeued.status = JobStatus.QUEUED
                    state.dispatcher.finished(requeued, requeued.submitted_at)
                    state.dispatcher.enqueue(requeued)
        case RResults(results) | RResultsRef(results):
            stored = record.stored if isinstance(record, RResultsRef) else []
            # A StoredResult stands in for a result in the store until load_payloads (if not acknowledged).
            for result in [*results, *cast(list[JobResult], stored)]:
                ended = state.jobs.get(result.uid)
                if ended is None or ended.status.is_final:
                    continue
                if ended.node:
                    state.orphans.release(ended)
                    # its runtime as the node measured it: the start replayed is its submit time
                    ran = result.finished_at - result.started_at if result.started_at and result.finished_at else None
                    state.dispatcher.finished(ended, result.finished_at or ended.submitted_at, ran)
                else:
                    state.dispatcher.dequeue(ended)
                ended.status = JobStatus(result.status)
                ended.result = result
                ended.payload = b""
                ended.node = result.node
                state.finished_total += 1
        case RAcked(uids):
            for uid in uids:
                acked = state.jobs.pop(uid, None)
                owner = state.clusters.get(acked.cluster_id) if acked is not None else None
                if owner is not None:
                    owner.jobs.pop(uid, None)
                    _forget_if_done(state, owner)
        case (RClusterOpened(cluster_id, tenant, name, spec, reentrant, priority, at)
              | RClusterOpenedRef(cluster_id, tenant, name, spec, reentrant, priority, at)):
            if cluster_id not in state.clusters:
                # A PayloadRef stands in for a stored spec until load_payloads.
                state.clusters[cluster_id] = ClusterRecord(cluster_id, tenant, name, cast(bytes, spec), reentrant,
                                                           priority, None, at)
        case RPolicy(name):
            if name != state.policy.name:
                try:
                    state.dispatcher.replace_policy(make_policy(name), now)
                except ValueError:
                    pass  # a plugin policy that is gone: the configured one stays
        case RPolicyState(policy_state):
            # At the time the books were written: the records after them come in their own times,
            # which a policy's clock (decayed usage) must not have passed already. Books written
            # before any job event (no time) hold nothing.
            written = policy_state.get("at")
            try:
                if isinstance(written, (int, float)) and written > 0:
                    state.dispatcher.restore(policy_state, min(float(written), now))  # (another policy's: ignored)
            except (ValueError, OverflowError):
                pass  # books this policy cannot read (malformed): the jobs replay still
        case RClusterNodes(cluster_id, allowed, node_cpus):
            limited = state.clusters.get(cluster_id)
            if limited is not None:
                limited.allowed = list(allowed) if allowed is not None else None
                limited.node_cpus = dict(node_cpus)
        case RNodeDrained(name, drained):
            if drained:
                state.drained.add(name)
            else:
                state.drained.discard(name)
        case RTenant():
            apply_tenant(state.dispatcher, record)
        case RTenantToken(tenant, stored_key, server_key):
            if record.revoked:
                state.tokens.pop(tenant, None)
            else:
                state.tokens[tenant] = TokenKeys(stored_key, server_key)
        case RClusterClosed(cluster_id):
            closed = state.clusters.get(cluster_id)
            if closed is not None:
                closed.closed = True
                # No node has its definition after a restart; one that reclaims a job of it is
                # told to release it when that job ends (_maybe_release). Jobs the close cancelled
                # have their CANCELLED results journaled after this record.
                closed.released = not closed.unfinished()
                _forget_if_done(state, closed)


def _forget_if_done(state: SchedulerState, cluster: ClusterRecord) -> None:
    if cluster.closed and not cluster.jobs:
        del state.clusters[cluster.cluster_id]


def snapshot(state: SchedulerState) -> list[JournalRecord]:
    """Records that replay to this state: the live clusters, jobs, assignments and results."""
    records: list[JournalRecord] = [RPolicy(state.policy.name)]
    records += [RTenant(t.name, t.weight, t.tier, t.max_running, t.max_queued, t.parent)
                for t in state.dispatcher.tenants.values()]
    records += [RNodeDrained(name, True) for name in sorted(state.drained)]
    records += [RTenantToken(tenant, keys.stored_key, keys.server_key) for tenant, keys in sorted(state.tokens.items())]
    # the policy's books after the tenants (its tree), before the jobs it is told of again
    records.append(RPolicyState(state.dispatcher.snapshot()))
    assigned: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node in state.nodes.values():
        assigned[(node.name, node.session)].extend(node.assigned)
    for name, session, jobs in state.orphans.by_node():
        assigned[(name, session)].extend(job.uid for job in jobs)
    for cluster in state.clusters.values():
        records.append(RClusterOpened(cluster.cluster_id, cluster.tenant, cluster.name, cluster.spec,
                                      cluster.reentrant, cluster.priority, cluster.created_at))
        jobs = sorted(cluster.jobs.values(), key=lambda j: j.seq)
        if jobs:
            records.append(RJobsQueued(cluster.cluster_id, [_submit_of(j, cluster.priority) for j in jobs], [j.seq for j in jobs],
                                       jobs[0].submitted_at))
        results = [j.result for j in jobs if j.result is not None]
        if results:
            records.append(RResults(results))
        if cluster.allowed is not None or cluster.node_cpus:
            records.append(RClusterNodes(cluster.cluster_id, cluster.allowed, cluster.node_cpus))
        if cluster.closed:
            records.append(RClusterClosed(cluster.cluster_id))
    for (name, session), uids in assigned.items():
        if uids:
            records.append(RAssigned(name, session, uids))
    return records


def _submit_of(job: JobRecord, cluster_priority: int) -> JobSubmit:
    options = JobOptions(job.cpus, job.memory, job.gpus, job.timeout, job.priority, job.pin)
    if options == JobOptions(1.0, priority=cluster_priority):
        return JobSubmit(job.uid, job.payload)  # the defaults: nothing to store
    return JobSubmit(job.uid, job.payload, options)
