"""Who is using the dashboard: login, sessions and CSRF tokens.

Two credentials log in: the cluster secret (the admin, who sees and may do
everything) or a tenant's name and token (who sees only that tenant's jobs).
A login makes a server-side session: a random id in an HttpOnly,
SameSite=Strict cookie, and a CSRF token the page sends back in a header with
every POST. Sessions expire when idle and after a maximum age; a tenant's
session also ends once its token is revoked or replaced. Nothing here logs or
keeps a secret or a token: only the keys derived from a token are compared.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fairpool.tokens import TokenError, TokenKeys, token_keys

COOKIE = "fairpool_session"
CSRF_HEADER = "x-csrf-token"
SESSION_IDLE = 2 * 3600.0  # seconds without a request before a session ends
SESSION_MAX_AGE = 12 * 3600.0  # seconds a session lives at most, however busy
MAX_SESSIONS = 1000  # beyond this the oldest session is dropped

REFUSED = "wrong credentials"  # the same words for every failed login: nothing to probe


class LoginRefused(Exception):
    pass


@dataclass(frozen=True)
class Identity:
    """As whom a session acts: ``role`` "admin" or "client" (a tenant), like a protocol connection."""

    role: str
    tenant: str = ""

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def describe(self) -> dict[str, str]:
        return {"role": self.role, "tenant": self.tenant}


@dataclass
class Session:
    sid: str
    identity: Identity
    csrf: str
    created: float
    last_used: float
    stored_key: bytes = field(default=b"", repr=False)  # the token it was proven with (tenants)


def check_login(form: Mapping[str, Any], secret: bytes,
                tokens: Mapping[str, TokenKeys]) -> tuple[Identity, bytes]:
    """The identity ``form`` proves, and the stored key of the token used (b"" for the secret).

    ``form``: ``{"secret": TEXT}`` for the admin, ``{"tenant": NAME, "token": TOKEN}`` for a tenant.
    """
    given_secret = form.get("secret")
    if isinstance(given_secret, str) and given_secret.strip():
        if hmac.compare_digest(given_secret.strip().encode(), secret):
            return Identity("admin"), b""
        raise LoginRefused(REFUSED)
    tenant, token = form.get("tenant"), form.get("token")
    if not (isinstance(tenant, str) and tenant.strip() and isinstance(token, str) and token.strip()):
        raise LoginRefused("give the cluster secret, or a tenant name and its token")
    try:
        keys = token_keys(token)
    except TokenError:
        raise LoginRefused(REFUSED) from None
    stored = tokens.get(tenant.strip())
    if stored is None or not hmac.compare_digest(keys.stored_key, stored.stored_key):
        raise LoginRefused(REFUSED)
    return Identity("client", tenant.strip()), stored.stored_key


class Sessions:
    """The server-side session map (in memory: a scheduler restart logs everyone out)."""

    def __init__(self, idle: float = SESSION_IDLE, max_age: float = SESSION_MAX_AGE,
                 limit: int = MAX_SESSIONS) -> None:
        self.idle = idle
        self.max_age = max_age
        self.limit = limit
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, identity: Identity, now: float, stored_key: bytes = b"") -> Session:
        self._expire(now)
        while len(self._sessions) >= self.limit:
            del self._sessions[next(iter(self._sessions))]  # insertion order: the oldest first
        session = Session(secrets.token_urlsafe(32), identity, secrets.token_urlsafe(32), now, now, stored_key)
        self._sessions[session.sid] = session
        return session

    def get(self, sid: str | None, now: float, tokens: Mapping[str, TokenKeys]) -> Session | None:
        """The live session ``sid`` names (its idle clock restarted), or None."""
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if now - session.last_used > self.idle or now - session.created > self.max_age or not _still_valid(
                session, tokens):
            del self._sessions[sid]
            return None
        session.last_used = now
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def _expire(self, now: float) -> None:
        dead = [sid for sid, s in self._sessions.items()
                if now - s.last_used > self.idle or now - s.created > self.max_age]
        for sid in dead:
            del self._sessions[sid]


def _still_valid(session: Session, tokens: Mapping[str, TokenKeys]) -> bool:
    """A tenant's session lasts as long as the token it logged in with."""
    if session.identity.admin:
        return True
    current = tokens.get(session.identity.tenant)
    return current is not None and hmac.compare_digest(current.stored_key, session.stored_key)


def csrf_ok(session: Session, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(header.encode(), session.csrf.encode())


def session_cookie(session: Session) -> str:
    return f"{COOKIE}={session.sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(SESSION_MAX_AGE)}"


def expired_cookie() -> str:
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
