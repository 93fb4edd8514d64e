"""Mutual authentication of a fresh connection, without I/O.

    server -> ServerHello(version, nonce_s)
    client -> ClientHello(version, role, nonce_c, mac_c, tenant, name, auth)
    server -> ServerAuth(mac_s, tenant)      or Refused(reason)

Three ways to prove who you are (``auth``):

* ``secret``: HMAC-SHA256 on the cluster secret. ``mac_c`` binds the server's
  fresh nonce, so a recorded hello cannot be replayed on another connection;
  ``mac_s`` binds the client's fresh nonce, so the client knows the server
  holds the secret too. Identity (role, tenant, name) is inside the MAC, so
  it cannot be altered in flight. Admins and nodes use it; tenant clients
  too until tenant tokens are issued.
* ``token``: a tenant's token, SCRAM-style (tokens.py); only for role
  ``client``, and the tenant is the one the token was issued to.
* ``tls``: the TLS layer below already verified the client certificate; the
  identity comes from it (``CertIdentity``) and must match the claimed role.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from fairpool.messages import PROTOCOL_VERSION, ClientHello, Refused, ServerAuth, ServerHello
from fairpool.tokens import TokenError, TokenKeys, check_proof, client_proof, token_keys

NONCE_BYTES = 32
ROLES = frozenset({"client", "node", "admin"})
AUTH_MODES = frozenset({"secret", "token", "tls"})
WRONG_TOKEN = "authentication failed: unknown tenant or wrong token"

TokenLookup = Callable[[str], "TokenKeys | None"]


class AuthError(Exception):
    """The peer failed to prove who it is, or spoke another version."""


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as proven by the handshake."""

    role: str
    tenant: str
    name: str
    auth: str = "secret"


@dataclass(frozen=True)
class CertIdentity:
    """What a verified peer certificate says: its role and its name (for a client, the tenant)."""

    role: str
    name: str


def _identity(role: str, tenant: str, name: str) -> bytes:
    # Length-prefixed, so that no two identities (e.g. with NULs inside) MAC alike.
    return b"".join(len(b).to_bytes(4, "big") + b for b in (s.encode() for s in (role, tenant, name)))


def _transcript(server_nonce: bytes, client_nonce: bytes, role: str, tenant: str, name: str) -> bytes:
    return server_nonce + client_nonce + _identity(role, tenant, name)


def _client_mac(secret: bytes, server_nonce: bytes, client_nonce: bytes, role: str, tenant: str, name: str) -> bytes:
    transcript = _transcript(server_nonce, client_nonce, role, tenant, name)
    return hmac.new(secret, b"fairpool-client\0" + transcript, hashlib.sha256).digest()


