"""``cluster.executor()``: a ``concurrent.futures.Executor`` that runs any function on the pool.

``executor.submit(fn, *args, **kwargs)`` runs ``fn(*args, **kwargs)`` on a
node and returns its ``Job`` (a Future), as concurrent.futures promises:
``fn`` is any picklable callable, not the cluster's computation. To do that,
the executor opens -- on first use -- a sibling cluster on the same
scheduler, as the same tenant, with the same depends, setup, cleanup,
options and callbacks, whose computation is ``fairpool.clients.calls.run``;
each job carries ``fn`` pickled once (the user's own modules by value, like
depends). ``map(fn, *iterables, timeout=None, chunksize=1)`` submits every
call at once, in chunks of ``chunksize`` calls per job, and yields the
results in order; closing the iterator early, or an exception from it,
cancels the jobs not yet consumed. ``shutdown(wait=True,
cancel_futures=False)`` cancels what was not started if asked, waits for
the jobs if asked, and closes the sibling cluster. Closing the parent
cluster shuts its executors down.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

import cloudpickle

from fairpool.clients import calls
from fairpool.clients.cluster import SharedJobCluster
from fairpool.clients.errors import ArgumentsError
from fairpool.clients.job import Job
from fairpool.clients.spec import ship_by_value
from fairpool.jobstatus import JobStatus


class ClusterExecutor(Executor):
    def __init__(self, parent: SharedJobCluster) -> None:
        self._parent = parent
        self._cluster: SharedJobCluster | None = None
        self._lock = threading.Lock()
        self._shutdown = False

    @property
    def cluster(self) -> SharedJobCluster:
        """The sibling cluster the executor's jobs run in (opened on first use)."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._cluster is None:
                self._cluster = self._open()
            return self._cluster

    def _open(self) -> SharedJobCluster:
        parent = self._parent
        kind = SharedJobCluster if parent.recoverable else _PrivateCluster
        return kind(
            calls.run,
            **parent.settings.cluster_kwargs(),  # the parent's credential too: token, certificate or secret
            name=f"{parent.name}.executor",
            **parent._sibling,
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        """Run ``fn(*args, **kwargs)`` on the pool; the returned Job is its Future."""
        cluster = self.cluster
        return cluster.submit(_pickle_function(fn), *args, **kwargs)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``map(fn, *iterables)`` on the pool, ``chunksize`` calls per job; results in order.

        Raises TimeoutError if a result is not there ``timeout`` seconds after this call.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        end = None if timeout is None else time.monotonic() + timeout
        cluster = self.cluster
        calls_ = zip(*iterables, strict=False)
        if chunksize == 1:
            pickled = _pickle_function(fn)
            jobs = cluster._new_jobs(((pickled, *args) for args in calls_), None)
        else:
            pickled = _pickle_function(calls.ChunkOf(fn), fn)
            chunks = iter(lambda: list(itertools.islice(calls_, chunksize)), [])
            jobs = cluster._new_jobs(((pickled, chunk) for chunk in chunks), None)
        return _results(jobs, end, chunked=chunksize > 1)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            cluster = self._cluster
        if cluster is None:
            return
        if cancel_futures:
            for job in cluster.jobs():
                # As concurrent.futures does: only what has not started; running jobs finish.
                if not job.done() and job.phase in (JobStatus.CREATED, JobStatus.QUEUED):
                    job.cancel()
        if wait:
            cluster.close()
        else:
            # concurrent.futures: return now, free the resources once the jobs are done
            threading.Thread(target=cluster.close, name=f"{cluster.name}-close", daemon=True).start()


def _pickle_function(fn: Callable[..., Any], defined_by: Callable[..., Any] | None = None) -> bytes:
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    module = getattr(defined_by or fn, "__module__", None)
    if isinstance(module, str):
        loaded = sys.modules.get(module)
        if loaded is not None:
            ship_by_value(loaded)  # the user's own module goes along, as depends would
    try:
        pickled: bytes = cloudpickle.dumps(fn)
    except Exception as exc:
        raise ArgumentsError(f"cannot pickle the function {fn!r}: {exc}") from exc
    return pickled


def _results(jobs: list[Job], end: float | None, *, chunked: bool) -> Iterator[Any]:
    pending = list(reversed(jobs))
    try:
        while pending:
            job = pending[-1]
            value = job.result() if end is None else job.result(end - time.monotonic())
            pending.pop()
            if chunked:
                yield from value
            else:
                yield value
    finally:
        for job in pending:
            job.cancel()


class _PrivateCluster(SharedJobCluster):
    """The sibling of a cluster on a private pool: nothing to recover once the pool is gone."""

    recoverable = False
