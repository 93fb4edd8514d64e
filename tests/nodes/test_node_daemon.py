"""serve_node against a tiny fake scheduler (a protocol peer written here) on loopback."""

from __future__ import annotations

import stat
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import cloudpickle
import pytest
import trio
from nodeharness import function_cluster, task, until, value

from fairpool.address import Address
from fairpool.clusterspec import DependFile
from fairpool.config import NodeConfig
from fairpool.handshake import AuthError
from fairpool.messages import (
    CancelTasks,
    ClusterDef,
    Dispatch,
    Heartbeat,
    JobResult,
    Message,
    NodeProgress,
    NodeReady,
    ReleaseCluster,
    Task,
)
from fairpool.nodes.daemon import serve_node
from fairpool.protocol import ProtocolError
from fairpool.wire import ConnectionClosed, MessageStream, accept_handshake

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(60)

SECRET = b"s3cret-for-tests"


class FakeScheduler:
    """Accepts nodes with the real handshake and records everything they send."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.port = 0
        self.connections = 0
        self.refused = 0
        self.received: list[Message] = []
        self.stream: MessageStream | None = None
        self.peers: list[tuple[str, str]] = []
        self.echo_heartbeats = False  # acknowledge the node's progress by echoing its heartbeats
        self._sending = trio.Lock()  # echoes and the test's own sends share one stream

    async def handle(self, tcp: trio.SocketStream) -> None:
        stream = MessageStream(tcp)
        try:
            peer = await accept_handshake(stream, self.secret, timeout=5)
        except (AuthError, ProtocolError, ConnectionClosed):
            self.refused += 1
            await stream.aclose()
            return
        self.peers.append((peer.role, peer.name))
        self.connections += 1
        self.stream = stream
        try:
            while True:
                messages = await stream.receive()
                self.received.extend(messages)
                if self.echo_heartbeats:
                    echoes = [m for m in messages if isinstance(m, Heartbeat)]
                    if echoes:
                        async with self._sending:
                            await stream.send(*echoes)
        except (ConnectionClosed, ProtocolError):
            pass

    async def send(self, *messages: Message) -> None:
        assert self.stream is not None
        async with self._sending:
            await self.stream.send(*messages)

    def of_type(self, kind: type) -> list:
        return [m for m in self.received if isinstance(m, kind)]

    def results(self) -> dict[str, JobResult]:
        return {r.uid: r for p in self.of_type(NodeProgress) for r in p.results}

    def result_count(self, uid: str) -> int:
        return sum(1 for p in self.of_type(NodeProgress) for r in p.results if r.uid == uid)

    def started(self) -> set[str]:
        return {s.uid for p in self.of_type(NodeProgress) for s in p.started}

    async def result(self, uid: str) -> JobResult:
        await until(lambda: uid in self.results(), message=f"a result for {uid}")
        return self.results()[uid]


@asynccontextmanager
async def node_and_scheduler(tmp_path: Path, *, scheduler_secret: bytes = SECRET,
                             wait: bool = True) -> AsyncIterator[tuple[FakeScheduler, NodeConfig]]:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    fake = FakeScheduler(scheduler_secret)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fake.handle, 0, host="127.0.0.1"))
        fake.port = listeners[0].socket.getsockname()[1]
        config = NodeConfig(
            scheduler=Address("127.0.0.1", fake.port),
            name="n1",
            cpus=1,
            gpus=2,
            state_dir=tmp_path / "node",
            secret_file=secret_file,
            heartbeat_interval=0.2,
            reconnect_max_delay=0.5,
        )
        if wait:
            await nursery.start(serve_node, config)
        else:
            nursery.start_soon(serve_node, config)
        yield fake, config
        nursery.cancel_scope.cancel()


def read_data(name):
    with open(name) as f:
        return f.read()


def nap(seconds):
    time.sleep(seconds)
    return seconds


async def test_node_announces_itself_after_authenticating(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        (ready,) = await until(lambda: fake.of_type(NodeReady))
        assert (ready.name, ready.cpus, ready.gpus) == ("n1", 1, 2)
        assert ready.memory > 0  # detected
        assert fake.peers == [("node", "n1")]


async def test_dispatched_task_runs_and_result_comes_back(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, config):
        files = [DependFile("data.txt", b"hello", 0o640)]
        await fake.send(Dispatch([function_cluster("c1", read_data, files=files)], [task("j1", "c1", "data.txt")]))
        result = await fake.result("j1")
        assert result.status == "FINISHED", result.reason
        assert value(result) == "hello"
        assert result.node == "n1" and result.started_at > 0
        # (its start may ride in its result: a separate JobStarted is not needed for a short job)
        written = config.state_dir / "clusters" / "c1" / "data.txt"
        assert stat.S_IMODE(written.stat().st_mode) == 0o640


async def test_results_are_batched_into_few_progress_messages(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("warm", "c1", 0)]))
        await fake.result("warm")
        before = len(fake.of_type(NodeProgress))
        await fake.send(Dispatch([], [task(f"j{i}", "c1", 0) for i in range(300)]))
        await until(lambda: len(fake.results()) == 301, message="300 results")
        assert len(fake.of_type(NodeProgress)) - before < 100


async def test_heartbeats_are_sent_every_interval(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        await until(lambda: len(fake.of_type(Heartbeat)) >= 3, timeout=5, message="3 heartbeats")


async def test_bad_cluster_spec_fails_its_tasks_and_node_keeps_serving(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        await fake.send(Dispatch([ClusterDef("bad", b"\x93garbage")], [task("j1", "bad", 1)]))
        result = await fake.result("j1")
        assert result.status == "FAILED" and result.reason.startswith("bad cluster spec")
        assert result.node == "n1"
        await fake.send(Dispatch([], [task("j2", "bad", 1)]))  # later tasks of it too
        assert (await fake.result("j2")).reason.startswith("bad cluster spec")
        await fake.send(Dispatch([function_cluster("good", nap)], [task("j3", "good", 0)]))
        assert (await fake.result("j3")).status == "FINISHED"


async def test_unsafe_cluster_id_is_refused(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, config):
        await fake.send(Dispatch([function_cluster("../escape", nap)], [task("j1", "../escape", 0)]))
        result = await fake.result("j1")
        assert result.status == "FAILED" and "refused cluster id" in result.reason
        assert not (config.state_dir / "escape").exists()


async def test_release_removes_the_cluster_directory(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, config):
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("j1", "c1", 0)]))
        await fake.result("j1")
        directory = config.state_dir / "clusters" / "c1"
        assert directory.is_dir()
        await fake.send(ReleaseCluster("c1"))
        await until(lambda: not directory.exists(), message="cluster dir removed")


async def test_node_reconnects_and_delivers_results_held_meanwhile(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        await until(lambda: fake.of_type(NodeReady))
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("j1", "c1", 0.5)]))
        await until(lambda: "j1" in fake.started(), message="j1 started")
        assert fake.stream is not None
        await fake.stream.aclose()  # the scheduler goes away while the job runs
        await until(lambda: fake.connections == 2, message="the node reconnected")
        await until(lambda: len(fake.of_type(NodeReady)) == 2, message="announced again")
        result = await fake.result("j1")
        assert result.status == "FINISHED" and value(result) == 0.5
        # the job ran once: the worker survived the disconnection
        await fake.send(Dispatch([], [task("j2", "c1", 0)]))
        assert (await fake.result("j2")).status == "FINISHED"


async def test_relative_state_dir_serves_several_clusters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with node_and_scheduler(Path("."), wait=True) as (fake, config):
        assert not config.state_dir.is_absolute()
        for n in range(2):
            files = [DependFile("data.txt", f"data {n}".encode())]
            await fake.send(Dispatch([function_cluster(f"c{n}", read_data, files=files)], [task(f"j{n}", f"c{n}", "data.txt")]))
            result = await fake.result(f"j{n}")
            assert (result.status, value(result)) == ("FINISHED", f"data {n}"), result.reason


async def bounce(fake: FakeScheduler) -> None:
    """Close the node's connection and wait until it is back and announced."""
    assert fake.stream is not None
    connections = fake.connections
    await fake.stream.aclose()
    await until(lambda: len(fake.of_type(NodeReady)) == connections + 1, message="the node reconnected")


