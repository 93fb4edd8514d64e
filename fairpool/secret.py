"""The cluster secret file: read it, or create it (mode 0600) on first start."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class SecretError(Exception):
    pass


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """The whole content of the file, surrounding whitespace stripped."""
    try:
        data = Path(path).read_bytes().strip()
    except FileNotFoundError:
        raise SecretError(f"secret file {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise SecretError(f"cannot read secret file {os.fspath(path)!r}: {exc.strerror}") from None
    if not data:
        raise SecretError(f"secret file {os.fspath(path)!r} is empty")
    return data


def ensure_secret(path: str | os.PathLike[str]) -> bytes:
    """Read the secret, creating the file with a fresh random secret if it does not exist."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two daemons starting at once must not overwrite each other's secret.
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_secret(p)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return read_secret(p)
