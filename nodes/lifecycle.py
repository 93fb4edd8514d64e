"""How a node comes and goes: its lifetime around the daemon, when it takes jobs, and how it leaves.

* ``node_lifetime(config)``: what surrounds a running node. One node per
  state directory (``fairpool.nodes.statedir``), the init hook before
  anything else (failing, the node does not start), leftovers of a crashed
  run removed with ``clean``; at exit the working directories go and the close
  hook runs (``fairpool.nodes.hooks``).
* ``Availability``: why the node takes no new jobs right now -- outside its
  service hours, stopping, served its ``--serve N`` clusters. The daemon
  tells the scheduler each change with a ``NodeDrain`` message, and again on
  every new connection (a scheduler that just met the node thinks it is up).
* ``run_controls``: runs beside the connection. It follows the service
  windows (``fairpool.nodes.servehours``) and waits for a reason to leave:
  ``stop`` (SIGTERM, set by ``fairpool.nodes.service``) or the served count.
  Then it drains: no new jobs; with ``stop = "finish"`` the running ones
  end (for up to ``stop_timeout``), and whatever is still held then is handed
  back; with ``"handback"`` at once. It returns once the scheduler has every
  result and every handed-back job (or the time is up), and the daemon ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Protocol

import structlog
import trio

from fairpool.config import NodeConfig
from fairpool.messages import NodeDrain

from . import servehours
from .hooks import run_close_hook, run_init_hook
from .statedir import CLUSTERS, lock_state_dir, prepare_clusters_dir, remove_working_dirs

log = structlog.get_logger("fairpool.node")

OUTSIDE_HOURS = "outside service hours"
#: Service windows are looked at again at least this often (seconds): wall clocks jump.
WINDOW_RECHECK = 60.0
#: After handing jobs back, how long the node waits for the scheduler to confirm before leaving anyway.
HANDBACK_GRACE = 10.0


@asynccontextmanager
async def node_lifetime(config: NodeConfig) -> AsyncIterator[None]:
    """Hold the state dir, run the init hook, prepare the working dirs; at exit tidy up and run the close hook.

    The block must have stopped every worker by the time it ends.
    """
    lock = lock_state_dir(config.state_dir)
    try:
        await run_init_hook(config)
        clusters_dir = (config.state_dir / CLUSTERS).absolute()
        prepare_clusters_dir(clusters_dir, clean=config.clean)
        try:
            yield
        finally:
            remove_working_dirs(clusters_dir)
            await run_close_hook(config)
    finally:
        lock.close()


class Availability:
    """The reasons this node takes no new jobs (none: it takes them), in the order they arose."""

    def __init__(self) -> None:
        self._reasons: list[str] = []

    @property
    def serving(self) -> bool:
        return not self._reasons

    @property
    def reason(self) -> str:
        return "; ".join(self._reasons)

    def set(self, reason: str, present: bool) -> bool:
        """Add or remove ``reason``; whether that changed whether the node serves."""
        before = self.serving
        if present and reason not in self._reasons:
            self._reasons.append(reason)
        elif not present and reason in self._reasons:
            self._reasons.remove(reason)
        return before != self.serving

    def message(self, handback: Sequence[str] = (), *, lifted: str = "") -> NodeDrain:
        """What to tell the scheduler now (``lifted``: why the node takes jobs again)."""
        if self.serving and not handback:
            return NodeDrain(False, lifted)
        return NodeDrain(True, self.reason, list(handback))


class NodeControls(Protocol):
    """What the controller needs of the daemon (``fairpool.nodes.daemon``)."""

    availability: Availability
    served: trio.Event  # set once the node has served ``config.serve`` clusters

    def tell_availability(self, lifted: str = "") -> None:
        """Send the scheduler the current ``availability`` (on the live connection, if any)."""

    async def settle(self) -> None:
        """Return once the node holds no task and the scheduler has confirmed every result."""

    def hand_back(self) -> int:
        """Give every task still held back to the scheduler; how many."""


async def run_controls(node: NodeControls, config: NodeConfig, stop: trio.Event | None,
                       *, clock: Callable[[], datetime] = datetime.now) -> None:
    """Follow the service windows until a reason to leave comes, then drain; return once left."""
    why: list[str] = []
    mode = config.stop
    async with trio.open_nursery() as nursery:
        leave = trio.Event()

        async def on(event: trio.Event, reason: str, how: str) -> None:
            nonlocal mode
            await event.wait()
            if not leave.is_set():
                why.append(reason)
                mode = how
                leave.set()

        if config.serve_hours:
            nursery.start_soon(follow_service_hours, node, config.serve_hours, clock)
        if stop is not None:
            nursery.start_soon(on, stop, "stopping", config.stop)
        nursery.start_soon(on, node.served, f"served {config.serve} cluster(s)", "finish")
        await leave.wait()
        nursery.cancel_scope.cancel()
    await drain(node, why[0], mode, config.stop_timeout)


async def follow_service_hours(node: NodeControls, windows: Sequence[servehours.Window],
                               clock: Callable[[], datetime]) -> None:
    """Take jobs inside the windows only; each change goes to the scheduler."""
    while True:
        now = clock()
        inside = servehours.serving(windows, now)
        if node.availability.set(OUTSIDE_HOURS, not inside):
            log.info("service hours began" if inside else "service hours ended",
                     hours=servehours.describe(windows))
            node.tell_availability("service hours began" if inside else "")
        change = servehours.next_change(windows, now)
        wait = WINDOW_RECHECK if change is None else (change - now).total_seconds()
        await trio.sleep(min(max(wait, 0.01), WINDOW_RECHECK))


async def drain(node: NodeControls, why: str, mode: str, timeout: float) -> None:
    """Take no new jobs, then finish (up to ``timeout``) or hand back what is held; return once settled."""
    node.availability.set(why, True)
    node.tell_availability()
    log.info("node draining", reason=why, stop=mode, stop_timeout=timeout)
    if mode == "finish":
        with trio.move_on_after(timeout) as waited:
            await node.settle()
        if not waited.cancelled_caught:
            log.info("node drained: every job ended and was reported", reason=why)
            return
        log.warning("jobs still running at the end of stop_timeout: handing them back", stop_timeout=timeout)
    handed = node.hand_back()
    if handed:
        log.info("jobs handed back to the scheduler", jobs=handed)
    with trio.move_on_after(max(HANDBACK_GRACE, timeout if mode == "handback" else 0.0)) as waited:
        await node.settle()
    if waited.cancelled_caught:
        log.warning("leaving before the scheduler confirmed every result and handed-back job; "
                    "it settles them when it notices the node is gone")
    else:
        log.info("node drained", reason=why, handed_back=handed)
