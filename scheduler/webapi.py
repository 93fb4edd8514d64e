"""The dashboard's routes: static pages, login, the JSON API, live events and /metrics.

The JSON API is the admin CLI's: ``GET /api/VERB?ARG=...`` answers a read
verb (``status``, ``nodes.list``, ``jobs.list``, ``jobs.show``, ...) with
exactly the body ``fairpool admin --json`` prints, computed by the same
``queries.answer`` for the session's identity (an admin, or a tenant's
client: a tenant sees only its own jobs). Reads run here, in the trio
thread between awaits, where the state cannot change under them; commands
(``POST /api/nodes.drain``, ``nodes.undrain``, ``jobs.cancel``) go to the
state task as a Request, the path the CLI's take, and their Reply comes
back. Every POST but the login needs the session's CSRF token in the
``X-CSRF-Token`` header and a JSON body (a cross-site form can send
neither). ``/metrics`` needs the admin: a session, or ``Authorization:
Bearer SECRET`` (Prometheus' ``credentials_file`` can point at the secret
file).
"""

from __future__ import annotations

import hmac
import itertools
import time
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
import structlog
import trio

from fairpool.handshake import Peer
from fairpool.messages import Request
from fairpool.scheduler.history import History
from fairpool.scheduler.metrics import CONTENT_TYPE, SchedulerMetrics
from fairpool.scheduler.queries import READ_VERBS, answer
from fairpool.scheduler.records import ConnRecord
from fairpool.scheduler.web import HttpRequest, HttpResponse, Send
from fairpool.scheduler.webauth import (
    COOKIE,
    CSRF_HEADER,
    Identity,
    LoginRefused,
    Session,
    Sessions,
    check_login,
    csrf_ok,
    expired_cookie,
    session_cookie,
)

if TYPE_CHECKING:
    from fairpool.scheduler.daemon import SchedulerServer

log = structlog.get_logger("fairpool.scheduler.web")

COMMAND_VERBS = frozenset({"nodes.drain", "nodes.undrain", "jobs.cancel"})
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "views.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
EVENT_INTERVAL = 1.0  # how often a live stream looks for news
EVENT_KEEPALIVE = 15.0  # a comment line at least this often keeps proxies from closing the stream
COMMAND_TIMEOUT = 30.0
HTTP_ADDRESS_FILE = "scheduler.http"  # in the state dir: where the dashboard listens (for `fairpool up`)


def _load_static() -> dict[str, bytes]:
    folder = resources.files("fairpool.scheduler").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC if folder.joinpath(name).is_file()}


