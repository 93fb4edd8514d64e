"""Mutual TLS: SSL contexts from a CA, a certificate and a key; roles read from certificates.

Owns the transport side of ``tls = {ca, cert, key}``: building (and caching)
the SSL contexts, the TLS handshake of both ends over a trio stream, and what
a verified certificate says about its holder (``CertIdentity``). The
fairpool handshake then runs inside the TLS channel (``fairpool.wire``).

How a certificate says who holds it (``fairpool certs`` issues them so):

* the **role** is a subjectAltName URI ``fairpool:role:ROLE``, ROLE one of
  scheduler, node, client, admin; a certificate must carry exactly one;
* the **name** is the subject's common name (for a client: the tenant).

Both sit inside the part of the certificate the CA signs, and only
certificates that verify against our CA alone are accepted (no system CAs),
so a role cannot be claimed without the CA having signed it. Issued
certificates are not CAs (basicConstraints CA:FALSE, no keyCertSign), so a
holder cannot mint certificates of other roles with its key. As defence in
depth the extended key usage matches the role: serverAuth for the
scheduler, clientAuth for the others, which OpenSSL itself enforces.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from fairpool.handshake import AuthError, CertIdentity
from fairpool.messages import Refused
from fairpool.protocol import encode_frame
from fairpool.tlserrors import describe_alert, describe_verify_failure

ROLE_URI_PREFIX = "fairpool:role:"
CERT_ROLES = ("scheduler", "node", "client", "admin")
#: How long a fresh connection may stay silent before we conclude it does not speak TLS.
DEFAULT_HELLO_WAIT = 2.0
DEFAULT_TLS_TIMEOUT = 10.0
_TLS_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello
_MAX_CACHED = 32


class TlsError(AuthError):
    """A TLS set-up or handshake failed; ``str()`` is a readable reason (safe to log)."""


@dataclass(frozen=True)
class TlsFiles:
    """Where a party's CA certificate, own certificate and private key are."""

    ca: Path
    cert: Path
    key: Path


def tls_files(value: object) -> TlsFiles:
    """``TlsFiles`` from what a user passes: a TlsFiles, or a mapping with ``ca``, ``cert`` and ``key``."""
    if isinstance(value, TlsFiles):
        return value
    if not isinstance(value, dict) or set(value) != {"ca", "cert", "key"}:
        raise ValueError("expected a mapping with exactly the keys 'ca', 'cert' and 'key' (file paths)")
    return TlsFiles(*(Path(value[key]).expanduser() for key in ("ca", "cert", "key")))


def role_uri(role: str) -> str:
    """The subjectAltName URI that gives a certificate its role."""
    if role not in CERT_ROLES:
        raise ValueError(f"unknown role {role!r} (expected one of {', '.join(CERT_ROLES)})")
    return ROLE_URI_PREFIX + role


def identity_from_fields(uris: list[str], common_names: list[str]) -> CertIdentity:
    """The identity a certificate's role URIs and common names give; TlsError if they give none."""
    roles = [uri[len(ROLE_URI_PREFIX):] for uri in uris if uri.startswith(ROLE_URI_PREFIX)]
    if len(roles) != 1 or roles[0] not in CERT_ROLES:
        found = ", ".join(roles) if roles else "none"
        raise TlsError(f"the certificate carries no single fairpool role (found: {found}); "
                       "issue it with `fairpool certs issue ROLE NAME`")
    if len(common_names) != 1 or not common_names[0]:
        raise TlsError("the certificate has no single subject common name (its holder's name)")
    return CertIdentity(roles[0], common_names[0])


