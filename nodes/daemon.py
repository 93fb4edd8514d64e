"""The node daemon: one authenticated connection to the scheduler in front of a WorkerPool.

``serve_node`` installs each dispatched cluster's files under
``<state_dir>/clusters/<cluster_id>/``, queues tasks on the ``WorkerPool``
and sends progress back to the scheduler in batches (``NodeProgress``
through a ``fairpool.wire.Outbox``: whatever is ready at each point, one send
per batch), with a ``Heartbeat`` every ``heartbeat_interval``. The connection
itself -- dialing, announcing, the pump, heartbeats, reading -- is
``fairpool.nodes.schedulerlink``'s; this module handles what comes on it.

The workers outlive the connection: when the scheduler goes away (crash,
restart, network, refused secret, or silence past ``heartbeat_timeout`` on a
half-open connection) the node keeps running its jobs, holds their progress,
and reconnects (``fairpool.backoff``: exponential, full jitter; through the
failover list or to the discovered address, ``fairpool.nodes.failover``); after
reconnecting it announces itself again and re-sends what it held, plus what
it sent in the last few seconds before the break, since bytes written to a
socket just before the peer died may never have been read. The scheduler
must therefore treat a result for a job that already ended as a duplicate.

What jobs send while they run -- provisional results and file chunks --
travels in the same ``NodeProgress`` messages and is held and re-sent the
same way (``fairpool.nodes.progress``). ``CancelTasks`` from the scheduler
goes to the pool, which drops the tasks or kills their process trees
(``fairpool.nodes.workerpool``).

Joining and leaving (``fairpool.nodes.lifecycle``): the node tells the
scheduler with ``NodeDrain`` when it takes no new jobs (service hours,
stopping, ``--serve N`` reached) and what it hands back; ``settle`` and
``sync`` (a heartbeat whose echo proves the scheduler has read everything
before it) tell a draining node when it may go.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import structlog
import trio

from fairpool import sdnotify
from fairpool.clusterspec import SpecError, decode_spec, is_safe_file_name
from fairpool.config import NodeConfig
from fairpool.messages import (
    AnyMessage,
    CancelTasks,
    ClusterDef,
    Dispatch,
    FileChunk,
    Heartbeat,
    JobProvisional,
    JobResult,
    JobStarted,
    NodeDrain,
    ReleaseCluster,
    Task,
)
from fairpool.secret import ensure_secret
from fairpool.wire import Outbox

from .discover import follow_announcements
from .failover import SchedulerAddresses
from .lifecycle import Availability, node_lifetime, run_controls
from .progress import HeldProgress
from .schedulerlink import SchedulerLink
from .workerpool import WorkerPool

log = structlog.get_logger("fairpool.node")

#: While draining, whether the node has settled is looked at again at least this often (seconds).
SETTLE_POLL = 0.2


def detect_memory() -> int:
    """This host's physical memory in bytes (0 if it cannot be told)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


