"""Mutual TLS: SSL contexts from a CA, a certificate and a key; roles read from certificates.

(Being written: the TLS engineer owns this module.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from fairpool.handshake import CertIdentity


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
    return TlsFiles(Path(value["ca"]), Path(value["cert"]), Path(value["key"]))


async def wrap_client(stream: trio.abc.Stream, files: TlsFiles, server_hostname: str) -> trio.SSLStream[trio.abc.Stream]:
    """Run the TLS handshake as a client (verifying the scheduler's certificate and host name)."""
    raise NotImplementedError("TLS is being written")


async def wrap_server(stream: trio.abc.Stream, files: TlsFiles) -> tuple[trio.SSLStream[trio.abc.Stream], CertIdentity]:
    """Run the TLS handshake as the scheduler, requiring a client certificate; its identity."""
    raise NotImplementedError("TLS is being written")
