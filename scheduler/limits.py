"""Connection limits against abuse: how many connections one address and one tenant may hold.

``ConnectionLimits`` keeps the counts for the whole daemon; each accepted
socket gets an ``Admission`` from ``admit_peer`` (counted against its IP
address from the first byte on, before anyone knows who it is) and, once the
handshake proved who it is, ``Admission.admit`` counts a client against its
tenant, raising ``AuthError`` so that the handshake answers ``Refused`` with
the reason. ``Admission.release`` gives back whatever was counted, once,
however the connection ended. Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter

from fairpool.handshake import AuthError, Peer


def too_many_from(host: str, limit: int) -> str:
    return f"too many connections from {host} (limit {limit})"


def too_many_for(tenant: str, limit: int) -> str:
    return f"too many connections for tenant {tenant!r} (limit {limit})"


class Admission:
    """One connection's share of the counts; ``refusal`` is set (and nothing counted) when over a limit."""

    def __init__(self, limits: ConnectionLimits, host: str, refusal: str = "") -> None:
        self._limits = limits
        self.host = host
        self.refusal = refusal
        self._host_counted = not refusal
        self._tenant: str | None = None

    def admit(self, peer: Peer) -> None:
        """Count an authenticated client against its tenant; AuthError (sent as Refused) if over the limit."""
        if peer.role != "client" or self._tenant is not None:
            return
        limits = self._limits
        if limits.per_tenant and limits.tenants[peer.tenant] >= limits.per_tenant:
            raise AuthError(too_many_for(peer.tenant, limits.per_tenant))
        limits.tenants[peer.tenant] += 1
        self._tenant = peer.tenant

    def release(self) -> None:
        """Give back what this connection counted (idempotent)."""
        limits = self._limits
        if self._host_counted:
            self._host_counted = False
            _decrement(limits.hosts, self.host)
        if self._tenant is not None:
            _decrement(limits.tenants, self._tenant)
            self._tenant = None


class ConnectionLimits:
    """``per_peer`` connections per IP address, ``per_tenant`` client connections per tenant; 0: no limit."""

    def __init__(self, per_peer: int, per_tenant: int) -> None:
        self.per_peer = per_peer
        self.per_tenant = per_tenant
        self.hosts: Counter[str] = Counter()
        self.tenants: Counter[str] = Counter()

    def admit_peer(self, host: str) -> Admission:
        """A new connection from ``host``: counted, or refused (``Admission.refusal``) if over the limit."""
        if self.per_peer and self.hosts[host] >= self.per_peer:
            return Admission(self, host, too_many_from(host, self.per_peer))
        self.hosts[host] += 1
        return Admission(self, host)


def _decrement(counts: Counter[str], key: str) -> None:
    # Zero counts are deleted: a long run of short-lived peers must not grow the table.
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
