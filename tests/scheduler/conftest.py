"""A synchronous driver for SchedulerState: stimuli in, instructions out, read back easily.

Tests get a ``StateDriver`` from the ``driver`` fixture (or build several with the
session-scoped ``make_driver`` factory, which Hypothesis tests may use). Every
driver call returns an ``Outcome``: the instruction list, with readers for what
each connection was sent and what was journaled. The driver also keeps every
record the state asked to persist (``driver.records``), in order: what a
restart would replay.

This directory is put on ``sys.path`` so that test modules can share the
traffic model (``statemodel``) under --import-mode=importlib.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fairpool.handshake import Peer
from fairpool.messages import (
    AnyMessage,
    ClusterOpened,
    Dispatch,
    Error,
    JobResult,
    JobStarted,
    JobSubmit,
    JobsUpdate,
    Message,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Submit,
)
from fairpool.policies.fifo import FifoPolicy
from fairpool.scheduler.events import (
    Close,
    Connected,
    Disconnected,
    Instruction,
    Log,
    Persist,
    Received,
    Send,
    Stimulus,
    Tick,
)
from fairpool.scheduler.journalrecords import JournalRecord
from fairpool.scheduler.state import SchedulerState

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    # appended, not prepended: ``from conftest import ...`` must keep finding tests/conftest.py
    sys.path.append(_HERE)

M = TypeVar("M", bound=Message)


class Outcome(list[Instruction]):
    """What one ``handle`` call asked the shell to do."""

    def messages(self, conn: int, kind: type[M]) -> list[M]:
        return [i.message for i in self if isinstance(i, Send) and i.conn == conn and isinstance(i.message, kind)]

    def sent_to(self) -> set[int]:
        return {i.conn for i in self if isinstance(i, Send)}

    def closed(self) -> list[int]:
        return [i.conn for i in self if isinstance(i, Close)]

    def logs(self) -> list[Log]:
        return [i for i in self if isinstance(i, Log)]

    def errors(self, conn: int) -> list[str]:
        return [m.reason for m in self.messages(conn, Error)]

    def dispatched(self, conn: int) -> list[str]:
        return [t.uid for d in self.messages(conn, Dispatch) for t in d.tasks]

    def cluster_defs(self, conn: int) -> list[str]:
        return [c.cluster_id for d in self.messages(conn, Dispatch) for c in d.clusters]

    def results(self, conn: int) -> list[JobResult]:
        return [r for u in self.messages(conn, JobsUpdate) for r in u.results]

    def started(self, conn: int) -> list[JobStarted]:
        return [s for u in self.messages(conn, JobsUpdate) for s in u.started]

    def persisted(self) -> list[JournalRecord]:
        return [i.record for i in self if isinstance(i, Persist)]

    def durable(self) -> list[Send]:
        """The sends the shell may only make once everything persisted before them is on disk."""
        return [i for i in self if isinstance(i, Send) and i.durable]


class StateDriver:
    """One SchedulerState with a FIFO policy, driven at ``self.now``."""

    def __init__(self, *, heartbeat_timeout: float = 10.0, result_retention: float = 7 * 24 * 3600.0,
                 first_conn: int = 1) -> None:
        self.state = SchedulerState(FifoPolicy(), heartbeat_timeout=heartbeat_timeout,
                                    result_retention=result_retention)
        self.now = 1000.0
        self._ids = itertools.count(first_conn)
        self.node_names: dict[int, str] = {}
        self.records: list[JournalRecord] = []  # every Persist so far, in order

    # --- raw stimuli ----------------------------------------------------------------

    def handle(self, stimulus: Stimulus) -> Outcome:
        out = Outcome(self.state.handle(stimulus))
        self.records += out.persisted()
        return out

    def burst(self, *stimuli: Stimulus) -> Outcome:
        """Several stimuli handled as one burst (one dispatch pass), as the busy shell does."""
        out = Outcome(self.state.handle_many(stimuli))
        self.records += out.persisted()
        return out

    def connect(self, role: str, tenant: str = "", name: str = "") -> int:
        conn = next(self._ids)
        self.handle(Connected(conn, Peer(role, tenant, name), self.now))
        return conn

    def send(self, conn: int, *messages: AnyMessage) -> Outcome:
        return self.handle(Received(conn, messages, self.now))

    def disconnect(self, conn: int, reason: str = "connection reset") -> Outcome:
        return self.handle(Disconnected(conn, reason, self.now))

    def tick(self) -> Outcome:
        return self.handle(Tick(self.now))

    def expire(self) -> Outcome:
        """Let one heartbeat timeout pass, then tick: what a lost node held is settled now."""
        self.now += self.state.heartbeat_timeout
        return self.tick()

    # --- clients --------------------------------------------------------------------

    def client(self, tenant: str = "alice") -> int:
        return self.connect("client", tenant, f"{tenant}-laptop")

    def open_cluster(self, cluster_id: str = "c1", tenant: str = "alice", *, reentrant: bool = False) -> int:
        """A new client connection with an open cluster."""
        conn = self.client(tenant)
        out = self.send(conn, OpenCluster(cluster_id, "test", b"spec:" + cluster_id.encode(), reentrant))
        assert [m.cluster_id for m in out.messages(conn, ClusterOpened)] == [cluster_id]
        return conn

    def submit(self, conn: int, cluster_id: str, uids: Iterable[str] | int) -> Outcome:
        if isinstance(uids, int):
            uids = [f"{cluster_id}.{i}" for i in range(uids)]
        return self.send(conn, Submit(cluster_id, [JobSubmit(uid, b"args:" + uid.encode()) for uid in uids]))

    # --- nodes ----------------------------------------------------------------------

    def node_conn(self, name: str = "n1") -> int:
        conn = self.connect("node", "", name)
        self.node_names[conn] = name
        return conn

    def node(self, name: str = "n1", cpus: int = 1, *, session: str = "", held: Iterable[str] = (),
             memory: int = 0, gpus: int = 0) -> tuple[int, Outcome]:
        """A ready node, and what joining it caused (usually a Dispatch)."""
        conn = self.node_conn(name)
        return conn, self.send(conn, NodeReady(name, cpus, memory, gpus, session, list(held)))

    def start(self, node: int, *uids: str) -> Outcome:
        started = [JobStarted(uid, self.node_names[node], self.now) for uid in uids]
        return self.send(node, NodeProgress(started, []))

    def finish(self, node: int, *uids: str, status: str = "FINISHED") -> Outcome:
        results = [JobResult(uid, status, b"result:" + uid.encode(), started_at=self.now - 1.0,
                             finished_at=self.now, node=self.node_names[node]) for uid in uids]
        return self.send(node, NodeProgress([], results))

    # --- views ----------------------------------------------------------------------

    def queued(self) -> list[str]:
        return [job.uid for job in self.state.policy.order()]

    def orphans(self) -> dict[str, list[str]]:
        """Node name -> the uids held for it while it is away."""
        held: dict[str, list[str]] = {}
        for name, _session, jobs in self.state.orphans.by_node():
            held.setdefault(name, []).extend(job.uid for job in jobs)
        return {name: sorted(uids) for name, uids in held.items() if uids}

    def assigned(self, conn: int) -> list[str]:
        return sorted(self.state.nodes[conn].assigned)

    def snapshot(self) -> dict[str, Any]:
        """Jobs, clusters, nodes and the queue as plain data; who is connected left out."""
        s = self.state
        return {
            "clusters": {
                cid: (c.tenant, c.closed, c.released, sorted(c.nodes_with_spec))
                for cid, c in s.clusters.items()
            },
            "jobs": {uid: (j.cluster_id, j.status, j.node_conn, j.result) for uid, j in s.jobs.items()},
            "nodes": {conn: sorted(n.assigned) for conn, n in s.nodes.items()},
            "queued": self.queued(),
            "orphans": self.orphans(),
            "finished": s.finished_total,
        }


@pytest.fixture
def driver() -> StateDriver:
    return StateDriver()


@pytest.fixture(scope="session")
def make_driver() -> Callable[..., StateDriver]:
    return StateDriver
