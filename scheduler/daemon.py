"""The scheduler daemon: the trio shell around SchedulerState.

One nursery tree: a state task owns ``SchedulerState`` and is the only code
that touches it; each connection has a reader task (frames -> stimuli on a
bounded channel) and a writer task (an Outbox flushed in batches); a ticker
sends ``Tick`` for heartbeat checks. The state task drains every stimulus
that is waiting before it acts, so a burst of messages costs one pass.
"""

from __future__ import annotations

import fcntl
import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import structlog
import trio

from fairpool import sdnotify
from fairpool.address import Address
from fairpool.config import ConfigError, SchedulerConfig
from fairpool.handshake import AuthError, CertIdentity, Peer
from fairpool.messages import (
    AnyMessage,
    Dispatch,
    Error,
    Heartbeat,
    Message,
    Refused,
    Reply,
    Request,
)
from fairpool.policies.registry import make_policy
from fairpool.protocol import ProtocolError
from fairpool.scheduler.events import (
    Close,
    Connected,
    Disconnected,
    Log,
    Persist,
    PolicyLoaded,
    Received,
    Send,
    ShellRequest,
    Stimulus,
    Tick,
)
from fairpool.scheduler.journal import JOURNAL_NAME, JournalFile, read_journal
from fairpool.scheduler.journalrecords import JournalRecord, payload_refs
from fairpool.scheduler.journalwriter import JournalWriter
from fairpool.scheduler.limits import Admission, ConnectionLimits
from fairpool.scheduler.payloadstore import PAYLOADS_DIR, PayloadStore, first_unbacked
from fairpool.scheduler.policyfile import load_policy_file
from fairpool.scheduler.queries import READ_VERBS, answer
from fairpool.scheduler.records import ConnRecord
from fairpool.scheduler.replay import replay, snapshot
from fairpool.scheduler.state import SchedulerState
from fairpool.secret import SecretError, ensure_secret
from fairpool.tls import wrap_server
from fairpool.wire import ConnectionClosed, MessageStream, Outbox, accept_handshake

log = structlog.get_logger("fairpool.scheduler")

INBOX_SIZE = 4096
ADDRESS_FILE = "scheduler.address"
CLOSE_GRACE = 5.0  # seconds a closing connection gets to flush its last messages
#: A peer with more messages than this waiting to be sent to it is not read from until it catches up:
#: one that sends requests and never reads the replies must not grow our memory without bound.
MAX_BACKLOG = 10_000
BACKLOG_POLL = 0.05
#: The state task counts as wedged (watchdog pings stop) after this many heartbeat intervals without a batch.
STALL_INTERVALS = 3
#: How long a SIGHUP reload waits for the state task's answer.
RELOAD_TIMEOUT = 30.0


@dataclass
class _Link:
    """The shell's side of one authenticated connection."""

    outbox: Outbox
    cancel_scope: trio.CancelScope
    peer_desc: str


class _ReplySink(Outbox):
    """The outbox of a connection inside the process (see ``SchedulerServer.ask``): keeps the answer.

    Every way in (``put``, ``put_quietly``, ``extend``) takes the message at once and queues
    nothing, so that there is never anything for ``flush_now`` or a writer to send.
    """

    def __init__(self, request_id: int) -> None:
        super().__init__()
        self.request_id = request_id
        self.reply: Reply | None = None
        self.answered = trio.Event()

    def put(self, message: Message) -> None:
        if isinstance(message, Reply) and message.id == self.request_id:
            self.reply = message
        elif isinstance(message, Error):  # hung up on (e.g. the tenant's token was replaced meanwhile)
            self.reply = Reply(self.request_id, False, error=message.reason)
        else:
            return  # heartbeats and the like
        self.answered.set()

    def put_quietly(self, message: Message) -> None:
        self.put(message)

    def extend(self, messages: list[Message]) -> None:
        for message in messages:
            self.put(message)


