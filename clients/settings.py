"""Where a client connects and as whom: arguments, else ``FAIRPOOL_*`` variables, else defaults.

``resolve_settings`` is shared by everything that opens a client connection
(``SharedJobCluster`` now; reattach and ``recover_jobs`` later), so the
precedence rules live in one place:

* scheduler: ``scheduler=``, ``FAIRPOOL_SCHEDULER``, ``127.0.0.1:51350``
* secret file: ``secret_file=``, ``FAIRPOOL_SECRET_FILE``, ``.fairpool/secret``
  (what ``fairpool up`` creates in its working directory)
* tenant: ``tenant=``, ``FAIRPOOL_TENANT``, the OS user name
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from fairpool.address import DEFAULT_HOST, DEFAULT_PORT, Address, AddressError
from fairpool.clients.errors import ClientConfigError
from fairpool.secret import SecretError, read_secret

DEFAULT_SCHEDULER = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_SECRET_FILE = os.path.join(".fairpool", "secret")


@dataclass(frozen=True)
class ClientSettings:
    scheduler: Address
    tenant: str
    secret_file: Path  # absolute, so the recover file still works from another directory
    secret: bytes
    name: str  # how this client introduces itself: "host:pid"

    def __repr__(self) -> str:
        # Never let the secret reach a log line or a traceback.
        return (
            f"ClientSettings(scheduler={self.scheduler}, tenant={self.tenant!r}, "
            f"secret_file={str(self.secret_file)!r}, name={self.name!r})"
        )


def resolve_settings(
    scheduler: str | Address | None = None,
    tenant: str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
) -> ClientSettings:
    """Settings from arguments, environment and defaults; ClientConfigError says what is wrong."""
    address = _resolve_address(scheduler)
    tenant_name = tenant if tenant is not None else os.environ.get("FAIRPOOL_TENANT") or _os_user()
    if not tenant_name:
        raise ClientConfigError("the tenant name is empty: pass tenant= or set FAIRPOOL_TENANT")
    path = Path(secret_file if secret_file is not None else os.environ.get("FAIRPOOL_SECRET_FILE") or DEFAULT_SECRET_FILE)
    try:
        secret = read_secret(path)
    except SecretError as exc:
        raise ClientConfigError(
            f"{exc} (pass secret_file= or set FAIRPOOL_SECRET_FILE; "
            f"`fairpool up` creates {DEFAULT_SECRET_FILE} in the directory it runs in)"
        ) from None
    return ClientSettings(address, tenant_name, path.absolute(), secret, f"{socket.gethostname()}:{os.getpid()}")


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
