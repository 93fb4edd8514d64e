"""SchedulerState under random, valid traffic: it never raises and keeps its invariants.

A model plays well-behaved clients and nodes (submits, acks, leaving and
re-attaching; nodes joining, starting and finishing what they hold, vanishing,
falling silent) and checks after every stimulus that every job is in exactly
one place, nothing acknowledged is lost, no dispatch overfills a node, every
result reaches its owner exactly once per connection, and ``statistics()``
agrees with all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    CloseCluster,
    ClusterClosed,
    ClusterOpened,
    Dispatch,
    Error,
    Heartbeat,
    JobResult,
    JobStarted,
    JobsUpdate,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Queued,
    ReleaseCluster,
)
from fairpool.scheduler.events import Send

if TYPE_CHECKING:
    from conftest import Outcome, StateDriver

TIMEOUT = 10.0
CLUSTERS = {"alice": ("a", False), "bob": ("b", True)}  # tenant -> (cluster id, reentrant)
FINAL = {s.value for s in JobStatus if s.is_final}
T = TypeVar("T")
K = TypeVar("K", str, int)


@dataclass
class ModelNode:
    name: str
    held: dict[str, bool] = field(default_factory=dict)  # uid -> started
    defs: set[str] = field(default_factory=set)


class Model:
    def __init__(self, driver: StateDriver, data: st.DataObject, allow_close: bool) -> None:
        self.d = driver
        self.data = data
        self.allow_close = allow_close
        self.clients: dict[str, int | None] = {}
        self.owner: dict[int, str] = {}  # live client conn -> tenant
        self.submitted: dict[str, set[str]] = {t: set() for t in CLUSTERS}  # unacknowledged uids
        self.finals: dict[str, set[str]] = {t: set() for t in CLUSTERS}  # ended, unacknowledged
        self.closed: set[str] = set()
        self.next_uid = 0
        self.nodes: dict[int, ModelNode] = {}
        self.last_seen: dict[int, float] = {}
        self.received: dict[int, set[str]] = {}  # client conn -> uids whose final result it got
        self.finished = 0
        self.expect: dict[str, set[str]] = {}  # tenant -> results due to it in this step
        for tenant in CLUSTERS:
            self.attach(tenant)

    # --- helpers ----------------------------------------------------------------------

    def draw(self, strategy: st.SearchStrategy[T]) -> T:
        return self.data.draw(strategy)

    def pick(self, items: Iterable[K]) -> K | None:
        ordered = sorted(items)
        return self.draw(st.sampled_from(ordered)) if ordered else None

    def tenant_of(self, uid: str) -> str:
        return next(t for t, (cid, _) in CLUSTERS.items() if uid.startswith(cid + "."))

    def result_due(self, uid: str) -> None:
        tenant = self.tenant_of(uid)
        self.finals[tenant].add(uid)
        self.finished += 1
        if self.clients[tenant] is not None:
            self.expect.setdefault(tenant, set()).add(uid)

    def seen(self, conn: int) -> None:
        self.last_seen[conn] = self.d.now

    # --- actions ----------------------------------------------------------------------

    def attach(self, tenant: str) -> Outcome:
        cid, reentrant = CLUSTERS[tenant]
        conn = self.d.client(tenant)
        self.clients[tenant], self.owner[conn], self.received[conn] = conn, tenant, set()
        self.seen(conn)
        self.expect[tenant] = set(self.finals[tenant])  # every unacknowledged result, again
        out = self.d.send(conn, OpenCluster(cid, tenant, b"spec-" + cid.encode(), reentrant))
        assert out.messages(conn, ClusterOpened) == [ClusterOpened(cid)]
        return out

    def submit(self, tenant: str) -> Outcome | None:
        conn = self.clients[tenant]
        if conn is None or tenant in self.closed:
            return None
        cid = CLUSTERS[tenant][0]
        count = self.draw(st.integers(1, 4))
        uids = [f"{cid}.{self.next_uid + i}" for i in range(count)]
        self.next_uid += count
        again = self.pick(self.submitted[tenant])
        if again is not None and self.draw(st.booleans()):
            uids.append(again)  # a resend: acknowledged again, not queued twice
        self.seen(conn)
        out = self.d.submit(conn, cid, uids)
        assert out.messages(conn, Queued) == [Queued(cid, uids, self.d.now)]
        self.submitted[tenant].update(uids)
        return out

    def ack(self, tenant: str) -> Outcome | None:
        conn = self.clients[tenant]
        if conn is None:
            return None
        known = sorted(self.received[conn] & self.finals[tenant])
        chosen = [u for u in known if self.draw(st.booleans())]
        pending = self.pick(self.submitted[tenant] - self.finals[tenant])
        self.seen(conn)
        out = self.d.send(conn, AckResults(chosen + ([pending] if pending else [])))
        self.finals[tenant] -= set(chosen)
        self.submitted[tenant] -= set(chosen)
        return out

    def leave_or_return(self, tenant: str) -> Outcome | None:
        conn = self.clients[tenant]
        if conn is None:
            return self.attach(tenant) if tenant not in self.closed else None
        self.detach(conn)
        return self.d.disconnect(conn)

    def close(self, tenant: str) -> Outcome | None:
        conn = self.clients[tenant]
        if not self.allow_close or conn is None or tenant in self.closed:
            return None
        self.closed.add(tenant)
        held = {u for n in self.nodes.values() for u in n.held}
        for uid in sorted(self.submitted[tenant] - self.finals[tenant] - held):
            self.result_due(uid)  # CANCELLED
        self.seen(conn)
        out = self.d.send(conn, CloseCluster(CLUSTERS[tenant][0]))
        assert out.messages(conn, ClusterClosed) == [ClusterClosed(CLUSTERS[tenant][0])]
        return out

    def join(self) -> Outcome:
        cpus = self.draw(st.integers(1, 3))
        conn = self.d.node_conn(f"n{len(self.d.node_names) + 1}")
        self.nodes[conn] = ModelNode(self.d.node_names[conn])
        self.seen(conn)
        return self.d.send(conn, NodeReady(self.nodes[conn].name, cpus))

    def progress(self, finish: bool) -> Outcome | None:
        conn = self.pick(self.nodes)
        if conn is None:
            return None
        node = self.nodes[conn]
        uid = self.pick(u for u, started in node.held.items() if finish or not started)
        if uid is None:
            return None
        self.seen(conn)
        now = self.d.now
        if not finish:
            node.held[uid] = True
            return self.d.send(conn, NodeProgress([JobStarted(uid, node.name, now)], []))
        runtime = self.draw(st.sampled_from([0.0, 0.001, 1.0]))
        status = self.draw(st.sampled_from(["FINISHED", "FAILED"]))
        del node.held[uid]
        self.result_due(uid)
        result = JobResult(uid, status, b"r", started_at=now - runtime, finished_at=now, node=node.name)
        return self.d.send(conn, NodeProgress([], [result]))

    def stale_result(self) -> Outcome | None:
        """A node reports a job it does not hold (e.g. one taken from it): ignored."""
        conn = self.pick(self.nodes)
        uid = self.pick(set().union(*self.submitted.values()))
        if conn is None or uid is None or uid in self.nodes[conn].held:
            return None
        self.seen(conn)
        return self.d.send(conn, NodeProgress([], [JobResult(uid, "FINISHED")]))

    def vanish(self) -> Outcome | None:
        conn = self.pick(self.nodes)
        if conn is None:
            return None
        self.lose_node(conn)
        return self.d.disconnect(conn)

    def heartbeat(self) -> Outcome | None:
        conn = self.pick(self.last_seen)
        if conn is None:
            return None
        self.seen(conn)
        return self.d.send(conn, Heartbeat(self.d.now))

    def tick(self) -> Outcome:
        self.d.now += self.draw(st.sampled_from([0.5, 3.0, 7.0, 11.0]))
        silent = {c for c, t in self.last_seen.items() if self.d.now - t > TIMEOUT}
        for conn in sorted(silent):
            if conn in self.nodes:
                self.lose_node(conn)
            else:
                self.detach(conn)
        out = self.d.tick()
        assert sorted(out.closed()) == sorted(silent)
        return out

    # --- losses -----------------------------------------------------------------------

    def detach(self, conn: int) -> None:
        tenant = self.owner.pop(conn)
        self.clients[tenant] = None
        del self.last_seen[conn]
        self.expect.pop(tenant, None)

    def lose_node(self, conn: int) -> None:
        node = self.nodes.pop(conn)
        del self.last_seen[conn]
        for uid, started in sorted(node.held.items()):
            if started and not CLUSTERS[self.tenant_of(uid)][1]:
                self.result_due(uid)  # ABANDONED; anything else goes back to the queue

    # --- checking ---------------------------------------------------------------------

    def absorb(self, out: Outcome) -> None:
        got: dict[str, set[str]] = {}
        filled: set[int] = set()
        for instruction in out:
            if not isinstance(instruction, Send):
                continue
            conn, message = instruction.conn, instruction.message
            if conn in self.nodes:
                node = self.nodes[conn]
                if isinstance(message, Dispatch):
                    filled.add(conn)
                    for cdef in message.clusters:
                        assert cdef.cluster_id not in node.defs, "ClusterDef sent twice to a node"
                        node.defs.add(cdef.cluster_id)
                    for task in message.tasks:
                        assert task.cluster_id in node.defs, "task before its ClusterDef"
                        assert all(task.uid not in n.held for n in self.nodes.values()), "dispatched twice"
                        assert task.uid in self.submitted[self.tenant_of(task.uid)]
                        node.held[task.uid] = False
                elif isinstance(message, Heartbeat):
                    pass  # the echo of the node's own heartbeat
                else:
                    assert isinstance(message, ReleaseCluster), message
                    assert not any(u.startswith(message.cluster_id + ".") for u in node.held), \
                        "released while the node holds its jobs"
                    node.defs.discard(message.cluster_id)
            else:
                assert conn in self.owner, f"{message!r} sent to a connection that is gone"
                tenant = self.owner[conn]
                assert not isinstance(message, Error), f"valid traffic refused: {message!r}"
                if isinstance(message, JobsUpdate):
                    for result in message.results:
                        assert result.status in FINAL
                        assert self.tenant_of(result.uid) == tenant, "another tenant's result"
                        assert result.uid not in self.received[conn], "result delivered twice"
                        self.received[conn].add(result.uid)
                        got.setdefault(tenant, set()).add(result.uid)
                    assert all(self.tenant_of(s.uid) == tenant for s in message.started)
        assert got == {t: u for t, u in self.expect.items() if u}
        self.expect = {}
        self.check(filled)

    def check(self, filled: set[int]) -> None:
        s = self.d.state
        order = [job.uid for job in s.policy.order()]
        queued = set(order)
        assert len(order) == len(queued) == len(s.policy)
        assigned: dict[str, int] = {}
        for conn, node in s.nodes.items():
            for uid, job in node.assigned.items():
                assert uid not in assigned and job.node_conn == conn
                assigned[uid] = conn
        for uid, job in s.jobs.items():
            places = (uid in queued) + (uid in assigned) + (job.result is not None)
            assert places == 1, f"{uid} is in {places} places"
            if job.result is not None:
                assert job.status.is_final and job.status == job.result.status
            elif uid in assigned:
                assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
            else:
                assert job.status is JobStatus.QUEUED and job.node_conn is None
        assert set(s.jobs) == set().union(*self.submitted.values()), "a job was lost or invented"
        for tenant, cid_reentrant in CLUSTERS.items():
            ended = {u for u, j in s.jobs.items() if j.cluster_id == cid_reentrant[0] and j.result}
            assert ended == self.finals[tenant]
        assert {c: set(n.assigned) for c, n in s.nodes.items()} == {c: set(n.held) for c, n in self.nodes.items()}
        for conn in filled:
            assert len(s.nodes[conn].assigned) <= s.nodes[conn].capacity(), "dispatch overfilled a node"
        stats = s.statistics()
        assert (stats["queued"], stats["running"], stats["finished"]) == (len(order), len(assigned), self.finished)
        assert (stats["nodes"], stats["connections"]) == (len(self.nodes), len(self.last_seen))


def enabled(model: Model) -> list[str]:
    """The actions that can do something now, repeated by weight (few draws are wasted)."""
    held = [started for node in model.nodes.values() for started in node.held.values()]
    attached = any(conn is not None for conn in model.clients.values())
    actions = ["submit"] * 3 * attached + ["leave", "heartbeat", "heartbeat", "tick"]
    actions += ["join"] * (len(model.nodes) < 4)
    actions += ["vanish", "stale"] * bool(model.nodes)
    actions += ["start"] * 2 * (False in held) + ["finish"] * 4 * bool(held)
    actions += ["ack"] * 2 * any(model.finals.values())
    actions += ["close"] * model.allow_close
    return actions


def run(model: Model, steps: int) -> None:
    for _ in range(steps):
        action = model.draw(st.sampled_from(enabled(model)))
        tenant = model.draw(st.sampled_from(sorted(CLUSTERS)))
        match action:
            case "submit":
                out = model.submit(tenant)
            case "join":
                out = model.join()
            case "start" | "finish":
                out = model.progress(finish=action == "finish")
            case "ack":
                out = model.ack(tenant)
            case "leave":
                out = model.leave_or_return(tenant)
            case "vanish":
                out = model.vanish()
            case "heartbeat":
                out = model.heartbeat()
            case "tick":
                out = model.tick()
            case "stale":
                out = model.stale_result()
            case _:
                out = model.close(tenant)
        if out is not None:
            model.absorb(out)


_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(data=st.data(), steps=st.integers(5, 60))
def test_random_valid_traffic_keeps_every_invariant(
    make_driver: Callable[..., StateDriver], data: st.DataObject, steps: int
) -> None:
    run(Model(make_driver(heartbeat_timeout=TIMEOUT), data, allow_close=False), steps)


@settings(_SETTINGS, derandomize=True, database=None, phases=[Phase.generate])  # no shrinking
@given(data=st.data(), steps=st.integers(5, 60))
def test_random_valid_traffic_with_closes_keeps_every_invariant(
    make_driver: Callable[..., StateDriver], data: st.DataObject, steps: int
) -> None:
    run(Model(make_driver(heartbeat_timeout=TIMEOUT), data, allow_close=True), steps)
