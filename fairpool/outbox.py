"""Outbox: every message one connection sends, queued by any task and written in batches.

One writer task (``run_writer``) sends whatever accumulated in one
``send_all``: batching at every hop. ``flush_now`` takes the writer task off
a job's round trip when the connection is idle: the trio task that queued
messages writes them itself, at once (one loop iteration less per hop). It
never blocks or reorders: it writes only when nothing is being written, on a
plain socket (not TLS), and whatever the socket does not take at once becomes
a backlog the writer task sends first. ``_lock`` is held only around
non-blocking writes and bookkeeping, never across an await.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import trio

from fairpool.largefields import Buffer
from fairpool.messages import Message
from fairpool.protocol import encode_frame_parts

if TYPE_CHECKING:
    from fairpool.wire import MessageStream


#: On a stream that is not a plain socket (TLS), a larger piece is sent this many bytes at a time:
#: trio's ``SSLStream.send_all`` encrypts all it is given into memory before it sends any of it
#: (two more copies of a 200 MB payload at once: the encrypted bytes, and their read-out).
TLS_SLICE = 1 << 20


async def _send_sliced(stream: MessageStream, part: Buffer) -> None:
    view = memoryview(part).cast("B")
    for at in range(0, len(view), TLS_SLICE):
        await stream.send_bytes(view[at:at + TLS_SLICE])  # (views: nothing copied)


class Outbox:
    def __init__(self) -> None:
        self._items: list[Message] = []
        self._wakeup = trio.Event()
        self._closing = False
        self._fd = -1  # the socket's descriptor while the writer runs on a plain socket stream
        # what a shortcut could not send: the writer sends it first (views and large payloads as
        # they are: nothing copied)
        self._backlog: list[Buffer] = []
        self._sending = False
        self._lock = threading.Lock()
        self.sent_batches = 0

    def close(self) -> None:
        """Send what is queued, then stop the writer (e.g. an Error before hanging up)."""
        self._closing = True
        self._wakeup.set()

    def put(self, message: Message) -> None:
        self._items.append(message)
        self._wakeup.set()

    def put_quietly(self, message: Message) -> None:
        """Queue without waking the writer: the caller promises a ``flush_now`` (or ``wake``) soon."""
        self._items.append(message)

    def extend(self, messages: list[Message]) -> None:
        if messages:
            self._items.extend(messages)
            self._wakeup.set()

    def wake(self) -> None:
        if self._items:
            self._wakeup.set()

    def __len__(self) -> int:
        return len(self._items)

    def flush_now(self) -> None:
        """Send what is queued from this task if the socket takes it now; else leave it to the writer."""
        if not self._items:
            return
        with self._lock:
            if self._fd < 0 or self._sending or self._backlog or self._closing:
                self._wakeup.set()
                return
            items, self._items = self._items, []
            parts = encode_frame_parts(items)
            if len(parts) > 1:  # large payloads: one piece after another, left to the writer
                self._backlog = parts
                self._wakeup.set()
            elif self._write(parts[0]):
                self._wakeup.set()

    def _write(self, data: Buffer) -> bool:
        """Write without blocking (the lock held); True if a backlog is left for the writer."""
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # a broken connection: the writer's own send reports it
        self.sent_batches += 1
        if sent < len(data):
            self._backlog = [memoryview(data)[sent:]]
            return True
        return False

    async def run_writer(self, stream: MessageStream) -> None:
        """Send what is queued until closed, the stream breaks (ConnectionClosed) or we are cancelled."""
        sliced = not isinstance(stream.stream, trio.SocketStream)  # (TLS: see TLS_SLICE)
        if isinstance(stream.stream, trio.SocketStream):
            with self._lock:
                self._fd = stream.stream.socket.fileno()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                with self._lock:
                    items, self._items = self._items, []
                    backlog, self._backlog = self._backlog, []
                    parts = backlog + encode_frame_parts(items) if items else backlog
                    sending = self._sending = bool(parts)
                if sending:
                    self.sent_batches += 1
                    try:
                        # One send per piece rather than one of them joined: no copy of a large frame.
                        for part in parts:
                            if sliced and len(part) > TLS_SLICE:
                                await _send_sliced(stream, part)
                            elif part:
                                await stream.send_bytes(part)
                    finally:
                        self._sending = False
                if self._closing and not self._items:
                    return
        finally:
            with self._lock:
                # Before the stream is closed (and its descriptor number reused): no thread may
                # write to it from now on.
                self._fd = -1