def peer_identity(peercert: dict[str, Any] | None) -> CertIdentity:
    """The identity in a verified peer certificate, as ``SSLObject.getpeercert()`` gives it."""
    if not peercert:
        raise TlsError("the peer presented no certificate")
    uris = [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]
    names = [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return identity_from_fields(uris, names)


# --- contexts, cached per files (reloaded when a file changes on disk) -------------------------

_contexts: dict[tuple[bool, TlsFiles], tuple[tuple[int, ...], ssl.SSLContext]] = {}


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """The context a client, node or admin connects with: our CA only, our certificate, host names checked."""
    return _cached(files, server=False)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The scheduler's context: a client certificate from our CA is required."""
    return _cached(files, server=True)


def _cached(files: TlsFiles, *, server: bool) -> ssl.SSLContext:
    stamp = _stamp(files)
    hit = _contexts.get((server, files))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    context = _make_context(files, server=server)
    if len(_contexts) >= _MAX_CACHED:
        _contexts.pop(next(iter(_contexts)))
    _contexts[(server, files)] = (stamp, context)
    return context


def _stamp(files: TlsFiles) -> tuple[int, ...]:
    # A renewed certificate is picked up by the next connection, without a restart.
    stamp: list[int] = []
    for what, path in (("CA certificate", files.ca), ("certificate", files.cert), ("key", files.key)):
        try:
            st = path.stat()
        except FileNotFoundError:
            raise TlsError(f"TLS {what} file {path} does not exist") from None
        except OSError as exc:
            raise TlsError(f"cannot read TLS {what} file {path}: {exc.strerror or exc}") from None
        stamp += [st.st_mtime_ns, st.st_size, st.st_ino]
    return tuple(stamp)


def _no_password() -> bytes:
    raise TlsError("the key is encrypted; fairpool needs an unencrypted key file (mode 0600)")


def _make_context(files: TlsFiles, *, server: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # 1.3 is negotiated whenever both ends have it
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    if server:
        context.num_tickets = 0  # no session resumption: every connection proves its certificate afresh
    else:
        context.check_hostname = True
    _load(lambda: context.load_verify_locations(files.ca), f"the CA certificate {files.ca}")
    _load(lambda: context.load_cert_chain(files.cert, files.key, password=_no_password),
          f"the certificate {files.cert} with the key {files.key}")
    return context


def _load(load: Callable[[], object], what: str) -> None:
    try:
        load()
    except TlsError as exc:
        raise TlsError(f"cannot use {what}: {exc}") from None
    except ssl.SSLError as exc:
        reason = exc.reason or ""
        if reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"cannot use {what}: the key does not belong to the certificate") from None
        if "PEM" in reason or reason in ("NO_CERTIFICATE_OR_CRL_FOUND", "NO_START_LINE"):
            raise TlsError(f"cannot use {what}: not a PEM file of the right kind ({reason})") from None
        raise TlsError(f"cannot use {what}: {exc}") from None
    except OSError as exc:
        raise TlsError(f"cannot use {what}: {exc.strerror or exc}") from None


# --- handshakes --------------------------------------------------------------------------------


async def wrap_client(stream: trio.abc.Stream, files: TlsFiles, server_hostname: str) -> trio.abc.Stream:
    """Run the TLS handshake as a client; the returned stream carries the fairpool protocol.

    Verifies that the server's certificate comes from our CA, names
    ``server_hostname`` and has the role ``scheduler``. Raises TlsError (an
    AuthError) with the reason; ``stream`` is closed then.
    """
    try:
        ssl_stream = trio.SSLStream(stream, client_context(files), server_hostname=server_hostname)
        try:
            await ssl_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            await _send_alert(ssl_stream, stream)
            raise TlsError(_client_reason(exc, server_hostname, files)) from None
        identity = peer_identity(ssl_stream.getpeercert())
        if identity.role != "scheduler":
            raise TlsError(f"the server at {server_hostname} has a {identity.role} certificate, not a scheduler's")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return TlsClientStream(ssl_stream)


async def _send_alert(ssl_stream: trio.SSLStream[trio.abc.Stream], transport: trio.abc.Stream) -> None:
    """Send the alert OpenSSL wrote when the handshake failed, which trio's SSLStream leaves unsent.

    Without it the peer sees the connection drop instead of *why* ("unknown
    CA", "certificate expired"). It sits in trio's private outgoing buffer:
    if a trio version moves it, the peer just sees the drop.
    """
    pending = getattr(ssl_stream, "_delayed_outgoing", None) or b""
    outgoing = getattr(ssl_stream, "_outgoing", None)
    if isinstance(outgoing, ssl.MemoryBIO):
        pending += outgoing.read()
    if pending:
        with trio.move_on_after(1):
            try:
                await transport.send_all(pending)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                pass


def _client_reason(exc: BaseException, host: str, files: TlsFiles) -> str:
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return describe_verify_failure(cause, server_side=False, ca=files.ca, host=host)
    if isinstance(cause, ssl.SSLError):
        return describe_alert(cause, server_side=False, host=host)
    return f"the server at {host} closed the connection during the TLS handshake"


class TlsClientStream(trio.abc.Stream):
    """A client's TLS stream whose first read reports the server refusing our certificate clearly.

    In TLS 1.3 the client finishes its handshake before the server has
    checked the client certificate; a refusal (expired, foreign CA...) only
    arrives as an alert on the first read. Until a first read succeeded it is
    raised as TlsError (so ``open_connection`` reports it like any refusal);
    later failures are ordinary broken connections.
    """

    def __init__(self, ssl_stream: trio.SSLStream[trio.abc.Stream]) -> None:
        self.ssl_stream = ssl_stream
        self._accepted = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._accepted:
            return await self.ssl_stream.receive_some(max_bytes)
        try:
            data = await self.ssl_stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            if isinstance(exc.__cause__, ssl.SSLError):
                raise TlsError(describe_alert(exc.__cause__, server_side=False)) from None
            raise
        self._accepted = bool(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.ssl_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.ssl_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.ssl_stream.aclose()


async def wrap_server(
    stream: trio.abc.Stream,
    files: TlsFiles,
    *,
    timeout: float = DEFAULT_TLS_TIMEOUT,
    hello_wait: float = DEFAULT_HELLO_WAIT,
) -> tuple[trio.SSLStream[trio.abc.Stream], CertIdentity]:
    """Run the TLS handshake as the scheduler, requiring a client certificate from our CA; its identity.

    A peer that sends nothing within ``hello_wait`` (a fairpool client without
    ``tls=`` waits for the server to speak first) is sent a plain ``Refused``
    saying that TLS is required. Raises TlsError with the reason (``stream``
    is closed then); the whole handshake must end within ``timeout``.
    """
    try:
        with trio.fail_after(timeout):
            await _expect_tls(stream, min(hello_wait, timeout))
            ssl_stream = trio.SSLStream(stream, server_context(files), server_side=True)
            try:
                await ssl_stream.do_handshake()
            except trio.BrokenResourceError as exc:
                await _send_alert(ssl_stream, stream)
                raise TlsError(_server_reason(exc, files)) from None
            identity = peer_identity(ssl_stream.getpeercert())
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise TlsError(f"TLS handshake not completed within {timeout:g}s") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return ssl_stream, identity


async def _expect_tls(stream: trio.abc.Stream, wait: float) -> None:
    """Refuse, in plain fairpool framing, a peer that does not open with a TLS hello."""
    if not isinstance(stream, trio.SocketStream):
        return  # nothing to peek at (a test's memory stream): let the handshake decide
    first = b""
    with trio.move_on_after(wait):
        try:
            first = await stream.socket.recv(1, socket.MSG_PEEK)
        except OSError as exc:
            raise TlsError(f"connection lost before the TLS handshake: {exc.strerror or exc}") from None
        if not first:
            raise TlsError("connection closed before the TLS handshake")
    if first and first[0] == _TLS_HANDSHAKE_RECORD:
        return
    if first:
        told, reason = "this scheduler requires TLS", "not a TLS connection: the peer did not open with a TLS hello"
    else:
        told = "this scheduler requires TLS: connect with tls={ca, cert, key}"
        reason = f"not a TLS connection: the peer sent nothing within {wait:g}s (a client without tls=?)"
    # Told in plain framing, so that a fairpool client without TLS reports why it was refused.
    with trio.move_on_after(1):
        try:
            await stream.send_all(encode_frame(Refused(told)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    raise TlsError(reason)


def _server_reason(exc: BaseException, files: TlsFiles) -> str:
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return describe_verify_failure(cause, server_side=True, ca=files.ca)
    if isinstance(cause, ssl.SSLError):
        return describe_alert(cause, server_side=True)
    return "the peer closed the connection during the TLS handshake"
