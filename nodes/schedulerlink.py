"""The node's link to the scheduler: one authenticated connection at a time, and what flows on it.

``SchedulerLink.run`` dials the scheduler (through the failover list or the
discovered address, ``fairpool.nodes.failover``), backing off between
rounds (``fairpool.backoff``: exponential, full jitter), and serves each
connection until it breaks: it announces the node (``NodeReady``, with a
``NodeDrain`` in the same write when it takes no jobs), then runs the
writer, the progress pump (held progress out in batches through an
``Outbox``), the heartbeat and the reader, which takes silence past
``heartbeat_timeout`` from a scheduler that heartbeats us as a broken
connection. What the scheduler says is the daemon's to handle
(``fairpool.nodes.daemon``): this class is its connection half.
"""

from __future__ import annotations

import time

import structlog
import trio

from fairpool.address import Address
from fairpool.backoff import Backoff
from fairpool.config import NodeConfig
from fairpool.handshake import AuthError
from fairpool.messages import AnyMessage, Heartbeat, NodeDrain, NodeReady
from fairpool.protocol import ProtocolError
from fairpool.wire import ConnectionClosed, MessageStream, Outbox, open_connection

from .failover import SchedulerAddresses
from .lifecycle import Availability
from .progress import HeldProgress
from .workerpool import WorkerPool

log = structlog.get_logger("fairpool.node")

INITIAL_RECONNECT_DELAY = 0.1
MAX_HEARTBEAT_MARKS = 64
#: How long news that a job started may wait for its result, to travel together.
STARTED_DELAY = 0.002


class SchedulerLink:
    """The connection half of the node daemon (``_NodeDaemon`` sets these up and handles messages)."""

    config: NodeConfig
    _secret: bytes
    memory: int
    session: str
    pool: WorkerPool
    held: HeldProgress
    addresses: SchedulerAddresses
    availability: Availability
    _wakeup: trio.Event
    _urgent: trio.Event
    _heartbeats: dict[float, int]
    _outbox: Outbox | None
    _connected: trio.Event
    _handback: list[str]
    _handback_sent: bool

    def _handle(self, message: AnyMessage) -> None:
        raise NotImplementedError  # _NodeDaemon's

    def _drain_message(self, lifted: str = "") -> NodeDrain:
        raise NotImplementedError  # _NodeDaemon's

    # --- connection ------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        status: trio.TaskStatus[None] | None = task_status
        backoff = Backoff(INITIAL_RECONNECT_DELAY, self.config.reconnect_max_delay)
        while True:
            for address in await self.addresses.round():  # fairpool.nodes.failover
                stream = await self._connect(address)
                if stream is None:
                    continue  # the next preference
                began = trio.current_time()
                try:
                    if await self._session(stream, status, address):
                        status = None
                finally:
                    await stream.aclose()
                    self.held.connection_lost()
                if trio.current_time() - began > self.config.reconnect_max_delay:
                    backoff.reset()  # it was up a while: try again soon
                break  # the next round starts again from the first preference
            await trio.sleep(backoff.next_delay())

    async def _connect(self, address: Address) -> MessageStream | None:
        """An authenticated connection to the scheduler at ``address``, or None (logged)."""
        try:
            return await open_connection(
                address,
                self._secret,
                role="node",
                name=self.config.name,
                timeout=self.config.handshake_timeout,
                max_frame=self.config.max_frame_size,
                # A node certificate proves the node (the secret is then not used).
                auth="tls" if self.config.tls is not None else "secret",
                tls=self.config.tls,
            )
        except AuthError as exc:
            log.error("scheduler refused the node", scheduler=str(address), reason=str(exc))
        except (ConnectionClosed, ProtocolError, OSError) as exc:
            log.warning("cannot reach the scheduler", scheduler=str(address), reason=str(exc))
        return None

    async def _session(self, stream: MessageStream, status: trio.TaskStatus[None] | None,
                       address: Address) -> bool:
        """Serve one connection until it breaks; False if it broke before the node was announced."""
        config = self.config
        try:
            # (jobs handed back but not confirmed are claimed, then handed back by the NodeDrain after)
            held = sorted(self.pool.held_uids() | self.held.result_uids() | set(self._handback))
            ready = NodeReady(config.name, config.cpus, self.memory, config.gpus, self.session, held)
            # not serving: said in the same write, before the scheduler can dispatch anything
            drain = [] if self.availability.serving and not self._handback else [self._drain_message()]
            await stream.send(ready, *drain)
        except ConnectionClosed as exc:
            log.warning("scheduler connection lost", scheduler=str(address), reason=str(exc))
            return False
        log.info("node connected", scheduler=str(address), name=config.name, cpus=config.cpus,
                 serving=self.availability.serving)
        if status is not None:
            status.started()
        outbox = Outbox()
        self._outbox = outbox
        self._connected.set()
        self._handback_sent = bool(self._handback)
        self._heartbeats.clear()  # echoes of another connection's heartbeats cannot come
        running = self.pool.running()
        if running:
            self.held.add(running, [])  # a restarted scheduler learns which of its jobs run here
        self._wakeup.set()  # whatever is held goes out first
        reason = "cancelled"
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                nonlocal reason
                try:
                    await outbox.run_writer(stream)
                except ConnectionClosed as exc:
                    reason = str(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(write)
            nursery.start_soon(self._pump, outbox)
            nursery.start_soon(self._heartbeat, outbox)
            try:
                await self._read(stream)
            except (ConnectionClosed, ProtocolError) as exc:
                reason = str(exc)
            finally:
                self._outbox = None
                self._connected = trio.Event()
                self._handback_sent = False  # told to a connection that is gone: tell the next one
            nursery.cancel_scope.cancel()
        log.warning("node disconnected", scheduler=str(address), reason=reason)
        return True

    async def _pump(self, outbox: Outbox) -> None:
        while True:
            await self._wakeup.wait()
            if not self._urgent.is_set():
                # Only "started" news: a job that ends within a moment needs no message of its own
                # (its result says when it started), which saves the scheduler and the client a
                # message per short job. Results end the wait at once.
                with trio.move_on_after(STARTED_DELAY):
                    await self._urgent.wait()
            self._wakeup = trio.Event()
            self._urgent = trio.Event()
            for progress in self.held.take():
                outbox.put_quietly(progress)
            outbox.flush_now()  # from this task: the writer task need not be scheduled first

    async def _heartbeat(self, outbox: Outbox) -> None:
        while True:
            at = time.time()
            self._heartbeats[at] = self.held.mark()
            while len(self._heartbeats) > MAX_HEARTBEAT_MARKS:
                del self._heartbeats[next(iter(self._heartbeats))]
            outbox.put(Heartbeat(at))
            await trio.sleep(self.config.heartbeat_interval)

    async def _read(self, stream: MessageStream) -> None:
        # A half-open connection (the scheduler's host gone, or the process frozen) looks fine to
        # the kernel for a long time: silence from a scheduler that heartbeats us is what tells.
        heard_heartbeat = False
        silence = self.config.heartbeat_timeout
        while True:
            if heard_heartbeat:
                with trio.move_on_after(silence):
                    messages = await stream.receive()
                    for message in messages:
                        self._handle(message)
                    continue
                raise ConnectionClosed(f"no word from the scheduler for {silence:g}s")
            for message in await stream.receive():
                heard_heartbeat = heard_heartbeat or isinstance(message, Heartbeat)
                self._handle(message)
