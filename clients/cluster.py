"""``SharedJobCluster``: the synchronous client of a shared fairpool scheduler.

The constructor packs the computation (``fairpool.clients.spec``), resolves
where to connect (``fairpool.clients.settings``), opens the cluster on a
background trio thread (``LoopThread`` + ``ClusterConnection``) and writes
the recover file. ``submit`` pickles the arguments in the caller's thread,
registers the job in the ``ClusterSession`` and wakes the connection thread
only if it is not already due to flush, so a loop of submits costs a few
Submit messages, not one per job. Results settle the ``Job`` futures from the
connection thread.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from fairpool.clients import connection as _connection
from fairpool.clients.errors import ClusterClosedError, ComputationError
from fairpool.clients.job import Job, JobOptions
from fairpool.clients.loopthread import LoopThread
from fairpool.clients.recover import RecoverInfo, write_recover_file
from fairpool.clients.session import MAX_JOB_PAYLOAD, ClusterSession
from fairpool.clients.settings import ClientSettings, resolve_settings
from fairpool.clients.spec import Computation, pack_arguments, pack_spec
from fairpool.clusterspec import encode_spec
from fairpool.messages import OpenCluster

logger = logging.getLogger("fairpool.clients")

#: How long close() waits for the scheduler to confirm ClusterClosed when not given a timeout.
CLOSE_TIMEOUT = 10.0
#: map() hands jobs to the connection in chunks of this many, so sending overlaps pickling.
MAP_CHUNK = 1024

_NOT_ENFORCED = (
    "per-job resources, timeout and priority are recorded on the Job but not yet sent to "
    "the scheduler: this version of the protocol does not carry them"
)


class SharedJobCluster:
    """A computation run by a shared fairpool scheduler on its pool of nodes."""

    def __init__(
        self,
        computation: Computation,
        *,
        scheduler: str | None = None,
        tenant: str | None = None,
        token: str | None = None,
        secret_file: str | os.PathLike[str] | None = None,
        depends: Iterable[Any] = (),
        setup: Callable[..., Any] | None = None,
        cleanup: Callable[..., Any] | None = None,
        reentrant: bool = False,
        resources: Mapping[str, Any] | None = None,
        priority: int = 0,
        job_status: Callable[[Job], Any] | None = None,
        cluster_status: Callable[..., Any] | None = None,
        nodes: Iterable[str] | None = None,
        dest_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        tls: Any = None,
    ) -> None:
        _refuse_unsupported(token=token, job_status=job_status, cluster_status=cluster_status, nodes=nodes, tls=tls)
        spec = encode_spec(pack_spec(computation, depends, setup, cleanup))
        if len(spec) > MAX_JOB_PAYLOAD:
            raise ComputationError(
                f"the computation and its depends take {len(spec)} bytes, more than one message may carry "
                f"({MAX_JOB_PAYLOAD} bytes)"
            )
        self.settings: ClientSettings = resolve_settings(scheduler, tenant, secret_file)
        self.cluster_id = uuid.uuid4().hex
        self.name = name or _default_name(computation)
        if resources:
            warnings.warn(_NOT_ENFORCED, stacklevel=2)
        self.resources = dict(resources) if resources else None  # recorded only, see _NOT_ENFORCED
        self.dest_path = Path(dest_path) if dest_path is not None else Path.cwd()
        self._session = ClusterSession(self.cluster_id)
        self._connection = _connection.ClusterConnection(
            self._session,
            self.settings,
            OpenCluster(self.cluster_id, self.name, spec, reentrant, priority),
            _connection.DEFAULT_TIMING,
        )
        self._loop = LoopThread(self._connection, f"fairpool-cluster-{self.cluster_id[:8]}")
        self._loop.start()
        self._open = True
        self._closed = False
        self._close_lock = threading.Lock()
        self.recover_file = self._write_recover_file()
        where = f"; recover file {self.recover_file}" if self.recover_file is not None else ""
        print(f"fairpool: cluster {self.cluster_id} open on {self.settings.scheduler}{where}", file=sys.stderr)

    @property
    def scheduler(self) -> str:
        return str(self.settings.scheduler)

    @property
    def tenant(self) -> str:
        return self.settings.tenant

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<SharedJobCluster {self.name!r} {self.cluster_id} on {self.scheduler} ({state})>"

    # --- submitting ------------------------------------------------------------

    def submit(self, *args: Any, **kwargs: Any) -> Job:
        """Run ``computation(*args, **kwargs)`` on the pool; the Job resolves to its result."""
        return self._submit(args, kwargs, None)

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        """Submit one job per item (zipped over several iterables) now; yield their results in order.

        The iterator raises the first failing job's exception when it reaches it.
        """
        return self._map(iterable, iterables, None)

    def options(
        self,
        *,
        resources: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        priority: int | None = None,
    ) -> JobSubmitter:
        """Per-job options for the jobs submitted through the returned object."""
        return JobSubmitter(self, JobOptions(dict(resources) if resources else None, timeout, priority))

    def _submit(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: JobOptions | None) -> Job:
        self._check_open()
        payload = pack_arguments(args, kwargs, MAX_JOB_PAYLOAD)
        job = Job(args, kwargs, time.time(), options)
        if self._session.add(job, payload):
            self._wake()
        return job

    def _map(
        self, iterable: Iterable[Any], iterables: tuple[Iterable[Any], ...], options: JobOptions | None
    ) -> Iterator[Any]:
        self._check_open()
        argsets: Iterable[tuple[Any, ...]] = zip(iterable, *iterables, strict=False) if iterables else ((x,) for x in iterable)
        jobs: list[Job] = []
        chunk: list[tuple[Job, bytes]] = []
        now = time.time()
        for args in argsets:
            job = Job(args, {}, now, options)
            chunk.append((job, pack_arguments(args, {}, MAX_JOB_PAYLOAD)))
            jobs.append(job)
            if len(chunk) >= MAP_CHUNK:
                self._add_many(chunk)
                chunk = []
                now = time.time()
        if chunk:
            self._add_many(chunk)
        return _results(jobs)

    def _add_many(self, chunk: list[tuple[Job, bytes]]) -> None:
        if self._session.add_many(chunk):
            self._wake()

    def _wake(self) -> None:
        try:
            self._connection.request_flush()
        except trio.RunFinishedError:
            # The loop died between _check_open and now: nothing will ever send these jobs.
            error = ClusterClosedError(f"cluster {self.cluster_id}: the connection thread has stopped")
            self._session.abort_all(error)
            raise error from None

    def _check_open(self) -> None:
        if not self._open:
            raise ClusterClosedError(f"cluster {self.cluster_id} is closed")
        if self._connection.fatal is not None:
            raise ClusterClosedError(f"cluster {self.cluster_id} cannot be used: {self._connection.fatal}")
        if self._loop.error is not None or not self._loop.alive:
            raise ClusterClosedError(f"cluster {self.cluster_id}: the connection thread has stopped ({self._loop.error!r})")

    # --- watching ----------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far has ended; False if ``timeout`` passed first."""
        return self._session.wait(timeout)

    def jobs(self) -> list[Job]:
        """This cluster's jobs, in submission order."""
        return self._session.jobs()

    # --- closing -----------------------------------------------------------------

    def close(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Wait for the pending jobs (unless ``terminate``), close the cluster and stop its thread.

        ``timeout`` bounds the whole close. Jobs still unsettled afterwards (terminate, or the
        timeout passed) fail with ClusterClosedError here; the scheduler still has them, and the
        recover file is kept so ``recover_jobs(cluster_id)`` can collect them later.
        """
        with self._close_lock:
            if self._closed:
                return
            self._open = False  # refuse new submits from here on
            deadline = None if timeout is None else time.monotonic() + timeout
            if not terminate:
                self._session.wait(timeout)
            close_timeout = CLOSE_TIMEOUT if deadline is None else max(deadline - time.monotonic(), 0.5)
            try:
                confirmed = self._loop.call(self._connection.close_cluster, close_timeout)
            except ClusterClosedError:
                confirmed = False
            self._loop.stop()
            self._closed = True
        if not confirmed and self._connection.fatal is None:
            logger.warning("cluster %s: the scheduler did not confirm the close within %gs", self.cluster_id, close_timeout)
        self._session.abort_all(
            ClusterClosedError(
                f"cluster {self.cluster_id} was closed before the job ended; "
                f"its result may be recovered with recover_jobs({self.cluster_id!r})"
            )
        )
        self._remove_recover_file()

    def __enter__(self) -> SharedJobCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # On an exception (Ctrl-C included) do not block on the jobs: they stay recoverable.
        self.close(terminate=exc_type is not None)

    # --- recover file ------------------------------------------------------------

    def _write_recover_file(self) -> Path | None:
        info = RecoverInfo(
            cluster_id=self.cluster_id,
            scheduler=str(self.settings.scheduler),
            tenant=self.settings.tenant,
            secret_file=str(self.settings.secret_file),
            created=time.time(),
        )
        try:
            return write_recover_file(info).absolute()
        except OSError as exc:
            logger.warning("cluster %s: cannot write the recover file: %s", self.cluster_id, exc)
            return None

    def _remove_recover_file(self) -> None:
        if self.recover_file is None:
            return
        if not self._session.all_received():
            logger.warning(
                "cluster %s: not every result was received; keeping the recover file %s",
                self.cluster_id, self.recover_file,
            )
            return
        try:
            self.recover_file.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cluster %s: cannot remove the recover file: %s", self.cluster_id, exc)


class JobSubmitter:
    """``cluster.options(...)``: submits jobs carrying per-job options.

    The options are recorded on each Job (``job.options``) and not enforced yet.
    """

    def __init__(self, cluster: SharedJobCluster, options: JobOptions) -> None:
        self._cluster = cluster
        self.job_options = options

    def submit(self, *args: Any, **kwargs: Any) -> Job:
        warnings.warn(_NOT_ENFORCED, stacklevel=2)
        return self._cluster._submit(args, kwargs, self.job_options)

    def map(self, iterable: Iterable[Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        warnings.warn(_NOT_ENFORCED, stacklevel=2)
        return self._cluster._map(iterable, iterables, self.job_options)


def _results(jobs: list[Job]) -> Iterator[Any]:
    for job in jobs:
        yield job.result()


def _default_name(computation: Computation) -> str:
    if isinstance(computation, str | os.PathLike):
        return os.path.basename(os.fspath(computation))
    name = getattr(computation, "__qualname__", None) or getattr(computation, "__name__", None)
    return name if isinstance(name, str) else type(computation).__name__


def _refuse_unsupported(**given: Any) -> None:
    # Part of SPEC's signature, built by later work: refusing beats silently ignoring them.
    for name, value in given.items():
        if value is not None:
            raise NotImplementedError(f"SharedJobCluster({name}=...) is not supported by this version of fairpool yet")