def _server_mac(key: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(key, b"fairpool-server\0" + client_nonce + server_nonce, hashlib.sha256).digest()


class ServerHandshake:
    """The scheduler's side.

    ``tokens`` looks up a tenant's TokenKeys; ``tenant_secret_allowed`` is
    False once tokens are issued (the secret then stays the admin's and the
    nodes'); ``certificate`` is the verified TLS client certificate, if any.
    """

    def __init__(
        self,
        secret: bytes,
        server_name: str = "",
        nonce: bytes | None = None,
        *,
        tokens: TokenLookup | None = None,
        tenant_secret_allowed: bool = True,
        certificate: CertIdentity | None = None,
    ) -> None:
        self._secret = secret
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        self._server_name = server_name
        self._tokens = tokens
        self._tenant_secret_allowed = tenant_secret_allowed
        self._certificate = certificate

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
        if message.auth not in AUTH_MODES:
            raise AuthError(f"unknown authentication method {message.auth!r}")
        if len(message.nonce) != NONCE_BYTES:
            raise AuthError("client nonce has the wrong length")
        if message.nonce == self._nonce:
            raise AuthError("client echoed the server nonce")
        match message.auth:
            case "secret":
                return self._check_secret(message)
            case "token":
                return self._check_token(message)
            case _:
                return self._check_certificate(message)

    def _check_secret(self, message: ClientHello) -> tuple[Peer, ServerAuth]:
        expected = _client_mac(self._secret, self._nonce, message.nonce, message.role, message.tenant, message.name)
        if not hmac.compare_digest(expected, message.mac):
            raise AuthError("authentication failed: wrong secret")
        if message.role == "client" and not self._tenant_secret_allowed:
            raise AuthError("this scheduler issues tenant tokens: connect with tenant= and token= "
                            "(the cluster secret is only for admins and nodes)")
        peer = Peer(message.role, message.tenant, message.name, "secret")
        return peer, ServerAuth(_server_mac(self._secret, self._nonce, message.nonce), message.tenant)

    def _check_token(self, message: ClientHello) -> tuple[Peer, ServerAuth]:
        if message.role != "client":
            raise AuthError(f"a tenant token cannot authenticate role {message.role!r}")
        keys = self._tokens(message.tenant) if self._tokens is not None and message.tenant else None
        transcript = _transcript(self._nonce, message.nonce, message.role, message.tenant, message.name)
        # Unknown tenant and wrong token give the same answer: no probing for tenant names.
        if keys is None or not check_proof(keys, transcript, message.mac):
            raise AuthError(WRONG_TOKEN)
        peer = Peer("client", message.tenant, message.name, "token")
        return peer, ServerAuth(_server_mac(keys.server_key, self._nonce, message.nonce), message.tenant)

    def _check_certificate(self, message: ClientHello) -> tuple[Peer, ServerAuth]:
        cert = self._certificate
        if cert is None:
            raise AuthError("certificate authentication needs TLS with a client certificate")
        if cert.role != message.role:
            raise AuthError(f"the certificate is for role {cert.role!r}, not {message.role!r}")
        tenant = message.tenant
        if message.role == "client":
            if tenant and tenant != cert.name:
                raise AuthError(f"the certificate is for tenant {cert.name!r}, not {tenant!r}")
            tenant = cert.name
        peer = Peer(message.role, tenant, message.name or cert.name, "tls")
        return peer, ServerAuth(b"", tenant)


class ClientHandshake:
    """The connecting side: ``auth`` says which credential is used (``secret`` or ``token`` or ``tls``)."""

    def __init__(
        self,
        secret: bytes,
        role: str,
        tenant: str = "",
        name: str = "",
        nonce: bytes | None = None,
        *,
        auth: str = "secret",
        token: str | None = None,
    ) -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"unknown authentication method {auth!r}")
        if auth == "token" and not token:
            raise ValueError("token authentication needs a token")
        self._secret = secret
        self._role = role
        self._tenant = tenant
        self._name = name
        self._auth = auth
        self._token = token
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        self._server_nonce: bytes | None = None
        self.server_name = ""
        self.tenant = tenant  # as the server recognised us (ServerAuth)

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
        match self._auth:
            case "secret":
                mac = _client_mac(self._secret, message.nonce, self._nonce, self._role, self._tenant, self._name)
            case "token":
                assert self._token is not None
                transcript = _transcript(message.nonce, self._nonce, self._role, self._tenant, self._name)
                try:
                    mac = client_proof(self._token, transcript)
                except TokenError as exc:
                    raise AuthError(str(exc)) from None
            case _:
                mac = b""
        return ClientHello(PROTOCOL_VERSION, self._role, self._nonce, mac, self._tenant, self._name, self._auth)

    def finish(self, message: object) -> None:
        if isinstance(message, Refused):
            raise AuthError(f"refused by server: {message.reason}")
        if not isinstance(message, ServerAuth) or self._server_nonce is None:
            raise AuthError(f"expected ServerAuth, got {type(message).__name__}")
        match self._auth:
            case "secret":
                expected = _server_mac(self._secret, self._server_nonce, self._nonce)
            case "token":
                assert self._token is not None
                expected = _server_mac(token_keys(self._token).server_key, self._server_nonce, self._nonce)
            case _:
                expected = b""  # TLS verified the server's certificate already
        if not hmac.compare_digest(expected, message.mac):
            raise AuthError("the server failed to prove who it is")
        self.tenant = message.tenant or self._tenant
