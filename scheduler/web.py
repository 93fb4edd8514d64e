"""The dashboard's HTTP/1.1 server: h11 over trio sockets, no web framework.

Owns the transport only: accepting connections (at most ``MAX_CONNECTIONS``
at once), parsing requests under limits (header size, body size, how long a
request may take, how long an idle keep-alive connection is kept), and
writing responses, either whole or as a stream (server-sent events). What a
request means is the handler's business (``fairpool.scheduler.webapi``).
Every response carries the same defensive headers: the dashboard is never
framed, never sniffed, never cached unless the handler says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import msgspec
import structlog
import trio

from fairpool.address import Address

log = structlog.get_logger("fairpool.scheduler.web")

MAX_CONNECTIONS = 256
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
IDLE_TIMEOUT = 60.0  # a keep-alive connection without a new request is closed after this
REQUEST_TIMEOUT = 10.0  # the rest of a request, once its first byte came
READ_SIZE = 16 * 1024

SECURITY_HEADERS = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy",
     "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
]
_REASONS = {200: "OK", 204: "No Content", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            413: "Content Too Large", 415: "Unsupported Media Type", 500: "Internal Server Error",
            503: "Service Unavailable", 504: "Gateway Timeout"}

Send = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]  # a repeated key keeps its last value
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    client: str = ""

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None

    def json(self) -> Any:
        """The body as JSON (ValueError if it is not)."""
        try:
            return msgspec.json.decode(self.body) if self.body else {}
        except msgspec.DecodeError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from None


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A streamed body (server-sent events): called with a function that sends one chunk; the
    # response ends when it returns. ``body`` is ignored then.
    stream: Callable[[Send], Awaitable[None]] | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
        return cls(status, msgspec.json.encode(value), "application/json", list(headers or []))

    @classmethod
    def error(cls, status: int, message: str) -> HttpResponse:
        return cls.json({"error": message}, status)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _TooLarge(Exception):
    pass


async def serve_http(handler: Handler, address: Address, *,
                     task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``handler`` on ``address`` until cancelled; ``task_status.started`` gets the bound address."""
    listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    host, port = listeners[0].socket.getsockname()[:2]
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    task_status.started(Address(host, port))
    await trio.serve_listeners(partial(_serve_connection, handler, limiter), listeners)


async def _serve_connection(handler: Handler, limiter: trio.CapacityLimiter, stream: trio.SocketStream) -> None:
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        await _refuse_busy(stream)
        return
    try:
        await _Connection(stream, handler).run()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the browser went away: nothing to tell it
    except Exception:  # noqa: BLE001 - one broken connection must not stop the dashboard
        log.exception("http connection failed", peer=_peer(stream))
    finally:
        limiter.release()
        await trio.aclose_forcefully(stream)


async def _refuse_busy(stream: trio.SocketStream) -> None:
    body = b'{"error": "too many dashboard connections"}'
    with trio.move_on_after(1):
        try:
            await stream.send_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                                  b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except trio.BrokenResourceError:
            pass
    await trio.aclose_forcefully(stream)


class _Connection:
    """One client connection: requests one after another (keep-alive), each answered in full."""

    def __init__(self, stream: trio.SocketStream, handler: Handler) -> None:
        self.stream = stream
        self.handler = handler
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.peer = _peer(stream)

    async def run(self) -> None:
        while True:
            request: HttpRequest | None = None
            with trio.move_on_after(IDLE_TIMEOUT):
                try:
                    event = await self._next_event()
                except h11.RemoteProtocolError as exc:
                    await self._send_error(exc.error_status_hint, str(exc))
                    return
                if not isinstance(event, h11.Request):
                    return  # closed by the peer (or a stray event): done
                try:
                    with trio.fail_after(REQUEST_TIMEOUT):
                        request = await self._read_request(event)
                except trio.TooSlowError:
                    await self._send_error(408, "the request took too long")
                    return
                except _TooLarge:
                    await self._send_error(413, f"a request body may have at most {MAX_BODY_BYTES} bytes")
                    return
                except h11.RemoteProtocolError as exc:
                    await self._send_error(exc.error_status_hint, str(exc))
                    return
            if request is None:
                return  # idle too long
            await self._respond(request, await self._handle(request))
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()

    async def _next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(READ_SIZE)
            self.conn.receive_data(data)  # b"": the peer closed

    async def _read_request(self, head: h11.Request) -> HttpRequest:
        body = bytearray()
        declared = dict(head.headers).get(b"content-length")
        if declared is not None and int(declared) > MAX_BODY_BYTES:
            raise _TooLarge()
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise _TooLarge()
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed mid-request
                raise trio.BrokenResourceError("the peer closed mid-request")
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        parts = urlsplit(head.target.decode("latin-1"))
        return HttpRequest(head.method.decode("ascii", "replace").upper(), unquote(parts.path) or "/",
                           dict(parse_qsl(parts.query)), headers, bytes(body), self.peer)

    async def _handle(self, request: HttpRequest) -> HttpResponse:
        try:
            return await self.handler(request)
        except Exception:  # noqa: BLE001 - a bug in one route answers 500, the server goes on
            log.exception("http handler failed", method=request.method, path=request.path)
            return HttpResponse.error(500, "internal error (see the scheduler log)")

    async def _respond(self, request: HttpRequest, response: HttpResponse) -> None:
        headers = [("content-type", response.content_type), *SECURITY_HEADERS, *response.headers]
        if not any(name.lower() == "cache-control" for name, _ in response.headers):
            headers.append(("cache-control", "no-store"))
        if response.stream is None:
            headers.append(("content-length", str(len(response.body))))
        await self._send(h11.Response(status_code=response.status, headers=headers,
                                      reason=_REASONS.get(response.status, "")))
        if request.method != "HEAD":
            if response.stream is not None:
                await response.stream(self._send_chunk)
            elif response.body:
                await self._send(h11.Data(data=response.body))
        await self._send(h11.EndOfMessage())

    async def _send_chunk(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def _send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def _send_error(self, status: int, message: str) -> None:
        """Answer a request we could not read, if the protocol still lets us, then close."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = msgspec.json.encode({"error": message})
        headers = [("content-type", "application/json"), ("content-length", str(len(body))),
                   ("connection", "close"), *SECURITY_HEADERS]
        with trio.move_on_after(1):
            try:
                await self._send(h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, "")))
                await self._send(h11.Data(data=body))
                await self._send(h11.EndOfMessage())
            except (h11.LocalProtocolError, trio.BrokenResourceError):
                pass


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return str(Address(host, port))
