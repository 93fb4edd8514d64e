"""``AsyncSharedJobCluster``: the same cluster for trio code, its connection in the caller's loop.

The design, in use::

    async with AsyncSharedJobCluster(compute, scheduler="127.0.0.1:51350") as cluster:
        job = await cluster.submit(21)       # an AsyncJob (also a concurrent.futures Future)
        print(await job)                     # its result, or its exception raised
        async for value in cluster.map(range(10)):   # results in order
            print(value)
        await cluster.wait()                 # every job so far ended

``async with`` opens the cluster (raising ``SchedulerConnectionError`` if it
cannot) and runs its connection as a task of a nursery the context owns, so
it is structured: leaving the block waits for the jobs (unless the block
raised), closes the cluster and ends the task. ``aclose(timeout=None,
terminate=False)`` does the same explicitly.

``await job`` is ``await job.wait_result()``; ``await job.wait()`` waits
without raising. Everything else matches ``SharedJobCluster``: ``submit``,
``submit_node``, ``options(...).submit/map``, ``map``, ``jobs()``,
``cancel(job)`` (and ``job.cancel()``; not awaited: it only sends a
request), callbacks (on the callback thread, never the trio thread), files,
provisional results, the recover file. There is no ``executor()``: a
concurrent.futures executor is for threads, not trio.

``AsyncSharedJobCluster.reattach(cluster_id, ...)`` is
``SharedJobCluster.reattach`` for trio code: ``async with`` it to re-attach.

``submit`` does not yield to the loop: a burst of submits is registered
first and sent as one Submit when the task next waits. ``map`` yields
between chunks of ``MAP_CHUNK`` jobs so that sending overlaps pickling.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any

import trio

from fairpool.clients.core import (
    MAP_CHUNK,
    ClusterCore,
    argsets,
)
from fairpool.clients.errors import ClusterClosedError
from fairpool.clients.job import Job
from fairpool.clients.options import JobOptions, make_options

#: How long aclose() waits for the scheduler to confirm ClusterClosed when not given a timeout.
CLOSE_TIMEOUT = 10.0


class AsyncJob(Job):
    """A Job that trio code can await: ``await job`` is its result."""

    __slots__ = ()

    async def wait(self) -> None:
        """Wait until the job has ended (whatever the outcome)."""
        if self.done():
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: object) -> None:
            # runs in whichever thread settles the job: the loop's, or the callback thread
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass

        self.add_done_callback(wake)
        await event.wait()

    async def wait_result(self) -> Any:
        """The job's result; raises its exception (``JobCancelled`` if it was cancelled)."""
        await self.wait()
        return self.result(0)

    def __await__(self) -> Any:
        return self.wait_result().__await__()