class Dashboard:
    def __init__(self, server: SchedulerServer, secret: bytes, history: History, metrics: SchedulerMetrics) -> None:
        self.server = server
        self.state = server.state
        self._secret = secret
        self.history = history
        self.metrics = metrics
        self.sessions = Sessions()
        self.static = _load_static()
        self._request_ids = itertools.count(1)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        path, method = request.path, request.method
        if path.startswith("/api/"):
            return await self._api(request, path[len("/api/"):])
        if method not in ("GET", "HEAD"):
            return HttpResponse.error(405, f"{method} is not allowed here")
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/healthz":
            return HttpResponse.json({"ok": True})
        if path == "/metrics":
            return self._metrics(request)
        return HttpResponse.error(404, f"nothing at {path}")

    def _static(self, name: str) -> HttpResponse:
        body = self.static.get(name)
        if body is None:
            return HttpResponse.error(404, f"no static file {name!r}")
        return HttpResponse(200, body, STATIC[name], [("cache-control", "no-cache")])

    def _metrics(self, request: HttpRequest) -> HttpResponse:
        session = self._session(request)
        bearer = request.headers.get("authorization", "")
        token = bearer[len("bearer "):].strip() if bearer.lower().startswith("bearer ") else ""
        if not ((session is not None and session.identity.admin)
                or (token and hmac.compare_digest(token.encode(), self._secret))):
            return HttpResponse(401, b'{"error": "metrics need the admin credential"}', "application/json",
                                [("www-authenticate", 'Bearer realm="fairpool"')])
        return HttpResponse(200, self.metrics.render(), CONTENT_TYPE)

    # --- /api ------------------------------------------------------------------------

    async def _api(self, request: HttpRequest, route: str) -> HttpResponse:
        if request.method == "POST":
            refusal = _post_refusal(request)
            if refusal is not None:
                return refusal
            if route == "login":
                return self._login(request)
        elif request.method not in ("GET", "HEAD"):
            return HttpResponse.error(405, f"{request.method} is not allowed on /api")
        session = self._session(request)
        if session is None:
            return HttpResponse.error(401, "log in first")
        if request.method == "POST":
            if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
                return HttpResponse.error(403, "missing or wrong CSRF token (reload the page)")
            if route == "logout":
                return self._logout(session)
            if route in COMMAND_VERBS:
                return await self._command(session.identity, route, request)
            return HttpResponse.error(404 if route not in READ_VERBS else 405, f"no command {route!r}")
        if route == "session":
            return HttpResponse.json({**session.identity.describe(), "csrf": session.csrf})
        if route == "history":
            tenant = None if session.identity.admin else session.identity.tenant
            return HttpResponse.json(self.history.view(tenant))
        if route == "events":
            return self._events(request, session)
        if route in READ_VERBS:
            return self._read(session.identity, route, _query_args(request.query))
        return HttpResponse.error(404 if route not in COMMAND_VERBS else 405, f"no such API {route!r}")

    def _session(self, request: HttpRequest) -> Session | None:
        return self.sessions.get(request.cookie(COOKIE), time.time(), self.state.tokens)

    def _login(self, request: HttpRequest) -> HttpResponse:
        try:
            form = request.json()
            if not isinstance(form, dict):
                raise LoginRefused("expected a JSON object")
            identity, stored_key = check_login(form, self._secret, self.state.tokens)
        except (LoginRefused, ValueError) as exc:
            log.warning("dashboard login refused", peer=request.client, reason=str(exc))
            return HttpResponse.error(401, str(exc))
        session = self.sessions.create(identity, time.time(), stored_key)
        log.info("dashboard login", peer=request.client, role=identity.role, tenant=identity.tenant)
        return HttpResponse.json({**identity.describe(), "csrf": session.csrf},
                                 headers=[("set-cookie", session_cookie(session))])

    def _logout(self, session: Session) -> HttpResponse:
        self.sessions.drop(session.sid)
        return HttpResponse.json({"logged_out": True}, headers=[("set-cookie", expired_cookie())])

    def _read(self, identity: Identity, verb: str, args: dict[str, Any]) -> HttpResponse:
        now = time.time()
        conn = ConnRecord(0, identity.role, identity.tenant, "dashboard", now)
        reply = answer(self.state, conn, Request(0, verb, args), now)
        if not reply.ok:
            return HttpResponse.error(_error_status(reply.error), reply.error)
        return HttpResponse.json(reply.body)

    async def _command(self, identity: Identity, verb: str, request: HttpRequest) -> HttpResponse:
        try:
            args = request.json()
        except ValueError as exc:
            return HttpResponse.error(400, str(exc))
        if not isinstance(args, dict):
            return HttpResponse.error(400, "the body must be a JSON object of the verb's arguments")
        peer = Peer(identity.role, identity.tenant, "dashboard", "secret" if identity.admin else "token")
        try:
            with trio.fail_after(COMMAND_TIMEOUT):
                reply = await self.server.ask(peer, Request(next(self._request_ids), verb, args))
        except trio.TooSlowError:
            return HttpResponse.error(504, f"the scheduler did not answer {verb!r} within {COMMAND_TIMEOUT:g}s")
        if not reply.ok:
            return HttpResponse.error(_error_status(reply.error), reply.error)
        log.info("dashboard command", verb=verb, role=identity.role, tenant=identity.tenant)
        return HttpResponse.json(reply.body)

    # --- live events ---------------------------------------------------------------

    def _events(self, request: HttpRequest, session: Session) -> HttpResponse:
        async def stream(send: Send) -> None:
            await send(b"retry: 3000\n\n")
            last: bytes | None = None
            quiet_since = trio.current_time()
            while self._session(request) is session:  # ends at logout, expiry, a revoked token
                pulse = msgspec.json.encode(self._pulse(session.identity))
                if pulse != last:
                    await send(b"event: pulse\ndata: " + pulse + b"\n\n")
                    last, quiet_since = pulse, trio.current_time()
                elif trio.current_time() - quiet_since >= EVENT_KEEPALIVE:
                    await send(b": keepalive\n\n")
                    quiet_since = trio.current_time()
                await trio.sleep(EVENT_INTERVAL)
            await send(b"event: logout\ndata: {}\n\n")

        return HttpResponse(200, content_type="text/event-stream", headers=[("x-accel-buffering", "no")],
                            stream=stream)

    def _pulse(self, identity: Identity) -> dict[str, Any]:
        """What changed is news: the page refreshes what it shows when this changes."""
        latest = self.history.samples[-1] if self.history.samples else None
        if identity.admin:
            stats = self.state.statistics()
            nodes = sorted((n.name, n.state, len(n.assigned)) for n in self.state.nodes.values())
            return {"status": stats, "nodes": nodes, "sampled": latest.at if latest else None}
        point = latest.tenants.get(identity.tenant) if latest else None
        return {"running": point.running if point else 0, "queued": point.queued if point else 0,
                "finished": self.state.finished_total}


