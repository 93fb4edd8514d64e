"""What the synchronous and the trio-native clusters share: everything but how the loop runs.

``ClusterCore.__init__`` checks and packs the computation
(``fairpool.clients.spec``), resolves where to connect
(``fairpool.clients.settings``), turns the cluster-level ``resources`` and
``priority`` into the default options of every job, and builds the
cluster's pieces: the ``ClusterSession`` (with its ``StatusFeed``, callback
thread and ``FileReceiver``) and the ``ClusterConnection`` -- or, when
``nodes=`` is a callable that ranks nodes, the ``RankingFeed`` and
``RankingConnection`` that run it (``fairpool.clients.noderank``). It opens
nothing: ``SharedJobCluster`` runs the connection on a ``LoopThread``,
``AsyncSharedJobCluster`` in the caller's trio loop.

``reattach`` (one classmethod for both clusters) builds the same pieces for
a cluster an earlier client opened: no computation (the scheduler keeps
the cluster's spec, so new submits need none), settings and defaults from
the recover file when the working directory has one, and the session
starting with the jobs that file lists (see ``fairpool.clients.reattach``).

Submitting is shared too: ``_new_job`` and ``_new_jobs`` pickle arguments in
the caller's thread (refusing, with their size, arguments over the
scheduler's ``max_payload_size`` or what one message carries) and register
the jobs in the session, which batches them; ``_wake`` asks the connection
to send, once per burst. ``_cancel`` backs both ``cluster.cancel(job)`` and
``job.cancel()``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import trio

from fairpool.clients import connection as _connection
from fairpool.clients.errors import (
    ClientConfigError,
    ClusterClosedError,
    ClusterError,
    ComputationError,
)
from fairpool.clients.files import FileReceiver
from fairpool.clients.job import Job
from fairpool.clients.noderank import NodeRank, NodeRanker, RankingConnection, RankingFeed
from fairpool.clients.notify import CallbackThread
from fairpool.clients.options import JobOptions, make_options, wire_options
from fairpool.clients.reattach import reattach_settings
from fairpool.clients.recover import RecoverInfo, RecoverLog, RecoverState, recover_path
from fairpool.clients.session import MAX_JOB_PAYLOAD, ClusterSession
from fairpool.clients.settings import ClientSettings, connection_timing, resolve_settings
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
        nodes: Iterable[str] | NodeRank | None = None,
        dest_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        tls: Any = None,
        heartbeat_timeout: float | None = None,
    ) -> None:
        # a callable ranks the nodes here (fairpool.clients.noderank): the cluster opens allowed on none
        rank = nodes if callable(nodes) else None
        allowed = [] if rank is not None else _node_patterns(nodes)  # type: ignore[arg-type]
        depends = list(depends)
        timing = connection_timing(heartbeat_timeout)
        spec = encode_spec(pack_spec(computation, depends, setup, cleanup))
        if len(spec) > MAX_JOB_PAYLOAD:
            raise ComputationError(
                f"the computation and its depends take {len(spec)} bytes, more than one message may carry "
                f"({MAX_JOB_PAYLOAD} bytes)"
            )
        self._build(
            resolve_settings(scheduler, tenant, secret_file, token, tls), uuid.uuid4().hex, name or _default_name(computation),
            OpenCluster("", "", spec, reentrant, priority, allowed), resources, job_status, cluster_status, dest_path,
            rank=rank, timing=timing,
        )
        # what an executor needs to open a sibling cluster for arbitrary functions
        self._sibling["depends"] = depends
        self._sibling["heartbeat_timeout"] = heartbeat_timeout
        if not isinstance(computation, str | os.PathLike):
            self._sibling.update(setup=setup, cleanup=cleanup)
        self._start()

    @classmethod
    def reattach(
        cls,
        cluster_id: str,
        *,
        scheduler: str | None = None,
        tenant: str | None = None,
        token: str | None = None,
        secret_file: str | os.PathLike[str] | None = None,
        tls: Any = None,
        job_status: JobStatusCallback | None = None,
        cluster_status: ClusterStatusCallback | None = None,
        dest_path: str | os.PathLike[str] | None = None,
        heartbeat_timeout: float | None = None,
    ) -> Self:
        """A live cluster object for the existing cluster ``cluster_id`` (whose client died, say).

        ``jobs()`` lists the cluster's jobs -- those its recover file lists, and every one the
        scheduler reports -- and their futures resolve as results arrive (a reattached job has no
        ``args``: they stayed with the dead client). ``submit`` adds jobs to the same computation,
        numbered after every uid known. The connection keywords are the constructor's
        (``scheduler``, ``tenant``, ``token``, ``secret_file``, ``tls``); those not given come from
        the recover file when ``fairpool-<cluster_id>.recover`` is in the working directory (the
        reattached cluster carries on that file), else from the usual variables and defaults;
        ``heartbeat_timeout`` is the constructor's too.
        ``SharedJobCluster.reattach`` connects before it returns; ``AsyncSharedJobCluster.reattach``
        when the returned object is entered (``async with``). Either raises ``ClusterNotFound`` if
        the scheduler has no such cluster for this tenant.
        """
        if not isinstance(cluster_id, str) or not cluster_id or "." in cluster_id:
            raise ClientConfigError(f"not a cluster id: {cluster_id!r}")
        timing = connection_timing(heartbeat_timeout)
        settings, found = reattach_settings(cluster_id, scheduler, tenant, secret_file, token=token, tls=tls)
        info = found.info if found is not None else None
        self = cls.__new__(cls)
        self._build(
            settings, cluster_id, info.name if info and info.name else f"cluster {cluster_id[:8]}",
            # no spec: the scheduler keeps the cluster's
            OpenCluster("", "", b"", info.reentrant if info else False, info.priority if info else 0),
            info.resources if info else None, job_status, cluster_status, dest_path, found, timing=timing,
        )
        try:
            self._start()
        except BaseException:
            if self._recover_log is not None:
                self._recover_log.close()
            raise
        return self

    def _build(
        self,
        settings: ClientSettings,
        cluster_id: str,
        name: str,
        opening: OpenCluster,
        resources: Mapping[str, Any] | None,
        job_status: JobStatusCallback | None,
        cluster_status: ClusterStatusCallback | None,
        dest_path: str | os.PathLike[str] | None,
        recovered: RecoverState | None = None,
        rank: NodeRank | None = None,
        timing: _connection.ConnectionTiming = _connection.DEFAULT_TIMING,
    ) -> None:
        """The cluster's pieces. ``opening`` carries the spec (empty: a re-attach), ``reentrant``,
        ``priority`` and the nodes allowed; ``recovered`` is a reattached cluster's recover file, read;
        ``rank`` a ``nodes=`` callable."""
        for role, fn in (("job_status", job_status), ("cluster_status", cluster_status)):
            if fn is not None and not callable(fn):
                raise ComputationError(f"{role} must be a callable, not {fn!r}")
        priority = opening.priority
        # (priority 0 is the default: "not set")
        self.default_options: JobOptions | None = (
            make_options(resources=resources, priority=priority or None) if resources or priority else None
        )
        self._default_wire = wire_options(None, self.default_options)
        self.settings: ClientSettings = settings
        self.cluster_id = cluster_id
        self.name = name
        self.resources = dict(resources) if resources else None
        self.priority = priority
        self.reentrant = opening.reentrant
        self.dest_path = Path(dest_path).absolute() if dest_path is not None else Path.cwd()
        self._sibling: dict[str, Any] = {
            "depends": [], "reentrant": opening.reentrant, "resources": resources, "priority": priority,
            "job_status": job_status, "cluster_status": cluster_status, "dest_path": self.dest_path,
            "setup": None, "cleanup": None,
        }
        self._callbacks: CallbackThread | None = None
        if job_status is not None or cluster_status is not None:
            self._callbacks = CallbackThread(f"fairpool-callbacks-{self.cluster_id[:8]}")
        callbacks = self._callbacks
        self.ranker = NodeRanker(rank, cluster_id) if rank is not None else None
        ranker = self.ranker

        def feed(on_settled: Callable[[int], None]) -> StatusFeed:
            if ranker is not None:
                return RankingFeed(self.cluster_id, on_settled, job_status=job_status, cluster_status=cluster_status,
                                   callbacks=callbacks, ranker=ranker)
            return StatusFeed(self.cluster_id, on_settled, job_status=job_status,
                              cluster_status=cluster_status, callbacks=callbacks)

        self._files = FileReceiver(self.dest_path)
        # Reattached with no recover file: unless the scheduler lists every job of the cluster,
        # the uids of jobs still queued are unknown, and new ones could collide with them.
        self._blind = not opening.spec and recovered is None
        self._recover_log = RecoverLog(cluster_id) if self.recoverable else None
        self._session = ClusterSession(self.cluster_id, feed=feed, files=self._files, canceller=self._cancel,
                                       job_class=self.job_class, recorder=self._recover_log)
        opened = OpenCluster(cluster_id, name, opening.spec, opening.reentrant, priority, opening.nodes)
        self._connection = (
            _connection.ClusterConnection(self._session, self.settings, opened, timing)
            if ranker is None else
            RankingConnection(self._session, self.settings, opened, timing, ranker=ranker)
        )
        self._open = False
        self.recover_file: Path | None = None
        if not opening.spec:
            self._connection.reattaching = True
            self._session.adopting = True
            if recovered is not None:
                self._session.adopt(recovered.pending(), log=False)  # the file lists them already
                self._session.reserve(recovered.highest())
                if self._recover_log is not None:
                    try:
                        self._recover_log.attach(recovered.path)
                    except OSError as exc:
                        self._no_recover_log(f"cannot append to the recover file {recovered.path}: {exc}")

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
        if self._blind and not self._session.whole_listing:
            raise ClusterError(
                f"cannot submit to cluster {self.cluster_id}: it was reattached without its recover file, and the "
                "scheduler did not list all its jobs, so a new job could take the uid of a queued one; reattach "
                f"from the directory holding {recover_path(self.cluster_id).name} to submit"
            )

    def _options(self, options: JobOptions | None) -> WireOptions | None:
        if options is None:
            return self._default_wire  # the common case, worked out once
        return wire_options(options, self.default_options)

    def _new_job(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: JobOptions | None) -> Job:
        self._check_open()
        payload = pack_arguments(args, kwargs, *self._payload_limit())
        job = self.job_class(args, kwargs, time.time(), options)
        if self._session.add(job, payload, self._options(options)):
            self._wake()
        return job

    def _new_jobs(self, argsets: Iterable[tuple[Any, ...]], options: JobOptions | None) -> list[Job]:
        """One job per argument tuple, handed over in chunks (the bulk ``map`` path)."""
        self._check_open()
        wire = self._options(options)
        limit, limit_name = self._payload_limit()
        jobs: list[Job] = []
        chunk: list[tuple[Job, bytes]] = []
        now = time.time()
        for args in argsets:
            job = self.job_class(args, {}, now, options)
            chunk.append((job, pack_arguments(args, {}, limit, limit_name)))
            jobs.append(job)
            if len(chunk) >= MAP_CHUNK:
                if self._session.add_many(chunk, wire):
                    self._wake()
                chunk = []
                now = time.time()
        if chunk and self._session.add_many(chunk, wire):
            self._wake()
        return jobs

    def _payload_limit(self) -> tuple[int, str]:
        """The most bytes one job's arguments may pickle to, and whose limit that is: the scheduler's
        ``max_payload_size`` (told when it opened the cluster), or else what one message may carry."""
        scheduler = self._connection.max_payload
        if 0 < scheduler < MAX_JOB_PAYLOAD:
            return scheduler, "the scheduler's max_payload_size"
        return MAX_JOB_PAYLOAD, "one message may carry"

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
        self.recover_file = self._write_recover_file()
        where = f"; recover file {self.recover_file}" if self.recover_file is not None else ""
        how = "reattached" if self._session.adopting else "open"
        print(f"fairpool: cluster {self.cluster_id} {how} on {self.settings.scheduler}{where}", file=sys.stderr)

    def _write_recover_file(self) -> Path | None:
        log = self._recover_log
        if log is None:
            return None
        if log.path is not None:
            return log.path  # a reattached cluster carries on the file it found
        info = RecoverInfo(
            cluster_id=self.cluster_id,
            scheduler=str(self.settings.scheduler),
            tenant=self.settings.tenant,
            secret_file=str(self.settings.secret_file) if self.settings.secret else "",
            created=time.time(),
            name=self.name,
            reentrant=self.reentrant,
            priority=self.priority,
            resources=_jsonable(self.resources),
            tls=self.settings.tls_paths,
        )
        try:
            # (a reattached cluster with no file here: jobs adopted so far follow the header)
            return log.create(info)
        except OSError as exc:
            self._no_recover_log(f"cannot write the recover file: {exc}")
            return None

    def _no_recover_log(self, why: str) -> None:
        logger.warning("cluster %s: %s", self.cluster_id, why)
        self._recover_log = self._session.recorder = None  # (else it would hold every line in memory)

    def _remove_recover_file(self) -> None:
        if self._recover_log is not None:
            self._recover_log.close()
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


def _jsonable(resources: dict[str, Any] | None) -> dict[str, Any] | None:
    """The resources as the recover file can keep them (JSON values), else None."""
    try:
        json.dumps(resources)
    except (TypeError, ValueError):
        return None
    return resources


def _node_patterns(nodes: Iterable[str] | str | None) -> list[str] | None:
    """``nodes=``: node names or shell-style patterns ("gpu*") the cluster may run on; None: all.
    (A callable that ranks nodes is the other form: see ``fairpool.clients.noderank``.)"""
    if nodes is None:
        return None
    patterns = [nodes] if isinstance(nodes, str) else list(nodes)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"nodes= takes node names or patterns (non-empty strings), got {nodes!r}")
    return patterns
