"""A model of well-behaved peers that drives SchedulerState with random, valid traffic.

Clients submit, acknowledge, cancel, leave and re-attach, close; nodes join, start and
finish what they hold, vanish or fall silent, and come back: with the same
session (claiming some of what they held, maybe a job that is queued, maybe
one that is over) or restarted (a new session, holding nothing). After every
stimulus ``Model.absorb`` checks what the state said against what the model
expects, and ``Model.check`` checks the state itself: every job in exactly
one place (queued, on a node, held for a lost node, or ended), nothing
acknowledged lost, no dispatch overfilling a node, every result reaching its
owner exactly once per connection, no node idling below its capacity while
jobs wait (``work_conserving``), and ``statistics()`` agreeing.

Used by test_state_invariants.py and test_replay.py (the driver keeps every
journal record, so a run is also a journal to replay).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from hypothesis import strategies as st

from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    CancelJobs,
    CancelTasks,
    CloseCluster,
    ClusterClosed,
    ClusterOpened,
    Dispatch,
    Error,
    Heartbeat,
    JobResult,
    JobStarted,
    JobsUpdate,
    NodeEvent,
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
STALE = "unknown to the scheduler"
T = TypeVar("T")
K = TypeVar("K", str, int)


@dataclass
class ModelNode:
    name: str
    session: str
    held: dict[str, bool] = field(default_factory=dict)  # uid -> started (as the scheduler knows it)
    defs: set[str] = field(default_factory=set)


@dataclass
class Gone:
    """A node whose connection dropped: what the scheduler holds for it, and what it still has."""

    session: str
    deadline: float
    orphans: dict[str, bool]  # held by the scheduler for the node: uid -> started
    physical: set[str]  # what the node itself still has, whatever the scheduler did meanwhile


class Model:
    def __init__(self, driver: StateDriver, data: st.DataObject, allow_close: bool,
                 work_conserving: bool = False) -> None:
        self.d = driver
        self.work_conserving = work_conserving  # also check: no node has room while a job waits
        self.data = data
        self.allow_close = allow_close
        self.clients: dict[str, int | None] = {}
        self.owner: dict[int, str] = {}  # live client conn -> tenant
        self.submitted: dict[str, set[str]] = {t: set() for t in CLUSTERS}  # unacknowledged uids
        self.finals: dict[str, set[str]] = {t: set() for t in CLUSTERS}  # ended, unacknowledged
        self.closed: set[str] = set()
        self.next_uid = 0
        self.nodes: dict[int, ModelNode] = {}
        self.gone: dict[str, Gone] = {}  # node name -> its lost run
        self.sessions = 0
        self.last_seen: dict[int, float] = {}
        self.received: dict[int, set[str]] = {}  # client conn -> uids whose final result it got
        self.finished = 0
        self.expect: dict[str, set[str]] = {}  # tenant -> results due to it in this step
        self.stale: dict[int, set[str]] = {}  # node conn -> uids it must be told to drop, this step
        self.node_events: set[tuple[str, str]] = set()  # (event, node) clients may hear this step
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

    def reentrant(self, uid: str) -> bool:
        return CLUSTERS[self.tenant_of(uid)][1]

    def live(self) -> set[str]:
        """Jobs the scheduler knows and that have not ended."""
        return set().union(*self.submitted.values()) - set().union(*self.finals.values())

    def on_nodes(self) -> set[str]:
        return {u for n in self.nodes.values() for u in n.held}

    def orphaned(self) -> dict[str, set[str]]:
        return {name: set(g.orphans) for name, g in self.gone.items() if g.orphans}

    def result_due(self, uid: str) -> None:
        tenant = self.tenant_of(uid)
        self.finals[tenant].add(uid)
        self.finished += 1
        if self.clients[tenant] is not None:
            self.expect.setdefault(tenant, set()).add(uid)

    def settle(self, orphans: dict[str, bool], *, received: bool = True) -> None:
        """A lost node's jobs: those of a non-reentrant cluster end ABANDONED (dispatched, they may
        have started unheard of), the rest requeue; jobs the node says it never got requeue too."""
        for uid, _started in sorted(orphans.items()):
            if received and not self.reentrant(uid):
                self.result_due(uid)
        orphans.clear()

    def seen(self, conn: int) -> None:
        self.last_seen[conn] = self.d.now

    # --- client actions ---------------------------------------------------------------

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

    def cancel(self, tenant: str) -> Outcome | None:
        """Cancel some queued jobs or jobs held for a lost node (they end at once), and others' jobs (ignored)."""
        conn = self.clients[tenant]
        if conn is None:
            return None
        mine = self.submitted[tenant] - self.finals[tenant] - self.on_nodes()
        chosen = [u for u in sorted(mine) if self.draw(st.booleans())]
        for uid in chosen:
            self.result_due(uid)  # CANCELLED
            for gone in self.gone.values():
                gone.orphans.pop(uid, None)
        foreign = self.pick(set().union(*self.submitted.values()) - self.submitted[tenant])
        self.seen(conn)
        return self.d.send(conn, CancelJobs(chosen + ([foreign] if foreign else [])))

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
        running_away = {u for g in self.gone.values() for u, started in g.orphans.items() if started}
        for uid in sorted(self.submitted[tenant] - self.finals[tenant] - self.on_nodes() - running_away):
            self.result_due(uid)  # CANCELLED: queued, or on a lost node and never started
            for gone in self.gone.values():
                gone.orphans.pop(uid, None)
        self.seen(conn)
        out = self.d.send(conn, CloseCluster(CLUSTERS[tenant][0]))
        assert out.messages(conn, ClusterClosed) == [ClusterClosed(CLUSTERS[tenant][0])]
        return out

    # --- node actions -----------------------------------------------------------------

    def ready(self, name: str, session: str, held: list[str]) -> tuple[int, Outcome]:
        conn = self.d.node_conn(name)
        self.nodes[conn] = node = ModelNode(name, session)
        self.seen(conn)
        cpus = self.draw(st.integers(1, 3))
        self.node_events.add(("joined", name))
        gone = self.gone.pop(name, None)
        orphans = gone.orphans if gone is not None else {}
        if gone is not None and gone.session != session:
            self.settle(orphans)  # restarted: what it ran is lost
        queued = self.live() - self.on_nodes() - {u for g in self.gone.values() for u in g.orphans}
        stale: set[str] = set()
        for uid in held:
            if uid in orphans:
                node.held[uid] = orphans.pop(uid)  # reclaimed
            elif uid in queued:
                node.held[uid] = False  # dispatched just before a crash: adopted
            else:
                stale.add(uid)
        node.defs = {uid.split(".")[0] for uid in node.held}
        self.settle(orphans, received=False)  # not held: it never got them, they requeue
        if stale:
            self.stale[conn] = stale
        return conn, self.d.send(conn, NodeReady(name, cpus, session=session, held=held))

    def join(self) -> Outcome:
        self.sessions += 1
        name = f"n{self.sessions}"
        return self.ready(name, f"{name}-s{self.sessions}", [])[1]

    def come_back(self, restarted: bool) -> Outcome | None:
        name = self.pick(self.gone)
        if name is None:
            return None
        gone = self.gone[name]
        if restarted:
            self.sessions += 1
            return self.ready(name, f"{name}-s{self.sessions}", [])[1]
        held = [u for u in sorted(gone.physical) if self.draw(st.booleans())]
        extra = self.pick(set().union(*self.submitted.values()))
        if extra is not None and extra not in held and self.draw(st.booleans()):
            held.append(extra)  # queued (adopted), elsewhere or over (stale)
        return self.ready(name, gone.session, held)[1]

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
        for gone in self.gone.values():
            if gone.deadline <= self.d.now:
                self.settle(gone.orphans)
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
        """Held for the node until the deadline: nothing is settled yet."""
        node = self.nodes.pop(conn)
        del self.last_seen[conn]
        self.node_events.add(("failed" if node.held else "left", node.name))
        self.gone[node.name] = Gone(node.session, self.d.now + TIMEOUT, dict(node.held), set(node.held))

    # --- checking ---------------------------------------------------------------------

    def absorb(self, out: Outcome) -> None:
        got: dict[str, set[str]] = {}
        told_stale: dict[int, set[str]] = {}
        filled: set[int] = set()
        for instruction in out:
            if not isinstance(instruction, Send):
                continue
            conn, message = instruction.conn, instruction.message
            assert instruction.durable == isinstance(message, Queued | Heartbeat), instruction
            if conn in self.nodes:
                node = self.nodes[conn]
                if isinstance(message, Dispatch):
                    filled.add(conn)
                    for cdef in message.clusters:
                        assert cdef.cluster_id not in node.defs, "ClusterDef sent twice to a node"
                        node.defs.add(cdef.cluster_id)
                    for task in message.tasks:
                        assert task.cluster_id in node.defs, "task before its ClusterDef"
                        assert task.uid not in self.on_nodes(), "dispatched twice"
                        assert all(task.uid not in g.orphans for g in self.gone.values()), \
                            "dispatched while held for a lost node"
                        assert task.uid in self.submitted[self.tenant_of(task.uid)]
                        node.held[task.uid] = False
                elif isinstance(message, Heartbeat):
                    pass  # the echo of the node's own heartbeat
                elif isinstance(message, CancelTasks):
                    assert message.reason == STALE, message
                    told_stale.setdefault(conn, set()).update(message.uids)
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
                elif isinstance(message, NodeEvent):
                    assert (message.event, message.node) in self.node_events, message
        assert got == {t: u for t, u in self.expect.items() if u}
        assert told_stale == self.stale
        self.expect, self.stale, self.node_events = {}, {}, set()
        self.check(filled)

    def check(self, filled: set[int]) -> None:
        s = self.d.state
        order = [job.uid for job in s.policy.order()]
        queued = set(order)
        assert len(order) == len(queued) == len(s.policy)
        assigned: dict[str, int] = {}
        for conn, node in s.nodes.items():
            for uid, job in node.assigned.items():
                assert uid not in assigned and job.node_conn == conn and job.node == node.name
                assigned[uid] = conn
        orphaned = {job.uid: name for name, _, jobs in s.orphans.by_node() for job in jobs}
        assert len(orphaned) == len(s.orphans)
        started = {u: st for n in self.nodes.values() for u, st in n.held.items()}
        started.update({u: st for g in self.gone.values() for u, st in g.orphans.items()})
        for uid, job in s.jobs.items():
            places = (uid in queued) + (uid in assigned) + (uid in orphaned) + (job.result is not None)
            assert places == 1, f"{uid} is in {places} places"
            if job.result is not None:
                assert job.status.is_final and job.status == job.result.status
            elif uid in queued:
                assert job.status is JobStatus.QUEUED and job.node_conn is None
            else:
                assert uid in started, f"{uid} is on a node the model does not know of"
                assert job.status is (JobStatus.RUNNING if started[uid] else JobStatus.QUEUED)
                if uid in orphaned:
                    assert job.node_conn is None and job.node == orphaned[uid]
        assert set(s.jobs) == set().union(*self.submitted.values()), "a job was lost or invented"
        for tenant, (cid, _) in CLUSTERS.items():
            ended = {u for u, j in s.jobs.items() if j.cluster_id == cid and j.result}
            assert ended == self.finals[tenant], (tenant, sorted(ended ^ self.finals[tenant]))
        assert {c: set(n.assigned) for c, n in s.nodes.items()} == {c: set(n.held) for c, n in self.nodes.items()}
        by_node: dict[str, set[str]] = {}
        for uid, name in orphaned.items():
            by_node.setdefault(name, set()).add(uid)
        assert by_node == self.orphaned()
        assert {job.uid for job in s.dispatcher.running()} == set(assigned) | set(orphaned), \
            "the policy charges other jobs than those on nodes"
        for conn in filled:
            assert len(s.nodes[conn].assigned) <= s.nodes[conn].capacity(), "dispatch overfilled a node"
        if self.work_conserving and order:  # every job here is plain: any node with room can take the head
            assert all(len(n.assigned) >= n.capacity() for n in s.nodes.values()), "a node idles while jobs wait"
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
    actions += ["return", "return", "restart"] * bool(model.gone)
    actions += ["start"] * 2 * (False in held) + ["finish"] * 4 * bool(held)
    actions += ["ack"] * 2 * any(model.finals.values())
    actions += ["cancel"] * attached
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
            case "return" | "restart":
                out = model.come_back(restarted=action == "restart")
            case "start" | "finish":
                out = model.progress(finish=action == "finish")
            case "ack":
                out = model.ack(tenant)
            case "cancel":
                out = model.cancel(tenant)
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
