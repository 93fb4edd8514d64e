"""The fault proxy the partition tests rely on: each fault does what it says, and only that."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from faultproxy import FaultProxy


async def _echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, _echo, 0)
        port = listeners[0].socket.getsockname()[1]
        fault_proxy = FaultProxy(f"127.0.0.1:{port}")
        await nursery.start(fault_proxy.serve)
        yield fault_proxy
        nursery.cancel_scope.cancel()


async def _connect(proxy: FaultProxy) -> trio.SocketStream:
    host, port = proxy.address.rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def _receive(stream: trio.SocketStream, size: int, timeout: float = 5.0) -> bytes:
    data = b""
    with trio.fail_after(timeout):
        while len(data) < size:
            chunk = await stream.receive_some()
            if not chunk:
                break
            data += chunk
    return data


async def test_forwards_both_ways_and_counts_the_bytes(proxy: FaultProxy) -> None:
    stream = await _connect(proxy)
    await stream.send_all(b"hello")
    assert await _receive(stream, 5) == b"hello"
    assert proxy.counters.forwarded == {"up": 5, "down": 5} and proxy.counters.accepted == 1


async def test_delay_holds_every_chunk_that_long(proxy: FaultProxy) -> None:
    stream = await _connect(proxy)
    proxy.set_delay(0.2)
    began = trio.current_time()
    await stream.send_all(b"x")
    assert await _receive(stream, 1) == b"x"
    assert trio.current_time() - began >= 0.4  # up and down


async def test_stall_loses_nothing_and_heal_resumes_the_same_connection(proxy: FaultProxy) -> None:
    stream = await _connect(proxy)
    await stream.send_all(b"a")
    assert await _receive(stream, 1) == b"a"
    proxy.stall()
    await stream.send_all(b"bc")
    with trio.move_on_after(0.3) as waited:
        await stream.receive_some()
    assert waited.cancelled_caught  # nothing gets through...
    proxy.heal()
    assert await _receive(stream, 2) == b"bc"  # ...and nothing was lost
    assert proxy.counters.accepted == 1 and proxy.counters.cut == 0


async def test_blackhole_drops_silently_and_heal_cuts_what_lost_bytes(proxy: FaultProxy) -> None:
    stream = await _connect(proxy)
    proxy.blackhole("up")
    await stream.send_all(b"lost")
    with trio.move_on_after(0.3) as waited:
        await stream.receive_some()
    assert waited.cancelled_caught and proxy.active == 1  # not closed: half-open
    await trio.testing.wait_all_tasks_blocked()
    assert proxy.counters.dropped["up"] == 4
    proxy.heal()
    assert await _receive(stream, 1) == b""  # cut: its stream has a hole
    fresh = await _connect(proxy)
    await fresh.send_all(b"ok")
    assert await _receive(fresh, 2) == b"ok"
    assert proxy.counters.cut == 1


async def test_cut_closes_both_sides_and_refuse_turns_new_connections_away(proxy: FaultProxy) -> None:
    stream = await _connect(proxy)
    await stream.send_all(b"a")
    assert await _receive(stream, 1) == b"a"
    assert proxy.cut() == 1
    assert await _receive(stream, 1) == b""
    proxy.refuse()
    refused = await _connect(proxy)
    assert await _receive(refused, 1) == b""
    assert proxy.counters.refused == 1 and proxy.counters.cut == 1
