"""The background thread that gives a synchronous cluster its own trio loop.

``LoopThread.start`` runs ``trio.run`` on a daemon thread, opens the cluster
there and returns once it is open -- or raises the reason it could not be
(within a deadline, never hanging). Afterwards the user's threads talk to the
loop through the connection's ``request_flush`` (submits) and through
``call`` (close). ``stop`` cancels the loop and joins the thread. The thread
is a daemon so that a script that forgets ``close()`` can still exit; its
jobs then live on in the scheduler, findable through the recover file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import trio

from fairpool.clients.connection import ClusterConnection
from fairpool.clients.errors import ClusterClosedError, SchedulerConnectionError

logger = logging.getLogger("fairpool.clients")

T = TypeVar("T")

#: Beyond the connection's own deadline: room for the thread to start and report.
STARTUP_GRACE = 5.0


class LoopThread:
    def __init__(self, connection: ClusterConnection, name: str) -> None:
        self.connection = connection
        self.error: BaseException | None = None  # why the loop ended early, if it did
        self._opened: Future[trio.lowlevel.TrioToken] = Future()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        """Open the cluster on the loop thread; raise SchedulerConnectionError if that fails."""
        self._thread.start()
        timeout = self.connection.timing.connect_timeout + STARTUP_GRACE
        try:
            self._token = self._opened.result(timeout)
        except TimeoutError:
            # The loop's own deadline should have fired first; do not leave it running.
            self._abandoned = True
            raise SchedulerConnectionError(
                f"the fairpool scheduler at {self.connection.settings.scheduler} did not open "
                f"the cluster within {timeout:g}s"
            ) from None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the loop and return its result; ClusterClosedError if the loop is gone."""
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise ClusterClosedError(self._gone_reason()) from None

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the loop and wait (up to ``timeout``) for the thread to end."""
        if self._token is not None:
            try:
                trio.from_thread.run_sync(self._cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass  # it ended by itself
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("cluster %s: the connection thread did not stop within %gs", self.connection.cluster_id, timeout)

    def _gone_reason(self) -> str:
        if self.error is not None:
            return f"the cluster's connection thread stopped: {self.error!r}"
        return "the cluster is closed"

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def _main(self) -> None:
        try:
            trio.run(self._run)
        except BaseException as exc:  # reported to the owner below, not swallowed
            if not self._opened.done():
                self._opened.set_exception(exc)
                return
            self.error = exc
            logger.error("cluster %s: the connection thread crashed", self.connection.cluster_id, exc_info=exc)
            self.connection.session.abort_all(ClusterClosedError(self._gone_reason()))

    async def _run(self) -> None:
        with trio.CancelScope() as self._scope:
            stream = await self.connection.open()
            if self._abandoned:
                await stream.aclose()
                return
            self._opened.set_result(trio.lowlevel.current_trio_token())
            await self.connection.serve(stream)
            # Closed: stay idle until stop(), so close() never races the loop's end.
            await trio.sleep_forever()