class AsyncSharedJobCluster(ClusterCore):
    """A computation run by a shared fairpool scheduler, for trio code (see the module docstring)."""

    job_class = AsyncJob

    def _start(self) -> None:
        self._context: AbstractAsyncContextManager[AsyncSharedJobCluster] | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<AsyncSharedJobCluster {self.name!r} {self.cluster_id} on {self.scheduler} ({state})>"

    # --- opening and closing ---------------------------------------------------

    async def __aenter__(self) -> AsyncSharedJobCluster:
        if self._context is not None:
            raise RuntimeError("an AsyncSharedJobCluster is entered once")
        self._context = self._running()
        return await self._context.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._context is not None
        return await self._context.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[AsyncSharedJobCluster]:
        stream = await self._connection.open()  # before the nursery: its error is not wrapped in a group
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._connection.serve, stream)
                self._opened()
                try:
                    yield self
                except BaseException:
                    # Do not block on the jobs (a Ctrl-C, a failure): they stay recoverable.
                    with trio.CancelScope(shield=True):
                        await self.aclose(terminate=True)
                    raise
                else:
                    await self.aclose()
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The body's own exception, as the user raised it: the connection task only ever
            # ends by our cancel, so the group holds nothing else.
            leaves = list(_leaves(group))
            if len(leaves) == 1:
                raise leaves[0] from leaves[0].__cause__
            raise

    async def aclose(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Wait for the pending jobs (unless ``terminate``), close the cluster; as ``SharedJobCluster.close``."""
        if self._closed:
            return
        self._closed = True
        self._open = False
        deadline = None if timeout is None else trio.current_time() + timeout
        if not terminate:
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self.wait()
        close_timeout = CLOSE_TIMEOUT if deadline is None else max(deadline - trio.current_time(), 0.5)
        if self._connection.fatal is None:
            await self._connection.close_cluster(close_timeout)
        if self._callbacks is not None:
            left = None if deadline is None else max(deadline - trio.current_time(), 0.0)
            await trio.to_thread.run_sync(self._callbacks.drain, left)
            self._callbacks.stop(0)
        self._session.abort_all(
            ClusterClosedError(
                f"cluster {self.cluster_id} was closed before the job ended; "
                f"its result may be recovered with recover_jobs({self.cluster_id!r})"
            )
        )
        self._files.close()
        self._remove_recover_file()

    # --- submitting ------------------------------------------------------------

    async def submit(self, *args: Any, **kwargs: Any) -> AsyncJob:
        """Run ``computation(*args, **kwargs)`` on the pool; ``await`` the job for its result."""
        return self._new_job(args, kwargs, None)  # type: ignore[return-value]

    async def submit_node(self, node: str, *args: Any, **kwargs: Any) -> AsyncJob:
        """Like ``submit``, to run only on the node named ``node``."""
        return self._new_job(args, kwargs, make_options(node=node))  # type: ignore[return-value]

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any]) -> AsyncIterator[Any]:
        """``async for`` the results, in order, of one job per item (zipped over several iterables)."""
        return self._map(argsets(iterable, iterables), None)

    async def _map(self, calls: Iterable[tuple[Any, ...]], options: JobOptions | None) -> AsyncIterator[Any]:
        jobs: list[Job] = []
        calls = iter(calls)
        while chunk := list(itertools.islice(calls, MAP_CHUNK)):
            jobs.extend(self._new_jobs(chunk, options))
            await trio.lowlevel.checkpoint()  # let the connection send this chunk while the next is pickled
        for job in jobs:
            assert isinstance(job, AsyncJob)
            yield await job.wait_result()

    async def as_completed(self, jobs: Iterable[AsyncJob] | None = None) -> AsyncIterator[AsyncJob]:
        """``async for job in cluster.as_completed()``: the jobs (default: every job submitted so
        far) as each one ends, whatever its outcome (``await job`` then gives its result)."""
        pending = list(jobs) if jobs is not None else [j for j in self.jobs() if isinstance(j, AsyncJob)]
        send, receive = trio.open_memory_channel[AsyncJob](len(pending) or 1)
        token = trio.lowlevel.current_trio_token()

        def ended(future: Any) -> None:
            # runs in whichever thread settles the job (no task of ours is left behind if the
            # caller stops iterating early)
            try:
                token.run_sync_soon(send.send_nowait, future)
            except trio.RunFinishedError:
                pass

        for job in pending:
            job.add_done_callback(ended)
        for _ in range(len(pending)):
            yield await receive.receive()

    def options(
        self,
        *,
        resources: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        node: str | None = None,
    ) -> AsyncJobSubmitter:
        """Per-job options, as ``SharedJobCluster.options``."""
        return AsyncJobSubmitter(self, make_options(resources, timeout, priority, node))

    def cancel(self, job: Job) -> bool:
        """Cancel ``job``: True if it had not ended (it then ends CANCELLED unless it finished first)."""
        return self._cancel(job)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far has ended; False if ``timeout`` passed first."""
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            for job in self.jobs():
                if not job.done():
                    assert isinstance(job, AsyncJob)
                    await job.wait()
            return True
        return False


class AsyncJobSubmitter:
    """``cluster.options(...)`` of an async cluster: ``await submitter.submit(...)``, ``async for ... in map``."""

    def __init__(self, cluster: AsyncSharedJobCluster, options: JobOptions) -> None:
        self._cluster = cluster
        self.job_options = options

    async def submit(self, *args: Any, **kwargs: Any) -> AsyncJob:
        return self._cluster._new_job(args, kwargs, self.job_options)  # type: ignore[return-value]

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any]) -> AsyncIterator[Any]:
        return self._cluster._map(argsets(iterable, iterables), self.job_options)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
