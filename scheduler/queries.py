"""Answers to Requests: the read side of the scheduler (status, nodes, jobs, why) and the
commands that change it (cancel, drain, policy set); the tenant verbs are in ``tenantverbs``.

Pure functions over a SchedulerState, called from ``SchedulerState.handle``.
Who may ask what: the admin role may do everything; a tenant's client (the
library, or ``fairpool admin`` with a tenant credential) may only list, show,
cancel and ask ``why`` of its own jobs and use the ``cluster.*`` verbs on its
own clusters — another tenant's job or cluster is "not found", in exactly the
words given for one that does not exist.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from fairpool.jobstatus import JobStatus
from fairpool.messages import Reply, Request
from fairpool.policies.registry import make_policy
from fairpool.scheduler.journalrecords import RClusterNodes, RNodeDrained
from fairpool.scheduler.records import ClusterRecord, ConnRecord, JobRecord, NodeRecord
from fairpool.scheduler.refused import Refused
from fairpool.scheduler.tenantverbs import TENANT_ADMIN_VERBS

if TYPE_CHECKING:
    from fairpool.scheduler.state import SchedulerState


NOT_FOUND = "no such job"
TENANT_VERBS = frozenset({"jobs.list", "jobs.show", "jobs.cancel", "why",
                          "cluster.stats", "cluster.nodes", "cluster.allocate", "cluster.deallocate",
                          "cluster.set_node_cpus", "cluster.node_jobs", "cluster.resetup_node"})
JOB_LIST_LIMIT = 10_000


#: Verbs that only read: the admin CLI's are answered without queueing behind the job traffic
#: (SchedulerServer._answer_reads); the dashboard's GETs are these.
READ_VERBS = frozenset({"status", "nodes.list", "nodes.show", "jobs.list", "jobs.show", "why", "tenants.list",
                        "policy.show"})


def answer(state: SchedulerState, conn: ConnRecord, request: Request, now: float) -> Reply:
    handler = VERBS.get(request.verb)
    if handler is None:
        return Reply(request.id, False, error=f"unknown request {request.verb!r} (known: {', '.join(sorted(VERBS))})")
    if conn.role != "admin" and request.verb not in TENANT_VERBS:
        return Reply(request.id, False, error=f"{request.verb!r} needs the admin credential")
    try:
        return Reply(request.id, True, handler(state, conn, request.args, now))
    except Refused as exc:
        return Reply(request.id, False, error=str(exc))
    except (KeyError, TypeError, ValueError) as exc:  # malformed arguments: say which
        return Reply(request.id, False, error=f"bad arguments for {request.verb!r}: {exc}")


# --- views ---------------------------------------------------------------------------


def _status(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    stats = state.statistics()
    stats["busy"] = sum(min(len(n.assigned), n.cpus) for n in state.nodes.values())
    stats["tenants"] = len({j.tenant for j in state.jobs.values()} | set(state.dispatcher.tenants))
    stats["orphaned"] = len(state.orphans)
    return stats


def node_view(node: NodeRecord) -> dict[str, Any]:
    running = sum(1 for j in node.assigned.values() if j.status is JobStatus.RUNNING)
    return {"name": node.name, "cpus": node.cpus, "memory": node.memory, "gpus": node.gpus,
            "busy": min(running, node.cpus), "assigned": len(node.assigned), "state": node.state,
            "done": node.done, "joined_at": node.joined_at, "last_heartbeat": node.last_seen,
            "avg_runtime": node.avg_runtime}


def _nodes_list(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> list[dict[str, Any]]:
    views = [node_view(n) for n in state.nodes.values()]
    down = {name for name, _session, _jobs in state.orphans.by_node()} - {v["name"] for v in views}
    views += [{"name": name, "cpus": 0, "memory": 0, "gpus": 0, "busy": 0, "assigned": 0, "state": "down",
               "done": 0, "joined_at": None, "last_heartbeat": None, "avg_runtime": None} for name in sorted(down)]
    return sorted(views, key=lambda v: v["name"])


def _find_node(state: SchedulerState, name: str) -> NodeRecord:
    for node in state.nodes.values():
        if node.name == name:
            return node
    raise Refused(f"no such node {name!r}")


def _nodes_show(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    node = _find_node(state, str(args["name"]))
    view = node_view(node)
    view["jobs"] = [job_view(j) for j in node.assigned.values() if conn.role == "admin" or j.tenant == conn.tenant]
    return view


def job_view(job: JobRecord, detail: bool = False) -> dict[str, Any]:
    result = job.result
    view: dict[str, Any] = {
        "uid": job.uid, "tenant": job.tenant, "cluster_id": job.cluster_id, "status": job.status.value,
        "node": job.node or (result.node if result else ""), "submitted_at": job.submitted_at,
        "started_at": job.started_at or (result.started_at if result else 0.0) or None,
        "finished_at": (result.finished_at or None) if result else None,
        "cpus": job.cpus, "memory": job.memory, "gpus": job.gpus, "priority": job.priority,
    }
    if detail:
        view.update({"reason": result.reason if result else "", "stdout": result.stdout if result else "",
                     "stderr": result.stderr if result else "", "traceback": result.traceback if result else "",
                     "exit_code": result.exit_code if result else None, "timeout": job.timeout or None,
                     "pinned_node": job.pin or None})
    return view


def _visible_job(state: SchedulerState, conn: ConnRecord, uid: str) -> JobRecord:
    job = state.jobs.get(uid)
    if job is None or (conn.role != "admin" and job.tenant != conn.tenant):
        raise Refused(f"{NOT_FOUND} {uid!r}")  # the same words for "not yours"
    return job


def _jobs_list(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> list[dict[str, Any]]:
    admin = conn.role == "admin"
    tenant = args.get("tenant") if admin else conn.tenant
    status = str(args["status"]).upper() if args.get("status") else None
    if status is not None and status not in JobStatus.__members__:
        raise Refused(f"unknown status {args['status']!r} (known: {', '.join(JobStatus.__members__)})")
    node, cluster = args.get("node"), args.get("cluster")
    limit = int(args.get("limit") or JOB_LIST_LIMIT)
    views: list[dict[str, Any]] = []
    # ``newest``: the latest submitted first (the dashboard shows the last ``limit`` jobs).
    for job in reversed(state.jobs.values()) if args.get("newest") else state.jobs.values():
        # A tenant's own jobs only, even when its name is empty (no filter at all is the admin's).
        if (((tenant or not admin) and job.tenant != tenant) or (status and job.status.value != status)
                or (node and job.node != node and not (job.result and job.result.node == node))
                or (cluster and job.cluster_id != cluster)):
            continue
        views.append(job_view(job))
        if len(views) >= limit:
            break
    return views


def _jobs_show(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    return job_view(_visible_job(state, conn, str(args["uid"])), detail=True)


def _jobs_cancel(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    uids = [str(u) for u in args["uids"]]
    jobs, missing = [], []
    for uid in uids:
        try:
            jobs.append(_visible_job(state, conn, uid))
        except Refused:
            missing.append(uid)
    if missing and not jobs:
        raise Refused(f"{NOT_FOUND} {missing[0]!r}" if len(missing) == 1 else f"no such jobs: {', '.join(missing)}")
    live = [j for j in jobs if not j.status.is_final]
    state.cancel_jobs(live, now)
    return {"cancelled": [j.uid for j in live], "already_ended": [j.uid for j in jobs if j not in live],
            "not_found": missing}


def _why(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    job = _visible_job(state, conn, str(args["uid"]))
    view = job_view(job)
    if job.status is JobStatus.QUEUED and not job.node:
        explanation = state.dispatcher.explain(job, now)
        view.update({"explanation": str(explanation), "rank": explanation.rank, "tenants": explanation.tenants,
                     "ahead": explanation.ahead, "entitlement": explanation.entitlement,
                     "received": explanation.received, "reason": explanation.reason})
        capacity = _capacity_reason(state, job)
        if capacity:
            view["explanation"] += f"; {capacity}"
            view["capacity"] = capacity
    elif job.status is JobStatus.QUEUED:
        view["explanation"] = f"job {job.uid} was dispatched to node {job.node} and waits there to start"
    elif job.status.is_final:
        reason = job.result.reason if job.result else ""
        view["explanation"] = f"job {job.uid} ended {job.status.value}" + (f": {reason}" if reason else "")
    else:
        view["explanation"] = f"job {job.uid} is {job.status.value} on node {job.node}"
    return view


def _capacity_reason(state: SchedulerState, job: JobRecord) -> str:
    """What in the pool (not the policy) keeps a queued job waiting, if anything."""
    nodes = list(state.nodes.values())
    if not nodes:
        return "no node is connected"
    up = [n for n in nodes if n.state == "up"]
    if not up:
        return "every node is draining or drained"
    if job.pin and all(n.name != job.pin for n in up):
        return f"it must run on node {job.pin!r}, which is not up"
    if not any(n.could_ever_fit(job) for n in up):
        return "no node that is up has the resources it asks for"
    if not any(n.fits(job) for n in up):
        return "every node that could run it is full"
    return ""


def _cluster_stats(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    cluster = state.clusters.get(str(args["cluster_id"]))
    if cluster is None or (conn.role != "admin" and cluster.tenant != conn.tenant):
        raise Refused("no such cluster")
    # Ended jobs are counted when they end (their records go once acknowledged); the rest live.
    by_status = Counter(j.status.value for j in cluster.jobs.values() if not j.status.is_final)
    by_status.update(cluster.ended)
    by_node: dict[str, dict[str, Any]] = {
        node: {"jobs": int(done), "done": int(done), "cpu_time": seconds}
        for node, (done, seconds) in cluster.node_time.items()}
    for job in cluster.jobs.values():
        if job.node and not job.status.is_final:
            by_node.setdefault(job.node, {"jobs": 0, "done": 0, "cpu_time": 0.0})["jobs"] += 1
    return {"cluster_id": cluster.cluster_id, "by_status": dict(by_status), "by_node": by_node,
            "jobs": sum(by_status.values())}


def _own_cluster(state: SchedulerState, conn: ConnRecord, args: dict[str, Any]) -> ClusterRecord:
    cluster = state.clusters.get(str(args["cluster_id"]))
    if cluster is None or (conn.role != "admin" and cluster.tenant != conn.tenant):
        raise Refused("no such cluster")
    return cluster


def _cluster_nodes(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """The pool's nodes as this cluster sees them: whether it may use each, its cap and jobs there."""
    cluster = _own_cluster(state, conn, args)
    views = []
    for node in sorted(state.nodes.values(), key=lambda n: n.name):
        view = node_view(node)
        allowed = cluster.allowed is None or any(fnmatchcase(node.name, p) for p in cluster.allowed)
        view.update({"allocated": allowed, "cluster_cpus": cluster.node_cpus.get(node.name),
                     "cluster_jobs": node.by_cluster.get(cluster.cluster_id, 0),
                     "rank": cluster.ranks.get(node.name)})
        views.append(view)
    return views


