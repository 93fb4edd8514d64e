"""The admin client: who to connect to and as whom, and one Request -> Reply round trip.

Used by ``fairpool admin`` (``fairpool.admincli``) and by anything else that
wants to ask a running scheduler a question in a few lines::

    creds = resolve_credentials(scheduler="127.0.0.1:51350", secret_file=".fairpool/secret")
    body = call(creds, "nodes.list")

Credentials come from arguments, else the ``FAIRPOOL_*`` variables, else the
defaults of ``fairpool up`` (``127.0.0.1:51350``, ``./.fairpool/secret``).
Three credentials, one connection each:

* the cluster secret alone: the admin (role "admin");
* a tenant and its token (``tenants add`` prints it): that tenant's client
  connection (role "client", ``auth="token"``); no secret file is read. The
  scheduler lets it see and cancel only that tenant's jobs (``jobs``,
  ``why``: ``TENANT_VERBS``); every other verb is refused here already;
* TLS files (``--tls-ca/--tls-cert/--tls-key``) without a secret file or a
  token: the certificate says who we are (``auth="tls"``). With a secret file
  or a token too, that credential is checked inside the TLS channel.

A tenant name with the cluster secret (no token) is a tenant's client too:
schedulers that have issued no token accept that.

Every failure is an exception whose text is one line for the user:
``AdminUsageError`` (a malformed flag: exit 2) or ``AdminError`` (the
scheduler unreachable, the credential wrong, the request refused: exit 1).
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from fairpool.address import DEFAULT_HOST, DEFAULT_PORT, Address, AddressError
from fairpool.handshake import AuthError, CertIdentity
from fairpool.messages import Error, Reply, Request
from fairpool.protocol import ProtocolError
from fairpool.secret import SecretError, read_secret
from fairpool.tls import TlsError, TlsFiles
from fairpool.tokens import TokenError, token_bytes
from fairpool.wire import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    ConnectionClosed,
    MessageStream,
    open_connection,
)

DEFAULT_SCHEDULER = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_SECRET_FILE = Path(".fairpool") / "secret"
DEFAULT_TIMEOUT = 30.0  # seconds for connecting, authenticating and the reply, together
ENV_SCHEDULER, ENV_SECRET_FILE = "FAIRPOOL_SCHEDULER", "FAIRPOOL_SECRET_FILE"
ENV_TENANT, ENV_TOKEN = "FAIRPOOL_TENANT", "FAIRPOOL_TOKEN"
ENV_TLS = {"ca": "FAIRPOOL_TLS_CA", "cert": "FAIRPOOL_TLS_CERT", "key": "FAIRPOOL_TLS_KEY"}
#: What a tenant's credential may ask (the scheduler refuses the rest to it as well).
TENANT_VERBS = frozenset({"jobs.list", "jobs.show", "jobs.cancel", "why"})
_NO_PORT = -1


class AdminUsageError(Exception):
    """A connection flag is malformed (exit code 2)."""


class AdminError(Exception):
    """The request could not be done: unreachable, refused, not found (exit code 1)."""


class RequestRefused(AdminError):
    """The scheduler answered ``ok=False``; the text is its error."""

    def __init__(self, verb: str, error: str) -> None:
        super().__init__(error)
        self.verb = verb
        self.error = error


@dataclass(frozen=True)
class Credentials:
    """Where the scheduler is and who we are to it."""

    scheduler: Address
    role: str  # "admin" | "client"
    tenant: str  # "" for the admin
    secret_file: Path | None  # None: no secret is used (a token, or a TLS certificate)
    secret: bytes = field(default=b"", repr=False)  # never in a log line or a traceback
    auth: str = "secret"  # what proves who we are: "secret" | "token" | "tls"
    token: str | None = field(default=None, repr=False)
    tls: TlsFiles | None = None

    def describe(self) -> str:
        return "admin" if self.role == "admin" else f"tenant {self.tenant!r}"

    def proof(self) -> str:
        """Which credential we showed, for error messages (never its value)."""
        if self.auth == "token":
            return f"tenant {self.tenant!r} with its token"
        if self.auth == "tls":
            return f"the TLS certificate {self.tls.cert if self.tls else '?'}"
        return f"secret file {self.secret_file}"

    def may_ask(self, verb: str) -> bool:
        return self.role == "admin" or verb in TENANT_VERBS


def parse_scheduler_address(text: str, source: str = "--scheduler") -> Address:
    """HOST:PORT, port required (as for a node's ``--scheduler``); AdminUsageError says what is wrong."""
    try:
        address = Address.parse(text, default_port=_NO_PORT)
    except AddressError as exc:
        raise AdminUsageError(f"bad value for {source}: {exc} (expected HOST:PORT, e.g. {DEFAULT_SCHEDULER})") from None
    if address.port == _NO_PORT:
        raise AdminUsageError(f"bad value for {source}: bad address {text.strip()!r}: no port "
                              f"(expected HOST:PORT, e.g. {DEFAULT_SCHEDULER})")
    if address.port == 0:
        raise AdminUsageError(f"bad value for {source}: bad address {text.strip()!r}: port 0 cannot be connected to")
    return address


def resolve_credentials(
    *,
    scheduler: str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    tenant: str | None = None,
    token: str | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Arguments first, then ``FAIRPOOL_*`` variables, then the defaults of ``fairpool up``."""
    env = os.environ if environ is None else environ
    if scheduler is not None:
        address = parse_scheduler_address(scheduler)
    elif env.get(ENV_SCHEDULER):
        address = parse_scheduler_address(env[ENV_SCHEDULER], ENV_SCHEDULER)
    else:
        address = parse_scheduler_address(DEFAULT_SCHEDULER)
    if tenant is not None and not tenant.strip():
        raise AdminUsageError("bad value for --tenant: the tenant name is empty")
    if token is not None and tenant is None and not env.get(ENV_TENANT):
        raise AdminUsageError("--token goes with --tenant NAME (a tenant's credential)")
    if token is not None and secret_file is not None:
        raise AdminUsageError("--secret-file and --token are two credentials: give one (the secret is the "
                              "admin's, a token a tenant's)")
    tenant_name = (tenant if tenant is not None else env.get(ENV_TENANT, "")).strip()
    role = "client" if tenant_name else "admin"
    tls = _tls_files(tls_ca, tls_cert, tls_key, env)
    # An explicit --secret-file beats a token from the environment; a token needs a tenant.
    token_text = token if token is not None else env.get(ENV_TOKEN) if secret_file is None else None
    if tenant_name and token_text:
        source = "--token" if token is not None else ENV_TOKEN
        try:
            token_bytes(token_text)
        except TokenError as exc:
            raise AdminUsageError(f"bad value for {source}: {exc}") from None
        return Credentials(address, role, tenant_name, None, auth="token", token=token_text.strip(), tls=tls)
    if tls is not None and secret_file is None:
        identity = _certificate_identity(tls) if not tenant_name else None
        if identity is not None and identity.role == "client":
            # A tenant's certificate without --tenant: act as the tenant it names.
            return Credentials(address, "client", identity.name, None, auth="tls", tls=tls)
        return Credentials(address, role, tenant_name, None, auth="tls", tls=tls)
    path = Path(secret_file if secret_file is not None else env.get(ENV_SECRET_FILE) or DEFAULT_SECRET_FILE)
    try:
        secret = read_secret(path)
    except SecretError as exc:
        hint = (f"; {ENV_TOKEN} is set, but a token is a tenant's: name it with --tenant or {ENV_TENANT}"
                if token_text and not tenant_name else "")
        raise AdminError(f"{exc} (pass --secret-file or set {ENV_SECRET_FILE}, or --tenant NAME --token TOKEN; "
                         f"'fairpool up' creates {DEFAULT_SECRET_FILE} in the directory it runs in{hint})") from None
    return Credentials(address, role, tenant_name, path, secret, tls=tls)


def _certificate_identity(tls: TlsFiles) -> CertIdentity:
    # cryptography's x509 is loaded only when TLS is used.
    from fairpool.certs import certificate_identity

    try:
        return certificate_identity(tls.cert)
    except (TlsError, OSError) as exc:
        raise AdminUsageError(f"bad value for --tls-cert: {exc}") from None


def _tls_files(ca: str | os.PathLike[str] | None, cert: str | os.PathLike[str] | None,
               key: str | os.PathLike[str] | None, env: Mapping[str, str]) -> TlsFiles | None:
    """All three TLS files (flags, else variables) or none; AdminUsageError names what is missing."""
    given = {"ca": ca, "cert": cert, "key": key}
    paths: dict[str, Path] = {}
    for part, value in given.items():
        text = os.fspath(value) if value is not None else env.get(ENV_TLS[part], "")
        if text:
            paths[part] = Path(text)
    if not paths:
        return None
    missing = [f"--tls-{part} (or {ENV_TLS[part]})" for part in given if part not in paths]
    if missing:
        raise AdminUsageError(f"TLS needs a CA certificate, a certificate and its key: missing {', '.join(missing)}")
    for part, path in paths.items():
        if not path.is_file():
            source = f"--tls-{part}" if given[part] is not None else ENV_TLS[part]
            raise AdminUsageError(f"bad value for {source}: no such file {str(path)!r}")
    return TlsFiles(paths["ca"], paths["cert"], paths["key"])


# --- talking to the scheduler ------------------------------------------------------------


class AdminSession:
    """One authenticated connection; ``request`` sends a Request and waits for its Reply."""

    def __init__(self, stream: MessageStream, credentials: Credentials) -> None:
        self._stream = stream
        self._credentials = credentials
        self._ids = itertools.count(1)

    async def request(self, verb: str, args: Mapping[str, Any] | None = None) -> Any:
        """The reply's body; RequestRefused with the scheduler's error when it says no."""
        request_id = next(self._ids)
        where = self._credentials.scheduler
        try:
            await self._stream.send(Request(request_id, verb, dict(args or {})))
            while True:
                for message in await self._stream.receive():
                    if isinstance(message, Reply) and message.id == request_id:
                        if not message.ok:
                            raise RequestRefused(verb, message.error or f"{verb!r} refused")
                        return message.body
                    if isinstance(message, Error):  # our request broke a rule: the scheduler hangs up
                        raise AdminError(f"the scheduler at {where} refused {verb!r}: {message.reason}")
                    # Heartbeats and anything else addressed to a long-lived client: not ours to handle.
        except ConnectionClosed as exc:
            raise AdminError(f"the scheduler at {where} closed the connection before replying ({exc})") from None
        except ProtocolError as exc:
            raise AdminError(f"the scheduler at {where} sent something unreadable: {exc}") from None


@asynccontextmanager
async def admin_session(credentials: Credentials, *, timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> AsyncIterator[AdminSession]:
    """Connect and authenticate (AdminError if that fails), yield a session, hang up."""
    where = credentials.scheduler
    name = f"admin@{socket.gethostname()}:{os.getpid()}"
    try:
        stream = await open_connection(where, credentials.secret, role=credentials.role,
                                       tenant=credentials.tenant, name=name, timeout=timeout,
                                       auth=credentials.auth, token=credentials.token, tls=credentials.tls)
    except ConnectionClosed as exc:
        raise AdminError(f"cannot reach the fairpool scheduler at {where}: {_reason(exc, where)}") from None
    except AuthError as exc:
        raise AdminError(f"the fairpool scheduler at {where} did not accept us: {exc} "
                         f"({credentials.proof()})") from None
    except ProtocolError as exc:
        raise AdminError(f"cannot talk to the fairpool scheduler at {where}: {exc}") from None
    try:
        yield AdminSession(stream, credentials)
    finally:
        await stream.aclose()


async def request_async(credentials: Credentials, verb: str, args: Mapping[str, Any] | None = None, *,
                        timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Connect, ask once, hang up: the reply's body."""
    with trio.move_on_after(timeout) as scope:
        async with admin_session(credentials, timeout=timeout) as session:
            return await session.request(verb, args)
    assert scope.cancelled_caught
    raise AdminError(f"no reply from the fairpool scheduler at {credentials.scheduler} to {verb!r} "
                     f"within {timeout:g}s")


def call(credentials: Credentials, verb: str, args: Mapping[str, Any] | None = None, *,
         timeout: float = DEFAULT_TIMEOUT) -> Any:
    """``request_async`` for synchronous code (a fresh trio run: not from inside one)."""
    return trio.run(lambda: request_async(credentials, verb, args, timeout=timeout))


def _reason(exc: ConnectionClosed, where: Address) -> str:
    """The OS's words ("Connection refused") rather than trio's "all attempts ... failed"."""
    os_error = exc.__context__  # open_connection raised ConnectionClosed while handling it
    causes = os_error.__cause__ if isinstance(os_error, OSError) else None
    if isinstance(causes, BaseExceptionGroup):
        words = {os.strerror(e.errno) if e.errno else str(e) for e in causes.exceptions if isinstance(e, OSError)}
        if words:
            return "; ".join(sorted(words))
    text = str(exc)
    prefix = f"could not connect to {where}: "
    return text[len(prefix):] if text.startswith(prefix) else text
