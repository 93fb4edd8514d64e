"""``NodeRanker``: what a ``nodes=`` callable's answers mean, and what the scheduler is told when."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fairpool.clients.noderank import NodeDescription, NodeRanker


def view(name: str, cpus: int = 2, memory: int = 0, gpus: int = 0) -> dict[str, Any]:
    return {"name": name, "cpus": cpus, "memory": memory, "gpus": gpus, "state": "up"}


@pytest.mark.parametrize(("answer", "rank"), [(3, 3.0), (0.5, 0.5), (True, 1.0), (None, None), (0, None), (-2, None),
                                              (float("nan"), None), (float("inf"), None), ("fast", None)])
def test_a_positive_finite_number_is_a_rank_anything_else_means_do_not_use(answer: Any, rank: float | None) -> None:
    assert NodeRanker(lambda node: answer).evaluate(NodeDescription("n1", 2, 0, 0)) == rank


def test_a_callable_that_raises_is_logged_and_the_node_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    def boom(node: NodeDescription) -> float:
        raise RuntimeError("no idea")

    caplog.set_level(logging.WARNING, logger="fairpool.clients")
    assert NodeRanker(boom, "c1").evaluate(NodeDescription("n1", 2, 0, 0)) is None
    (record,) = caplog.records
    assert "raised for node n1" in record.getMessage() and record.exc_info is not None


def test_each_node_is_ranked_once_until_it_changes() -> None:
    calls: list[NodeDescription] = []

    def rank(node: NodeDescription) -> float:
        calls.append(node)
        return node.cpus

    ranker = NodeRanker(rank)
    assert ranker.decide([view("a", 2), view("b", 4)]) == ({"a": 2.0, "b": 4.0}, [])
    ranker.told({"a": 2.0, "b": 4.0}, [])
    assert ranker.decide([view("a", 2), view("b", 4)]) == ({}, [])  # nothing new to tell
    assert ranker.decide([view("a", 8), view("b", 4)]) == ({"a": 8.0}, [])  # "a" came back bigger
    assert [c.name for c in calls] == ["a", "b", "a"]


def test_a_node_no_longer_wanted_is_told_to_the_scheduler_as_not_to_use() -> None:
    wanted = {"a": 1.0}
    ranker = NodeRanker(lambda node: wanted.get(node.name))
    use, avoid = ranker.decide([view("a")])
    ranker.told(use, avoid)
    wanted.clear()
    assert ranker.decide([view("a", cpus=4)]) == ({}, ["a"])


def test_after_a_reconnect_every_decision_is_told_again() -> None:
    ranker = NodeRanker(lambda node: {"a": 2}.get(node.name))
    use, avoid = ranker.decide([view("a"), view("b")])
    ranker.told(use, avoid)
    ranker.reconnected()
    assert ranker.decide([view("a"), view("b")]) == ({"a": 2.0}, ["b"])
