"""The scheduler daemon: the trio shell around SchedulerState.

One nursery tree: a state task owns ``SchedulerState`` and is the only code
that touches it; each connection has a reader task (frames -> stimuli on a
bounded channel) and a writer task (an Outbox flushed in batches); a ticker
sends ``Tick`` for heartbeat checks. The state task drains every stimulus
that is waiting before it acts, so a burst of messages costs one pass.

This module owns ``SchedulerServer``'s state task (the batch loop, the
instructions it executes, the requests that need files, the ticker, SIGHUP
reloads) and ``serve_scheduler``, which starts the tree. Beside it:
``fairpool.scheduler.connections`` (``ConnectionHandling``: accepting,
reading and writing each connection, ``ask``) and
``fairpool.scheduler.startup`` (the state dir's lock, ``open_journal``, the
address file, the secret's exposure check).
"""

from __future__ import annotations

import itertools
import math
import signal
import threading
import time
from collections.abc import Callable

import structlog
import trio

from fairpool import sdnotify
from fairpool.address import Address
from fairpool.config import ConfigError, SchedulerConfig
from fairpool.handshake import Peer
from fairpool.messages import Dispatch, Heartbeat, Message, Reply, Request
from fairpool.policies import compiled as policies_compiled
from fairpool.policies.registry import make_policy
from fairpool.scheduler.connections import ConnectionHandling, _Link
from fairpool.scheduler.events import (
    Close,
    Log,
    Persist,
    PolicyLoaded,
    Send,
    ShellRequest,
    Stimulus,
    Tick,
)
from fairpool.scheduler.journalrecords import JournalRecord
from fairpool.scheduler.journalwriter import JournalWriter
from fairpool.scheduler.limits import ConnectionLimits
from fairpool.scheduler.policyfile import load_policy_file
from fairpool.scheduler.startup import (
    ADDRESS_FILE,
    StateDirBusy,
    check_exposure,
    lock_state_dir,
    open_journal,
    write_address_file,
)
from fairpool.scheduler.state import SchedulerState
from fairpool.secret import ensure_secret
from fairpool.wire import Outbox

__all__ = ["ADDRESS_FILE", "SchedulerServer", "StateDirBusy", "check_exposure", "serve_scheduler"]

log = structlog.get_logger("fairpool.scheduler")

INBOX_SIZE = 4096
CLOSE_GRACE = 5.0  # seconds a closing connection gets to flush its last messages
#: The state task counts as wedged (watchdog pings stop) after this many heartbeat intervals without a batch.
STALL_INTERVALS = 3
#: How long a SIGHUP reload waits for the state task's answer.
RELOAD_TIMEOUT = 30.0


