"""What a cluster can ask and tell the scheduler about nodes: dispy's node controls.

``nodes()``, ``stats()``, ``node_jobs()``, ``print_status()``, ``why(job)`` read; ``allocate_node``,
``deallocate_node``, ``close_node``, ``set_node_cpus`` and ``resetup_node`` change
where (and how much) this cluster runs (``nodes=`` a callable ranks the nodes for the
cluster instead: ``fairpool.clients.noderank``; ``nodes()`` then shows each node's rank). A mixin over a cluster that provides
``_ask(verb, args)``: one Request to the scheduler, its reply's body back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import IO, Any


@dataclass(frozen=True)
class NodeInfo:
    """A node as this cluster sees it."""

    name: str
    cpus: int
    memory: int  # bytes
    gpus: int
    busy: int  # cpus running jobs now (all tenants)
    state: str  # up | draining | drained | down
    done: int  # jobs finished there since it joined
    last_heartbeat: float | None  # time.time() of the last message from it
    allocated: bool  # this cluster may run jobs there
    cluster_cpus: int | None  # set_node_cpus cap for this cluster (None: its cpus)
    cluster_jobs: int  # this cluster's jobs there now
    rank: float | None = None  # the rank a ``nodes=`` callable gave it (None: not ranked, or not to be used)

    @classmethod
    def from_reply(cls, item: dict[str, Any]) -> NodeInfo:
        return cls(item["name"], item["cpus"], item["memory"], item["gpus"], item["busy"], item["state"],
                   item["done"], item["last_heartbeat"], item["allocated"], item["cluster_cpus"],
                   item["cluster_jobs"], item.get("rank"))


class NodeControls:
    cluster_id: str

    def _ask(self, verb: str, args: dict[str, Any]) -> Any:
        raise NotImplementedError

    def nodes(self) -> list[NodeInfo]:
        """The pool's nodes: cpus, memory, gpus, busy, jobs done, last heartbeat, and this cluster's use."""
        return [NodeInfo.from_reply(item) for item in self._ask("cluster.nodes", {"cluster_id": self.cluster_id})]

    def stats(self) -> dict[str, Any]:
        """This cluster's jobs by status and, per node, jobs, jobs done and the seconds they ran."""
        return dict(self._ask("cluster.stats", {"cluster_id": self.cluster_id}))

    def why(self, job: Any) -> str:
        """Why a job waits (or how it ended), in the scheduler's words: its place in the policy,
        and what in the pool holds it ("no node that is up has the resources it asks for"...)."""
        uid = getattr(job, "uid", job)
        reply = self._ask("why", {"uid": uid})
        explanation = str(reply["explanation"])
        if hasattr(job, "status_reason") and not getattr(job, "done", lambda: True)():
            job.status_reason = explanation
        return explanation

    def node_jobs(self, node: str) -> list[str]:
        """The uids of this cluster's jobs on ``node`` now (queued there or running)."""
        jobs = self._ask("cluster.node_jobs", {"cluster_id": self.cluster_id, "node": node})
        return [job["uid"] for job in jobs]

    def allocate_node(self, node: str) -> None:
        """Let the cluster run on ``node`` (a name or pattern) again, or as well."""
        self._ask("cluster.allocate", {"cluster_id": self.cluster_id, "nodes": [node]})

    def deallocate_node(self, node: str) -> None:
        """No new jobs of this cluster on ``node``; those running there finish."""
        self._ask("cluster.deallocate", {"cluster_id": self.cluster_id, "nodes": [node]})

    def close_node(self, node: str, terminate: bool = False) -> list[str]:
        """Deallocate ``node``; with ``terminate``, also cancel this cluster's jobs there (their uids)."""
        reply = self._ask("cluster.deallocate", {"cluster_id": self.cluster_id, "nodes": [node],
                                                 "terminate": terminate})
        return list(reply["cancelled"])

    def set_node_cpus(self, node: str, cpus: int) -> int:
        """Run at most ``cpus`` of this cluster's jobs at once on ``node``; the cap applied."""
        return int(self._ask("cluster.set_node_cpus", {"cluster_id": self.cluster_id, "node": node,
                                                         "cpus": cpus})["cpus"])

    def resetup_node(self, node: str) -> None:
        """Run the cluster's cleanup on ``node`` now, and its setup again before its next job there."""
        self._ask("cluster.resetup_node", {"cluster_id": self.cluster_id, "node": node})

    def print_status(self, file: IO[str] | None = None) -> None:
        """The per-node table dispy users know: jobs done and the seconds they took, per node."""
        out = file or sys.stdout
        stats = self.stats()
        nodes = {n.name: n for n in self.nodes()}
        print(f"{'Node':<24} {'CPUs':>5} {'Jobs':>6} {'Sec/Job':>8} {'Node Time Sec':>14}", file=out)
        print("-" * 61, file=out)
        total_jobs, total_time = 0, 0.0
        for name, entry in sorted(stats["by_node"].items()):
            done, cpu_time = entry["done"], entry["cpu_time"]
            cpus = nodes[name].cpus if name in nodes else 0
            per_job = cpu_time / done if done else 0.0
            print(f"{name:<24} {cpus:>5} {done:>6} {per_job:>8.3f} {cpu_time:>14.3f}", file=out)
            total_jobs += done
            total_time += cpu_time
        print(f"\nTotal job time: {total_time:.3f} sec over {total_jobs} jobs; "
              + ", ".join(f"{status.lower()} {count}" for status, count in sorted(stats["by_status"].items())),
              file=out)
