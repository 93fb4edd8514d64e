"""The scheduler's mutable bookkeeping for jobs, clusters, nodes and connections.

Plain slotted classes: they live inside SchedulerState and never leave it
(messages and policy views are what others see).
"""

from __future__ import annotations

from collections import Counter
from fnmatch import fnmatchcase

from fairpool.jobstatus import JobStatus
from fairpool.messages import JobOptions, JobResult

DEFAULT_OPTIONS = JobOptions()

# How much queued work a node may hold beyond its CPUs, in seconds of its jobs'
# average runtime: enough that workers never wait for a round trip on trivial
# jobs, and nothing held back from other nodes when jobs are long.
PREFETCH_HORIZON = 0.02
MAX_PREFETCH = 1024
RUNTIME_EWMA = 0.2


class JobRecord:
    __slots__ = (
        "uid", "cluster_id", "tenant", "payload", "seq", "priority", "status",
        "node_conn", "node", "submitted_at", "started_at", "result", "reported_start",
        "cpus", "memory", "gpus", "timeout", "pin", "cancel_requested", "maybe_started",
    )

    def __init__(self, uid: str, cluster_id: str, tenant: str, payload: bytes, seq: int,
                 priority: int, submitted_at: float, options: JobOptions | None = None) -> None:
        self.uid = uid
        self.cluster_id = cluster_id
        self.tenant = tenant
        self.payload = payload
        self.seq = seq
        self.priority = priority
        self.status = JobStatus.QUEUED
        self.node_conn: int | None = None
        self.node = ""
        self.submitted_at = submitted_at
        self.started_at = 0.0
        self.result: JobResult | None = None
        self.reported_start = False
        self.cancel_requested = False
        # On a node when the scheduler restarted: starts are not journaled, so it may be running.
        self.maybe_started = False
        opts = options or DEFAULT_OPTIONS
        self.cpus = opts.cpus or 1.0
        self.memory = opts.memory
        self.gpus = opts.gpus
        self.timeout = opts.timeout
        self.pin = opts.node  # submit_node: this node only
        if opts.priority:
            self.priority = opts.priority

    @property
    def plain(self) -> bool:
        """One CPU and nothing else: such jobs may be prefetched by nodes."""
        return self.cpus == 1.0 and not self.memory and not self.gpus


class ClusterRecord:
    __slots__ = ("cluster_id", "tenant", "name", "spec", "reentrant", "priority", "conn",
                 "jobs", "closed", "released", "nodes_with_spec", "created_at", "allowed", "node_cpus",
                 "ended", "node_time", "ranks")

    def __init__(self, cluster_id: str, tenant: str, name: str, spec: bytes, reentrant: bool,
                 priority: int, conn: int | None, created_at: float) -> None:
        self.cluster_id = cluster_id
        self.tenant = tenant
        self.name = name
        self.spec = spec
        self.reentrant = reentrant
        self.priority = priority
        self.conn = conn  # the attached client connection, None while detached
        self.jobs: dict[str, JobRecord] = {}
        self.closed = False
        self.released = False
        self.nodes_with_spec: set[int] = set()  # node connections that have its ClusterDef
        self.created_at = created_at
        self.allowed: list[str] | None = None  # node names/patterns it may use (None: every node)
        self.node_cpus: dict[str, int] = {}  # set_node_cpus: at most this many of its jobs there
        # node name -> rank its client gave it (``nodes=`` a callable): higher ranked nodes are filled first.
        # Not journaled: the client tells them again whenever it (re)connects.
        self.ranks: dict[str, float] = {}
        # For stats(): what ended, kept after the results were acknowledged and forgotten.
        self.ended: Counter[str] = Counter()  # final status -> jobs
        self.node_time: dict[str, list[float]] = {}  # node -> [jobs done, seconds they ran]

    def allows(self, node: NodeRecord) -> bool:
        if self.allowed is not None and not any(fnmatchcase(node.name, p) for p in self.allowed):
            return False
        cap = self.node_cpus.get(node.name)
        return cap is None or node.by_cluster.get(self.cluster_id, 0) < cap

    def unfinished(self) -> int:
        return sum(1 for j in self.jobs.values() if not j.status.is_final)


