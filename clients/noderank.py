"""``nodes=`` a callable: the client ranks the pool's nodes, the scheduler places jobs by the ranks.

dispy's ``NodeAllocate`` lets a cluster decide, node by node, whether to use
it; here ``SharedJobCluster(f, nodes=rank)`` takes ``rank(node) -> number |
None``, where ``node`` is a ``NodeDescription`` (name, cpus, memory, gpus):
a number above zero is the node's rank (a job goes to the highest ranked node
with room for it), and None, zero, a negative number -- or an exception,
logged -- means "do not use this node". The scheduler never runs tenant code,
so the callable runs here, in the cluster's connection thread (keep it quick):
the cluster opens allowed on no node at all, and ``NodeRanker`` asks the
scheduler for its nodes (``cluster.nodes``), ranks each one it has not seen
(or sees changed), and tells the decisions with the ``cluster.allocate``
(with ``ranks``) and ``cluster.deallocate`` requests. A node that joins later
is ranked when the scheduler says it joined; after a reconnect every decision
is told again (the scheduler keeps the allowed nodes in its journal, but not
the ranks).

``RankingConnection`` is the cluster connection that runs the ranker beside
itself: a task started with ``serve`` and woken by every (re)open and every
"joined" node event (through ``RankingFeed``).
"""

from __future__ import annotations

import glob
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from fairpool.clients.connection import ClusterConnection
from fairpool.clients.errors import ClusterError
from fairpool.clients.statuses import StatusFeed
from fairpool.messages import NodeEvent

logger = logging.getLogger("fairpool.clients")

#: After a failed exchange with the scheduler, try again after this long (doubling up to the max).
RETRY_MIN = 0.05
RETRY_MAX = 5.0
_UNTOLD: Any = object()


@dataclass(frozen=True)
class NodeDescription:
    """A node as a ``nodes=`` callable sees it (read-only)."""

    name: str
    cpus: int
    memory: int  # bytes (0: the node did not say)
    gpus: int


NodeRank = Callable[[NodeDescription], Any]


class NodeRanker:
    """The ranks a ``nodes=`` callable gave the pool's nodes, and what the scheduler was told of them."""

    def __init__(self, rank: NodeRank, cluster_id: str = "") -> None:
        if not callable(rank):
            raise TypeError(f"nodes= takes node names, patterns or a callable, not {rank!r}")
        self.rank = rank
        self.cluster_id = cluster_id
        self.decided: dict[str, tuple[NodeDescription, float | None]] = {}  # name -> (as ranked, rank)
        self._told: dict[str, float | None] = {}  # on this connection
        self._wakeup = trio.Event()
        self._wakeup.set()  # the first open ranks what is there

    def wake(self) -> None:
        """Look at the nodes again (one joined)."""
        self._wakeup.set()

    def reconnected(self) -> None:
        """A new connection: tell every decision again."""
        self._told.clear()
        self._wakeup.set()

    def evaluate(self, node: NodeDescription) -> float | None:
        """The callable's rank for ``node``; None: not to be used (also when it raises or answers nonsense)."""
        try:
            value = self.rank(node)
        except Exception:
            logger.warning("cluster %s: the nodes= callable raised for node %s: not using that node",
                           self.cluster_id, node.name, exc_info=True)
            return None
        if value is None:
            return None
        try:
            rank = float(value)
        except (TypeError, ValueError):
            logger.warning("cluster %s: the nodes= callable returned %r for node %s, not a number: not using "
                           "that node", self.cluster_id, value, node.name)
            return None
        return rank if math.isfinite(rank) and rank > 0 else None

    def decide(self, views: list[dict[str, Any]]) -> tuple[dict[str, float], list[str]]:
        """Rank the nodes listed (``cluster.nodes`` views) that are new or changed; return what the
        scheduler has yet to hear: (nodes to use, with their ranks; nodes not to use)."""
        for view in views:
            node = NodeDescription(str(view["name"]), int(view["cpus"]), int(view.get("memory") or 0),
                                   int(view.get("gpus") or 0))
            known = self.decided.get(node.name)
            if known is None or known[0] != node:
                rank = self.evaluate(node)
                self.decided[node.name] = (node, rank)
                logger.info("cluster %s: node %s %s", self.cluster_id, node.name,
                            f"ranked {rank:g}" if rank is not None else "not used")
        use = {name: rank for name, (_, rank) in self.decided.items()
               if rank is not None and self._told.get(name, _UNTOLD) != rank}
        avoid = [name for name, (_, rank) in self.decided.items()
                 if rank is None and self._told.get(name, _UNTOLD) is not None]
        return use, avoid

    def told(self, use: dict[str, float], avoid: list[str]) -> None:
        self._told.update(use)
        self._told.update(dict.fromkeys(avoid))

    async def tell(self, connection: ClusterConnection) -> None:
        """One round: list the nodes, rank the new ones, tell the scheduler what changed."""
        views = await connection.request("cluster.nodes", {"cluster_id": connection.cluster_id})
        use, avoid = self.decide(list(views))
        if avoid:
            await connection.request("cluster.deallocate", {"cluster_id": connection.cluster_id,
                                                            "nodes": [glob.escape(name) for name in avoid]})
        if use:
            # exact names, not patterns: a node named "a[1]" means itself
            await connection.request("cluster.allocate", {"cluster_id": connection.cluster_id,
                                                          "nodes": [glob.escape(name) for name in use],
                                                          "ranks": use})
        self.told(use, avoid)
        if views and not any(rank is not None for _, rank in self.decided.values()):
            logger.warning("cluster %s: the nodes= callable accepts none of the %d nodes: its jobs wait",
                           self.cluster_id, len(self.decided))

    async def run(self, connection: ClusterConnection) -> None:
        """Whenever woken: a round of ``tell``; a round that fails is tried again (never raises)."""
        delay = RETRY_MIN
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            try:
                await self.tell(connection)
                delay = RETRY_MIN
            except ClusterError as exc:  # not connected right now, or a request refused
                logger.debug("cluster %s: ranking nodes: %s; trying again", self.cluster_id, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                self._wakeup.set()
            except Exception:
                logger.exception("cluster %s: ranking nodes failed", self.cluster_id)
                await trio.sleep(RETRY_MAX)
                self._wakeup.set()


class RankingConnection(ClusterConnection):
    """A cluster connection that keeps a ``NodeRanker`` telling the scheduler its ranks."""

    def __init__(self, *args: Any, ranker: NodeRanker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ranker = ranker

    async def open(self) -> Any:
        stream = await super().open()
        self.ranker.reconnected()
        return stream

    async def serve(self, stream: Any) -> None:
        failure: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.ranker.run, self)
            try:
                await super().serve(stream)
            except trio.Cancelled:
                raise
            except BaseException as exc:  # re-raised as itself below, not inside an exception group
                failure.append(exc)
            nursery.cancel_scope.cancel()
        if failure:
            raise failure[0]


class RankingFeed(StatusFeed):
    """The status feed of a ranked cluster: a node that joins wakes the ranker."""

    def __init__(self, *args: Any, ranker: NodeRanker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ranker = ranker

    def node_event(self, event: NodeEvent) -> None:
        if event.event == "joined":
            self.ranker.wake()
        super().node_event(event)
