"""An admin's read-only requests are answered from its connection's task, not behind the job traffic."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio

from fairpool.address import Address
from fairpool.config import SchedulerConfig
from fairpool.messages import Reply, Request
from fairpool.scheduler.daemon import SchedulerServer
from fairpool.wire import open_connection

SECRET = b"s" * 32


async def ask(address: Address, request: Request, role: str = "admin") -> Reply | None:
    """The reply, or None if none came within a second (the state task is not running here)."""
    stream = await open_connection(address, SECRET, role=role, name="op", tenant="" if role == "admin" else "alice")
    try:
        await stream.send(request)
        with trio.move_on_after(1):
            while True:
                for message in await stream.receive():
                    if isinstance(message, Reply):
                        return message
        return None
    finally:
        await stream.aclose()


async def test_status_is_answered_while_the_state_task_is_busy(tmp_path: Path) -> None:
    server = SchedulerServer(SchedulerConfig(state_dir=tmp_path, journal=False), SECRET)
    async with trio.open_nursery() as nursery:
        # No state task: a request that queued for it would never be answered.
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle_connection, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        reply = await ask(Address("127.0.0.1", port), Request(1, "status"))
        assert reply is not None and reply.ok and reply.body["nodes"] == 0
        # A command still goes through the state task (which is not running: no answer).
        assert await ask(Address("127.0.0.1", port), Request(2, "nodes.drain", {"name": "n1"})) is None
        # A tenant's reads go through the state task too (its view follows its own submits).
        assert await ask(Address("127.0.0.1", port), Request(3, "jobs.list"), role="client") is None
        nursery.cancel_scope.cancel()


async def test_an_admin_asking_only_reads_is_not_taken_for_silent(tmp_path: Path) -> None:
    """Answered without the state task, its requests still tell it the connection is alive."""
    config = SchedulerConfig(state_dir=tmp_path, journal=False, heartbeat_interval=0.1, heartbeat_timeout=0.5)
    server = SchedulerServer(config, SECRET)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run_state)
        nursery.start_soon(server.run_ticker)
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle_connection, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await open_connection(Address("127.0.0.1", port), SECRET, role="admin", name="op")
        replies = 0
        with trio.fail_after(30):
            for n in range(12):  # 1.2 s of requests: more than twice the heartbeat timeout
                await stream.send(Request(n, "status"))
                while True:
                    if any(isinstance(m, Reply) for m in await stream.receive()):
                        replies += 1
                        break
                await trio.sleep(0.1)
        assert replies == 12
        await stream.aclose()
        nursery.cancel_scope.cancel()