class NodeRecord:
    __slots__ = ("conn", "name", "cpus", "memory", "gpus", "assigned", "avg_runtime",
                 "done", "joined_at", "state", "used_cpus", "used_memory", "used_gpus", "special",
                 "session", "last_seen", "by_cluster")

    def __init__(self, conn: int, name: str, cpus: int, memory: int, gpus: int, now: float,
                 session: str = "") -> None:
        self.conn = conn
        self.session = session
        self.last_seen = now
        self.by_cluster: Counter[str] = Counter()  # assigned jobs per cluster (for set_node_cpus)
        self.name = name
        self.cpus = cpus
        self.memory = memory
        self.gpus = gpus
        self.assigned: dict[str, JobRecord] = {}
        self.avg_runtime: float | None = None
        self.done = 0
        self.joined_at = now
        self.state = "up"
        self.used_cpus = 0.0
        self.used_memory = 0
        self.used_gpus = 0
        self.special = 0  # assigned jobs that are not plain: no prefetch while there are any

    def fits(self, job: JobRecord) -> bool:
        if self.state != "up" or (job.pin and job.pin != self.name):
            return False
        if job.plain and not self.special:
            return len(self.assigned) < self.capacity()
        if self.used_cpus + job.cpus > self.cpus + 1e-9:
            return False
        if job.memory and self.used_memory + job.memory > self.memory:
            return False
        return not job.gpus or self.used_gpus + job.gpus <= self.gpus

    def could_ever_fit(self, job: JobRecord) -> bool:
        """Whether this node, empty, has what the job asks for."""
        return (job.cpus <= self.cpus + 1e-9 and (not job.memory or job.memory <= self.memory)
                and job.gpus <= self.gpus)

    def room(self) -> int:
        """Roughly how many more plain jobs it takes now (for stopping the dispatch loop early)."""
        if self.state != "up":
            return 0
        if not self.special:
            return self.capacity() - len(self.assigned)
        return int(self.cpus - self.used_cpus + 1e-9)

    def assign(self, job: JobRecord) -> None:
        self.assigned[job.uid] = job
        self.by_cluster[job.cluster_id] += 1
        self.used_cpus += job.cpus
        self.used_memory += job.memory
        self.used_gpus += job.gpus
        if not job.plain:
            self.special += 1

    def unassign(self, uid: str) -> JobRecord | None:
        job = self.assigned.pop(uid, None)
        if job is not None:
            left = self.by_cluster[job.cluster_id] - 1
            if left > 0:
                self.by_cluster[job.cluster_id] = left
            else:
                del self.by_cluster[job.cluster_id]
            self.used_cpus -= job.cpus
            self.used_memory -= job.memory
            self.used_gpus -= job.gpus
            if not job.plain:
                self.special -= 1
        return job

    def capacity(self) -> int:
        if self.state != "up":
            return 0
        if self.avg_runtime is None:
            return self.cpus * 2
        prefetch = int(self.cpus * PREFETCH_HORIZON / max(self.avg_runtime, 1e-6))
        return self.cpus + min(prefetch, MAX_PREFETCH)

    def free(self) -> int:
        return self.capacity() - len(self.assigned)

    def observe_runtime(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.avg_runtime is None:
            self.avg_runtime = seconds
        else:
            self.avg_runtime += RUNTIME_EWMA * (seconds - self.avg_runtime)


class ConnRecord:
    __slots__ = ("conn", "role", "tenant", "name", "last_seen", "node", "auth")

    def __init__(self, conn: int, role: str, tenant: str, name: str, now: float, auth: str = "secret") -> None:
        self.conn = conn
        self.role = role
        self.tenant = tenant
        self.name = name
        self.auth = auth  # what proved who it is: "secret" | "token" | "tls" (a new token ends "token" ones)
        self.last_seen = now
        self.node: NodeRecord | None = None