async def test_progress_sent_just_before_a_disconnect_is_sent_again(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("j1", "c1", 0)]))
        await fake.result("j1")
        await bounce(fake)
        # it may not have been read before the break: the scheduler gets it again
        await until(lambda: fake.result_count("j1") == 2, message="j1 re-sent")


async def test_progress_acknowledged_by_a_heartbeat_echo_is_not_sent_again(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        fake.echo_heartbeats = True
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("j1", "c1", 0)]))
        await fake.result("j1")
        heartbeats = len(fake.of_type(Heartbeat))
        await until(lambda: len(fake.of_type(Heartbeat)) >= heartbeats + 2, message="heartbeats after j1")
        await bounce(fake)
        await fake.send(Dispatch([], [task("j2", "c1", 0)]))
        await fake.result("j2")
        assert fake.result_count("j1") == 1


async def test_node_keeps_retrying_while_refused_then_connects(tmp_path):
    async with node_and_scheduler(tmp_path, scheduler_secret=b"another secret", wait=False) as (fake, _):
        await until(lambda: fake.refused >= 2, message="the node retried after being refused")
        assert fake.connections == 0
        fake.secret = SECRET  # the operator fixes the secret
        await until(lambda: fake.of_type(NodeReady), message="the node connected")


async def test_node_started_without_scheduler_connects_once_it_listens(tmp_path):
    # nothing listens on the port yet: the node keeps trying
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    config = NodeConfig(scheduler=Address("127.0.0.1", port), name="late", cpus=1,
                        state_dir=tmp_path / "node", secret_file=secret_file, reconnect_max_delay=0.3)
    fake = FakeScheduler(SECRET)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_node, config)
        await trio.sleep(0.5)
        await nursery.start(partial(trio.serve_tcp, fake.handle, port, host="127.0.0.1"))
        await until(lambda: fake.of_type(NodeReady), message="the node connected")
        nursery.cancel_scope.cancel()


