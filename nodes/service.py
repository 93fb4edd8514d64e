"""``fairpool node`` as a service: SIGTERM drains the node, a second SIGTERM stops it at once.

``run_node`` is what the command line runs. It takes SIGTERM over from the
command's own handler (``fairpool.cli.run_daemon``, which cancels at once)
for as long as the node runs: the first SIGTERM asks the node to leave --
take no new jobs, finish or hand back what it holds, per ``stop`` -- and
``serve_node`` returns once it has (exit 0); a second one cancels the node
there and then, still cleanly (the close hook runs). SIGINT (Ctrl-C) keeps
stopping at once. ``fairpool up`` runs ``serve_node`` without this: there a
SIGTERM stops the scheduler and its node together.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import structlog
import trio

from fairpool.config import NodeConfig

from .daemon import serve_node

log = structlog.get_logger("fairpool.node")


async def run_node(config: NodeConfig) -> None:
    """Serve until the node has left (SIGTERM, ``--serve N``) or a second SIGTERM stops it."""
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_sigterm, signals, stop, nursery.cancel_scope)
            await serve_node(config, stop=stop)
            nursery.cancel_scope.cancel()


async def _on_sigterm(signals: AsyncIterator[int], stop: trio.Event, scope: trio.CancelScope) -> None:
    async for _ in signals:
        if stop.is_set():
            log.info("stopping now", signal="SIGTERM", reason="second signal")
            scope.cancel()
            return
        log.info("stopping: draining first (a second SIGTERM stops at once)", signal="SIGTERM")
        stop.set()
