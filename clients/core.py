"""What the synchronous and the trio-native clusters share: everything but how the loop runs.

``ClusterCore.__init__`` checks and packs the computation
(``fairpool.clients.spec``), resolves where to connect
(``fairpool.clients.settings``), turns the cluster-level ``resources`` and
``priority`` into the default options of every job, and builds the
cluster's pieces: the ``ClusterSession`` (with its ``StatusFeed``, callback
thread and ``FileReceiver``) and the ``ClusterConnection``. It opens
nothing: ``SharedJobCluster`` runs the connection on a ``LoopThread``,
``AsyncSharedJobCluster`` in the caller's trio loop.

Submitting is shared too: ``_new_job`` and ``_new_jobs`` pickle arguments in
the caller's thread and register the jobs in the session, which batches
them; ``_wake`` asks the connection to send, once per burst. ``_cancel``
backs both ``cluster.cancel(job)`` and ``job.cancel()``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import trio

from fairpool.clients import connection as _connection
from fairpool.clients.errors import ClusterClosedError, ComputationError
from fairpool.clients.files import FileReceiver
from fairpool.clients.job import Job
from fairpool.clients.notify import CallbackThread
from fairpool.clients.options import JobOptions, make_options, wire_options
from fairpool.clients.recover import RecoverInfo, write_recover_file
from fairpool.clients.session import MAX_JOB_PAYLOAD, ClusterSession
from fairpool.clients.settings import ClientSettings, resolve_settings
from fairpool.clients.spec import Computation, pack_arguments, pack_spec
from fairpool.clients.statuses import NodeInfo, StatusFeed
from fairpool.clusterspec import encode_spec
from fairpool.messages import JobOptions as WireOptions
from fairpool.messages import OpenCluster

logger = logging.getLogger("fairpool.clients")

#: map() hands jobs to the connection in chunks of this many, so sending overlaps pickling.
MAP_CHUNK = 1024

JobStatusCallback = Callable[[Job], Any]
ClusterStatusCallback = Callable[[str, NodeInfo, "Job | None"], Any]


class ClusterCore:
    """A cluster's state and submission path, without the loop that runs its connection."""

    #: Whether a recover file is written (a private pool dies with its cluster: nothing to recover).
    recoverable = True
    #: The kind of Job this cluster makes.
    job_class: type[Job] = Job

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
        job_status: JobStatusCallback | None = None,
        cluster_status: ClusterStatusCallback | None = None,
        nodes: Iterable[str] | None = None,
        dest_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        tls: Any = None,
    ) -> None:
        _refuse_unsupported(token=token, nodes=nodes, tls=tls)
        for role, fn in (("job_status", job_status), ("cluster_status", cluster_status)):
            if fn is not None and not callable(fn):
                raise ComputationError(f"{role} must be a callable, not {fn!r}")
        depends = list(depends)
        spec = encode_spec(pack_spec(computation, depends, setup, cleanup))
        if len(spec) > MAX_JOB_PAYLOAD:
            raise ComputationError(
                f"the computation and its depends take {len(spec)} bytes, more than one message may carry "
                f"({MAX_JOB_PAYLOAD} bytes)"
            )
        # (priority 0 is the default: "not set")
        self.default_options: JobOptions | None = (
            make_options(resources=resources, priority=priority or None) if resources or priority else None
        )
        self._default_wire = wire_options(None, self.default_options)
        self.settings: ClientSettings = resolve_settings(scheduler, tenant, secret_file)
        self.cluster_id = uuid.uuid4().hex
        self.name = name or _default_name(computation)
        self.resources = dict(resources) if resources else None
        self.priority = priority
        self.dest_path = Path(dest_path).absolute() if dest_path is not None else Path.cwd()
        # what an executor needs to open a sibling cluster for arbitrary functions
        self._sibling: dict[str, Any] = {
            "depends": depends, "reentrant": reentrant, "resources": resources, "priority": priority,
            "job_status": job_status, "cluster_status": cluster_status, "dest_path": self.dest_path,
            "setup": None if isinstance(computation, str | os.PathLike) else setup,
            "cleanup": None if isinstance(computation, str | os.PathLike) else cleanup,
        }
        self._callbacks: CallbackThread | None = None
        if job_status is not None or cluster_status is not None:
            self._callbacks = CallbackThread(f"fairpool-callbacks-{self.cluster_id[:8]}")
        callbacks = self._callbacks

        def feed(on_settled: Callable[[int], None]) -> StatusFeed:
            return StatusFeed(self.cluster_id, on_settled, job_status=job_status,
                              cluster_status=cluster_status, callbacks=callbacks)

        self._files = FileReceiver(self.dest_path)
        self._session = ClusterSession(self.cluster_id, feed=feed, files=self._files, canceller=self._cancel)
        self._connection = _connection.ClusterConnection(
            self._session,
            self.settings,
            OpenCluster(self.cluster_id, self.name, spec, reentrant, priority),
            _connection.DEFAULT_TIMING,
        )
        self._open = False
        self.recover_file: Path | None = None
        self._start()

    def _start(self) -> None:
        """What a subclass does once the cluster is built (the sync cluster opens it here)."""

    @property
    def scheduler(self) -> str:
        return str(self.settings.scheduler)

    @property
    def tenant(self) -> str:
        return self.settings.tenant

    def jobs(self) -> list[Job]:
        """This cluster's jobs, in submission order."""
        return self._session.jobs()

    # --- submitting ------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise ClusterClosedError(f"cluster {self.cluster_id} is closed")
        if self._connection.fatal is not None:
            raise ClusterClosedError(f"cluster {self.cluster_id} cannot be used: {self._connection.fatal}")

    def _options(self, options: JobOptions | None) -> WireOptions | None:
        if options is None:
            return self._default_wire  # the common case, worked out once
        return wire_options(options, self.default_options)

    def _new_job(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: JobOptions | None) -> Job:
        self._check_open()
        payload = pack_arguments(args, kwargs, MAX_JOB_PAYLOAD)
        job = self.job_class(args, kwargs, time.time(), options)
        if self._session.add(job, payload, self._options(options)):
            self._wake()
        return job

    def _new_jobs(self, argsets: Iterable[tuple[Any, ...]], options: JobOptions | None) -> list[Job]:
        """One job per argument tuple, handed over in chunks (the bulk ``map`` path)."""
        self._check_open()
        wire = self._options(options)
        jobs: list[Job] = []
        chunk: list[tuple[Job, bytes]] = []
        now = time.time()
        for args in argsets:
            job = self.job_class(args, {}, now, options)
            chunk.append((job, pack_arguments(args, {}, MAX_JOB_PAYLOAD)))
            jobs.append(job)
            if len(chunk) >= MAP_CHUNK:
                if self._session.add_many(chunk, wire):
                    self._wake()
                chunk = []
                now = time.time()
        if chunk and self._session.add_many(chunk, wire):
            self._wake()
        return jobs

    def _wake(self) -> None:
        try:
            self._connection.request_flush()
        except trio.RunFinishedError:
            # The loop died between _check_open and now: nothing will ever send these jobs.
            error = ClusterClosedError(f"cluster {self.cluster_id}: the connection thread has stopped")
            self._session.abort_all(error)
            raise error from None

    def _cancel(self, job: Job) -> bool:
        """Ask the scheduler to cancel ``job``; True if it had not ended (see ``Job.cancel``)."""
        accepted, wake = self._session.request_cancel(job)
        if wake:
            try:
                self._connection.request_flush()
            except (trio.RunFinishedError, RuntimeError):
                logger.warning("cluster %s: cannot send the cancellation of %s: the cluster is closed",
                               self.cluster_id, job.uid)
                return False
        return accepted


    # --- open, and the recover file --------------------------------------------------

    def _opened(self) -> None:
        """The scheduler opened the cluster: accept jobs, write the recover file, tell the user."""
        self._open = True
        self.recover_file = self._write_recover_file() if self.recoverable else None
        where = f"; recover file {self.recover_file}" if self.recover_file is not None else ""
        print(f"fairpool: cluster {self.cluster_id} open on {self.settings.scheduler}{where}", file=sys.stderr)

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


def argsets(iterable: Iterable[Any], iterables: tuple[Iterable[Any], ...]) -> Iterator[tuple[Any, ...]]:
    """map()'s argument tuples: zipped over several iterables, or one per item."""
    if iterables:
        return zip(iterable, *iterables, strict=False)
    return ((x,) for x in iterable)


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
