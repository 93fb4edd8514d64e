"""NodePicker: the heap it keeps for plain jobs picks exactly the node the full scan picks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fairpool.messages import JobOptions
from fairpool.scheduler.placement import NodePicker
from fairpool.scheduler.records import ClusterRecord, JobRecord, NodeRecord

CLUSTER = ClusterRecord("c", "alice", "c", b"", False, 0, None, 0.0)


def job(n: int, cpus: float = 0.0) -> JobRecord:
    return JobRecord(f"c.{n}", "c", "alice", b"", n, 0, 0.0, JobOptions(cpus=cpus) if cpus else None)


nodes_strategy = st.lists(
    st.tuples(st.integers(1, 8), st.sampled_from(["up", "up", "up", "draining"]), st.integers(0, 10),
              st.sampled_from([None, 0.001, 1.0])),
    min_size=1, max_size=12)


def make_nodes(spec: list[tuple[int, str, int, float | None]]) -> list[NodeRecord]:
    nodes = []
    for i, (cpus, state, busy, runtime) in enumerate(spec):
        node = NodeRecord(i, f"n{i}", cpus, 0, 0, 0.0)
        node.avg_runtime = runtime
        for k in range(busy):
            node.assign(job(1000 * (i + 1) + k))
        node.state = state
        nodes.append(node)
    return nodes


@settings(max_examples=200, deadline=None)
@given(nodes_strategy, st.lists(st.sampled_from([0.0, 0.0, 0.0, 2.0]), min_size=1, max_size=60))
def test_the_picker_chooses_what_a_scan_of_every_node_chooses(spec: list[tuple[int, str, int, float | None]],
                                                              cpus: list[float]) -> None:
    nodes = make_nodes(spec)
    picker, reference = NodePicker(nodes), NodePicker(nodes)
    for n, want in enumerate(cpus):
        queued = job(n, want)
        chosen = picker.pick(queued, CLUSTER)
        assert chosen is reference._scan(queued, CLUSTER)  # noqa: SLF001 - the reference behaviour
        if chosen is not None:
            chosen.assign(queued)


def test_a_full_node_is_not_picked_and_the_emptiest_one_is() -> None:
    small, big = NodeRecord(1, "small", 2, 0, 0, 0.0), NodeRecord(2, "big", 4, 0, 0, 0.0)
    for node in (small, big):
        node.avg_runtime = 1.0  # no prefetch: capacity is the cpus
    picker = NodePicker([small, big])
    picks = []
    for n in range(7):
        chosen = picker.pick(job(n), CLUSTER)
        picks.append(chosen.name if chosen else None)
        if chosen is not None:
            chosen.assign(job(n))
    assert picks == ["big", "big", "small", "big", "small", "big", None]