def _post_refusal(request: HttpRequest) -> HttpResponse | None:
    """A POST that did not come from our own page, or is not JSON, is refused before anything else."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        return HttpResponse.error(403, "cross-origin requests are refused")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return HttpResponse.error(415, "send JSON (content-type: application/json)")
    return None


def _query_args(query: dict[str, str]) -> dict[str, Any]:
    args: dict[str, Any] = {key: value for key, value in query.items() if value != ""}
    for key in ("limit",):
        if key in args:
            try:
                args[key] = max(int(args[key]), 1)
            except ValueError:
                args.pop(key)
    return args


def _error_status(error: str) -> int:
    if "needs the admin credential" in error:
        return 403
    if error.startswith("no such") or error.startswith("unknown request"):
        return 404
    return 400


async def serve_dashboard(server: SchedulerServer, secret: bytes, *,
                          task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """The dashboard and /metrics on ``server.config.http``, until cancelled.

    ``task_status.started`` gets the bound address, which is also written to
    ``STATE_DIR/scheduler.http`` (removed at the end), where ``fairpool up`` reads it.
    """
    from fairpool.scheduler.web import serve_http

    config = server.config
    assert config.http is not None
    history = History(server.state)
    metrics = SchedulerMetrics(server.state, top_tenants=config.metrics_tenants)
    server.record_observers.append(metrics.observe_record)
    if server.writer is not None:
        server.writer.on_sync = metrics.observe_fsync
    dashboard = Dashboard(server, secret, history, metrics)
    if not dashboard.static:
        log.warning("the dashboard's static files are missing: only the API and /metrics are served")
    address_file = config.state_dir / HTTP_ADDRESS_FILE
    async with trio.open_nursery() as nursery:
        nursery.start_soon(history.run)
        try:
            bound = await nursery.start(serve_http, dashboard.handle, config.http)
        except OSError as exc:  # say which address: the protocol's listener is bound already
            raise OSError(exc.errno, exc.strerror, str(config.http)) from None
        if not bound.is_loopback:
            log.warning("the dashboard listens beyond this host over plain HTTP: the secret and session "
                        "cookies cross the network in clear; bind it to 127.0.0.1 and reach it through an "
                        "SSH tunnel or a TLS proxy", address=str(bound))
        tmp = address_file.with_suffix(".tmp")
        tmp.write_text(f"{bound}\n")
        tmp.replace(address_file)
        log.info("dashboard listening", url=f"http://{bound}/", metrics=f"http://{bound}/metrics")
        task_status.started(bound)
        try:
            await trio.sleep_forever()
        finally:
            address_file.unlink(missing_ok=True)

