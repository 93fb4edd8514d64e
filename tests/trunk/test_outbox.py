"""Outbox: batched sends by a writer task, and ``flush_now`` sending from the caller's task.

Real connected sockets (``trio.socket.socketpair``) under trio; the far end
decodes what arrived with the sans-IO protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from fairpool.messages import Heartbeat, JobResult, Message, NodeProgress
from fairpool.protocol import Connection
from fairpool.wire import MessageStream, Outbox


class Peer:
    """The far end: reads whatever arrives and decodes it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.protocol = Connection()
        self.got: list[Message] = []

    def read_ready(self) -> None:
        """Take what the socket holds now, without waiting."""
        while True:
            try:
                data = self.stream.socket._sock.recv(1 << 20)  # noqa: SLF001 - a test peeking at the raw socket
            except BlockingIOError:
                return
            self.got.extend(self.protocol.receive_data(data))

    async def read_until(self, count: int) -> None:
        with trio.fail_after(10):
            while len(self.got) < count:
                self.got.extend(self.protocol.receive_data(await self.stream.receive_some(1 << 20)))


@asynccontextmanager
async def writing() -> AsyncIterator[tuple[Outbox, Peer, trio.Nursery]]:
    a, b = trio.socket.socketpair()
    ours, theirs = MessageStream(trio.SocketStream(a)), trio.SocketStream(b)
    outbox = Outbox()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.run_writer, ours)
        await trio.testing.wait_all_tasks_blocked()
        yield outbox, Peer(theirs), nursery
        nursery.cancel_scope.cancel()


async def test_flush_now_sends_before_the_writer_task_runs_again() -> None:
    async with writing() as (outbox, peer, _):
        outbox.put_quietly(Heartbeat(1.0))
        outbox.put_quietly(Heartbeat(2.0))
        outbox.flush_now()  # no await between here and the read: the writer task cannot have run
        peer.read_ready()
        assert peer.got == [Heartbeat(1.0), Heartbeat(2.0)]
        assert outbox.sent_batches == 1


async def test_what_the_socket_does_not_take_is_sent_by_the_writer_in_order() -> None:
    big = [Heartbeat(float(i)) for i in range(200_000)]  # several MB: more than the socket buffers hold
    async with writing() as (outbox, peer, _):
        for message in big:
            outbox.put_quietly(message)
        outbox.flush_now()
        outbox.put_quietly(Heartbeat(-1.0))
        outbox.flush_now()  # the backlog is not sent yet: this one must wait behind it
        await peer.read_until(len(big) + 1)
        assert peer.got == [*big, Heartbeat(-1.0)]


async def test_a_large_frame_the_socket_does_not_take_at_once_arrives_whole_after_its_rest_is_sent() -> None:
    """The part of one large frame left over by ``flush_now`` (a view of it, not a copy) is sent first."""
    payload = bytes(range(256)) * (32 * 1024)  # 8 MB: far more than a socket buffer
    large = NodeProgress([], [JobResult("u1", "FINISHED", payload)])
    async with writing() as (outbox, peer, _):
        outbox.put_quietly(large)
        outbox.flush_now()
        outbox.put(Heartbeat(2.0))  # queued behind the rest of the large frame
        await peer.read_until(2)
        assert peer.got == [large, Heartbeat(2.0)]


async def test_messages_with_large_payloads_sent_beside_their_frames_arrive_whole_and_in_order() -> None:
    """``flush_now`` leaves a frame in pieces (a large payload sent as it is) to the writer, in order."""
    payloads = [bytes([i]) * (3 << 20) for i in range(2)]  # over LARGE_FRAME: each a piece of its own
    results = [NodeProgress([], [JobResult(f"u{i}", "FINISHED", p)]) for i, p in enumerate(payloads)]
    async with writing() as (outbox, peer, _):
        outbox.put_quietly(Heartbeat(1.0))
        outbox.put_quietly(results[0])
        outbox.flush_now()
        outbox.put_quietly(Heartbeat(2.0))
        outbox.flush_now()  # behind the pieces left to the writer
        outbox.put(results[1])
        await peer.read_until(4)
        assert peer.got == [Heartbeat(1.0), results[0], Heartbeat(2.0), results[1]]


async def test_flush_now_on_a_stream_that_is_not_a_plain_socket_leaves_it_to_the_writer() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    outbox = Outbox()
    peer_protocol = Connection()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.run_writer, MessageStream(ours))
        outbox.put_quietly(Heartbeat(3.0))
        outbox.flush_now()
        with trio.fail_after(10):
            got = peer_protocol.receive_data(await theirs.receive_some(1 << 16))
        assert got == [Heartbeat(3.0)]
        nursery.cancel_scope.cancel()


async def test_put_quietly_alone_sends_nothing_until_flushed() -> None:
    async with writing() as (outbox, peer, _):
        outbox.put_quietly(Heartbeat(4.0))
        await trio.testing.wait_all_tasks_blocked()
        peer.read_ready()
        assert peer.got == []
        outbox.wake()
        await peer.read_until(1)
        assert peer.got == [Heartbeat(4.0)]


class Recording(trio.abc.Stream):
    """A stream that is not a plain socket (as TLS is not), remembering the size of every ``send_all``."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sizes.append(len(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_large_payload_goes_to_a_stream_that_is_not_a_plain_socket_a_slice_at_a_time() -> None:
    """(trio's TLS stream encrypts all it is given before sending any: a whole payload would be copied twice.)"""
    from fairpool.outbox import TLS_SLICE

    ours, theirs = trio.testing.memory_stream_pair()
    recording = Recording(ours)
    result = NodeProgress([], [JobResult("u1", "FINISHED", bytes(range(256)) * (3 * TLS_SLICE // 256 + 7))])
    outbox = Outbox()
    peer = Connection()
    got: list[Message] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.run_writer, MessageStream(recording))
        outbox.put(result)
        with trio.fail_after(10):
            while not got:
                got += peer.receive_data(await theirs.receive_some(1 << 20))
        nursery.cancel_scope.cancel()
    assert got == [result]
    assert max(recording.sizes) <= TLS_SLICE and len(recording.sizes) >= 4
