"""A scheduler stand-in that relays between real clients and a real node daemon, for end-to-end checks.

It plays exactly the contract the lead's scheduler follows for the newer
messages, and nothing else (no journal, no policy, one node):

* Submit -> Queued to the client, Dispatch(ClusterDef, Task(..., timeout)) to the node
  (``JobSubmit.options.timeout`` becomes ``Task.timeout``);
* NodeProgress -> JobsUpdate(started, results, provisional, files) to the owning client,
  a cancelled job's "FAILED, cancelled..." result turned into CANCELLED;
* CancelJobs -> CancelTasks to the node (every job it knows is running there);
* node joins -> NodeEvent("joined") to the clients.

The node daemon (``serve_node``) runs in the same trio loop, on a thread of its
own, so tests drive real worker processes through the real client library.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgspec
import trio
from clientfake import SECRET

from fairpool.address import Address
from fairpool.config import NodeConfig
from fairpool.handshake import AuthError
from fairpool.messages import (
    AckResults,
    CancelJobs,
    CancelTasks,
    CloseCluster,
    ClusterClosed,
    ClusterDef,
    ClusterOpened,
    Dispatch,
    Heartbeat,
    JobsUpdate,
    NodeEvent,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Queued,
    Submit,
    Task,
)
from fairpool.nodes.daemon import serve_node
from fairpool.protocol import ProtocolError
from fairpool.wire import ConnectionClosed, MessageStream, Outbox, accept_handshake


@dataclass
class _Client:
    outbox: Outbox
    clusters: set[str] = field(default_factory=set)


class RelayScheduler:
    def __init__(self, state_dir: Path, cpus: int = 2, *, node: bool = True) -> None:
        """``node=False``: the node joins only when ``start_node()`` is called."""
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.cpus = cpus
        self.with_node = node
        self._nursery: trio.Nursery | None = None
        self._node_config: NodeConfig | None = None
        self.node_outbox: Outbox | None = None
        self.clients: list[_Client] = []
        self.owner: dict[str, _Client] = {}  # job uid -> its client
        self.specs: dict[str, ClusterDef] = {}
        self.sent_defs: set[str] = set()
        self.cancelled: set[str] = set()
        self.waiting: list[Task] = []  # until the node is ready
        self.cancel_tasks: list[CancelTasks] = []  # what the node was told
        self._port: Future[int] = Future()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=lambda: trio.run(self._main), daemon=True)

    def start(self) -> RelayScheduler:
        self._thread.start()
        self.port = self._port.result(20)
        return self

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            try:
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(20)

    def start_node(self) -> None:
        assert self._token is not None
        trio.from_thread.run_sync(self._start_node, trio_token=self._token)

    def _start_node(self) -> None:
        assert self._nursery is not None and self._node_config is not None
        self._nursery.start_soon(serve_node, self._node_config)

    @property
    def address(self) -> str:
        return str(Address("127.0.0.1", self.port))

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        secret_file = self.state_dir / "secret"
        secret_file.write_bytes(SECRET)
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
                port = listeners[0].socket.getsockname()[1]
                self._nursery = nursery
                self._node_config = NodeConfig(
                    scheduler=Address("127.0.0.1", port), name="relay-node", cpus=self.cpus,
                    state_dir=self.state_dir / "node", secret_file=secret_file, heartbeat_interval=0.2,
                )
                if self.with_node:
                    self._start_node()
                self._port.set_result(port)

    async def _handle(self, tcp: trio.SocketStream) -> None:
        stream = MessageStream(tcp)
        try:
            peer = await accept_handshake(stream, SECRET)
        except (AuthError, ProtocolError, ConnectionClosed):
            await stream.aclose()
            return
        outbox = Outbox()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(outbox.run_writer, stream)
                if peer.role == "node":
                    await self._serve_node(stream, outbox)
                else:
                    client = _Client(outbox)
                    self.clients.append(client)
                    nursery.start_soon(self._heartbeats, outbox)
                    await self._serve_client(stream, client)
        except* (ConnectionClosed, ProtocolError):
            pass
        finally:
            await stream.aclose()

    async def _heartbeats(self, outbox: Outbox) -> None:
        await trio.sleep(0.05)  # not in the same read as ServerAuth (the client refuses that)
        while True:
            outbox.put(Heartbeat(time.time()))
            await trio.sleep(0.2)

    async def _serve_node(self, stream: MessageStream, outbox: Outbox) -> None:
        while True:
            for message in await stream.receive():
                if isinstance(message, Heartbeat):
                    outbox.put(message)  # the echo acknowledges its progress
                elif isinstance(message, NodeReady):
                    self.node_outbox = outbox
                    for client in self.clients:
                        client.outbox.put(NodeEvent("joined", message.name, message.cpus))
                    waiting, self.waiting = self.waiting, []
                    self._dispatch(waiting)
                elif isinstance(message, NodeProgress):
                    self._relay(message)

    def _relay(self, progress: NodeProgress) -> None:
        updates: dict[int, tuple[_Client, JobsUpdate]] = {}

        def update(uid: str) -> JobsUpdate | None:
            client = self.owner.get(uid)
            if client is None:
                return None
            if id(client) not in updates:
                updates[id(client)] = (client, JobsUpdate([], [], [], []))
            return updates[id(client)][1]

        for started in progress.started:
            if (u := update(started.uid)) is not None:
                u.started.append(started)
        for provisional in progress.provisional:
            if (u := update(provisional.uid)) is not None:
                u.provisional.append(provisional)
        for chunk in progress.files:
            if (u := update(chunk.uid)) is not None:
                u.files.append(chunk)
        for result in progress.results:
            if result.uid in self.cancelled and result.status == "FAILED" and result.reason.startswith("cancelled"):
                result = msgspec.structs.replace(result, status="CANCELLED")
            if (u := update(result.uid)) is not None:
                u.results.append(result)
        for client, jobs_update in updates.values():
            client.outbox.put(jobs_update)

    async def _serve_client(self, stream: MessageStream, client: _Client) -> None:
        while True:
            for message in await stream.receive():
                if isinstance(message, OpenCluster):
                    self.specs[message.cluster_id] = ClusterDef(message.cluster_id, message.spec)
                    client.clusters.add(message.cluster_id)
                    client.outbox.put(ClusterOpened(message.cluster_id))
                elif isinstance(message, Submit):
                    tasks = []
                    for job in message.jobs:
                        self.owner[job.uid] = client
                        timeout = job.options.timeout if job.options is not None else 0.0
                        tasks.append(Task(job.uid, message.cluster_id, job.payload, timeout))
                    client.outbox.put(Queued(message.cluster_id, [job.uid for job in message.jobs], time.time()))
                    self._dispatch(tasks)
                elif isinstance(message, CancelJobs):
                    self.cancelled.update(message.uids)
                    cancel = CancelTasks(list(message.uids), "cancelled by the client")
                    self.cancel_tasks.append(cancel)
                    if self.node_outbox is not None:
                        self.node_outbox.put(cancel)
                elif isinstance(message, CloseCluster):
                    client.outbox.put(ClusterClosed(message.cluster_id))
                elif isinstance(message, AckResults | Heartbeat):
                    pass

    def _dispatch(self, tasks: list[Task]) -> None:
        if self.node_outbox is None:
            self.waiting.extend(tasks)
            return
        defs = []
        for cluster_id in dict.fromkeys(task.cluster_id for task in tasks):
            if cluster_id not in self.sent_defs:
                self.sent_defs.add(cluster_id)
                defs.append(self.specs[cluster_id])
        if tasks:
            self.node_outbox.put(Dispatch(defs, tasks))
