"""``JobCluster``: the SharedJobCluster API on a private pool of local CPUs, started on demand.

``JobCluster(computation, cpus=N, ...)`` starts ``fairpool up --listen
127.0.0.1:0 --cpus N --state-dir TMP`` (the console script beside
``sys.executable``, else ``python -m fairpool.cli``) in a session of its own,
waits for it to write ``TMP/scheduler.address``, and opens the cluster there
with the secret ``fairpool up`` created in ``TMP``. ``close()`` closes the
cluster, then stops the pool: SIGTERM to its process group (a clean stop:
the node stops its workers, whose job trees go with them), SIGKILL after a
grace, and the temporary directory goes too. A pool whose cluster is never
closed is stopped when the interpreter exits.

No recover file is written: the pool, and every job in it, ends with the
cluster. The pool's log is ``TMP/pool.log``; if the pool cannot start, the
error quotes its end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from fairpool.clients.cluster import SharedJobCluster
from fairpool.clients.errors import SchedulerConnectionError
from fairpool.clients.spec import Computation

#: How long the pool may take to start (a busy machine, a cold interpreter).
STARTUP_TIMEOUT = 60.0
#: After SIGTERM, how long the pool gets to stop cleanly before SIGKILL.
STOP_GRACE = 10.0
ADDRESS_FILE = "scheduler.address"
#: Arguments of SharedJobCluster that make no sense for a private pool.
_NOT_HERE = ("scheduler", "secret_file", "token", "tls", "nodes")


class LocalPool:
    """A ``fairpool up`` process of our own and its temporary state directory."""

    def __init__(self, process: subprocess.Popen[bytes], state_dir: Path, address: str) -> None:
        self.process = process
        self.state_dir = state_dir
        self.address = address
        self.secret_file = state_dir / "secret"
        self._finalizer = weakref.finalize(self, _stop, process, state_dir)

    @classmethod
    def start(cls, cpus: int, timeout: float = STARTUP_TIMEOUT) -> LocalPool:
        state_dir = Path(tempfile.mkdtemp(prefix="fairpool-local-"))
        argv = [*_fairpool_command(), "up", "--listen", "127.0.0.1:0", "--cpus", str(cpus),
                "--state-dir", str(state_dir), "--log-level", "warning"]
        with open(state_dir / "pool.log", "wb") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=state_dir, start_new_session=True,
            )
        address_file = state_dir / ADDRESS_FILE
        deadline = time.monotonic() + timeout
        while not address_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                why = "exited" if process.poll() is not None else f"did not start within {timeout:g}s"
                tail = _tail(state_dir / "pool.log")
                _stop(process, state_dir)
                raise SchedulerConnectionError(f"the private fairpool pool ({' '.join(argv)}) {why}: {tail}")
            time.sleep(0.02)
        return cls(process, state_dir, address_file.read_text().strip())

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the pool and remove its directory (once; later calls do nothing)."""
        self._finalizer()


class JobCluster(SharedJobCluster):
    """A computation run on a private pool of this machine's CPUs (see the module docstring).

    ``cpus``: how many (default: all). Every other argument is SharedJobCluster's,
    except those naming a scheduler to connect to.
    """

    recoverable = False

    def __init__(self, computation: Computation, *, cpus: int | None = None, **options: Any) -> None:
        given = sorted(key for key in _NOT_HERE if options.get(key) is not None)
        if given:
            raise TypeError(f"JobCluster starts its own pool: it takes no {', '.join(given)}")
        for key in _NOT_HERE:
            options.pop(key, None)
        count = cpus if cpus is not None else os.cpu_count() or 1
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"cpus must be a whole number >= 1, not {cpus!r}")
        self.pool = LocalPool.start(count)
        try:
            super().__init__(computation, scheduler=self.pool.address, secret_file=self.pool.secret_file, **options)
        except BaseException:
            self.pool.stop()
            raise

    @classmethod
    def reattach(cls, cluster_id: str, **options: Any) -> JobCluster:
        """A private pool ends with its cluster: there is nothing to re-attach to."""
        raise TypeError("a JobCluster's private pool ends with the cluster: it cannot be reattached "
                        "(SharedJobCluster.reattach re-attaches to a shared scheduler's cluster)")

    def close(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Close the cluster (as SharedJobCluster.close), then stop the private pool."""
        try:
            super().close(timeout, terminate)
        finally:
            self.pool.stop()


def _fairpool_command() -> list[str]:
    script = Path(sys.executable).parent / "fairpool"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "fairpool.cli"]


def _stop(process: subprocess.Popen[bytes], state_dir: Path) -> None:
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    # (its workers are in sessions of their own: the pool stops them, or they see it die and go)
    shutil.rmtree(state_dir, ignore_errors=True)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return " | ".join(text.splitlines()[-lines:]) or "(empty log)"