class _NodeDaemon(SchedulerLink):
    def __init__(self, config: NodeConfig, secret: bytes) -> None:
        self.config = config
        self._secret = secret
        self.clusters_dir = (config.state_dir / "clusters").absolute()
        self.memory = config.memory or detect_memory()
        # jobs run as config.run_as and must not read the node's secret or key (IsolationError at start)
        private = [config.secret_path, *([config.tls.key] if config.tls is not None else [])]
        self.pool = WorkerPool(config.cpus, self.clusters_dir, self._on_progress, node_name=config.name,
                               run_as=config.run_as, private=private, max_output=config.max_output)
        # A pool's frame limit is alike everywhere: a quarter of this node's keeps its reports
        # well under the scheduler's.
        self.held = HeldProgress(budget=config.max_frame_size // 4)
        self.session = uuid.uuid4().hex  # this run of the node: a restarted node has lost what it ran
        self._wakeup = trio.Event()
        self._urgent = trio.Event()  # results (or what jobs send) are waiting: no delay
        self._installed: dict[str, bytes] = {}  # cluster -> digest of the spec its files came from
        self._bad: dict[str, str] = {}  # cluster -> why its tasks cannot run here
        self._heartbeats: dict[float, int] = {}  # heartbeat sent -> progress batches handed over before it
        # joining and leaving (fairpool.nodes.lifecycle): where to dial, when to take jobs, how to go
        self.addresses = SchedulerAddresses(config)
        self.availability = Availability()
        self.served = trio.Event()  # config.serve clusters were served: time to leave
        self._served_count = 0
        self._ran: set[str] = set()  # clusters whose tasks came here since they were last released
        self._outbox: Outbox | None = None  # the live connection's, if any
        self._connected = trio.Event()  # set while a connection is up (a fresh one after it ends)
        self._echoes: dict[float, trio.Event] = {}  # heartbeats whose echo someone awaits
        self._changed = trio.Event()  # progress or an acknowledgement: a drain looks again
        self._leaving = False  # handing back: tasks dispatched from now on go straight back
        self._handback: list[str] = []  # handed back, not yet confirmed by the scheduler
        self._handback_sent = False  # ...and told on the live connection

    def _on_progress(
        self,
        started: list[JobStarted],
        results: list[JobResult],
        provisional: list[JobProvisional],
        files: list[FileChunk],
    ) -> None:
        self.held.add(started, results, provisional, files)
        self._wakeup.set()
        self._changed.set()
        if results or provisional or files:
            self._urgent.set()

    # --- what the scheduler says -----------------------------------------------

    def _handle(self, message: AnyMessage) -> None:
        if isinstance(message, Dispatch):
            self._dispatch(message)
        elif isinstance(message, CancelTasks):
            self.pool.cancel(message.uids, message.reason)
        elif isinstance(message, ReleaseCluster):
            self._installed.pop(message.cluster_id, None)
            self._bad.pop(message.cluster_id, None)
            self.pool.release_cluster(message.cluster_id)
            self._count_served(message.cluster_id)
        elif isinstance(message, Heartbeat):
            # A scheduler that echoes our heartbeat has read everything we sent before it.
            upto = self._heartbeats.pop(message.at, None)
            if upto is not None:
                self.held.acknowledged(upto)
                self._changed.set()
            echo = self._echoes.pop(message.at, None)
            if echo is not None:
                echo.set()
        else:
            log.warning("ignored unexpected message from the scheduler", type=type(message).__name__)

    def _dispatch(self, message: Dispatch) -> None:
        if self._leaving and message.tasks:  # sent before the scheduler read our NodeDrain
            self._handback.extend(task.uid for task in message.tasks)
            self.tell_availability()
            return
        self._ran.update(task.cluster_id for task in message.tasks)
        good: list[ClusterDef] = []
        for cdef in message.clusters:
            reason = self._install(cdef)
            if reason is None:
                self._bad.pop(cdef.cluster_id, None)
                good.append(cdef)
            else:
                log.warning("cannot install cluster", cluster=cdef.cluster_id, tenant=cdef.tenant, reason=reason)
                self._bad[cdef.cluster_id] = reason
        tasks: list[Task] = []
        refused: dict[str, list[Task]] = {}
        for task in message.tasks:
            if task.cluster_id in self._bad:
                refused.setdefault(task.cluster_id, []).append(task)
            else:
                tasks.append(task)
        for cluster_id, bad_tasks in refused.items():
            self.pool.fail(bad_tasks, self._bad[cluster_id])
        if good or tasks:
            self.pool.submit(good, tasks)

    def _install(self, cdef: ClusterDef) -> str | None:
        """Write the cluster's files; return why it cannot run here, or None."""
        cluster_id = cdef.cluster_id
        if not is_safe_file_name(cluster_id):
            return f"refused cluster id {cluster_id!r}: it must be a plain file name"
        digest = hashlib.sha256(cdef.spec).digest()
        if self._installed.get(cluster_id) == digest:
            return None  # sent again (e.g. after a reconnect): its jobs may be using the files
        try:
            spec = decode_spec(cdef.spec)
            self.pool.install_files(cluster_id, spec)
        except SpecError as exc:
            return f"bad cluster spec: {exc}"
        except OSError as exc:
            return f"could not write the cluster's files: {exc}"
        self._installed[cluster_id] = digest
        return None

    # --- joining and leaving (fairpool.nodes.lifecycle drives these) ------------

    def _count_served(self, cluster_id: str) -> None:
        """A cluster that ran here was released: served (``--serve N`` counts them)."""
        if cluster_id not in self._ran:
            return
        self._ran.discard(cluster_id)
        self._served_count += 1
        log.info("cluster served", cluster=cluster_id, served=self._served_count, serve=self.config.serve or "no limit")
        if self.config.serve and self._served_count >= self.config.serve:
            self.served.set()

    def _drain_message(self, lifted: str = "") -> NodeDrain:
        return self.availability.message(self._handback, lifted=lifted)

    def tell_availability(self, lifted: str = "") -> None:
        """Tell the scheduler whether this node takes jobs (and what it hands back), if connected."""
        if self._outbox is not None:
            self._outbox.put(self._drain_message(lifted))
            self._handback_sent = bool(self._handback)

    def hand_back(self) -> int:
        """Give every task still held back to the scheduler (the node is leaving); how many."""
        self._leaving = True
        uids = self.pool.hand_back()
        self._handback.extend(uids)
        if self._handback:
            self.tell_availability()
        return len(uids)

    async def sync(self) -> None:
        """Return once the scheduler has read (and journaled) everything this node sent before."""
        while True:
            await self._connected.wait()
            outbox = self._outbox
            assert outbox is not None
            for progress in self.held.take():
                outbox.put(progress)
            at = time.time()
            self._heartbeats[at] = self.held.mark()
            echo = self._echoes[at] = trio.Event()
            handback_told = self._handback_sent
            outbox.put(Heartbeat(at))  # the scheduler echoes it once what came before is durable
            with trio.move_on_after(self.config.heartbeat_timeout):
                await echo.wait()
                if handback_told:
                    self._handback.clear()
                    self._handback_sent = False
                return
            self._echoes.pop(at, None)  # the connection died meanwhile: again on the next one

    async def settle(self) -> None:
        """Return once no task is held here and the scheduler has confirmed every result and hand-back."""
        while True:
            if not self.pool.held_uids():
                if not self.held.result_uids() and not self._handback:
                    return
                await self.sync()
                continue
            with trio.move_on_after(SETTLE_POLL):  # (a handed-back task leaves the pool without a word)
                await self._changed.wait()
            self._changed = trio.Event()

    async def control(self, stop: trio.Event | None, node_scope: trio.CancelScope) -> None:
        """Service hours, and leaving once ``stop`` is set or enough clusters were served."""
        await run_controls(self, self.config, stop)
        node_scope.cancel()  # left: the node is over


async def serve_node(config: NodeConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                     stop: trio.Event | None = None) -> None:
    """Run a node until cancelled, or until it has left; ``task_status.started()`` once connected and announced.

    It leaves (drains, see ``fairpool.nodes.lifecycle``, then returns) once
    ``stop`` is set -- ``fairpool node`` sets it on SIGTERM -- or once it has
    served ``config.serve`` clusters. Around it all: ``node_lifetime`` (state
    dir lock, init and close hooks, working directories).
    """
    structlog.contextvars.bind_contextvars(node=config.name)  # every line this node's tasks log names it
    secret = ensure_secret(config.secret_path)
    node = _NodeDaemon(config, secret)
    async with node_lifetime(config), trio.open_nursery() as nursery:
        await nursery.start(node.pool.run)
        nursery.start_soon(node.control, stop, nursery.cancel_scope)
        if config.discover:
            nursery.start_soon(follow_announcements, config.announce_address, config.announce_interface, secret,
                               config.discover_name, node.addresses.found)
        # Healthy while trio runs this task at all: a node cut off from its scheduler still runs
        # (and keeps) its jobs, which a restart by the watchdog would kill.
        nursery.start_soon(sdnotify.keep_watchdog, lambda: True)
        if stop is not None:
            nursery.start_soon(_notify_stopping, stop)
        try:
            await nursery.start(node.run)
            sdnotify.ready(f"node {config.name} connected to its scheduler, {config.cpus} cpus")
            task_status.started()
            await trio.sleep_forever()  # node.run goes on in the nursery
        finally:
            sdnotify.stopping()


async def _notify_stopping(stop: trio.Event) -> None:
    """Tell systemd the node is on its way out as soon as it starts to leave (a drain can take a while)."""
    await stop.wait()
    sdnotify.stopping("leaving: no new jobs; running ones finish or are handed back")
