"""Dashboard login and sessions, without a server: credentials, expiry, revocation, CSRF."""

from __future__ import annotations

import pytest

from fairpool.scheduler.webauth import (
    Identity,
    LoginRefused,
    Sessions,
    check_login,
    csrf_ok,
    session_cookie,
)
from fairpool.tokens import new_token, token_keys

SECRET = b"the-cluster-secret"


def test_the_secret_logs_in_the_admin():
    assert check_login({"secret": " the-cluster-secret\n"}, SECRET, {}) == (Identity("admin"), b"")


def test_a_tenant_logs_in_with_its_token():
    token = new_token()
    identity, stored = check_login({"tenant": "alice", "token": token}, SECRET, {"alice": token_keys(token)})
    assert identity == Identity("client", "alice") and stored == token_keys(token).stored_key


@pytest.mark.parametrize("form", [
    {"secret": "wrong"},
    {"tenant": "alice", "token": "fpt_" + "A" * 43},
    {"tenant": "bob", "token": "TOKEN"},  # another tenant's token (replaced below)
    {"tenant": "alice", "token": "not a token"},
    {"tenant": "alice"},
    {},
])
def test_wrong_credentials_are_refused(form):
    alice = new_token()
    if form.get("token") == "TOKEN":
        form = {**form, "token": alice}
    with pytest.raises(LoginRefused):
        check_login(form, SECRET, {"alice": token_keys(alice)})


def test_a_session_ends_when_idle_too_long():
    sessions = Sessions(idle=10, max_age=100)
    session = sessions.create(Identity("admin"), now=0)
    assert sessions.get(session.sid, 9, {}) is session
    assert sessions.get(session.sid, 18, {}) is session  # each use restarts the idle clock
    assert sessions.get(session.sid, 29, {}) is None


def test_a_session_ends_at_its_maximum_age_however_busy():
    sessions = Sessions(idle=10, max_age=25)
    session = sessions.create(Identity("admin"), now=0)
    for now in (8, 16, 24):
        assert sessions.get(session.sid, now, {}) is session
    assert sessions.get(session.sid, 26, {}) is None


def test_a_tenant_session_ends_when_its_token_is_replaced():
    old, new = new_token(), new_token()
    sessions = Sessions()
    session = sessions.create(Identity("client", "alice"), 0, token_keys(old).stored_key)
    assert sessions.get(session.sid, 1, {"alice": token_keys(old)}) is session
    assert sessions.get(session.sid, 2, {"alice": token_keys(new)}) is None


def test_the_oldest_session_goes_beyond_the_limit():
    sessions = Sessions(limit=2)
    first, second, third = (sessions.create(Identity("admin"), now) for now in (0, 1, 2))
    assert sessions.get(first.sid, 3, {}) is None
    assert sessions.get(second.sid, 3, {}) is second and sessions.get(third.sid, 3, {}) is third


def test_csrf_needs_the_sessions_own_token():
    session = Sessions().create(Identity("admin"), 0)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None) and not csrf_ok(session, "forged")


def test_the_cookie_is_httponly_and_same_site_strict():
    cookie = session_cookie(Sessions().create(Identity("admin"), 0))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
