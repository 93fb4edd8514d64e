"""Where a node dials: its schedulers in order of preference, or the one it discovered.

``--scheduler A,B,C`` (or repeated flags, or ``scheduler`` + ``failover`` in
the config) lists schedulers first preference first: typically one active
scheduler and standbys that take over its state directory. Each connection
round tries them in order and takes the first that accepts the node; if none
does, the node waits (``fairpool.backoff``: exponential, full jitter, capped
at ``reconnect_max_delay``) and starts a new round. Every round begins with
the first preference again, so a node that failed over comes back to the
preferred scheduler the next time its connection ends. (A live connection is
not dropped to fail back: a standby that accepted nodes is the active one.)

With ``--discover`` the list is the single address the scheduler last
announced (``fairpool.nodes.discover``); rounds wait until one is heard.
"""

from __future__ import annotations

import trio

from fairpool.address import Address
from fairpool.config import NodeConfig


class SchedulerAddresses:
    """The addresses of the next connection round (see the module docstring)."""

    def __init__(self, config: NodeConfig) -> None:
        self._configured = config.schedulers
        self._discover = config.discover
        self._found: Address | None = None
        self._known = trio.Event()
        if not self._discover:
            self._known.set()

    def found(self, address: Address) -> None:
        """Discovery heard the scheduler at ``address``: the next rounds dial it."""
        self._found = address
        self._known.set()

    async def round(self) -> tuple[Address, ...]:
        """The addresses to try now, first preference first (waits for discovery to find one)."""
        await self._known.wait()
        if self._discover:
            assert self._found is not None
            return (self._found,)
        return self._configured

    def describe(self) -> str:
        if self._discover:
            return str(self._found) if self._found is not None else "(not discovered yet)"
        return ",".join(str(a) for a in self._configured)
