"""Mutual HMAC-SHA256 challenge-response on the shared secret, without I/O.

    server -> ServerHello(version, nonce_s)
    client -> ClientHello(version, role, nonce_c, mac_c, tenant, name)
    server -> ServerAuth(mac_s)              or Refused(reason)

``mac_c`` binds the server's fresh nonce, so a recorded hello cannot be
replayed on another connection; ``mac_s`` binds the client's fresh nonce, so
the client knows the server holds the secret too. Both sides prove
knowledge, neither reveals the secret. Identity (role, tenant, name) is part
of what the client MACs, so it cannot be altered in flight.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from fairpool.messages import PROTOCOL_VERSION, ClientHello, Refused, ServerAuth, ServerHello

NONCE_BYTES = 32
ROLES = frozenset({"client", "node", "admin"})


class AuthError(Exception):
    """The peer failed to prove it holds the secret, or spoke another version."""


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as proven by the handshake."""

    role: str
    tenant: str
    name: str


def _client_mac(secret: bytes, server_nonce: bytes, client_nonce: bytes, role: str, tenant: str, name: str) -> bytes:
    # Length-prefixed, so that no two identities (e.g. with NULs inside) MAC alike.
    ident = b"".join(len(b).to_bytes(4, "big") + b for b in (s.encode() for s in (role, tenant, name)))
    return hmac.new(secret, b"fairpool-client\0" + server_nonce + client_nonce + ident, hashlib.sha256).digest()


def _server_mac(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(secret, b"fairpool-server\0" + client_nonce + server_nonce, hashlib.sha256).digest()


class ServerHandshake:
    def __init__(self, secret: bytes, server_name: str = "", nonce: bytes | None = None) -> None:
        self._secret = secret
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        self._server_name = server_name

    def hello(self) -> ServerHello:
        return ServerHello(PROTOCOL_VERSION, self._nonce, self._server_name)

    def check(self, message: object) -> tuple[Peer, ServerAuth]:
        """Verify the client's hello; raise AuthError (whose text is safe to send back)."""
        if not isinstance(message, ClientHello):
            raise AuthError(f"expected ClientHello, got {type(message).__name__}")
        if message.version != PROTOCOL_VERSION:
            raise AuthError(f"protocol version {message.version} is not supported (this server speaks {PROTOCOL_VERSION})")
        if message.role not in ROLES:
            raise AuthError(f"unknown role {message.role!r}")
        if len(message.nonce) != NONCE_BYTES:
            raise AuthError("client nonce has the wrong length")
        if message.nonce == self._nonce:
            raise AuthError("client echoed the server nonce")
        expected = _client_mac(self._secret, self._nonce, message.nonce, message.role, message.tenant, message.name)
        if not hmac.compare_digest(expected, message.mac):
            raise AuthError("authentication failed: wrong secret")
        peer = Peer(message.role, message.tenant, message.name)
        return peer, ServerAuth(_server_mac(self._secret, self._nonce, message.nonce))


class ClientHandshake:
    def __init__(
        self, secret: bytes, role: str, tenant: str = "", name: str = "", nonce: bytes | None = None
    ) -> None:
        self._secret = secret
        self._role = role
        self._tenant = tenant
        self._name = name
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        self._server_nonce: bytes | None = None
        self.server_name = ""

    def respond(self, message: object) -> ClientHello:
        if isinstance(message, Refused):
            raise AuthError(f"refused by server: {message.reason}")
        if not isinstance(message, ServerHello):
            raise AuthError(f"expected ServerHello, got {type(message).__name__}")
        if message.version != PROTOCOL_VERSION:
            raise AuthError(f"server speaks protocol version {message.version}, this client speaks {PROTOCOL_VERSION}")
        if len(message.nonce) != NONCE_BYTES:
            raise AuthError("server nonce has the wrong length")
        self._server_nonce = message.nonce
        self.server_name = message.server
        mac = _client_mac(self._secret, message.nonce, self._nonce, self._role, self._tenant, self._name)
        return ClientHello(PROTOCOL_VERSION, self._role, self._nonce, mac, self._tenant, self._name)

    def finish(self, message: object) -> None:
        if isinstance(message, Refused):
            raise AuthError(f"refused by server: {message.reason}")
        if not isinstance(message, ServerAuth) or self._server_nonce is None:
            raise AuthError(f"expected ServerAuth, got {type(message).__name__}")
        expected = _server_mac(self._secret, self._server_nonce, self._nonce)
        if not hmac.compare_digest(expected, message.mac):
            raise AuthError("the server failed to prove it holds the secret")
