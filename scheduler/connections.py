"""The scheduler's connections: each one accepted, read into stimuli, written to, closed.

``ConnectionHandling`` is the part of ``SchedulerServer``
(``fairpool.scheduler.daemon``) that serves a peer: ``handle_connection``
counts it against the connection limits, wraps it in TLS when configured,
runs the handshake (a refusal is logged and the stream closed), then runs a
reader -- frames become ``Received`` stimuli on the state task's bounded
inbox, an admin's read-only requests are answered at once from the
connection's own task -- and a writer that flushes the connection's
``Outbox`` in batches. A peer that reads no answers stops being read from
while ``MAX_BACKLOG`` messages wait for it. ``ask`` is the same path for a
request from inside the process (the dashboard's commands, SIGHUP): a
connection of its own whose outbox keeps the reply.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import structlog
import trio

from fairpool.address import Address
from fairpool.config import SchedulerConfig
from fairpool.handshake import AuthError, CertIdentity, Peer
from fairpool.messages import AnyMessage, Error, Message, Refused, Reply, Request
from fairpool.protocol import ProtocolError
from fairpool.scheduler.events import Connected, Disconnected, Received, Stimulus
from fairpool.scheduler.journalwriter import JournalWriter
from fairpool.scheduler.limits import Admission, ConnectionLimits
from fairpool.scheduler.queries import READ_VERBS, answer
from fairpool.scheduler.records import ConnRecord
from fairpool.scheduler.state import SchedulerState
from fairpool.tls import wrap_server
from fairpool.wire import ConnectionClosed, MessageStream, Outbox, accept_handshake

log = structlog.get_logger("fairpool.scheduler")

#: A peer with more messages than this waiting to be sent to it is not read from until it catches up:
#: one that sends requests and never reads the replies must not grow our memory without bound.
MAX_BACKLOG = 10_000
BACKLOG_POLL = 0.05


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



class ConnectionHandling:
    """``SchedulerServer``'s connections (see the module docstring)."""

    # (set by SchedulerServer.__init__)
    config: SchedulerConfig
    state: SchedulerState
    limits: ConnectionLimits
    writer: JournalWriter | None
    _secret: bytes
    _links: dict[int, _Link]
    _ids: itertools.count[int]
    _send_inbox: trio.MemorySendChannel[Stimulus]

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
