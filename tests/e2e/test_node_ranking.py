"""End to end: ``nodes=`` a callable that ranks nodes (dispy's NodeAllocate), with real nodes.

The callable runs in the client, on a description of each node (name, cpus,
memory, gpus): a node it gives no rank (None, 0, or an exception, logged) is
never used; of the others, jobs go to the highest ranked node with room. A
node that joins later is ranked when it joins.
"""

from __future__ import annotations

import logging

import pytest
from conftest import wait_for

from fairpool import SharedJobCluster
from fairpool.clients.noderank import NodeDescription

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("in_tmp_dir")]

RANKS = {"best": 10, "ok": 1}  # "avoid": not ranked, not used


def rank(node: NodeDescription):
    return RANKS.get(node.name)


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def ranks_of(cluster) -> dict[str, float | None]:
    return {n.name: n.rank for n in cluster.nodes()}


def test_a_ranking_callable_excludes_a_node_and_prefers_the_highest_ranked(scheduler, start_node, cluster_kwargs):
    for name in ("avoid", "best", "ok"):
        start_node(cpus=1, name=name)
    seen: list[NodeDescription] = []

    def ranking(node: NodeDescription):
        seen.append(node)
        return rank(node)

    with SharedJobCluster(nap, nodes=ranking, **cluster_kwargs) as cluster:
        wait_for(lambda: ranks_of(cluster) == {"avoid": None, "best": 10.0, "ok": 1.0}, timeout=30,
                 message="the three nodes were ranked")
        assert {n.name: n.allocated for n in cluster.nodes()} == {"avoid": False, "best": True, "ok": True}
        assert {(d.name, d.cpus) for d in seen} == {("avoid", 1), ("best", 1), ("ok", 1)}
        # one at a time: each goes to the best node, which always has room
        alone = [cluster.submit(0).result(timeout=30) is not None and cluster.jobs()[-1].node for _ in range(4)]
        assert alone == ["best"] * 4
        # more than the best node can run at once: the next one runs some, "avoid" none
        burst = [cluster.submit(0.5) for _ in range(12)]
        assert [job.result(timeout=60) for job in burst] == [0.5] * 12
        assert {job.node for job in burst} == {"best", "ok"}


def test_a_node_that_joins_later_is_ranked_when_it_joins(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="ok")
    with SharedJobCluster(nap, nodes=rank, **cluster_kwargs) as cluster:
        wait_for(lambda: ranks_of(cluster) == {"ok": 1.0}, timeout=30, message="the first node was ranked")
        assert cluster.submit(0).result(timeout=30) == 0 and cluster.jobs()[-1].node == "ok"
        start_node(cpus=1, name="best")
        start_node(cpus=1, name="avoid")
        wait_for(lambda: ranks_of(cluster) == {"avoid": None, "best": 10.0, "ok": 1.0}, timeout=30,
                 message="the nodes that joined later were ranked")
        later = []
        for _ in range(3):  # one at a time: each goes to the best node, which has a free cpu for it
            later.append(cluster.submit(0))
            later[-1].result(timeout=30)
        assert {job.node for job in later} == {"best"}


def test_a_callable_that_raises_for_a_node_is_logged_and_that_node_is_not_used(scheduler, start_node, cluster_kwargs,
                                                                                 caplog):
    start_node(cpus=1, name="ok")
    start_node(cpus=1, name="bad")

    def picky(node: NodeDescription):
        if node.name == "bad":
            raise ValueError("cannot rank this one")
        return 1

    caplog.set_level(logging.WARNING, logger="fairpool.clients")
    with SharedJobCluster(nap, nodes=picky, **cluster_kwargs) as cluster:
        wait_for(lambda: ranks_of(cluster) == {"bad": None, "ok": 1.0}, timeout=30, message="both nodes were ranked")
        jobs = [cluster.submit(0.2) for _ in range(6)]
        assert [job.result(timeout=60) for job in jobs] == [0.2] * 6
        assert {job.node for job in jobs} == {"ok"}
    raised = [r for r in caplog.records if "nodes= callable raised for node bad" in r.getMessage()]
    assert raised and raised[0].exc_info is not None and "cannot rank this one" in str(raised[0].exc_info[1])
