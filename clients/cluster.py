"""``SharedJobCluster``: the synchronous client of a shared fairpool scheduler.

The constructor (``ClusterCore``: packing, settings, default options, the
session) opens the cluster on a background trio thread (``LoopThread`` +
``ClusterConnection``) and writes the recover file. ``submit`` pickles the
arguments in the caller's thread, registers the job in the
``ClusterSession`` and wakes the connection thread only if it is not already
due to flush, so a loop of submits costs a few Submit messages, not one per
job. Results settle the ``Job`` futures from the connection thread -- or,
when there is a ``job_status`` callback, from the callback thread right
before the callback sees them.

Per-job options go through ``cluster.options(...)`` (a ``JobSubmitter``), so
that they never collide with the computation's own keyword arguments;
``submit_node`` is ``options(node=...).submit``. ``executor()`` gives a
``concurrent.futures.Executor`` over the same scheduler
(``fairpool.clients.executor``).

After a crash: ``SharedJobCluster.reattach(cluster_id)`` is a live cluster
object for a cluster an earlier client opened (its ``jobs()`` are the dead
client's, resolving as results arrive; ``submit`` adds more), and
``recover_jobs()`` collects the jobs of the latest recover file here: it
waits for them, acknowledges their results, and closes the cluster once
every job ended -- or, when its ``timeout`` passes first, hangs up and
leaves the rest running, to be collected by a later call.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import IO, Any

from fairpool.clients.core import ClusterCore, argsets
from fairpool.clients.errors import ClusterClosedError
from fairpool.clients.job import Job
from fairpool.clients.loopthread import LoopThread
from fairpool.clients.nodecontrol import NodeControls
from fairpool.clients.options import JobOptions, make_options
from fairpool.clients.progress import PROGRESS_EVERY, progress_line
from fairpool.clients.recover import latest_recover_file

logger = logging.getLogger("fairpool.clients")

#: How long close() waits for the scheduler to confirm ClusterClosed when not given a timeout.
CLOSE_TIMEOUT = 10.0
#: How long close() lets the callback thread deliver what it holds when not given a timeout.
CALLBACK_DRAIN_TIMEOUT = 10.0


class SharedJobCluster(ClusterCore, NodeControls):
    """A computation run by a shared fairpool scheduler on its pool of nodes.

    Takes SPEC's arguments (see ``ClusterCore``); ``job_status(job)`` is called
    on every status change of a job, ``cluster_status(event, node, None)`` when
    a node joins, leaves or fails -- both on one dedicated thread, in order.
    """

    def _start(self) -> None:
        # (called at the end of ClusterCore.__init__, whose signature is SPEC's)
        self._executors: list[Any] = []
        self._loop = LoopThread(self._connection, f"fairpool-cluster-{self.cluster_id[:8]}")
        self._loop.start()
        self._closed = False
        self._close_lock = threading.Lock()
        self._opened()

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<{type(self).__name__} {self.name!r} {self.cluster_id} on {self.scheduler} ({state})>"

    # --- submitting ------------------------------------------------------------

    def submit(self, *args: Any, **kwargs: Any) -> Job:
        """Run ``computation(*args, **kwargs)`` on the pool; the Job resolves to its result."""
        return self._new_job(args, kwargs, None)

    def submit_node(self, node: str, *args: Any, **kwargs: Any) -> Job:
        """Like ``submit``, to run only on the node named ``node``."""
        return self._new_job(args, kwargs, make_options(node=node))

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        """Submit one job per item (zipped over several iterables) now; yield their results in order.

        The iterator raises the first failing job's exception when it reaches it.
        """
        return _results(self._new_jobs(argsets(iterable, iterables), None))

    def options(
        self,
        *,
        resources: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        node: str | None = None,
    ) -> JobSubmitter:
        """Per-job options for the jobs submitted through the returned object.

        ``resources`` like ``{"cpus": 2, "memory": "4G", "gpus": 1}``; ``timeout``:
        seconds of running time, after which the node kills the job (FAILED,
        "timed out after N s"); ``node``: run only on the node of that name.
        Unset options take the cluster's defaults (its ``resources``/``priority``).
        """
        return JobSubmitter(self, make_options(resources, timeout, priority, node))

    def cancel(self, job: Job) -> bool:
        """Cancel ``job``: True if it had not ended (it then ends CANCELLED unless it finished first)."""
        return self._cancel(job)

    def executor(self) -> Any:
        """A ``concurrent.futures.Executor`` whose ``submit(fn, *args, **kwargs)`` runs any function
        on this cluster's scheduler (see ``fairpool.clients.executor``)."""
        from fairpool.clients.executor import ClusterExecutor

        self._check_open()
        executor = ClusterExecutor(self)
        self._executors.append(executor)
        return executor

    def _ask(self, verb: str, args: dict[str, Any]) -> Any:
        self._check_open()
        return self._loop.call(self._connection.request, verb, args)

    def _check_open(self) -> None:
        super()._check_open()
        if self._loop.error is not None or not self._loop.alive:
            raise ClusterClosedError(f"cluster {self.cluster_id}: the connection thread has stopped ({self._loop.error!r})")

    # --- watching ----------------------------------------------------------------

    def wait(self, timeout: float | None = None, progress: bool | IO[str] = False) -> bool:
        """Wait until every job submitted so far has ended; False if ``timeout`` passed first.

        ``progress=True`` shows a progress bar on stderr while waiting (or pass a file to write it to).
        """
        if not progress:
            return self._session.wait(timeout)
        out = sys.stderr if progress is True else progress
        deadline = None if timeout is None else time.monotonic() + timeout
        total = len(self.jobs())
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            done = self._session.wait(PROGRESS_EVERY if left is None else min(PROGRESS_EVERY, left))
            print("\r" + progress_line(total - self._session.outstanding, total), end="", file=out, flush=True)
            if done or (left is not None and left <= 0):
                print(file=out, flush=True)
                return done

    # --- closing -----------------------------------------------------------------

    def close(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Wait for the pending jobs (unless ``terminate``), close the cluster and stop its threads.

        ``timeout`` bounds the whole close. Jobs still unsettled afterwards (terminate, or the
        timeout passed) fail with ClusterClosedError here; the scheduler still has them, and the
        recover file is kept so ``recover_jobs(cluster_id)`` can collect them later. Status
        callbacks of jobs that ended are delivered before close returns (unless it is called
        from a callback).
        """
        if not terminate and self._callbacks is not None and self._callbacks.in_callback():
            raise RuntimeError(
                "close() cannot wait for jobs from inside a job_status or cluster_status callback "
                "(their results are delivered by the very thread it would block): use close(terminate=True)"
            )
        with self._close_lock:
            if self._closed:
                return
            self._open = False  # refuse new submits from here on
            deadline = None if timeout is None else time.monotonic() + timeout
            for executor in self._executors:
                executor.shutdown(wait=not terminate, cancel_futures=terminate)
            if not terminate:
                self._session.wait(_left(deadline))
            close_timeout = CLOSE_TIMEOUT if deadline is None else max(deadline - time.monotonic(), 0.5)
            try:
                confirmed = self._loop.call(self._connection.close_cluster, close_timeout)
            except ClusterClosedError:
                confirmed = False
            self._loop.stop()
            self._closed = True
        if not confirmed and self._connection.fatal is None:
            logger.warning("cluster %s: the scheduler did not confirm the close within %gs", self.cluster_id, close_timeout)
        self._wind_down(deadline, f"cluster {self.cluster_id} was closed before the job ended")
        self._remove_recover_file()

    def _detach(self, timeout: float = CLOSE_TIMEOUT, why: str = "the cluster was detached") -> None:
        """Hang up without closing: the cluster's jobs run on in the scheduler, the recover file
        stays, and the jobs not ended here fail with ClusterClosedError saying ``why``."""
        with self._close_lock:
            if self._closed:
                return
            self._open = False
            for executor in self._executors:
                executor.shutdown(wait=False)
            try:
                if not self._loop.call(self._connection.detach, timeout):
                    logger.warning("cluster %s: could not hang up cleanly within %gs", self.cluster_id, timeout)
            except ClusterClosedError:
                pass
            self._loop.stop()
            self._closed = True
        self._wind_down(time.monotonic() + timeout, why)
        if self._recover_log is not None:
            self._recover_log.close()

    def _wind_down(self, deadline: float | None, why: str) -> None:
        if self._callbacks is not None:
            # results that arrived are the user's: let their callbacks run (and their futures settle)
            self._callbacks.drain(CALLBACK_DRAIN_TIMEOUT if deadline is None else _left(deadline))
        self._session.abort_all(
            ClusterClosedError(f"{why}; its result may be recovered with recover_jobs({self.cluster_id!r})")
        )
        if self._callbacks is not None:
            self._callbacks.stop(0 if deadline is None else _left(deadline))
        self._files.close()

    def __enter__(self) -> SharedJobCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # On an exception (Ctrl-C included) do not block on the jobs: they stay recoverable.
        self.close(terminate=exc_type is not None)

class JobSubmitter:
    """``cluster.options(...)``: submits jobs carrying per-job options (``job.options``)."""

    def __init__(self, cluster: SharedJobCluster, options: JobOptions) -> None:
        self._cluster = cluster
        self.job_options = options

    def submit(self, *args: Any, **kwargs: Any) -> Job:
        return self._cluster._new_job(args, kwargs, self.job_options)

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        return _results(self._cluster._new_jobs(argsets(iterable, iterables), self.job_options))


def recover_jobs(
    cluster_id: str | None = None,
    *,
    scheduler: str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    tenant: str | None = None,
    token: str | None = None,
    tls: Any = None,
    timeout: float | None = None,
) -> list[Job]:
    """The jobs of cluster ``cluster_id`` (None: of the latest recover file in the working
    directory), once every one has ended or ``timeout`` passed.

    Jobs that ended carry their results, output and errors; the others their live status
    (QUEUED, RUNNING), their futures failing with ClusterClosedError: they run on, and a later
    call collects them. Results received are acknowledged, so the scheduler forgets them; once
    every job ended, the cluster is closed and its recover file removed. The connection
    keywords are ``SharedJobCluster.reattach``'s (which this uses). Raises
    ``NoRecoverFile`` (no cluster_id and no recover file here) or ``ClusterNotFound``.
    """
    if cluster_id is None:
        cluster_id = latest_recover_file().info.cluster_id
    cluster = SharedJobCluster.reattach(cluster_id, scheduler=scheduler, secret_file=secret_file,
                                        tenant=tenant, token=token, tls=tls)
    ended = False
    try:
        ended = cluster.wait(timeout)
    finally:
        if ended:
            cluster.close(timeout=CLOSE_TIMEOUT)
        else:
            cluster._detach(why="the job had not ended when recover_jobs returned")
    return cluster.jobs()


def _results(jobs: list[Job]) -> Iterator[Any]:
    for job in jobs:
        yield job.result()


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)

