"""Where a client connects and as whom: arguments, else ``FAIRPOOL_*`` variables, else defaults.

``resolve_settings`` is shared by everything that opens a client connection
(``SharedJobCluster``, ``reattach`` and ``recover_jobs``, an executor's
sibling cluster), so the precedence rules live in one place:

* scheduler: ``scheduler=``, ``FAIRPOOL_SCHEDULER``, ``127.0.0.1:51350``
* secret file: ``secret_file=``, ``FAIRPOOL_SECRET_FILE``, ``.fairpool/secret``
  (what ``fairpool up`` creates in its working directory)
* tenant: ``tenant=``, ``FAIRPOOL_TENANT``, the OS user name
* token: ``token=``, ``FAIRPOOL_TOKEN``; with a token no secret file is read
  (a tenant token alone is enough to connect)
* tls: ``tls=`` (``{"ca": ..., "cert": ..., "key": ...}``); with TLS and no
  token, the client certificate says who we are and no secret file is read;
  its name is then the tenant (unless ``tenant=`` names one: the scheduler
  refuses a tenant the certificate does not name)

``connection_timing`` checks the connection's timing keywords
(``heartbeat_timeout=``: how long the client hears nothing from the
scheduler before it counts the connection dead and reconnects).
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairpool.address import DEFAULT_HOST, DEFAULT_PORT, Address, AddressError
from fairpool.clients.errors import ClientConfigError
from fairpool.secret import SecretError, read_secret
from fairpool.tls import TlsError, TlsFiles, client_context, tls_files

if TYPE_CHECKING:
    from fairpool.clients.connection import ConnectionTiming

DEFAULT_SCHEDULER = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_SECRET_FILE = os.path.join(".fairpool", "secret")


@dataclass(frozen=True)
class ClientSettings:
    scheduler: Address
    tenant: str
    secret_file: Path  # absolute, so the recover file still works from another directory
    secret: bytes
    name: str  # how this client introduces itself: "host:pid"
    token: str | None = None
    tls: TlsFiles | None = None

    @property
    def auth(self) -> str:
        """How this client proves who it is: "token", "tls" or "secret"."""
        if self.token:
            return "token"
        return "tls" if self.tls is not None and not self.secret else "secret"

    def connect_kwargs(self) -> dict[str, object]:
        """The credential arguments of ``fairpool.wire.open_connection``."""
        return {"auth": self.auth, "token": self.token, "tls": self.tls}

    def cluster_kwargs(self) -> dict[str, Any]:
        """The connection keywords of ``SharedJobCluster`` (and ``reattach``, ``recover_jobs``)
        that resolve to these settings again: how a sibling cluster connects as this one does."""
        return {"scheduler": str(self.scheduler), "tenant": self.tenant, "token": self.token, "tls": self.tls,
                # the secret file only if it was read: with a token or a certificate there is none
                "secret_file": self.secret_file if self.secret else None}

    @property
    def tls_paths(self) -> dict[str, str] | None:
        """``tls=`` as a JSON-able mapping of file paths (what the recover file keeps), or None."""
        if self.tls is None:
            return None
        return {"ca": str(self.tls.ca.absolute()), "cert": str(self.tls.cert.absolute()),
                "key": str(self.tls.key.absolute())}

    def __repr__(self) -> str:
        # Never let the secret or the token reach a log line or a traceback.
        return (
            f"ClientSettings(scheduler={self.scheduler}, tenant={self.tenant!r}, "
            f"secret_file={str(self.secret_file)!r}, name={self.name!r}, auth={self.auth!r})"
        )


def resolve_settings(
    scheduler: str | Address | None = None,
    tenant: str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    token: str | None = None,
    tls: object = None,
) -> ClientSettings:
    """Settings from arguments, environment and defaults; ClientConfigError says what is wrong."""
    address = _resolve_address(scheduler)
    token_text = token if token is not None else os.environ.get("FAIRPOOL_TOKEN") or None
    try:
        tls_config = tls_files(tls) if tls is not None else None
    except ValueError as exc:
        raise ClientConfigError(f"bad tls=: {exc}") from None
    cert_tenant = _certificate_tenant(tls_config) if tls_config is not None else None
    if tenant is None and cert_tenant is not None and not token_text and secret_file is None:
        tenant = cert_tenant  # the certificate proves who we are: its name is the tenant
    tenant_name = tenant if tenant is not None else os.environ.get("FAIRPOOL_TENANT") or _os_user()
    if not tenant_name:
        raise ClientConfigError("the tenant name is empty: pass tenant= or set FAIRPOOL_TENANT")
    path = Path(secret_file if secret_file is not None else os.environ.get("FAIRPOOL_SECRET_FILE") or DEFAULT_SECRET_FILE)
    secret = b""
    if not token_text and (tls_config is None or secret_file is not None):
        try:
            secret = read_secret(path)
        except SecretError as exc:
            raise ClientConfigError(
                f"{exc} (pass secret_file=, or token= for a tenant token, or set FAIRPOOL_SECRET_FILE; "
                f"`fairpool up` creates {DEFAULT_SECRET_FILE} in the directory it runs in)"
            ) from None
    return ClientSettings(address, tenant_name, path.absolute(), secret, f"{socket.gethostname()}:{os.getpid()}",
                          token_text, tls_config)


def connection_timing(heartbeat_timeout: object = None) -> ConnectionTiming:
    """The connection's timing with ``heartbeat_timeout`` seconds (None: the default, 10s).

    It must be a number of seconds greater than the heartbeat interval (1s): the
    scheduler is heard at least that often, so a shorter wait would drop a healthy
    connection. ClientConfigError says what is wrong.
    """
    from fairpool.clients.connection import DEFAULT_TIMING  # (which imports this module)

    if heartbeat_timeout is None:
        return DEFAULT_TIMING
    interval = DEFAULT_TIMING.heartbeat_interval
    if (isinstance(heartbeat_timeout, bool) or not isinstance(heartbeat_timeout, int | float)
            or not interval < heartbeat_timeout < math.inf):
        raise ClientConfigError(
            f"heartbeat_timeout must be a number of seconds greater than the heartbeat interval ({interval:g}s), "
            f"not {heartbeat_timeout!r}"
        )
    return dataclasses.replace(DEFAULT_TIMING, heartbeat_timeout=float(heartbeat_timeout))


def _certificate_tenant(files: TlsFiles) -> str:
    """The name in our client certificate; unusable files are reported now, not as a refusal later."""
    from fairpool.certs import certificate_identity  # cryptography: only for TLS clients

    try:
        client_context(files)  # loads CA, certificate and key: missing files, a key that does not match
        return certificate_identity(files.cert).name
    except TlsError as exc:
        raise ClientConfigError(f"bad tls=: {exc}") from None


def _resolve_address(scheduler: str | Address | None) -> Address:
    if isinstance(scheduler, Address):
        return scheduler
    text = scheduler if scheduler is not None else os.environ.get("FAIRPOOL_SCHEDULER") or DEFAULT_SCHEDULER
    try:
        return Address.parse(text)
    except AddressError as exc:
        raise ClientConfigError(f"bad scheduler address: {exc}") from None


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""  # no user name for this uid (e.g. a bare container): reported by the caller