class SchedulerServer(ConnectionHandling):
    def __init__(self, config: SchedulerConfig, secret: bytes) -> None:
        self.config = config
        self._secret = secret
        policy_config = load_policy_file(config.policy_file) if config.policy_file else None
        policy = policy_config.make_policy(default=config.policy) if policy_config else make_policy(config.policy)
        self.state = SchedulerState(policy, heartbeat_timeout=config.heartbeat_timeout,
                                    result_retention=config.result_retention,
                                    max_payload=config.max_payload_size)
        self.limits = ConnectionLimits(config.max_connections_per_peer, config.max_connections_per_tenant)
        if policy_config is not None:
            self.state.dispatcher.configure(tenants=policy_config.tenants)
        self._send_inbox, self._inbox = trio.open_memory_channel[Stimulus](INBOX_SIZE)
        self._links: dict[int, _Link] = {}
        self._ids = itertools.count(1)
        self.writer: JournalWriter | None = None
        self._flushing: dict[int, Outbox] | None = None  # outboxes written to in the state task's batch
        self.record_observers: list[Callable[[JournalRecord], None]] = []  # the dashboard's metrics
        self.handled_at = time.monotonic()  # when the state task last finished a batch (Ticks come every interval)
        self.state.log_jobs = config.log_level == "debug"  # a line per job step costs: only when asked for

    def open_journal(self) -> None:
        """Replay the journal into the state, then keep appending to it (compacted first)."""
        self.writer = open_journal(self.config, self.state, self._deliver)

    def _deliver(self, conn: int, message: Message) -> None:
        link = self._links.get(conn)
        if link is not None:
            if self._flushing is None:
                link.outbox.put(message)
            else:  # in a batch of the state task: sent by it at the batch's end (run_state)
                link.outbox.put_quietly(message)
                self._flushing[conn] = link.outbox

    # --- the state task -----------------------------------------------------

    async def run_state(self) -> None:
        self.handled_at = time.monotonic()  # not stale from the journal's replay
        async for stimulus in self._inbox:
            batch = [stimulus]
            while True:
                try:
                    batch.append(self._inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            self._flushing = {}
            try:
                self._execute(self.state.handle_many(batch))
            finally:
                flushing, self._flushing = self._flushing, None
            # Sent from here, at once: a reply does not wait for the connection's writer task
            # to be scheduled (one loop iteration less per hop); it stays one send per batch.
            for outbox in flushing.values():
                outbox.flush_now()
            if self.writer is not None:
                self.writer.end_of_batch()
            self.handled_at = time.monotonic()

    def healthy(self) -> bool:
        """Whether the state task is turning (systemd's watchdog is pinged only then)."""
        return time.monotonic() - self.handled_at <= STALL_INTERVALS * self.config.heartbeat_interval

    async def reload_on_sighup(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """SIGHUP reloads the policy file, as ``fairpool admin policy reload`` does (systemd's ExecReload).

        Started (``nursery.start``) once SIGHUP is caught: from then on it no longer kills the process.
        """
        if threading.current_thread() is not threading.main_thread():
            task_status.started()
            return  # signals reach the main thread only (an embedded scheduler)
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                sdnotify.reloading("reloading the policy file")
                log.info("reloading the policy file", signal="SIGHUP", file=str(self.config.policy_file))
                reply = None
                with trio.move_on_after(RELOAD_TIMEOUT):  # (a wedged state task: the watchdog's business)
                    reply = await self.ask(Peer("admin", "", "SIGHUP"), Request(0, "policy.reload"))
                if reply is not None and reply.ok:
                    body = reply.body if isinstance(reply.body, dict) else {}
                    log.info("policy file reloaded", signal="SIGHUP", **body)
                else:
                    log.warning("policy file not reloaded: the running policy stays", signal="SIGHUP",
                                reason=reply.error if reply is not None else "no answer from the state task")
                sdnotify.ready(f"policy {self.state.policy.name}")

    def _execute(self, instructions: list) -> None:  # type: ignore[type-arg]
        for instruction in instructions:
            match instruction:
                case Send(conn, message, durable):
                    if self.writer is not None:
                        if isinstance(message, Dispatch) and message.tasks:
                            self.writer.write_through()  # the assignment outlives a SIGKILL of ours
                        self.writer.send(conn, message, durable)
                    else:
                        self._deliver(conn, message)
                case Persist(record):
                    if self.writer is not None:
                        self.writer.append(record)
                    for observe in self.record_observers:
                        observe(record)
                case Close(conn, reason):
                    link = self._links.get(conn)
                    if link is not None:
                        log.info("closing connection", peer=link.peer_desc, reason=reason)
                        link.outbox.close()  # flush what we told the peer, then hang up
                        link.cancel_scope.deadline = min(link.cancel_scope.deadline,
                                                         trio.current_time() + CLOSE_GRACE)
                case Log(level, event, fields):
                    getattr(log, level)(event, **dict(fields))
                case ShellRequest(conn, request):
                    self._serve_shell_request(conn, request)

    def _serve_shell_request(self, conn: int, request: Request) -> None:
        """Requests that need files (the state task runs this: nothing else touches the state meanwhile)."""
        if request.verb == "journal.compact":
            if self.writer is None:
                self._deliver(conn, Reply(request.id, False, error="the journal is off (journal = false)"))
                return
            before = self.writer.journal.size
            self.writer.compact()
            self._deliver(conn, Reply(request.id, True, {"bytes_before": before, "bytes_after": self.writer.journal.size}))
        elif request.verb == "policy.reload":
            path = self.config.policy_file
            if path is None:
                self._deliver(conn, Reply(request.id, False, error="no policy file configured (--policy-file)"))
                return
            try:
                config = load_policy_file(path)
            except ConfigError as exc:  # malformed: refused, the running policy stays
                log.warning("policy reload refused", file=str(path), reason=str(exc))
                self._deliver(conn, Reply(request.id, False, error=str(exc)))
                return
            self._execute(self.state.handle(PolicyLoaded(conn, request.id, config, time.time())))

    async def run_ticker(self) -> None:
        interval = self.config.heartbeat_interval
        while True:
            await trio.sleep(interval)
            now = time.time()
            await self._send_inbox.send(Tick(now))
            for link in self._links.values():
                link.outbox.put(Heartbeat(now))


async def serve_scheduler(config: SchedulerConfig, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the scheduler until cancelled. ``task_status.started`` gets the bound address."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    secret = ensure_secret(config.secret_path)
    check_exposure(config.listen, config.secret_path)
    server = SchedulerServer(config, secret)
    lock = lock_state_dir(config.state_dir)
    if config.journal:
        server.open_journal()
    listeners = await trio.open_tcp_listeners(config.listen.port, host=config.listen.host)
    host, port = listeners[0].socket.getsockname()[:2]
    bound = Address(host, port)
    address_file = write_address_file(config.state_dir, bound)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run_state)
        if server.writer is not None:
            nursery.start_soon(server.writer.run_commits)
        nursery.start_soon(server.run_ticker)
        nursery.start_soon(_serve, listeners, server)
        if config.http is not None:  # the dashboard (h11, prometheus_client) is imported only when served
            from fairpool.scheduler.webapi import serve_dashboard

            try:
                await nursery.start(serve_dashboard, server, secret)
            except OSError:  # its address is taken: no scheduler after all
                address_file.unlink(missing_ok=True)
                raise
        await nursery.start(server.reload_on_sighup)
        nursery.start_soon(sdnotify.keep_watchdog, server.healthy)
        if config.announce:  # LAN discovery for `fairpool node --discover`
            from fairpool.scheduler.announce import run_announcer

            nursery.start_soon(run_announcer, config, secret, bound)
        log.info("scheduler listening", address=str(bound), policy=server.state.policy.name,
                 policies_build="compiled" if policies_compiled() else "pure Python",
                 secret_file=str(config.secret_path))
        task_status.started(bound)
        sdnotify.ready(f"listening on {bound}, policy {server.state.policy.name}")
        try:
            await trio.sleep(math.inf)
        finally:
            sdnotify.stopping()
            address_file.unlink(missing_ok=True)
            if server.writer is not None:
                server.writer.close()  # what was acknowledged is on disk already; the rest too
            lock.close()
            log.info("scheduler stopped", **server.state.statistics())


async def _serve(listeners: list[trio.SocketListener], server: SchedulerServer) -> None:
    await trio.serve_listeners(server.handle_connection, listeners)