class SchedulerServer:
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
        path = self.config.state_dir / JOURNAL_NAME
        contents = read_journal(path)  # JournalCorrupt propagates: the daemon must not start
        journal = JournalFile(path, fsync=self.config.journal_fsync)
        if contents.torn:
            log.warning("journal tail was torn (a crash mid-write): cut", file=str(path),
                        offset=contents.intact_end, bytes_cut=contents.size - contents.intact_end)
            journal.truncate(contents.intact_end)
        # Payloads live beside the log: tails no durable record refers to are cut, then only the
        # payloads still alive are read (PayloadCorrupt propagates, as JournalCorrupt does).
        cut = first_unbacked(self.config.state_dir / PAYLOADS_DIR, (payload_refs(r) for r in contents.records))
        if cut is not None:
            log.warning("journal records name payloads that never reached the disk (a power loss mid-commit): "
                        "cut", file=str(path), offset=contents.offsets[cut], records_cut=len(contents.records) - cut)
            journal.truncate(contents.offsets[cut])
            contents = replace(contents, records=contents.records[:cut], offsets=contents.offsets[:cut],
                               intact_end=contents.offsets[cut], size=contents.offsets[cut])
        store = PayloadStore(self.config.state_dir / PAYLOADS_DIR, fsync=self.config.journal_fsync)
        store.open(ref for record in contents.records for ref in payload_refs(record))
        replay(self.state, contents.records, time.time(), store)
        self.writer = JournalWriter(journal, self._deliver, compact_bytes=self.config.compact_bytes,
                                    snapshot=lambda: snapshot(self.state), store=store)
        if contents.records:
            self.writer.compact()
            stats = self.state.statistics()
            log.info("journal replayed", records=len(contents.records), clusters=stats["clusters"],
                     queued=stats["queued"], on_nodes=len(self.state.orphans), finished=stats["finished"])

    async def ask(self, peer: Peer, request: Request) -> Reply:
        """Put ``request`` to the state task as ``peer`` would over a connection of its own; its Reply.

        The dashboard's commands (drain, cancel) take this path, the admin CLI's: the state
        task alone changes the state. The caller bounds the wait (a cancel scope).
        """
        conn = next(self._ids)
        sink = _ReplySink(request.id)
        self._links[conn] = _Link(sink, trio.CancelScope(), f"{peer.role} {peer.name} ({peer.tenant or '-'}) in-process")
        try:
            await self._send_inbox.send(Connected(conn, peer, time.time()))
            await self._send_inbox.send(Received(conn, (request,), time.time()))
            await sink.answered.wait()
        finally:
            self._links.pop(conn, None)
            if self.writer is not None:
                self.writer.forget(conn)
            with trio.CancelScope(shield=True):
                await self._send_inbox.send(Disconnected(conn, "answered", time.time()))
        assert sink.reply is not None
        return sink.reply

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

    # --- connections --------------------------------------------------------

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        admission = self.limits.admit_peer(_peer_host(stream))  # counted until this connection ends
        try:
            await self._handle_connection(stream, admission)
        except Exception:  # noqa: BLE001 - one broken connection must not stop the server
            log.exception("connection handler failed", peer=_describe(stream))
        finally:
            admission.release()

    async def _handle_connection(self, stream: trio.SocketStream, admission: Admission) -> None:
        peer_desc = _describe(stream)
        messages = MessageStream(stream)
        certificate: CertIdentity | None = None
        try:
            if self.config.tls is not None:
                # TLS is the transport; inside it the certificate, the secret or a token proves who it is.
                tls_stream, certificate = await wrap_server(stream, self.config.tls,
                                                            timeout=self.config.handshake_timeout,
                                                            hello_wait=self.config.handshake_timeout / 3)
                messages = MessageStream(tls_stream)
            if admission.refusal:  # over a connection limit: told why in place of a hello (inside TLS), closed
                with trio.move_on_after(1):
                    await messages.send(Refused(admission.refusal))
                raise AuthError(admission.refusal)
            peer = await accept_handshake(messages, self._secret, server_name=self.config.name,
                                          timeout=self.config.handshake_timeout,
                                          max_frame=self.config.max_frame_size,
                                          tokens=self.state.tokens.get,
                                          tenant_secret_allowed=not self.state.tokens,
                                          admit=admission.admit, certificate=certificate)
        except (AuthError, ProtocolError, ConnectionClosed) as exc:
            log.warning("connection refused", peer=peer_desc, reason=str(exc))
            await messages.aclose()
            return
        conn = next(self._ids)
        desc = f"{peer.role} {peer.name or '?'} ({peer.tenant or '-'}) at {peer_desc}"
        log.debug("connected", peer=desc, conn=conn)
        reason = "closed"
        outbox = Outbox()
        try:
            async with trio.open_nursery() as nursery:
                self._links[conn] = _Link(outbox, nursery.cancel_scope, desc)
                await self._send_inbox.send(Connected(conn, peer, time.time()))
                nursery.start_soon(self._write, outbox, messages, nursery.cancel_scope)
                try:
                    while True:
                        # It asks faster than it reads the answers: read on once it catches up.
                        while len(outbox) > MAX_BACKLOG:  # noqa: ASYNC110 - an Outbox has no "drained" event
                            await trio.sleep(BACKLOG_POLL)
                        batch = await messages.receive()
                        if peer.role == "admin" and self._answer_reads(peer, batch, outbox):
                            # Answered here; the state still hears that the connection is alive.
                            await self._send_inbox.send(Received(conn, (), time.time()))
                        else:
                            await self._send_inbox.send(Received(conn, tuple(batch), time.time()))
                except ConnectionClosed as exc:
                    reason = str(exc)
                except ProtocolError as exc:
                    reason = f"protocol error: {exc}"
                    log.warning("protocol error", peer=desc, reason=str(exc))
                nursery.cancel_scope.cancel()
        finally:
            self._links.pop(conn, None)
            if self.writer is not None:
                self.writer.forget(conn)
            with trio.CancelScope(shield=True):
                await self._send_inbox.send(Disconnected(conn, reason, time.time()))
                await messages.aclose()
            log.debug("disconnected", peer=desc, reason=reason)

    def _answer_reads(self, peer: Peer, batch: list[AnyMessage], outbox: Outbox) -> bool:
        """An admin's read-only requests, answered at once from this connection's task.

        They need not queue behind the job traffic in the state task's inbox (an admin's
        ``status`` under load): reading the state between two of its batches is safe (one
        thread; a batch has no await), and the answer is as of the last batch handled.
        """
        if not all(isinstance(m, Request) and m.verb in READ_VERBS for m in batch):
            return False
        now = time.time()
        record = ConnRecord(0, peer.role, peer.tenant, peer.name, now, peer.auth)
        for request in batch:
            assert isinstance(request, Request)
            outbox.put(answer(self.state, record, request, now))
        return True

    @staticmethod
    async def _write(outbox: Outbox, messages: MessageStream, scope: trio.CancelScope) -> None:
        try:
            await outbox.run_writer(messages)
        except ConnectionClosed:
            pass
        scope.cancel()


