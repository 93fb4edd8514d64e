"""A real scheduler under a long run of garbage: it never crashes, hangs, leaks, or stops serving.

Each round opens, all at once: connections that send random bytes before
authenticating; connections that authenticate properly (as a client, a node
or an admin) and then send garbage frames (random bytes, well-framed random
bodies, byte-mutated valid messages, hostile but well-formed requests);
connections that send half a frame and then nothing, before and after
authenticating. The scheduler must close every one of them: the
unauthenticated half frames within its handshake timeout, the authenticated
ones once they break the protocol or fall silent past the heartbeat timeout.
After one warm-up round its memory (VmRSS) is measured, and again after
five more: the growth must stay under a generous bound. Then it must still
count no leftover connection and serve a real client and node.

The per-peer connection limit is set low enough that connections whose slot
was never given back would soon get this very test refused.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from fairpool import SharedJobCluster
from fairpool.address import Address
from fairpool.messages import (
    AckResults,
    CancelJobs,
    Heartbeat,
    JobResult,
    JobStarted,
    Message,
    NodeProgress,
    Request,
    encode,
)
from fairpool.protocol import HEADER
from fairpool.secret import read_secret
from fairpool.wire import open_connection

pytestmark = pytest.mark.timeout(240)

HANDSHAKE_TIMEOUT = 1.5
HEARTBEAT_TIMEOUT = 4.0
SLACK = 4.0  # two busy cores: a close may come this much after its deadline
ROUNDS = 5  # after the warm-up round
RSS_GROWTH_LIMIT = 24 * 1024 * 1024  # generous: garbage must not be kept, a little fragmentation may be
PER_ROUND = {"raw": 24, "framed": 12, "half": 8, "half_authenticated": 4}
SEED = 20240607


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")


class Garbage:
    """Seeded junk: the same run every time (a failure can be replayed)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def raw(self) -> bytes:
        junk = self.rng.randbytes(self.rng.randint(1, 3000))
        if self.rng.random() < 0.5:  # a length the frame limit lets through: the decoder must refuse it
            return HEADER.pack(self.rng.randint(0, len(junk))) + junk
        return junk

    def framed(self) -> bytes:
        bodies = [self.rng.randbytes(self.rng.randint(0, 200)) for _ in range(self.rng.randint(1, 4))]
        return b"".join(HEADER.pack(len(b)) + b for b in bodies)

    def hostile(self) -> Message:
        """Well-formed, wrong in what it says: unknown jobs, verbs and ids, wrong roles' messages."""
        uid = f"c{self.rng.randint(0, 9)}.{self.rng.randint(0, 99)}"
        return self.rng.choice([
            Request(self.rng.randint(0, 2**31), self.rng.choice(["status", "jobs.show", "nodes.drain", "no.such",
                                                                  "why", "tenants.set", "policy.set"]),
                    {"uid": uid, "name": self.rng.choice(["fifo", "bogus", "n1"]), "weight": -1}),
            CancelJobs([uid, "x" * 300]),
            AckResults([uid]),
            NodeProgress([JobStarted(uid, "n1", 1.0)], [JobResult(uid, "FINISHED", b"\x80\x04N.")]),
            Heartbeat(float("nan")),
        ])

    def mutated(self, message: Message) -> bytes:
        body = bytearray(encode(message))
        for _ in range(self.rng.randint(1, 4)):
            at = self.rng.randrange(len(body))
            body[at] = self.rng.randrange(256)
        return HEADER.pack(len(body)) + bytes(body)

    def hostile_frames(self) -> bytes:
        return b"".join(HEADER.pack(len(b)) + b for b in (encode(self.hostile()) for _ in range(self.rng.randint(1, 3))))

    def garbage_frames(self) -> bytes:
        """Something no decoder takes, after some junk: the end of this peer, surely."""
        junk = self.rng.choice([self.framed(), self.mutated(self.hostile()), self.raw()])
        return junk + struct.pack(">I", 1) + b"\xc1"  # 0xc1 is never msgpack


async def until_closed(stream: trio.abc.Stream, limit: float) -> float:
    """Read until the scheduler hangs up; how long it took (AssertionError after ``limit``)."""
    start = trio.current_time()
    with trio.move_on_after(limit):
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return trio.current_time() - start
    raise AssertionError(f"the scheduler kept a garbage connection open for more than {limit:g}s")


