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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog
import trio

from fairpool.address import Address
from fairpool.config import ConfigError, SchedulerConfig
from fairpool.handshake import AuthError
from fairpool.messages import Heartbeat, Message, Reply, Request
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
from fairpool.scheduler.journalwriter import JournalWriter
from fairpool.scheduler.policyfile import load_policy_file
from fairpool.scheduler.replay import replay, snapshot
from fairpool.scheduler.state import SchedulerState
from fairpool.secret import ensure_secret
from fairpool.wire import ConnectionClosed, MessageStream, Outbox, accept_handshake

log = structlog.get_logger("fairpool.scheduler")

INBOX_SIZE = 4096
ADDRESS_FILE = "scheduler.address"
CLOSE_GRACE = 5.0  # seconds a closing connection gets to flush its last messages


@dataclass
class _Link:
    """The shell's side of one authenticated connection."""

    outbox: Outbox
    cancel_scope: trio.CancelScope
    peer_desc: str


class SchedulerServer:
    def __init__(self, config: SchedulerConfig, secret: bytes) -> None:
        self.config = config
        self._secret = secret
        policy_config = load_policy_file(config.policy_file) if config.policy_file else None
        policy = policy_config.make_policy(default=config.policy) if policy_config else make_policy(config.policy)
        self.state = SchedulerState(policy, heartbeat_timeout=config.heartbeat_timeout,
                                    result_retention=config.result_retention)
        if policy_config is not None:
            self.state.dispatcher.configure(tenants=policy_config.tenants)
        self._send_inbox, self._inbox = trio.open_memory_channel[Stimulus](INBOX_SIZE)
        self._links: dict[int, _Link] = {}
        self._ids = itertools.count(1)
        self.writer: JournalWriter | None = None

    def open_journal(self) -> None:
        """Replay the journal into the state, then keep appending to it (compacted first)."""
        path = self.config.state_dir / JOURNAL_NAME
        contents = read_journal(path)  # JournalCorrupt propagates: the daemon must not start
        journal = JournalFile(path, fsync=self.config.journal_fsync)
        if contents.torn:
            log.warning("journal tail was torn (a crash mid-write): cut", file=str(path),
                        offset=contents.intact_end, bytes_cut=contents.size - contents.intact_end)
            journal.truncate(contents.intact_end)
        replay(self.state, contents.records, time.time())
        self.writer = JournalWriter(journal, self._deliver, compact_bytes=self.config.compact_bytes,
                                    snapshot=lambda: snapshot(self.state))
        if contents.records:
            self.writer.compact()
            stats = self.state.statistics()
            log.info("journal replayed", records=len(contents.records), clusters=stats["clusters"],
                     queued=stats["queued"], on_nodes=len(self.state.orphans), finished=stats["finished"])

    def _deliver(self, conn: int, message: Message) -> None:
        link = self._links.get(conn)
        if link is not None:
            link.outbox.put(message)

    # --- the state task -----------------------------------------------------

    async def run_state(self) -> None:
        async for stimulus in self._inbox:
            batch = [stimulus]
            while True:
                try:
                    batch.append(self._inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            self._execute(self.state.handle_many(batch))
            if self.writer is not None:
                self.writer.end_of_batch()

    def _execute(self, instructions: list) -> None:  # type: ignore[type-arg]
        for instruction in instructions:
            match instruction:
                case Send(conn, message, durable):
                    if self.writer is not None:
                        self.writer.send(conn, message, durable)
                    else:
                        self._deliver(conn, message)
                case Persist(record):
                    if self.writer is not None:
                        self.writer.append(record)
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
        try:
            await self._handle_connection(stream)
        except Exception:  # noqa: BLE001 - one broken connection must not stop the server
            log.exception("connection handler failed", peer=_describe(stream))

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        peer_desc = _describe(stream)
        messages = MessageStream(stream)
        try:
            peer = await accept_handshake(messages, self._secret, server_name=self.config.name,
                                          timeout=self.config.handshake_timeout,
                                          max_frame=self.config.max_frame_size,
                                          tokens=self.state.tokens.get,
                                          tenant_secret_allowed=not self.state.tokens)
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
                        batch = await messages.receive()
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
        log.info("scheduler listening", address=str(bound), policy=server.state.policy.name,
                 secret_file=str(config.secret_path))
        task_status.started(bound)
        try:
            await trio.sleep(math.inf)
        finally:
            address_file.unlink(missing_ok=True)
            if server.writer is not None:
                server.writer.flush()  # what was acknowledged is on disk already; the rest too
                server.writer.journal.close()
            lock.close()
            log.info("scheduler stopped", **server.state.statistics())


async def _serve(listeners: list[trio.SocketListener], server: SchedulerServer) -> None:
    await trio.serve_listeners(server.handle_connection, listeners)