class StateDirBusy(Exception):
    pass


def _lock_state_dir(state_dir: Path) -> IO[bytes]:
    """One scheduler per state dir: two would interleave their journals."""
    f = open(state_dir / "scheduler.lock", "ab")  # noqa: SIM115 - held for the daemon's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StateDirBusy(f"another scheduler is running on state dir {state_dir}") from None
    return f


def check_exposure(listen: Address, secret_path: Path) -> None:
    """Refuse (SecretError) to listen beyond loopback while the secret file is open to group or others.

    Off loopback the secret is the only thing between the network and the admin verbs;
    a secret other local users can read (or write) protects nothing.
    """
    if listen.is_loopback:
        return
    mode = os.stat(secret_path).st_mode & 0o777
    if mode & 0o077:
        raise SecretError(
            f"refusing to listen on {listen}, beyond loopback: the secret file {secret_path} is open to group "
            f"or others (mode {mode:04o}); make it private first: chmod 600 {secret_path}"
        )


def _peer_host(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"


def _describe(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return str(Address(host, port))


async def serve_scheduler(config: SchedulerConfig, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the scheduler until cancelled. ``task_status.started`` gets the bound address."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    secret = ensure_secret(config.secret_path)
    check_exposure(config.listen, config.secret_path)
    server = SchedulerServer(config, secret)
    lock = _lock_state_dir(config.state_dir)
    if config.journal:
        server.open_journal()
    listeners = await trio.open_tcp_listeners(config.listen.port, host=config.listen.host)
    host, port = listeners[0].socket.getsockname()[:2]
    bound = Address(host, port)
    address_file = config.state_dir / ADDRESS_FILE
    tmp = address_file.with_suffix(".tmp")
    tmp.write_text(f"{bound}\n")
    os.replace(tmp, address_file)  # readers never see a half-written address
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
