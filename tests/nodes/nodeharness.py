"""Helpers for the node tests: build cluster definitions and tasks, drive a real worker process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cloudpickle

from fairpool.clusterspec import ClusterSpec, DependFile, encode_spec
from fairpool.messages import (
    AnyMessage,
    ClusterDef,
    FileChunk,
    JobProvisional,
    JobResult,
    Message,
    NodeProgress,
    Task,
)
from fairpool.nodes.workerpool import WorkerPool
from fairpool.protocol import Connection, encode_frames

DEADLINE = 20.0


def function_cluster(
    cluster_id: str,
    compute: Callable[..., Any],
    setup: Callable[[], Any] | None = None,
    cleanup: Callable[[], Any] | None = None,
    files: Iterable[DependFile] = (),
) -> ClusterDef:
    code = cloudpickle.dumps((compute, setup, cleanup))
    return ClusterDef(cluster_id, encode_spec(ClusterSpec("function", code, files=list(files))))


def program_cluster(cluster_id: str, program: str, files: Iterable[DependFile]) -> ClusterDef:
    return ClusterDef(cluster_id, encode_spec(ClusterSpec("program", program=program, files=list(files))))


def task(uid: str, cluster_id: str, *args: Any, **kwargs: Any) -> Task:
    return Task(uid, cluster_id, cloudpickle.dumps((args, kwargs)))


def timed_task(uid: str, cluster_id: str, timeout: float, *args: Any) -> Task:
    return Task(uid, cluster_id, cloudpickle.dumps((args, {})), timeout)


def install(base: Path, cluster: ClusterDef, files: Iterable[DependFile] = ()) -> Path:
    """What the node daemon does before dispatching: the cluster's dir and its files."""
    directory = base / cluster.cluster_id
    directory.mkdir(parents=True, exist_ok=True)
    for f in files:
        (directory / f.name).write_bytes(f.data)
        os.chmod(directory / f.name, f.mode)
    return directory


def value(result: JobResult) -> Any:
    return cloudpickle.loads(result.payload)


class WorkerProcess:
    """A real ``fairpool.nodes.worker`` process on a socketpair, driven synchronously.

    With ``lifeline=True`` it gets a lifeline pipe whose write end is ``self.lifeline``
    (closing it plays the node dying) and runs in its own session, as the node starts it.
    """

    def __init__(self, workdir_base: Path, *, lifeline: bool = False) -> None:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "fairpool.nodes.worker", "--fd", str(theirs.fileno())]
        argv += ["--workdir-base", str(workdir_base)]
        pass_fds = [theirs.fileno()]
        self.lifeline: int | None = None
        read_end = None
        if lifeline:
            read_end, self.lifeline = os.pipe()
            argv += ["--lifeline-fd", str(read_end)]
            pass_fds.append(read_end)
        self.process = subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL, start_new_session=lifeline)
        theirs.close()
        if read_end is not None:
            os.close(read_end)
        self.sock = ours
        self.protocol = Connection()
        self.inbox: deque[AnyMessage] = deque()
        self.frames = 0

    def send(self, *messages: Message) -> None:
        self.sock.sendall(encode_frames(list(messages)))

    def receive(self, deadline: float = DEADLINE) -> AnyMessage:
        end = time.monotonic() + deadline
        while not self.inbox:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the worker in time")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("the worker closed its socket")
            self.inbox.extend(self.protocol.receive_data(data))
        return self.inbox.popleft()

    def results(self, count: int, deadline: float = DEADLINE) -> list[JobResult]:
        """The next ``count`` results; ``self.frames`` counts the NodeProgress frames they came in."""
        end = time.monotonic() + deadline
        results: list[JobResult] = []
        while len(results) < count:
            message = self.receive(end - time.monotonic())
            assert isinstance(message, NodeProgress), message
            assert message.started == [] and message.provisional == [] and message.files == [], message
            self.frames += 1
            results.extend(message.results)
        assert len(results) == count, results
        return results

    def progress_until_result(self, uid: str, deadline: float = DEADLINE) -> list[NodeProgress]:
        """Every NodeProgress up to and including the one with ``uid``'s result."""
        end = time.monotonic() + deadline
        seen: list[NodeProgress] = []
        while True:
            message = self.receive(end - time.monotonic())
            assert isinstance(message, NodeProgress), message
            seen.append(message)
            if any(r.uid == uid for r in message.results):
                return seen

    def close(self) -> int:
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None
        self.sock.close()
        try:
            return self.process.wait(DEADLINE)
        finally:
            if self.process.returncode is None:
                self.process.kill()
                self.process.wait()


async def until(predicate: Callable[[], Any], timeout: float = DEADLINE, message: str = "") -> Any:
    """Wait (trio) until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    import trio

    with trio.move_on_after(timeout):
        while True:
            got = predicate()
            if got:
                return got
            await trio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:g}s waiting until {message or predicate}")


class Collector:
    """A WorkerPool progress callback that keeps everything it is given.

    ``events`` keeps the order: ("provisional", uid), ("file", uid), ("result", uid).
    """

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.results: dict[str, JobResult] = {}
        self.provisional: list[JobProvisional] = []
        self.files: list[FileChunk] = []
        self.events: list[tuple[str, str]] = []
        self.calls = 0

    def __call__(
        self,
        started: list[Any],
        results: list[JobResult],
        provisional: list[JobProvisional] = (),  # type: ignore[assignment]
        files: list[FileChunk] = (),  # type: ignore[assignment]
    ) -> None:
        self.calls += 1
        self.started.extend(started)
        # what a consumer must do: a message's provisional results and files before its results
        self.provisional.extend(provisional)
        self.events.extend(("provisional", p.uid) for p in provisional)
        self.files.extend(files)
        self.events.extend(("file", f.uid) for f in files)
        self.events.extend(("result", r.uid) for r in results)
        for result in results:
            assert result.uid not in self.results, f"two results for {result.uid}"
            self.results[result.uid] = result

    async def wait(self, uids: Iterable[str], timeout: float = DEADLINE) -> list[JobResult]:
        wanted = list(uids)
        await until(lambda: all(u in self.results for u in wanted), timeout,
                    f"results for {len(wanted)} jobs (have {len(self.results)})")
        return [self.results[u] for u in wanted]


@asynccontextmanager
async def running_pool(base: Path, cpus: int = 2) -> AsyncIterator[tuple[WorkerPool, Collector]]:
    """A WorkerPool with real workers, all ready, reporting to a Collector."""
    import trio

    collector = Collector()
    pool = WorkerPool(cpus, base, collector, node_name="n1")
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await until(lambda: pool.statistics().ready == cpus, message="workers ready")
        yield pool, collector
        nursery.cancel_scope.cancel()


def dead(pid: int) -> bool:
    """The process is gone, or a zombie (an orphan's zombie may never be reaped in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"
