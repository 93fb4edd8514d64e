"""A fleet of simulated fairpool nodes in one process: N trio tasks, each a real protocol peer.

Each simulated node opens its own authenticated connection to the scheduler
(``fairpool.wire.open_connection``, role "node"), announces itself with
``NodeReady`` and then does what ``fairpool node`` does on the wire --
``Heartbeat`` every second, ``Dispatch`` in, ``NodeProgress`` with the
results out -- except that it runs the jobs in this process, one after
another, instead of in worker processes: a hundred nodes cost one process.
A cluster's computation is unpickled once for the whole fleet.

Every run of every job is counted by uid; on SIGTERM or SIGINT the fleet
writes ``{"runs": {uid: count}, "nodes": N, "lost": [...]}`` to ``--stats``
and exits, so that a driver can check that each job ran exactly once.
``--ready`` names a file written once every node has announced itself.

    python bench/simnodes.py --scheduler 127.0.0.1:51350 --secret-file S --nodes 100 --stats out.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import trio

from fairpool.address import Address
from fairpool.clusterspec import decode_spec
from fairpool.handshake import AuthError
from fairpool.messages import (
    CancelTasks,
    Dispatch,
    Heartbeat,
    JobResult,
    NodeProgress,
    NodeReady,
    ReleaseCluster,
    Task,
)
from fairpool.protocol import ProtocolError
from fairpool.secret import read_secret
from fairpool.wire import ConnectionClosed, MessageStream, Outbox, open_connection

HEARTBEAT_INTERVAL = 1.0
CONNECT_TIMEOUT = 30.0  # a hundred handshakes at once on a busy machine


class Fleet:
    """What the simulated nodes share: the unpickled computations and the count of runs."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.computations: dict[str, Callable[..., Any]] = {}
        self.runs: Counter[str] = Counter()
        self.ready = 0
        self.lost: list[str] = []  # nodes whose connection broke

    def install(self, cluster_id: str, spec: bytes) -> None:
        if cluster_id not in self.computations:
            compute, _setup, _cleanup = cloudpickle.loads(decode_spec(spec).code)
            self.computations[cluster_id] = compute

    def run(self, task: Task, node: str) -> JobResult:
        """One job, in this process; its exception becomes a FAILED result, as on a real node."""
        started = time.time()
        self.runs[task.uid] += 1
        try:
            args, kwargs = pickle.loads(task.payload)
            value = self.computations[task.cluster_id](*args, **kwargs)
            status, payload, reason = "FINISHED", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), ""
        except Exception as exc:  # noqa: BLE001 - the job's failure is its result
            status, payload, reason = "FAILED", cloudpickle.dumps(RuntimeError(repr(exc))), repr(exc)
        return JobResult(task.uid, status, payload, reason=reason, started_at=started, finished_at=time.time(),
                         node=node)


class SimNode:
    def __init__(self, fleet: Fleet, name: str, cpus: int) -> None:
        self.fleet = fleet
        self.name = name
        self.cpus = cpus
        self.session = uuid.uuid4().hex

    async def run(self, address: Address, secret: bytes, all_ready: trio.Event, total: int) -> None:
        try:
            stream = await open_connection(address, secret, role="node", name=self.name, timeout=CONNECT_TIMEOUT)
        except (ConnectionClosed, AuthError, ProtocolError) as exc:
            self.fleet.lost.append(f"{self.name}: could not connect: {exc}")
            return
        try:
            await stream.send(NodeReady(self.name, self.cpus, 1 << 30, 0, self.session, []))
            self.fleet.ready += 1
            if self.fleet.ready == total:
                all_ready.set()
            outbox = Outbox()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, outbox, stream, nursery.cancel_scope)
                nursery.start_soon(self._heartbeat, outbox)
                await self._read(stream, outbox)
                nursery.cancel_scope.cancel()
        except ConnectionClosed as exc:
            self.fleet.lost.append(f"{self.name}: {exc}")
        finally:
            await stream.aclose()

    async def _read(self, stream: MessageStream, outbox: Outbox) -> None:
        while True:
            tasks: list[Task] = []
            for message in await stream.receive():  # everything that came at once: one batch of results
                if isinstance(message, Dispatch):
                    for cdef in message.clusters:
                        self.fleet.install(cdef.cluster_id, cdef.spec)
                    tasks.extend(message.tasks)
                elif isinstance(message, ReleaseCluster | Heartbeat | CancelTasks):
                    pass  # nothing held to release; heartbeats are echoes; jobs end before a cancel
            if not tasks:
                continue
            if self.fleet.hold:
                await trio.sleep(self.fleet.hold)  # the jobs "run" this long, all cpus at once
            outbox.put(NodeProgress([], [self.fleet.run(task, self.name) for task in tasks]))

    @staticmethod
    async def _write(outbox: Outbox, stream: MessageStream, scope: trio.CancelScope) -> None:
        try:
            await outbox.run_writer(stream)
        finally:
            scope.cancel()

    @staticmethod
    async def _heartbeat(outbox: Outbox) -> None:
        while True:
            outbox.put(Heartbeat(time.time()))
            await trio.sleep(HEARTBEAT_INTERVAL)


async def run_fleet(args: argparse.Namespace) -> Fleet:
    fleet = Fleet(args.hold)
    secret = read_secret(Path(args.secret_file))
    address = Address.parse(args.scheduler)
    all_ready = trio.Event()
    nodes = [SimNode(fleet, f"{args.prefix}{i:03d}", args.cpus) for i in range(args.nodes)]
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(node.run, address, secret, all_ready, len(nodes))

            async def announce() -> None:
                await all_ready.wait()
                if args.ready:
                    await trio.Path(args.ready).write_text(f"{len(nodes)}\n")

            nursery.start_soon(announce)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    return fleet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", required=True, help="HOST:PORT")
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--cpus", type=int, default=2, help="cpus each simulated node offers")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds each batch of jobs takes to 'run'")
    parser.add_argument("--prefix", default="sim", help="node names are PREFIX000, PREFIX001...")
    parser.add_argument("--stats", help="write the run counts here when stopped")
    parser.add_argument("--ready", help="write this file once every node has announced itself")
    args = parser.parse_args(argv)
    fleet = trio.run(run_fleet, args)
    if args.stats:
        tmp = Path(args.stats + ".tmp")
        tmp.write_text(json.dumps({"runs": dict(fleet.runs), "nodes": args.nodes, "lost": fleet.lost}))
        os.replace(tmp, args.stats)
    if fleet.lost:
        print(f"simnodes: {len(fleet.lost)} connections broke, e.g. {fleet.lost[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
