"""Process plumbing of the throughput benchmark: sessions, deadlines, ports, logs.

Owns every subprocess the benchmark starts. Each one runs in its own session
(so its process group is its own and a terminal Ctrl-C reaches only the
driver), its output goes to log files in the measurement's directory, and
:class:`Processes` kills every group it started when its ``with`` block
ends, normally, on error or on Ctrl-C. :func:`run_helper` runs one
measurement helper (bench/peers/*.py) under a deadline and turns what it
printed into an :class:`Outcome`: figures, or "hung in <phase>", or "failed".
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "
PHASE_PREFIX = "bench-phase: "
LOOPBACK = "127.0.0.1"


@dataclass
class Outcome:
    """One measurement of one system: ``status`` is ok, hung or failed."""

    status: str
    figures: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


class Processes:
    """The subprocesses of one measurement; all their process groups die on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self, name: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new session, output to ``<log_dir>/<name>.out|.err``."""
        with (
            open(self.log_dir / f"{name}.out", "wb") as out,
            open(self.log_dir / f"{name}.err", "wb") as err,
        ):
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self._started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; wait until it is gone."""
        pgid = proc.pid  # a session leader's pgid is its pid
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_group_gone(pgid, proc, grace_s):
            _signal_group(pgid, signal.SIGKILL)
            _wait_group_gone(pgid, proc, 5.0)
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        # newest first: clients before the daemons they talk to
        while self._started:
            self.stop(self._started.pop())


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, leader: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        leader.poll()  # reap the leader so that it does not linger as a zombie
        if not _group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


def tcp_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``, read from /proc/net/tcp.

    Read rather than probed by connecting, so that no daemon sees (and logs,
    or counts) an unauthenticated connection before the measurement.
    """
    wanted = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table)
            return any(
                cols[1] == wanted and cols[3] == "0A"  # 0A: LISTEN
                for cols in (line.split() for line in table)
            )
    except OSError:
        return False


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def free_port_block(count: int) -> int:
    """A base port P with P..P+count-1 free for TCP and UDP on 127.0.0.1.

    Chosen below the kernel's ephemeral range, so that no outgoing connection
    takes one of them between this check and the daemon's bind.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(low, 12000) - count
    for _ in range(500):
        base = random.randrange(10000, top)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found on {LOOPBACK}")


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _parse_result(out_path: Path) -> dict[str, Any] | None:
    try:
        text = out_path.read_text(errors="replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_PREFIX):
            figures: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return figures
    return None


def _last_phase(err_path: Path) -> str:
    phase = "start-up"
    try:
        text = err_path.read_text(errors="replace")
    except OSError:
        return phase
    for line in text.splitlines():
        if line.startswith(PHASE_PREFIX):
            phase = line[len(PHASE_PREFIX) :].strip()
    return phase


def run_helper(
    procs: Processes,
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    deadline_s: float,
    close_grace_s: float = 15.0,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run one helper to completion or to its deadline and read its figures.

    Figures printed before a hang while shutting down still count (the detail
    says the close hung); a helper that printed none by the deadline is
    "hung" in the phase it last announced.
    """
    proc = procs.start(name, argv, cwd=cwd, env=env)
    out_path, err_path = procs.log_dir / f"{name}.out", procs.log_dir / f"{name}.err"
    deadline = time.monotonic() + deadline_s
    emitted_at: float | None = None
    while True:
        try:
            proc.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if emitted_at is None and _parse_result(out_path) is not None:
            emitted_at = now
        if emitted_at is not None and now - emitted_at > close_grace_s:
            break
        if emitted_at is None and now >= deadline:
            break
    exited = proc.poll() is not None
    figures = _parse_result(out_path)
    if not exited:
        procs.stop(proc)
    if figures is not None:
        detail = "" if exited else f"close hung > {close_grace_s:.0f} s, killed"
        if exited and proc.returncode != 0:
            detail = f"exit {proc.returncode} after figures: {tail(err_path, 2)}"
        return Outcome("ok", figures, detail)
    if not exited:
        return Outcome(
            "hung", detail=f"no figures after {deadline_s:.0f} s, in {_last_phase(err_path)}"
        )
    return Outcome("failed", detail=f"exit {proc.returncode}: {tail(err_path)}")
