"""The one thread that runs a cluster's user callbacks (``job_status``, ``cluster_status``).

User code must not run on the connection's trio thread: a slow or blocking
callback would stall every job's traffic, and a raising one could end the
loop. So the connection thread only ``post``s work here, and this thread
runs it in the order posted, one item at a time (a callback never runs
concurrently with itself, and a job's statuses arrive in order). A callback
that raises is logged with its traceback and the next item runs.

The thread starts with the first post (a cluster without callbacks has
none) and is a daemon, so a script that forgets ``close()`` can still exit.
``drain`` waits until everything posted so far has run; ``stop`` drains,
then ends the thread. Neither waits when called from a callback itself:
that would wait for itself.

A callback must not block on another job of its cluster (``job.result()``):
that job's result may be queued behind the callback itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("fairpool.clients")


class CallbackThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._items: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._changed = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have ``fn(*args)`` run on the callback thread after everything posted before."""
        with self._changed:
            if self._stopping:
                return  # closed: nobody is listening any more
            self._items.append((fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def in_callback(self) -> bool:
        """True when called from the callback thread (i.e. from inside a callback)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything posted so far has run; False if ``timeout`` passed first."""
        if self.in_callback():
            return False
        with self._changed:
            return self._changed.wait_for(lambda: not self._items and not self._busy, timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Run what is posted (up to ``timeout``), then end the thread; later posts are dropped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = self.drain(timeout)
        with self._changed:
            self._stopping = True
            if not drained:
                self._items.clear()
            self._changed.notify_all()
        thread = self._thread
        if thread is not None and not self.in_callback():
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))

    def _main(self) -> None:
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
                self._changed.wait_for(lambda: self._items or self._stopping)
                if not self._items:
                    return
                fn, args = self._items.popleft()
                self._busy = True
            try:
                fn(*args)
            except (Exception, SystemExit):  # a callback's sys.exit() must not end this thread
                logger.exception("%s: a callback raised (%s); carrying on", self.name, _describe(fn))


def _describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