class Attack:
    def __init__(self, address: Address, secret: bytes, seed: int) -> None:
        self.address = address
        self.secret = secret
        self.junk = Garbage(seed)
        self.slowest_half_close = 0.0

    async def raw(self) -> None:
        stream = await trio.open_tcp_stream(self.address.host, self.address.port)
        async with stream:
            if self.junk.rng.random() < 0.5:
                await stream.receive_some(65536)  # the hello, sometimes: garbage before and after it
            await _send_ignoring_reset(stream, self.junk.raw())
            await until_closed(stream, HANDSHAKE_TIMEOUT + SLACK)

    async def framed(self) -> None:
        role = self.junk.rng.choice(["client", "node", "admin"])
        stream = await open_connection(self.address, self.secret, role=role, tenant="mallory" * (role == "client"),
                                       name="garbage", timeout=20)
        async with stream.stream:
            # Well-formed hostile messages first, on their own: they reach the state's handlers (a frame
            # that fails to decode would take the rest of its read with it).
            await _send_ignoring_reset(stream.stream, self.junk.hostile_frames())
            await trio.sleep(0.05)
            await _send_ignoring_reset(stream.stream, self.junk.garbage_frames())
            await until_closed(stream.stream, 20)

    async def half(self) -> None:
        stream = await trio.open_tcp_stream(self.address.host, self.address.port)
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(HEADER.pack(1000) + b"half a hello")
            took = await until_closed(stream, HANDSHAKE_TIMEOUT + SLACK)
            self.slowest_half_close = max(self.slowest_half_close, took)

    async def half_authenticated(self, wait: bool) -> None:
        stream = await open_connection(self.address, self.secret, role="client", tenant="mallory", name="half",
                                       timeout=20)
        async with stream.stream:
            await stream.stream.send_all(HEADER.pack(5000) + b"half a submit, then silence")
            if wait:  # silent past the heartbeat timeout: dropped
                await until_closed(stream.stream, HEARTBEAT_TIMEOUT + 1.0 + SLACK)

    async def round(self, *, wait_for_silent: bool) -> None:
        jobs: list[Callable[[], Awaitable[None]]] = []
        jobs += [self.raw] * PER_ROUND["raw"] + [self.framed] * PER_ROUND["framed"] + [self.half] * PER_ROUND["half"]
        jobs += [lambda: self.half_authenticated(wait_for_silent)] * PER_ROUND["half_authenticated"]
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(job)


async def _send_ignoring_reset(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # it hung up on us mid-garbage: fine


async def connections_counted(address: Address, secret: bytes) -> int:
    """The scheduler's own count of live connections (this admin one included)."""
    stream = await open_connection(address, secret, role="admin", name="counter", timeout=20)
    async with stream.stream:
        await stream.send(Request(1, "status"))
        while True:
            for message in await stream.receive():
                if getattr(message, "id", None) == 1:
                    return int(message.body["connections"])  # type: ignore[attr-defined]


@pytest.mark.scheduler_config(handshake_timeout=HANDSHAKE_TIMEOUT, heartbeat_timeout=HEARTBEAT_TIMEOUT,
                              max_connections_per_peer=120)
async def test_scheduler_survives_a_long_run_of_garbage_and_still_serves(scheduler, start_node, cluster_kwargs):
    address = Address.parse(scheduler.address)
    secret = read_secret(Path(scheduler.secret_file))
    attack = Attack(address, secret, SEED)

    await attack.round(wait_for_silent=True)  # warm-up, with every close timed
    assert attack.slowest_half_close <= HANDSHAKE_TIMEOUT + SLACK
    await trio.sleep(0.5)
    before = rss(scheduler.pid)
    for _ in range(ROUNDS):
        await attack.round(wait_for_silent=False)
    await trio.sleep(0.5)
    after = rss(scheduler.pid)

    assert scheduler.alive(), scheduler.log_tail()
    assert after - before < RSS_GROWTH_LIMIT, (
        f"the scheduler's memory grew by {(after - before) / 2**20:.1f} MiB over {ROUNDS} rounds of garbage "
        f"({before / 2**20:.1f} -> {after / 2**20:.1f} MiB)")
    # every garbage connection is gone from the state (the silent ones once the heartbeat timeout passes)
    deadline = trio.current_time() + HEARTBEAT_TIMEOUT + 2 * SLACK
    while (count := await connections_counted(address, secret)) != 1:
        assert trio.current_time() < deadline, f"{count - 1} garbage connections are still counted"
        await trio.sleep(0.5)
    log = scheduler.log()
    assert "connection handler failed" not in log and "Traceback" not in log, scheduler.log_tail()

    start_node(cpus=1, name="n1")

    def serve() -> int:
        with SharedJobCluster(lambda x: x * 3, **cluster_kwargs) as cluster:
            return cluster.submit(14).result(timeout=60)

    assert await trio.to_thread.run_sync(serve) == 42
    assert os.kill(scheduler.pid, 0) is None


FLOOD_REQUESTS = 5_000  # per write
FLOOD_WRITES = 40
FLOOD_GROWTH_LIMIT = 50 * 1024 * 1024  # unbounded, 200,000 unread replies took over 100 MiB


@pytest.mark.scheduler_config(heartbeat_timeout=30.0)
async def test_a_peer_that_asks_and_never_reads_cannot_grow_the_schedulers_memory(scheduler, cluster_kwargs):
    """Requests are answered into the peer's outbox; a peer that never reads them is not read from either."""
    address = Address.parse(scheduler.address)
    secret = read_secret(Path(scheduler.secret_file))
    stream = await open_connection(address, secret, role="client", tenant="mallory", name="flood", timeout=20)
    chunk = b"".join(HEADER.pack(len(b)) + b for b in (encode(Request(i, "status")) for i in range(FLOOD_REQUESTS)))
    before = rss(scheduler.pid)
    blocked = 0
    async with stream.stream:
        for _ in range(FLOOD_WRITES):
            with trio.move_on_after(1) as scope:
                await stream.stream.send_all(chunk)
            blocked += scope.cancelled_caught
            if blocked >= 3:
                break  # the scheduler stopped reading us: that is the point
        grown = rss(scheduler.pid) - before
    assert grown < FLOOD_GROWTH_LIMIT, f"the scheduler's memory grew by {grown / 2**20:.0f} MiB"
    assert blocked, "the scheduler read every request while we read none of its answers"

    def others_are_served() -> None:
        with SharedJobCluster(lambda: 1, **cluster_kwargs):
            pass

    await trio.to_thread.run_sync(others_are_served)
