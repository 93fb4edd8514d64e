"""The trio side of a cluster: connect, open, send batched submits, apply updates, reconnect.

``ClusterConnection`` keeps one ``ClusterSession`` connected to the
scheduler. ``open()`` connects, authenticates and sends ``OpenCluster``
(re-attaching if the cluster exists), raising ``SchedulerConnectionError``
with the address and reason. ``serve(stream)`` then runs three tasks per
connection -- the ``Outbox`` writer, the reader and the heartbeat -- and when
the connection is lost, reconnects with exponential backoff and jitter,
re-opens the cluster and resends every job not yet acknowledged by
``Queued`` (and every cancellation whose job has not ended). It returns once the scheduler confirms ``ClusterClosed`` (or
refuses to re-open the cluster, which ends every pending job with that error),
or once ``detach`` has sent the last acknowledgements and hung up, leaving
the cluster's jobs running in the scheduler.

A reattached cluster (``reattaching``) first probes (``fairpool.clients.reattach``):
it opens nothing if the scheduler has no such cluster (``ClusterNotFound``),
and it is open only once the scheduler has listed the cluster's jobs, so
``jobs()`` is whole when ``open`` returns; jobs a whole list leaves out end.

Work arrives from other threads through ``request_flush()``: one
``run_sync_soon`` per burst of submits (or cancels), after which ``flush``
moves every job registered so far into Submit messages on the current outbox,
then the cancellations into a ``CancelJobs``; code on the loop's own thread
(the async cluster) calls ``flush`` directly. The reader
handles all the messages one receive returned before it sends one
``AckResults`` for them. The same object serves a synchronous cluster (run on
a ``LoopThread``) and can serve an async one in the caller's own trio loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from fairpool.backoff import Backoff
from fairpool.clients.errors import (
    ClusterError,
    ClusterNotFound,
    ClusterRefused,
    SchedulerConnectionError,
)
from fairpool.clients.reattach import (
    LISTING_ID,
    LISTING_LIMIT,
    NOT_FOUND,
    PROBE_ID,
    listing,
    probe_requests,
)
from fairpool.clients.session import ClusterSession
from fairpool.clients.settings import ClientSettings
from fairpool.handshake import AuthError
from fairpool.messages import (
    AnyMessage,
    CloseCluster,
    ClusterClosed,
    ClusterOpened,
    Error,
    Heartbeat,
    OpenCluster,
    Reply,
    Request,
)
from fairpool.protocol import DEFAULT_MAX_FRAME, ProtocolError
from fairpool.wire import ConnectionClosed, MessageStream, Outbox, open_connection

logger = logging.getLogger("fairpool.clients")


@dataclass(frozen=True)
class ConnectionTiming:
    connect_timeout: float = 10.0  # connect + handshake + ClusterOpened
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 10.0  # nothing heard from the scheduler this long: connection is dead
    reconnect_min_delay: float = 0.1
    reconnect_max_delay: float = 5.0


DEFAULT_TIMING = ConnectionTiming()
ACK_DELAY = 0.02  # seconds results wait before their acknowledgement is sent alone


class ClusterConnection:
    def __init__(
        self,
        session: ClusterSession,
        settings: ClientSettings,
        open_message: OpenCluster,
        timing: ConnectionTiming = DEFAULT_TIMING,
    ) -> None:
        self.session = session
        self.settings = settings
        self.open_message = open_message
        self.timing = timing
        self.connections = 0  # successful opens: 1 + reconnects
        self.reattaching = False  # the first open takes over a cluster an earlier client opened
        self.fatal: SchedulerConnectionError | None = None
        self.cluster_closed = False
        self.max_payload = 0  # the scheduler's limit on one job's payload, told when it opened the cluster (0: none)
        self._token: trio.lowlevel.TrioToken | None = None
        self._outbox: Outbox | None = None
        self._closing = False
        self._detaching = False
        self._listing_pending = False
        self._closed: trio.Event | None = None  # set when serve() is over
        self._last_heard = 0.0
        self._acks_due = trio.Event()
        self._request_ids = 0  # positive ids: reattach's probes use negative ones
        self._requests: dict[int, list[Any]] = {}  # id -> [Event, Reply]
        self._backoff = Backoff(timing.reconnect_min_delay, timing.reconnect_max_delay)

    @property
    def cluster_id(self) -> str:
        return self.open_message.cluster_id

    # --- any thread -------------------------------------------------------------

    def request_flush(self) -> None:
        """Have the connection's trio thread send whatever the session holds. Raises
        ``trio.RunFinishedError`` if that loop has ended."""
        if self._token is None:
            raise RuntimeError("the connection is not open")
        self._token.run_sync_soon(self.flush)

    # --- trio thread ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the cluster (raising before ``started`` if that fails), then serve it."""
        stream = await self.open()
        task_status.started()
        await self.serve(stream)

    async def open(self) -> MessageStream:
        """Connect, authenticate, send OpenCluster and wait for ClusterOpened, under one deadline."""
        self._token = trio.lowlevel.current_trio_token()
        if self._closed is None:
            self._closed = trio.Event()
        address = self.settings.scheduler
        timeout = self.timing.connect_timeout
        try:
            with trio.fail_after(timeout):
                stream = await open_connection(
                    address,
                    self.settings.secret,
                    role="client",
                    tenant=self.settings.tenant,
                    name=self.settings.name,
                    timeout=timeout,
                    max_frame=DEFAULT_MAX_FRAME,
                    **self.settings.connect_kwargs(),  # type: ignore[arg-type]
                )
                try:
                    if self.reattaching:
                        await self._probe(stream)
                    await stream.send(self.open_message)
                    await self._await_opened(stream)
                except BaseException:
                    await stream.aclose()
                    raise
        except trio.TooSlowError:
            raise SchedulerConnectionError(
                f"the fairpool scheduler at {address} did not open the cluster within {timeout:g}s"
            ) from None
        except AuthError as exc:
            raise SchedulerConnectionError(f"the fairpool scheduler at {address} refused the connection: {exc}") from None
        except (ConnectionClosed, ProtocolError) as exc:
            raise SchedulerConnectionError(f"cannot reach the fairpool scheduler at {address}: {exc}") from None
        self.connections += 1
        return stream

    async def _probe(self, stream: MessageStream) -> None:
        """Re-attaching: ask whether the cluster is there (before OpenCluster, which would open a
        new one) and which jobs it holds; raise ClusterNotFound if it is not there."""
        await stream.send(*probe_requests(self.cluster_id))
        self._listing_pending = True
        found: Reply | None = None
        while found is None:
            for message in await stream.receive():
                if isinstance(message, Reply) and message.id == PROBE_ID:
                    found = message
                else:
                    self._dispatch(message)  # the list, if it came along
        if not found.ok:
            if found.error == NOT_FOUND:
                raise self._refusal(found.error)
            logger.warning("cluster %s: the scheduler did not answer whether it has the cluster: %s",
                           self.cluster_id, found.error)

    async def _await_opened(self, stream: MessageStream) -> None:
        opened = False
        while not opened or self._listing_pending:
            for message in await stream.receive():
                if isinstance(message, ClusterOpened) and message.cluster_id == self.cluster_id:
                    opened = True
                    self.max_payload = message.max_payload  # (fairpool.clients.core checks arguments against it)
                elif isinstance(message, Error) and message.ref == self.cluster_id and not opened:
                    raise self._refusal(message.reason)
                else:
                    self._dispatch(message)  # e.g. results re-sent right after the re-attach
        self.reattaching = False

    def _apply_listing(self, reply: Reply) -> None:
        self._listing_pending = False
        if not reply.ok:
            logger.warning("cluster %s: the scheduler did not list the cluster's jobs: %s", self.cluster_id, reply.error)
            return
        jobs = listing(reply.body)
        self.session.apply_listing(jobs)
        if len(jobs) < LISTING_LIMIT:  # whole: what it leaves out, the scheduler does not hold
            self.session.whole_listing = True
            ended = self.session.settle_missing()
            if ended:
                logger.warning("cluster %s: %d of its jobs are no longer held by the scheduler", self.cluster_id, ended)

    def _refusal(self, reason: str) -> ClusterRefused:
        where = f"the fairpool scheduler at {self.settings.scheduler}"
        if reason == NOT_FOUND and not self.open_message.spec:
            return ClusterNotFound(
                f"{where} has no cluster {self.cluster_id} for tenant {self.settings.tenant!r}: it was never "
                "opened there, it is another tenant's, or it is over and every result was collected"
            )
        return ClusterRefused(f"{where} refused to open cluster {self.cluster_id}: {reason}")

    async def serve(self, stream: MessageStream) -> None:
        """Keep the cluster connected until ClusterClosed (or a refused re-open, or a detach)."""
        try:
            await self._serve(stream)
        finally:
            assert self._closed is not None
            self._closed.set()

    async def _serve(self, stream: MessageStream) -> None:
        while True:
            began = trio.current_time()
            lost = await self._serve_connection(stream)
            if lost is None or self._detaching:
                return
            if trio.current_time() - began > self.timing.reconnect_max_delay:
                self._backoff.reset()  # it was up a while; a flapping connection keeps backing off
            logger.warning(
                "cluster %s: connection to the scheduler at %s lost (%s); reconnecting",
                self.cluster_id, self.settings.scheduler, lost,
            )
            try:
                stream = await self._reconnect()
            except ClusterRefused as exc:
                logger.error("cluster %s: %s", self.cluster_id, exc)
                self.fatal = exc
                self.session.abort_all(exc)
                return
            logger.warning("cluster %s: reconnected to the scheduler at %s", self.cluster_id, self.settings.scheduler)

    async def close_cluster(self, timeout: float) -> bool:
        """Send CloseCluster (now, or on the next connection) and wait for ClusterClosed;
        False if ``timeout`` passed first."""
        assert self._closed is not None
        self._closing = True
        if self._outbox is not None:
            acks = self.session.take_acks()  # the scheduler may forget these results before closing
            if acks is not None:
                self._outbox.put(acks)
            self._outbox.put(CloseCluster(self.cluster_id))
        with trio.move_on_after(timeout):
            await self._closed.wait()
        return self.cluster_closed

    async def detach(self, timeout: float) -> bool:
        """Send the acknowledgements due and hang up, leaving the cluster open in the scheduler
        (its jobs run on; a later reattach takes them). False if ``timeout`` passed first."""
        assert self._closed is not None
        self._detaching = True
        if self._outbox is not None:
            acks = self.session.take_acks()
            if acks is not None:
                self._outbox.put(acks)
            self._outbox.close()  # the writer sends what is queued, then the connection ends
        with trio.move_on_after(timeout):
            await self._closed.wait()
        return self._closed.is_set()

    async def _serve_connection(self, stream: MessageStream) -> str | None:
        """Run one connection; return why it was lost, or None once the cluster is closed."""
        outbox = Outbox()
        outbox.extend(list(self.session.resubmits()))  # what the last connection left unacknowledged
        cancels = self.session.recancels()
        if cancels is not None:
            outbox.put(cancels)
        acks = self.session.take_acks()
        if acks is not None:
            outbox.put(acks)
        if self._closing:
            outbox.put(CloseCluster(self.cluster_id))
        if self._detaching:
            outbox.close()
        lost: list[str] = []
        self._last_heard = trio.current_time()
        self._outbox = outbox
        try:
            async with trio.open_nursery() as nursery:
                scope = nursery.cancel_scope
                nursery.start_soon(self._guarded, lost, scope, outbox.run_writer, stream)
                nursery.start_soon(self._guarded, lost, scope, self._read, stream, outbox)
                nursery.start_soon(self._guarded, lost, scope, self._heartbeat, outbox, lost)
                nursery.start_soon(self._guarded, lost, scope, self._send_acks, outbox)
        finally:
            self._outbox = None
            await stream.aclose()
        if self.cluster_closed:
            return None
        return lost[0] if lost else "connection ended"

    @staticmethod
    async def _guarded(
        lost: list[str], scope: trio.CancelScope, fn: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        """Run one of a connection's tasks; when any of them ends, the connection ends."""
        try:
            await fn(*args)
        except (ConnectionClosed, ProtocolError) as exc:
            lost.append(str(exc))
        scope.cancel()

    async def _read(self, stream: MessageStream, outbox: Outbox) -> None:
        session = self.session
        while not self.cluster_closed:
            messages = await stream.receive()
            self._last_heard = trio.current_time()
            for message in messages:
                self._dispatch(message)
            if session.has_acks():
                self._acks_due.set()

    async def _send_acks(self, outbox: Outbox) -> None:
        # Acknowledgements are not urgent (they only let the scheduler forget results):
        # held briefly, they leave the round trip of the next job and travel in bulk.
        while True:
            await self._acks_due.wait()
            await trio.sleep(ACK_DELAY)
            self._acks_due = trio.Event()
            acks = self.session.take_acks()
            if acks is not None:
                outbox.put(acks)

    async def _heartbeat(self, outbox: Outbox, lost: list[str]) -> None:
        interval, timeout = self.timing.heartbeat_interval, self.timing.heartbeat_timeout
        while True:
            await trio.sleep(interval)
            if trio.current_time() - self._last_heard > timeout:
                lost.append(f"nothing heard from the scheduler in {timeout:g}s")
                return
            outbox.put(Heartbeat(time.time()))

    async def request(self, verb: str, args: dict[str, Any], timeout: float = 30.0) -> Any:
        """Ask the scheduler (``nodes``, ``stats``...): the reply's body, or ClusterError with its refusal."""
        outbox = self._outbox
        if outbox is None:
            raise SchedulerConnectionError(f"cluster {self.cluster_id}: not connected to the scheduler right now")
        self._request_ids += 1
        rid = self._request_ids
        waiter: list[Any] = [trio.Event(), None]
        self._requests[rid] = waiter
        try:
            outbox.put(Request(rid, verb, args))
            with trio.fail_after(timeout):
                await waiter[0].wait()
        except trio.TooSlowError:
            raise SchedulerConnectionError(f"the scheduler did not answer {verb!r} within {timeout:g}s") from None
        finally:
            self._requests.pop(rid, None)
        reply: Reply = waiter[1]
        if not reply.ok:
            raise ClusterError(f"the scheduler refused {verb!r}: {reply.error}")
        return reply.body

    def _dispatch(self, message: AnyMessage) -> None:
        if self.session.apply(message) or isinstance(message, Heartbeat | ClusterOpened):
            return
        if isinstance(message, Reply) and message.id in self._requests:
            waiter = self._requests[message.id]
            waiter[1] = message
            waiter[0].set()
            return
        if isinstance(message, Reply) and message.id == LISTING_ID:
            if self._listing_pending:
                self._apply_listing(message)
            return
        if isinstance(message, ClusterClosed):
            if message.cluster_id == self.cluster_id:
                self.cluster_closed = True
        elif isinstance(message, Error):
            logger.warning("cluster %s: the scheduler reports an error: %s (about %r)", self.cluster_id, message.reason, message.ref)
        else:
            logger.debug("cluster %s: ignoring an unexpected %s", self.cluster_id, type(message).__name__)

    def flush(self) -> None:
        """Queue what the session holds for sending (on the loop's thread)."""
        # Runs as a run_sync_soon callback: an exception here would crash the whole trio run.
        try:
            submits = self.session.take_new()
            cancels = self.session.take_cancels()
            if self._outbox is not None and (submits or cancels is not None):
                self._outbox.extend(list(submits))
                if cancels is not None:
                    self._outbox.put(cancels)
                acks = self.session.take_acks()  # riding along costs nothing
                if acks is not None:
                    self._outbox.put(acks)
                self._outbox.flush_now()
            # Without an outbox the jobs wait in the session's unqueued set, and the
            # cancellations in its cancelling set, for the next connection.
        except Exception:
            logger.exception("cluster %s: could not queue submitted jobs for sending", self.cluster_id)

    async def _reconnect(self) -> MessageStream:
        while True:
            # full jitter (fairpool.backoff): clients must not reconnect in lockstep
            await trio.sleep(self._backoff.next_delay())
            try:
                return await self.open()
            except ClusterRefused:
                raise
            except SchedulerConnectionError as exc:
                logger.info("cluster %s: reconnect failed: %s", self.cluster_id, exc)
