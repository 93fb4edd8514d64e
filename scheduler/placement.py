"""Where a job goes: the emptiest node that fits, found without scanning every node for every job.

One ``NodePicker`` serves one scheduling pass. Plain jobs (one cpu, nothing
else asked, any node allowed) -- nearly all of them -- come from a heap keyed
by free cpus, so a pass that places J jobs on N nodes costs J log N, not
J x N: with a hundred nodes the scan was most of the scheduler's time, and an
admin's ``status`` waited behind it. Other jobs (resources, a pinned node,
node patterns, per-node caps, a ranking) scan. Both pick the same node: the
one with the most free cpus among those that fit, the first one on a tie.
"""

from __future__ import annotations

import heapq

from fairpool.scheduler.records import ClusterRecord, JobRecord, NodeRecord


class NodePicker:
    def __init__(self, nodes: list[NodeRecord]) -> None:
        self._nodes = nodes
        self._heap: list[tuple[float, int, NodeRecord]] | None = None

    def pick(self, job: JobRecord, cluster: ClusterRecord) -> NodeRecord | None:
        if job.plain and not job.pin and cluster.allowed is None and not cluster.node_cpus and not cluster.ranks:
            return self._pick_plain(job)
        if cluster.ranks:
            return self._scan_ranked(job, cluster)
        return self._scan(job, cluster)

    def _scan_ranked(self, job: JobRecord, cluster: ClusterRecord) -> NodeRecord | None:
        """The cluster's client ranked the nodes (``nodes=`` a callable): of the nodes that fit, those
        with a cpu free for it first (no job waits in a prefetch queue while a node it may use idles),
        then the highest ranked, then the emptiest."""
        ranks = cluster.ranks
        node: NodeRecord | None = None
        best: tuple[bool, float, float] = (False, 0.0, 0.0)
        for candidate in self._nodes:
            if candidate.fits(job) and cluster.allows(candidate):
                free = candidate.cpus - candidate.used_cpus
                key = (free >= job.cpus - 1e-9, ranks.get(candidate.name, 0.0), free)
                if node is None or key > best:
                    node, best = candidate, key
        return node

    def _scan(self, job: JobRecord, cluster: ClusterRecord) -> NodeRecord | None:
        node: NodeRecord | None = None
        most = 0.0
        for candidate in self._nodes:  # spread: the emptiest node that fits (prefetch may overbook cpus)
            if (candidate.fits(job) and cluster.allows(candidate)
                    and (node is None or candidate.cpus - candidate.used_cpus > most)):
                node, most = candidate, candidate.cpus - candidate.used_cpus
        return node

    def _pick_plain(self, job: JobRecord) -> NodeRecord | None:
        heap = self._heap
        if heap is None:
            heap = self._heap = [(n.used_cpus - n.cpus, i, n) for i, n in enumerate(self._nodes) if n.state == "up"]
            heapq.heapify(heap)
        while heap:
            key, index, node = heap[0]
            current = node.used_cpus - node.cpus
            if key != current:
                # It took jobs since it was filed (keys only grow in a pass: a stale key is never
                # worse than the node's real one, so the top, once current, is the real best).
                heapq.heapreplace(heap, (current, index, node))
                continue
            if node.fits(job):
                return node
            heapq.heappop(heap)  # no room for a plain job; it only fills up during a pass
        return None