def _set_allocation(state: SchedulerState, cluster: ClusterRecord, allowed: list[str] | None) -> None:
    cluster.allowed = allowed
    state.persist(RClusterNodes(cluster.cluster_id, cluster.allowed, dict(cluster.node_cpus)))


def _cluster_allocate(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Let the cluster use these nodes too; ``ranks`` ({node name: number}, optional) says which to
    fill first, higher first (``nodes=`` a callable: the client ranks the nodes, we place by it)."""
    cluster = _own_cluster(state, conn, args)
    patterns = [str(p) for p in args["nodes"]]
    ranks = {str(name): float(rank) for name, rank in dict(args.get("ranks") or {}).items()}
    if not all(math.isfinite(rank) for rank in ranks.values()):
        raise Refused("ranks must be finite numbers")
    if cluster.allowed is not None:
        _set_allocation(state, cluster, sorted(set(cluster.allowed) | set(patterns)))
    cluster.ranks.update(ranks)
    return {"cluster_id": cluster.cluster_id, "nodes": cluster.allowed}


def _cluster_deallocate(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    """No new jobs of this cluster on these nodes (running ones finish; ``terminate`` cancels them)."""
    cluster = _own_cluster(state, conn, args)
    names = [str(p) for p in args["nodes"]]
    everyone = sorted(n.name for n in state.nodes.values())
    current = cluster.allowed if cluster.allowed is not None else everyone
    kept = [p for p in current if p not in names and not any(fnmatchcase(p, n) for n in names)]
    if cluster.allowed is None:
        kept = [n for n in everyone if not any(fnmatchcase(n, p) for p in names)]
    _set_allocation(state, cluster, kept)
    cancelled: list[str] = []
    if args.get("terminate"):
        doomed = [j for j in cluster.jobs.values() if not j.status.is_final and j.node
                  and any(fnmatchcase(j.node, p) for p in names)]
        state.cancel_jobs(doomed, now)
        cancelled = [j.uid for j in doomed]
    return {"cluster_id": cluster.cluster_id, "nodes": cluster.allowed, "cancelled": cancelled}


def _cluster_set_node_cpus(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    cluster = _own_cluster(state, conn, args)
    node = _find_node(state, str(args["node"]))
    cpus = int(args["cpus"])
    if cpus < 0:
        raise Refused(f"cpus must be >= 0, got {cpus}")
    cluster.node_cpus[node.name] = min(cpus, node.cpus)
    state.persist(RClusterNodes(cluster.cluster_id, cluster.allowed, dict(cluster.node_cpus)))
    return {"node": node.name, "cpus": cluster.node_cpus[node.name]}


def _cluster_node_jobs(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> list[dict[str, Any]]:
    cluster = _own_cluster(state, conn, args)
    node = str(args["node"])
    return [job_view(j) for j in cluster.jobs.values() if j.node == node and not j.status.is_final]


def _cluster_resetup_node(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Run the cluster's cleanup, then setup again before its next job there (dispy's resetup_node)."""
    cluster = _own_cluster(state, conn, args)
    node = _find_node(state, str(args["node"]))
    if node.by_cluster.get(cluster.cluster_id):
        raise Refused(f"node {node.name} still runs jobs of this cluster: wait for them first")
    state.release_on(cluster, node)
    return {"node": node.name, "cluster_id": cluster.cluster_id}


# --- commands ----------------------------------------------------------------------------


def _nodes_drain(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    node = _find_node(state, str(args["name"]))
    node.state = "draining" if node.assigned else "drained"
    state.drained.add(node.name)  # a node that reconnects stays drained
    state.persist(RNodeDrained(node.name, True))
    state.capacity_changed()
    return node_view(node)


def _nodes_undrain(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    node = _find_node(state, str(args["name"]))
    node.state = "up"
    state.drained.discard(node.name)
    state.persist(RNodeDrained(node.name, False))
    state.capacity_changed()
    return node_view(node)


def _policy_show(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    dispatcher = state.dispatcher
    return {"policy": dispatcher.name, "tenants": {name: {"weight": t.weight, "tier": t.tier,
                                                          "max_running": t.max_running, "max_queued": t.max_queued,
                                                          "parent": t.parent}
                                                   for name, t in dispatcher.tenants.items()},
            "queued": len(dispatcher)}


def _policy_set(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    name = str(args["name"])
    try:
        policy = make_policy(name)
    except ValueError as exc:  # UnknownPolicy / bad options: the current policy stays
        raise Refused(str(exc)) from None
    state.set_policy(policy, now)
    return {"policy": policy.name}


Handler = Callable[["SchedulerState", ConnRecord, dict[str, Any], float], Any]
VERBS: dict[str, Handler] = {
    "status": _status,
    "nodes.list": _nodes_list,
    "nodes.show": _nodes_show,
    "nodes.drain": _nodes_drain,
    "nodes.undrain": _nodes_undrain,
    "jobs.list": _jobs_list,
    "jobs.show": _jobs_show,
    "jobs.cancel": _jobs_cancel,
    "why": _why,
    "cluster.stats": _cluster_stats,
    "cluster.nodes": _cluster_nodes,
    "cluster.allocate": _cluster_allocate,
    "cluster.deallocate": _cluster_deallocate,
    "cluster.set_node_cpus": _cluster_set_node_cpus,
    "cluster.node_jobs": _cluster_node_jobs,
    "cluster.resetup_node": _cluster_resetup_node,
    **TENANT_ADMIN_VERBS,
    "policy.show": _policy_show,
    "policy.set": _policy_set,
}