def test_secret_never_appears_in_logs(tmp_path, capsys):
    async def main() -> None:
        async with node_and_scheduler(tmp_path, scheduler_secret=b"wrong", wait=False) as (fake, _):
            await until(lambda: fake.refused >= 1)

    trio.run(main)
    out = capsys.readouterr()
    assert "refused" in (out.out + out.err).lower()
    assert SECRET.decode() not in out.out + out.err


def report_then_nap(seconds):
    from fairpool import provisional_result, send_file

    provisional_result("halfway")
    with open("note.txt", "w") as f:
        f.write("note")
    send_file("note.txt", "notes/note.txt")
    time.sleep(seconds)
    return seconds


async def test_provisional_results_and_files_are_forwarded_to_the_scheduler(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        await fake.send(Dispatch([function_cluster("c1", report_then_nap)], [task("j1", "c1", 0.3)]))

        def forwarded():
            return [p for p in fake.of_type(NodeProgress) if p.provisional or p.files]

        # they arrive while the job still runs, not with its result
        await until(lambda: any(p.provisional for p in forwarded()) and any(p.files for p in forwarded()),
                    message="provisional and file forwarded")
        assert "j1" not in fake.results()
        (provisional,) = [x for p in fake.of_type(NodeProgress) for x in p.provisional]
        assert provisional.uid == "j1" and cloudpickle.loads(provisional.payload) == "halfway"
        (chunk,) = [x for p in fake.of_type(NodeProgress) for x in p.files]
        assert (chunk.uid, chunk.name, chunk.data, chunk.last) == ("j1", "notes/note.txt", b"note", True)
        assert (await fake.result("j1")).status == "FINISHED"


async def test_cancel_tasks_from_the_scheduler_stops_a_running_job(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("j1", "c1", 60)]))
        await until(lambda: "j1" in fake.started(), message="j1 started")
        began = trio.current_time()
        await fake.send(CancelTasks(["j1"], "cancelled by the client"))
        result = await fake.result("j1")
        assert result.status == "FAILED" and result.reason == "cancelled by the client"
        assert trio.current_time() - began < 10
        await fake.send(Dispatch([], [task("j2", "c1", 0)]))  # a new worker serves the next job
        assert (await fake.result("j2")).status == "FINISHED"


async def test_a_task_timeout_from_the_scheduler_is_enforced(tmp_path):
    async with node_and_scheduler(tmp_path) as (fake, _):
        await fake.send(Dispatch([function_cluster("c1", nap)], [Task("j1", "c1", cloudpickle.dumps(((60,), {})), 0.3)]))
        result = await fake.result("j1")
        assert result.status == "FAILED" and result.reason == "timed out after 0.3 s"
