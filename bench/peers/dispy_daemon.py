"""Runs the unmodified dispynode / dispyscheduler 4.15.2 with two small runtime fixes.

Usage (in the peers venv): ``python dispy_daemon.py node|scheduler ARGS...``;
ARGS go to dispynode.py / dispyscheduler.py unchanged, and the daemon runs in
this very process (so its PID is this process's PID, for the RSS figure).

1. The start/join race (dispynode only). dispynode assigns a
   ``multiprocessing.Process`` to ``job_info.proc`` and then calls ``start()``;
   with a job as fast as ``x * 2`` the forked child can finish and its reply be
   handled before ``start()`` has stored ``_popen`` in the parent, and the
   reply thread's ``proc.join(2)`` raises ``AssertionError: can only join a
   started process``. That kills dispynode's reply thread: the node never
   replies again and every client hangs. The fix makes ``join()`` of a process
   created by this process wait (bounded) until ``start()`` has stored
   ``_popen``, then join as usual. Nothing else in dispy is changed.

2. Loopback-only discovery (node, scheduler and, via :func:`patch_loopback`,
   the client). Without the optional ``netifaces`` package dispy sends its UDP
   discovery pings to ``<broadcast>`` (255.255.255.255). The fix points them at
   the loopback network's own broadcast address, 127.255.255.255, so every
   packet of the benchmark stays on 127.0.0.0/8. Discovery is not on the job
   path: this changes no figure.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from typing import Any

LOOPBACK_BROADCAST = "127.255.255.255"
_START_WAIT_S = 5.0


def patch_start_join_race() -> None:
    """Make ``Process.join`` wait until a concurrent ``start()`` has finished."""
    original_join = BaseProcess.join

    def join(self: BaseProcess, timeout: float | None = None) -> None:
        # only a process this process created can be mid-start; a deadline keeps
        # a never-started process failing as before instead of blocking forever
        deadline = time.monotonic() + _START_WAIT_S
        while (
            getattr(self, "_popen", None) is None
            and getattr(self, "_parent_pid", None) == os.getpid()
            and time.monotonic() < deadline
        ):
            time.sleep(0.0002)
        original_join(self, timeout)

    BaseProcess.join = join  # type: ignore[method-assign]


def patch_loopback() -> None:
    """Send dispy's UDP discovery to the loopback broadcast address instead of the global one."""
    import dispy

    original = dispy.host_addrinfo

    def host_addrinfo(*args: Any, **kwargs: Any) -> Any:
        info = original(*args, **kwargs)
        if info is not None and info.family == socket.AF_INET and str(info.ip).startswith("127."):
            info.broadcast = LOOPBACK_BROADCAST
            info.bind_addr = LOOPBACK_BROADCAST
        return info

    dispy.host_addrinfo = host_addrinfo


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("node", "scheduler"):
        sys.exit("usage: dispy_daemon.py node|scheduler DISPY-ARGS...")
    kind = sys.argv[1]
    patch_loopback()
    if kind == "node":
        patch_start_join_race()
    module = "dispy.dispynode" if kind == "node" else "dispy.dispyscheduler"
    sys.argv = [f"{kind}"] + sys.argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
