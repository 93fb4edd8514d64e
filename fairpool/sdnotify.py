"""systemd's service notifications (``sd_notify``) in a few lines, without libsystemd.

Under ``Type=notify`` systemd hands a service ``$NOTIFY_SOCKET``: a unix
datagram socket (a path, or an abstract name written with a leading ``@``).
A daemon writes newline-separated ``KEY=VALUE`` assignments to it:
``READY=1`` once it serves, ``STOPPING=1`` when it begins to shut down,
``RELOADING=1`` then ``READY=1`` around a reload, ``STATUS=...`` for
``systemctl status``, and ``WATCHDOG=1`` at least once per ``WatchdogSec``
(systemd passes that as ``$WATCHDOG_USEC``, and ``$WATCHDOG_PID`` names the
process it is meant for). Without ``$NOTIFY_SOCKET`` every call is a no-op,
so the daemons notify unconditionally.

This module owns the protocol (``notify``, ``watchdog_interval``) and the
trio task that pings the watchdog while the daemon says it is healthy
(``keep_watchdog``). The daemons decide when they are ready and what
"healthy" means: a wedged main loop must stop the pings, so that systemd
restarts the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog
import trio

log = structlog.get_logger("fairpool.sdnotify")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def notify_address(environ: Mapping[str, str] | None = None) -> str | bytes | None:
    """Where notifications go: a socket path, an abstract address (bytes, leading NUL), or None."""
    value = (os.environ if environ is None else environ).get(NOTIFY_SOCKET, "")
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # unset, empty, or something we cannot use (e.g. vsock: not for daemons like ours)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=listening"``) to systemd; whether it was sent.

    Never raises and never blocks: a notification that cannot be delivered
    must not stop the daemon it is about.
    """
    address = notify_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout systemd expects pings within, in seconds; None if there is no watchdog for us.

    ``$WATCHDOG_PID``, when set, must be this process (``pid``, default
    ``os.getpid()``): a child that inherited the variables is not watched.
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get(WATCHDOG_USEC, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get(WATCHDOG_PID, "")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def ready(status: str, environ: Mapping[str, str] | None = None) -> bool:
    """``READY=1`` with a ``STATUS=`` line for ``systemctl status``."""
    return notify(f"READY=1\nSTATUS={_one_line(status)}", environ)


def stopping(status: str = "stopping", environ: Mapping[str, str] | None = None) -> bool:
    """``STOPPING=1``: the stop systemd sees next is intended."""
    return notify(f"STOPPING=1\nSTATUS={_one_line(status)}", environ)


def reloading(status: str = "reloading", environ: Mapping[str, str] | None = None) -> bool:
    """``RELOADING=1`` (follow with ``ready``); MONOTONIC_USEC lets newer systemd match it to the reload."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS={_one_line(status)}", environ)


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def keep_watchdog(healthy: Callable[[], bool], environ: Mapping[str, str] | None = None) -> None:
    """Ping the watchdog every half interval while ``healthy()`` says so; return at once without a watchdog.

    An unhealthy daemon gets no pings (logged once per spell), and systemd
    restarts it when the interval runs out. A trio loop so blocked that this
    task cannot run sends none either, which is the point.
    """
    interval = watchdog_interval(environ)
    if interval is None:
        return
    period = interval / 2
    silent = False
    while True:
        await trio.sleep(period)  # (the daemon just told READY=1: its loop has not had a turn yet)
        if healthy():
            if silent:
                log.warning("healthy again: watchdog pings resume")
            silent = False
            notify("WATCHDOG=1", environ)
        elif not silent:
            silent = True
            log.error("unhealthy: watchdog pings stop (systemd restarts the daemon when its watchdog runs out)",
                      watchdog_s=interval)
