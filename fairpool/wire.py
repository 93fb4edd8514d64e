"""The trio shell around the sans-IO protocol: framed streams, batched outboxes, handshakes.

Everything that talks over a socket (scheduler, node, client, admin) uses
these: ``MessageStream`` reads whatever the socket has and returns all the
messages in it; ``Outbox`` lets any task queue a message while one writer
task sends everything queued in one ``send_all`` (batching at every hop);
``open_connection`` / ``accept_handshake`` run the HMAC handshake under a
deadline.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from fairpool.address import Address
from fairpool.handshake import (
    AuthError,
    CertIdentity,
    ClientHandshake,
    Peer,
    ServerHandshake,
    TokenLookup,
)
from fairpool.messages import AnyMessage, Message, Refused
from fairpool.outbox import Outbox
from fairpool.protocol import (
    DEFAULT_MAX_FRAME,
    PREAUTH_MAX_FRAME,
    Connection,
    ProtocolError,
)
from fairpool.tls import TlsFiles, wrap_client

__all__ = ["ConnectionClosed", "MessageStream", "Outbox", "accept_handshake", "open_connection"]

RECEIVE_SIZE = 256 * 1024
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class ConnectionClosed(Exception):
    """The peer closed the connection (cleanly, between frames)."""


class MessageStream:
    def __init__(self, stream: trio.abc.Stream, max_frame: int = PREAUTH_MAX_FRAME) -> None:
        self.stream = stream
        self.protocol = Connection(max_frame)
        self._pending: list[AnyMessage] = []
        self._plain = isinstance(stream, trio.SocketStream)  # (a large frame's rest: ``recv_into``)

    async def receive_one(self) -> AnyMessage:
        """The next message; any that arrived with it wait for the next ``receive``."""
        if not self._pending:
            self._pending = await self.receive()
        return self._pending.pop(0)

    async def receive(self) -> list[AnyMessage]:
        """Wait for at least one message; return every complete message received so far."""
        if self._pending:
            messages, self._pending = self._pending, []
            return messages
        while True:
            into = self.protocol.receive_buffer() if self._plain else None
            try:
                if into is not None:
                    messages = await self._receive_into(into)
                    if messages:
                        return messages
                    continue
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionClosed(f"connection lost: {exc}") from None
            messages = self.protocol.receive_data(data)
            if messages:
                return messages
            if not data:
                raise ConnectionClosed("connection closed by peer")

    async def _receive_into(self, into: memoryview) -> list[AnyMessage]:
        """The rest of a large frame, received straight into its buffer (no chunk copied there)."""
        assert isinstance(self.stream, trio.SocketStream)
        with into:
            count = await self.stream.socket.recv_into(into)
        if not count:
            return self.protocol.receive_data(b"")  # the peer hung up inside the frame: ProtocolError
        return self.protocol.received_into(count)

    async def send(self, *messages: Message) -> None:
        await self.send_bytes(self.protocol.send(*messages))

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send frames encoded already (``encode_frames``)."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from None

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self.stream.aclose()


async def accept_handshake(
    stream: MessageStream,
    secret: bytes,
    *,
    server_name: str = "",
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_frame: int = DEFAULT_MAX_FRAME,
    tokens: TokenLookup | None = None,
    tenant_secret_allowed: bool = True,
    certificate: CertIdentity | None = None,
    admit: Callable[[Peer], None] | None = None,
) -> Peer:
    """Authenticate a peer that connected to us; raise AuthError/ProtocolError/ConnectionClosed.

    ``certificate``: the identity of the client certificate TLS verified below
    ``stream``, if any; ``tokens`` / ``tenant_secret_allowed``: see ServerHandshake.
    ``admit``: called with the proven peer before it is told it is in; an
    AuthError it raises (e.g. a connection limit) is sent back as Refused.
    """
    handshake = ServerHandshake(secret, server_name, tokens=tokens, tenant_secret_allowed=tenant_secret_allowed,
                                certificate=certificate)
    try:
        with trio.fail_after(timeout):
            await stream.send(handshake.hello())
            messages = await stream.receive()
            if len(messages) != 1:
                raise AuthError("unexpected messages before authentication")
            try:
                peer, auth = handshake.check(messages[0])
                if admit is not None:
                    admit(peer)
            except AuthError as exc:
                with trio.move_on_after(1):
                    await stream.send(Refused(str(exc)))
                raise
            await stream.send(auth)
    except trio.TooSlowError:
        raise AuthError(f"handshake not completed within {timeout:g}s") from None
    stream.protocol.max_frame = max_frame
    return peer


async def open_connection(
    address: Address,
    secret: bytes,
    *,
    role: str,
    tenant: str = "",
    name: str = "",
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_frame: int = DEFAULT_MAX_FRAME,
    auth: str = "secret",
    token: str | None = None,
    tls: TlsFiles | None = None,
) -> MessageStream:
    """Connect to a scheduler and authenticate both ways.

    ``auth`` says what proves who we are: ``secret`` (the cluster secret),
    ``token`` (a tenant token) or ``tls`` (the client certificate in ``tls``).
    With ``tls`` given, the connection runs inside mutual TLS whatever ``auth`` is.
    """
    try:
        with trio.fail_after(timeout):
            tcp: trio.abc.Stream = await trio.open_tcp_stream(address.host, address.port)
            if tls is not None:
                tcp = await wrap_client(tcp, tls, address.host)
    except trio.TooSlowError:
        raise ConnectionClosed(f"could not connect to {address} within {timeout:g}s") from None
    except OSError as exc:
        raise ConnectionClosed(f"could not connect to {address}: {exc.strerror or exc}") from None
    stream = MessageStream(tcp)
    handshake = ClientHandshake(secret, role, tenant, name, auth=auth, token=token)
    try:
        with trio.fail_after(timeout):
            hello = await stream.receive_one()
            await stream.send(handshake.respond(hello))
            # What the server sends right after its ServerAuth (a heartbeat...) stays queued.
            handshake.finish(await stream.receive_one())
    except trio.TooSlowError:
        await stream.aclose()
        raise AuthError(f"handshake with {address} not completed within {timeout:g}s") from None
    except (AuthError, ProtocolError, ConnectionClosed):
        await stream.aclose()
        raise
    stream.protocol.max_frame = max_frame
    return stream
