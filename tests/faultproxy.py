"""An in-process trio TCP proxy that a test uses to break the network between two daemons.

``FaultProxy(target)`` listens on 127.0.0.1 (a free port: ``.address``) and
forwards every connection to ``target``. The test switches faults on and off
while connections are live, for both directions or one (``"up"``: from the
connecting peer to the target; ``"down"``: back):

- ``set_delay(s)``: every chunk arrives ``s`` seconds late (order kept);
- ``stall()``: stop forwarding, nothing closed, nothing lost: bytes wait in
  the kernels' buffers, as in a partition TCP rides out by retransmitting;
  ``heal()`` resumes every stalled connection where it stopped;
- ``blackhole()``: read and throw away, nothing closed: a half-open
  connection, the far side gone without a word. ``heal()`` then cuts the
  connections that lost bytes (their streams have holes: a real peer would
  answer them with a reset) and forwards again;
- ``cut()``: close both sides of every connection now;
- ``refuse()``: close new connections as soon as they are accepted
  (``heal()`` stops refusing).

A connection accepted while its upward direction is stalled waits to be
forwarded (its connect attempt hangs, as a SYN into a partition would).
``counters`` say what happened (accepted, refused, cut, ended by a peer,
bytes forwarded and dropped) so that a test can compare them with what the
daemons logged. Run it in a nursery: ``await nursery.start(proxy.serve)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trio

DIRECTIONS = ("up", "down")
CHUNK = 64 * 1024
FORWARD, STALL, BLACKHOLE = "forward", "stall", "blackhole"


@dataclass
class ProxyCounters:
    accepted: int = 0
    refused: int = 0
    cut: int = 0  # connections closed by cut() or by heal() after a blackhole
    ended: int = 0  # connections closed because one of the peers closed
    forwarded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))


class _Link:
    """One proxied connection: the peer that connected, the target, and how to end both."""

    def __init__(self, downstream: trio.SocketStream) -> None:
        self.downstream = downstream
        self.upstream: trio.SocketStream | None = None
        self.scope = trio.CancelScope()
        self.lossy = False  # bytes were thrown away: it can never be healed
        self.cut = False


class FaultProxy:
    def __init__(self, target: str, *, name: str = "proxy", listen_host: str = "127.0.0.1") -> None:
        host, _, port = target.rpartition(":")
        self.target = (host.strip("[]"), int(port))
        self.name = name
        self.listen_host = listen_host
        self.address = ""
        self.counters = ProxyCounters()
        self.delay = 0.0
        self.refusing = False
        self._mode = dict.fromkeys(DIRECTIONS, FORWARD)
        self._changed = trio.Event()
        self._links: set[_Link] = set()

    @property
    def active(self) -> int:
        """Connections open right now."""
        return len(self._links)

    # --- faults ------------------------------------------------------------------

    def _set(self, mode: str, direction: str) -> None:
        for d in DIRECTIONS if direction == "both" else (direction,):
            if d not in DIRECTIONS:
                raise ValueError(f"direction must be 'up', 'down' or 'both', not {direction!r}")
            self._mode[d] = mode
        self._changed.set()
        self._changed = trio.Event()

    def set_delay(self, seconds: float) -> None:
        self.delay = seconds

    def stall(self, direction: str = "both") -> None:
        self._set(STALL, direction)

    def blackhole(self, direction: str = "both") -> None:
        self._set(BLACKHOLE, direction)

    def refuse(self) -> None:
        self.refusing = True

    def cut(self) -> int:
        """Close every connection now (both sides); how many there were."""
        links = list(self._links)
        for link in links:
            self._cut(link)
        return len(links)

    def heal(self) -> None:
        """Forward again: stalled connections resume, the ones that lost bytes are cut."""
        self.refusing = False
        self.delay = 0.0
        for link in list(self._links):
            if link.lossy:
                self._cut(link)
        self._set(FORWARD, "both")

    def _cut(self, link: _Link) -> None:
        if not link.cut:
            link.cut = True
            self.counters.cut += 1
        link.scope.cancel()

    # --- serving -----------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and forward until cancelled; ``started`` gets ``HOST:PORT`` to connect to."""
        listeners = await trio.open_tcp_listeners(0, host=self.listen_host)
        host, port = listeners[0].socket.getsockname()[:2]
        self.address = f"{host}:{port}"
        task_status.started(self.address)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        if self.refusing:
            self.counters.refused += 1
            await downstream.aclose()
            return
        self.counters.accepted += 1
        link = _Link(downstream)
        self._links.add(link)
        try:
            with link.scope:
                await self._wait_while(STALL, "up")
                try:
                    link.upstream = await trio.open_tcp_stream(*self.target)
                except OSError:
                    return  # the target is down: the peer sees its connection close
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, link, downstream, link.upstream, "up", nursery.cancel_scope)
                    nursery.start_soon(self._pump, link, link.upstream, downstream, "down", nursery.cancel_scope)
            if not link.cut:
                self.counters.ended += 1
        finally:
            self._links.discard(link)
            with trio.CancelScope(shield=True):
                for stream in (downstream, link.upstream):
                    if stream is not None:
                        await stream.aclose()

    async def _wait_while(self, mode: str, direction: str) -> None:
        while self._mode[direction] == mode:
            await self._changed.wait()

    async def _pump(self, link: _Link, source: trio.SocketStream, sink: trio.SocketStream, direction: str,
                    done: trio.CancelScope) -> None:
        """Copy ``source`` to ``sink`` through the faults until either end closes, then end the link."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, receive, sink, done)
            try:
                while True:
                    await self._wait_while(STALL, direction)
                    data = await source.receive_some(CHUNK)
                    if not data and self._mode[direction] == BLACKHOLE:
                        # even the goodbye is lost: the other side must find out by itself
                        link.lossy = True
                        await self._wait_while(BLACKHOLE, direction)
                    if not data:
                        break
                    await self._wait_while(STALL, direction)  # read just as the stall began: it waits too
                    if self._mode[direction] == BLACKHOLE:
                        link.lossy = True
                        self.counters.dropped[direction] += len(data)
                        continue
                    send.send_nowait((trio.current_time() + self.delay, data))
                    self.counters.forwarded[direction] += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            await send.aclose()  # what was read still goes out (late, if delayed), then the link ends

    @staticmethod
    async def _deliver(receive: trio.MemoryReceiveChannel[tuple[float, bytes]], sink: trio.SocketStream,
                       done: trio.CancelScope) -> None:
        try:
            async for due, data in receive:
                await trio.sleep_until(due)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        done.cancel()
