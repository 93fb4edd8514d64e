"""A fake scheduler (that also plays the node) on 127.0.0.1, for the client tests.

The client runs its own trio loop on a background thread, so the fake runs
``trio.run`` on another thread. It speaks the real protocol (wire handshake,
messages), records every message it receives, and runs jobs inline by
unpickling the cluster's code -- which the real scheduler never does, but a
fake standing in for scheduler *and* node may. Knobs make it misbehave on
purpose: drop the connection on a given Submit, drop it after queueing but
before delivering results, hold jobs until released, hold back the Queued
acknowledgements, refuse the cluster.
``CancelJobs`` ends a held job CANCELLED (as the scheduler does a queued
one); ``push`` sends any message (provisional results, file chunks, node
events...) to a cluster's client, as the scheduler forwards them.

Re-attaching works as in the real scheduler: an ``OpenCluster`` for a cluster
that exists and is the same tenant's answers ``ClusterOpened``, then re-sends
in one ``JobsUpdate`` a ``JobStarted`` for each job started and not ended and
every result not acknowledged; another tenant's cluster, or an unknown one
opened with an empty spec, gets ``Error("no such cluster")`` (the real
scheduler would open an empty cluster: the client probes first, so it never
asks). It answers the two requests a re-attaching client probes with:
``cluster.stats`` (is the cluster there?) and ``jobs.list`` (the cluster's
jobs, as ``{"uid", "status", "submitted_at"}``), unless
``answer_requests=False``; ``forget(uid)`` drops a job (a purged result).
A cluster whose client hangs up stays, and its jobs go on (``release`` runs
them while nobody listens; their results wait for a re-attach).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cloudpickle
import trio

from fairpool.address import Address
from fairpool.clients import connection
from fairpool.clusterspec import decode_spec
from fairpool.handshake import AuthError, Peer
from fairpool.messages import (
    AckResults,
    CancelJobs,
    CloseCluster,
    ClusterClosed,
    ClusterOpened,
    Error,
    Heartbeat,
    JobResult,
    JobStarted,
    JobSubmit,
    JobsUpdate,
    Message,
    OpenCluster,
    Queued,
    Reply,
    Request,
    Submit,
)
from fairpool.protocol import ProtocolError
from fairpool.wire import ConnectionClosed, MessageStream, accept_handshake

SECRET = b"client-tests-secret"
FAST_TIMING = connection.ConnectionTiming(
    connect_timeout=5.0,
    heartbeat_interval=0.1,
    heartbeat_timeout=3.0,
    reconnect_min_delay=0.02,
    reconnect_max_delay=0.2,
)


class FakeOutbox:
    """Like fairpool.wire.Outbox, plus: drop the connection once what is queued has been sent."""

    def __init__(self) -> None:
        self.items: list[Message] = []
        self.wakeup = trio.Event()
        self.dropping = False

    def put(self, message: Message) -> None:
        self.items.append(message)
        self.wakeup.set()

    def drop_after_sending(self) -> None:
        self.dropping = True
        self.wakeup.set()

    async def run_writer(self, stream: MessageStream, scope: trio.CancelScope) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            items, self.items = self.items, []
            if items:
                await stream.send(*items)
            if self.dropping:
                scope.cancel()
                return


NOT_FOUND = "no such cluster"


@dataclass
class FakeCluster:
    cluster_id: str
    computation: Callable[..., Any]
    tenant: str = ""
    jobs: dict[str, JobSubmit] = field(default_factory=dict)
    started: dict[str, JobStarted] = field(default_factory=dict)  # started and not ended
    unacked: dict[str, JobResult] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)  # forgotten
    queued_at: dict[str, float] = field(default_factory=dict)
    held: list[JobSubmit] = field(default_factory=list)
    outbox: FakeOutbox | None = None


class FakeScheduler:
    def __init__(
        self,
        secret: bytes = SECRET,
        *,
        hold_jobs: bool = False,
        drop_on_submit: int = 0,
        drop_before_results: bool = False,
        refuse_open: str = "",
        silent_connections: frozenset[int] = frozenset(),
        hold_queued: bool = False,
        answer_requests: bool = True,
    ) -> None:
        self.secret = secret
        self.hold_jobs = hold_jobs
        self.drop_on_submit = drop_on_submit  # drop the connection when the Nth Submit arrives
        self.drop_before_results = drop_before_results  # once: queue, then drop before any result
        self.refuse_open = refuse_open
        self.silent_connections = silent_connections  # connection numbers that get no heartbeats
        self.hold_queued = hold_queued  # keep Queued acknowledgements until send_queued()
        self._queued_held: list[tuple[FakeOutbox, Queued]] = []
        self.answer_requests = answer_requests  # else every Request gets "unknown request"
        self.peers: list[Peer] = []
        self.clusters: dict[str, FakeCluster] = {}
        self.connections = 0
        self.messages: list[tuple[int, Message]] = []  # (connection number, message)
        self._changed = threading.Condition()
        self._submits = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._port: Future[int] = Future()

    # --- test thread -----------------------------------------------------------

    def start(self) -> FakeScheduler:
        self._thread.start()
        self.port = self._port.result(10)
        return self

    def stop(self) -> None:
        if self._token is not None:
            try:
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)  # type: ignore[union-attr]
            except trio.RunFinishedError:
                pass
        self._thread.join(10)

    @property
    def address(self) -> str:
        return str(Address("127.0.0.1", self.port))

    def received(self, kind: type[Message]) -> list[Any]:
        with self._changed:
            return [m for _, m in self.messages if isinstance(m, kind)]

    def received_on(self, connection_number: int, kind: type[Message]) -> list[Any]:
        with self._changed:
            return [m for n, m in self.messages if n == connection_number and isinstance(m, kind)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"condition not reached within {timeout}s")

    def release(self, uids: Collection[str] | None = None) -> None:
        """Run the held jobs (those of ``uids``; None: all) and send the results."""
        trio.from_thread.run_sync(self._release, uids, trio_token=self._token)

    def start_held(self, uids: Collection[str] | None = None) -> None:
        """Tell clients their held jobs (those of ``uids``; None: all) started, without running them."""
        trio.from_thread.run_sync(self._start_held, uids, trio_token=self._token)

    def forget(self, uid: str) -> None:
        """Drop a job as if its result had been purged after the retention time."""
        trio.from_thread.run_sync(self._forget, uid, trio_token=self._token)

    def _forget(self, uid: str) -> None:
        for cluster in self.clusters.values():
            if cluster.jobs.pop(uid, None) is not None:
                cluster.held = [job for job in cluster.held if job.uid != uid]
                cluster.started.pop(uid, None)
                cluster.unacked.pop(uid, None)

    def send_queued(self) -> None:
        """Send the Queued acknowledgements held back (``hold_queued``), and stop holding them."""
        trio.from_thread.run_sync(self._send_queued, trio_token=self._token)

    def push(self, cluster_id: str, *messages: Message) -> None:
        """Send these messages to the cluster's client."""
        trio.from_thread.run_sync(self._push, cluster_id, messages, trio_token=self._token)

    def broadcast(self, message: Message) -> None:
        """Send a message to every connected cluster's client."""
        for cluster_id in list(self.clusters):
            self.push(cluster_id, message)

    def held_uids(self) -> list[str]:
        return [job.uid for cluster in self.clusters.values() for job in cluster.held]

    # --- fake's trio thread ------------------------------------------------------

    def _main(self) -> None:
        trio.run(self._serve)

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
                self._port.set_result(listeners[0].socket.getsockname()[1])

    def _record(self, number: int, message: Message) -> None:
        with self._changed:
            self.messages.append((number, message))
            self._changed.notify_all()

    async def _handle(self, tcp: trio.SocketStream) -> None:
        stream = MessageStream(tcp)
        try:
            peer = await accept_handshake(stream, self.secret)
        except (AuthError, ProtocolError, ConnectionClosed):
            await stream.aclose()
            return
        with self._changed:
            self.peers.append(peer)
            self.connections += 1
            number = self.connections
            self._changed.notify_all()
        outbox = FakeOutbox()
        heartbeating = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(outbox.run_writer, stream, nursery.cancel_scope)
                while not outbox.dropping:
                    messages = await stream.receive()
                    if not heartbeating and number not in self.silent_connections:
                        # Not before the client has spoken: fairpool.wire.open_connection refuses
                        # anything that arrives in the same read as ServerAuth.
                        heartbeating = True
                        nursery.start_soon(self._heartbeats, outbox)
                    for message in messages:
                        self._record(number, message)
                        if not self._on_message(message, outbox, peer.tenant):
                            outbox.drop_after_sending()
                            break
                await trio.sleep_forever()  # until the writer has sent the rest and cancels us
        except* (ConnectionClosed, ProtocolError):
            pass
        finally:
            for cluster in self.clusters.values():
                if cluster.outbox is outbox:
                    cluster.outbox = None
            await stream.aclose()

    async def _heartbeats(self, outbox: FakeOutbox) -> None:
        while True:
            outbox.put(Heartbeat(time.time()))
            await trio.sleep(0.2)

    def _on_message(self, message: Message, outbox: FakeOutbox, tenant: str = "") -> bool:
        """Handle one message; False means: drop this connection now."""
        if isinstance(message, OpenCluster):
            if self.refuse_open:
                outbox.put(Error(self.refuse_open, ref=message.cluster_id))
                return True
            cluster = self.clusters.get(message.cluster_id)
            if (cluster is None and not message.spec) or (cluster is not None and cluster.tenant != tenant):
                outbox.put(Error(NOT_FOUND, ref=message.cluster_id))
                return True
            if cluster is None:
                computation, _setup, _cleanup = cloudpickle.loads(decode_spec(message.spec).code)
                cluster = self.clusters[message.cluster_id] = FakeCluster(message.cluster_id, computation, tenant)
            cluster.outbox = outbox
            outbox.put(ClusterOpened(message.cluster_id))
            if cluster.started or cluster.unacked:  # re-attach: what runs, and every result not acknowledged
                outbox.put(JobsUpdate(list(cluster.started.values()), list(cluster.unacked.values())))
        elif isinstance(message, Submit):
            self._submits += 1
            if self._submits == self.drop_on_submit:
                return False
            cluster = self.clusters[message.cluster_id]
            new = [job for job in message.jobs if job.uid not in cluster.jobs]
            for job in new:
                cluster.jobs[job.uid] = job
                cluster.queued_at[job.uid] = time.time()
            queued = Queued(message.cluster_id, [job.uid for job in message.jobs], time.time())
            if self.hold_queued:
                self._queued_held.append((outbox, queued))
            else:
                outbox.put(queued)
            if self.drop_before_results:
                self.drop_before_results = False
                for job in new:
                    cluster.unacked[job.uid] = self._run(cluster, job)
                return False
            if self.hold_jobs:
                cluster.held.extend(new)
            else:
                self._deliver(cluster, new)
        elif isinstance(message, AckResults):
            for cluster in self.clusters.values():
                for uid in message.uids:
                    if cluster.unacked.pop(uid, None) is not None:
                        cluster.acked.add(uid)
        elif isinstance(message, CloseCluster):
            outbox.put(ClusterClosed(message.cluster_id))
        elif isinstance(message, CancelJobs):
            self._cancel(set(message.uids))
        elif isinstance(message, Request):
            outbox.put(self._answer(message, tenant))
        return True

    def _answer(self, request: Request, tenant: str) -> Reply:
        if not self.answer_requests:
            return Reply(request.id, False, error=f"unknown request {request.verb!r}")
        if request.verb == "cluster.stats":
            cluster = self.clusters.get(str(request.args["cluster_id"]))
            if cluster is None or cluster.tenant != tenant:
                return Reply(request.id, False, error=NOT_FOUND)
            return Reply(request.id, True, {"cluster_id": cluster.cluster_id, "jobs": len(self._held_jobs(cluster))})
        if request.verb == "jobs.list":
            cluster = self.clusters.get(str(request.args.get("cluster")))
            if cluster is None or cluster.tenant != tenant:
                return Reply(request.id, True, [])
            views = [{"uid": uid, "cluster_id": cluster.cluster_id, "tenant": tenant, "status": status,
                      "submitted_at": cluster.queued_at.get(uid, 0.0)} for uid, status in self._held_jobs(cluster)]
            return Reply(request.id, True, views[:int(request.args.get("limit") or 10_000)])
        return Reply(request.id, False, error=f"unknown request {request.verb!r}")

    @staticmethod
    def _held_jobs(cluster: FakeCluster) -> list[tuple[str, str]]:
        def status(uid: str) -> str:
            result = cluster.unacked.get(uid)
            return result.status if result else "RUNNING" if uid in cluster.started else "QUEUED"

        return [(uid, status(uid)) for uid in cluster.jobs if uid not in cluster.acked]

    def _cancel(self, uids: set[str]) -> None:
        for cluster in self.clusters.values():
            cancelled = [job for job in cluster.held if job.uid in uids]
            cluster.held = [job for job in cluster.held if job.uid not in uids]
            results = [JobResult(job.uid, "CANCELLED", reason="cancelled by the client") for job in cancelled]
            for result in results:
                cluster.started.pop(result.uid, None)
            cluster.unacked.update((r.uid, r) for r in results)
            if cluster.outbox is not None and results:
                cluster.outbox.put(JobsUpdate([], results))

    def _deliver(self, cluster: FakeCluster, jobs: list[JobSubmit]) -> None:
        started = [JobStarted(job.uid, "fake-node", time.time()) for job in jobs]
        results = [self._run(cluster, job) for job in jobs]
        for job in jobs:
            cluster.started.pop(job.uid, None)
        cluster.unacked.update((r.uid, r) for r in results)
        if cluster.outbox is not None and jobs:
            cluster.outbox.put(JobsUpdate(started, results))

    def _start_held(self, uids: Collection[str] | None) -> None:
        for cluster in self.clusters.values():
            started = [JobStarted(job.uid, "fake-node", time.time()) for job in cluster.held
                       if uids is None or job.uid in uids]
            cluster.started.update((s.uid, s) for s in started)
            if cluster.outbox is not None and started:
                cluster.outbox.put(JobsUpdate(started, []))

    def _send_queued(self) -> None:
        self.hold_queued = False
        held, self._queued_held = self._queued_held, []
        for outbox, queued in held:
            outbox.put(queued)

    def _push(self, cluster_id: str, messages: tuple[Message, ...]) -> None:
        outbox = self.clusters[cluster_id].outbox
        assert outbox is not None, "the cluster's client is not connected"
        for message in messages:
            outbox.put(message)

    def _release(self, uids: Collection[str] | None) -> None:
        for cluster in self.clusters.values():
            held = [job for job in cluster.held if uids is None or job.uid in uids]
            cluster.held = [job for job in cluster.held if job not in held]
            self._deliver(cluster, held)

    @staticmethod
    def _run(cluster: FakeCluster, job: JobSubmit) -> JobResult:
        args, kwargs = cloudpickle.loads(job.payload)
        started = time.time()
        try:
            value = cluster.computation(*args, **kwargs)
        except Exception as exc:
            return JobResult(
                job.uid, "FAILED", cloudpickle.dumps(exc), traceback=traceback.format_exc(),
                reason=repr(exc), started_at=started, finished_at=time.time(), node="fake-node",
            )
        return JobResult(
            job.uid, "FINISHED", cloudpickle.dumps(value), stdout=f"ran {job.uid}\n",
            started_at=started, finished_at=time.time(), node="fake-node",
        )
