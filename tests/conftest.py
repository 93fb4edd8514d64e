"""Fixtures for end-to-end tests: real ``fairpool scheduler`` / ``fairpool node`` processes.

- ``scheduler``: a scheduler subprocess on ``127.0.0.1:<free port>`` with its
  own state dir; ``.address``, ``.secret_file``, ``.state_dir``, ``.process``,
  ``.pid``, ``.log()``, ``.stop()``, ``.kill()``, ``.start()`` (again, on the
  same address: a restart).
- ``start_node(cpus=2, name=None, extra_args=())``: node subprocesses joined to it.
- ``cluster_kwargs``: ``dict(scheduler=..., secret_file=...)`` for SharedJobCluster.
- ``one_node_pool``: ``cluster_kwargs`` once a node "n1" (2 CPUs) is started.
- ``wait_for(predicate, ...)`` / ``async_wait_for``: poll a condition under a
  deadline (``from conftest import wait_for``; they live in ``tests/waiting.py``);
  ``wait_for_log`` waits for a line in a daemon's log.
- ``in_tmp_dir`` (chdir to ``tmp_path``), ``no_fairpool_env`` (unset ``FAIRPOOL_*``):
  opt-in, e.g. ``pytestmark = pytest.mark.usefixtures("in_tmp_dir")``.
- ``run_admin(scheduler, *args)`` / ``admin_json(scheduler, *verb)``: the
  ``fairpool admin`` console script against a scheduler fixture.
- ``with gated_job(scheduler, computation, gate) as (cluster, job)``: a job held RUNNING.
- ``process_gone(pid)``: the process has exited (or is a zombie).

Every daemon runs in its own session (process group), so that stopping it
also stops its worker processes; its stdout/stderr go to files under the
test's ``tmp_path`` and are attached to the report of a failed test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from waiting import POLL, wait_for
from waiting import async_wait_for as async_wait_for  # (re-exported: tests import it from conftest)

START_DEADLINE = 20.0  # the scheduler writes its address file within this
STOP_DEADLINE = 10.0  # after SIGTERM, then SIGKILL
LOG_TAIL_LINES = 200
FAIRPOOL = Path(sys.executable).parent / "fairpool"


# --- daemon processes ------------------------------------------------------------------


def fairpool_command() -> list[str]:
    """The console script of this venv (``python -m fairpool.cli`` where it is not installed)."""
    return [str(FAIRPOOL)] if FAIRPOOL.exists() else [sys.executable, "-m", "fairpool.cli"]


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped yet counts as gone); Linux ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def run_admin(scheduler: SchedulerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``fairpool admin <args>`` (the console script) against ``scheduler`` with its cluster secret."""
    return subprocess.run([*fairpool_command(), "admin", "--scheduler", scheduler.address, "--secret-file",
                           str(scheduler.secret_file), *args], capture_output=True, text=True, timeout=60)


def admin_json(scheduler: SchedulerProcess, *verb: str) -> Any:
    """``fairpool admin --json <verb>`` against ``scheduler``: its parsed answer (it must exit 0)."""
    result = run_admin(scheduler, "--json", *verb)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@contextmanager
def gated_job(scheduler: SchedulerProcess, computation: Callable[[str], Any], gate: Path,
              tenant: str = "alice") -> Iterator[tuple[Any, Any]]:
    """A job of ``tenant`` RUNNING ``computation(str(gate))`` until the block ends: ``(cluster, job)``.

    ``computation`` waits for the file ``gate``; leaving the block creates it and closes the cluster.
    """
    from fairpool import SharedJobCluster  # here: daemon-only tests need no client

    cluster = SharedJobCluster(computation, scheduler=scheduler.address, secret_file=str(scheduler.secret_file),
                               tenant=tenant)
    try:
        job = cluster.submit(str(gate))
        wait_for(lambda: job.status.value == "RUNNING", timeout=60, message="the job runs")
        yield cluster, job
    finally:
        gate.touch()
        cluster.close(timeout=20, terminate=True)


class Daemon:
    """One ``fairpool`` daemon subprocess, in a session of its own, output to files."""

    def __init__(self, kind: str, label: str, args: Sequence[str], log_dir: Path, name: str = "") -> None:
        self.kind = kind  # "scheduler" | "node"
        self.label = label
        self.name = name
        self.args = list(args)
        self.stdout_path = log_dir / f"{label}.stdout"
        self.stderr_path = log_dir / f"{label}.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.label} was never started"
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self, args: Sequence[str]) -> None:
        assert not self.alive(), f"{self.label} is already running"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Appending: a restarted daemon's log follows its previous run's.
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen([*fairpool_command(), self.kind, *args], stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=err, env=env, start_new_session=True)

    def start(self) -> None:
        """Start (again, after ``stop``/``kill``) with the same arguments."""
        self._spawn(self.args)

    def send_signal(self, sig: int) -> None:
        """Signal the daemon process alone (not its workers), as systemd or a user would."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def stop(self, timeout: float = STOP_DEADLINE) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; its whole process group ends too."""
        if self.process is None:
            return None
        self.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self._kill_group()
        return self.process.wait()

    def kill(self) -> int | None:
        """SIGKILL the daemon and every process of its group (a crash of the whole host)."""
        if self.process is None:
            return None
        self._kill_group()
        return self.process.wait()

    def _kill_group(self) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # leftover workers too
        except (ProcessLookupError, PermissionError):
            pass

    def log(self) -> str:
        """Everything the daemon wrote so far, stdout then stderr."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log().splitlines()
        skipped = f"[... {len(text) - lines} earlier lines in {self.stderr_path}]\n" if len(text) > lines else ""
        return skipped + "\n".join(text[-lines:])

    def status(self) -> str:
        code = self.returncode
        return "never started" if self.process is None else "running" if code is None else f"exited {code}"


class SchedulerProcess(Daemon):
    def __init__(self, state_dir: Path, log_dir: Path, extra_args: Sequence[str] = ()) -> None:
        super().__init__("scheduler", "scheduler", extra_args, log_dir)
        self.state_dir = state_dir
        self.secret_file = state_dir / "secret"
        self.address_file = state_dir / "scheduler.address"
        self.address = ""

    def start(self, listen: str | None = None) -> str:  # type: ignore[override]
        """Start (again), on ``listen`` (default: the previous address, else a free port); return the address."""
        listen = listen or self.address or "127.0.0.1:0"
        self.address_file.unlink(missing_ok=True)  # a stale file from the last run must not be read
        self._spawn(["--listen", listen, "--state-dir", str(self.state_dir), "--log-level", "debug",
                     *self.args])
        self.address = self._wait_for_address()
        return self.address

    def restart(self, *, kill: bool = False) -> str:
        """Stop (SIGTERM, or SIGKILL with ``kill``) and start again on the same address."""
        self.kill() if kill else self.stop()
        return self.start()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.address_file.exists():
                address = self.address_file.read_text().strip()
                if address:
                    return address
            if not self.alive():
                pytest.fail(f"the scheduler exited ({self.status()}) before listening:\n{self.log_tail()}",
                            pytrace=False)
            time.sleep(POLL)
        self.kill()
        pytest.fail(f"the scheduler wrote no {self.address_file} within {START_DEADLINE:g}s:\n{self.log_tail()}",
                    pytrace=False)


# --- reporting: daemon logs are attached to a failed test's report -------------------------

_DAEMONS = pytest.StashKey[list[Daemon]]()


def _register(request: pytest.FixtureRequest, daemon: Daemon) -> None:
    request.node.stash.setdefault(_DAEMONS, []).append(daemon)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item,
                               call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for daemon in item.stash.get(_DAEMONS, []):
            report.sections.append((f"{daemon.label} log ({daemon.status()})", daemon.log_tail()))
    return report


# --- fixtures ------------------------------------------------------------------------------

TEST_SCHEDULER_CONFIG: dict[str, Any] = {
    "heartbeat_interval": 0.5,
    "heartbeat_timeout": 4.0,
    "handshake_timeout": 3.0,
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scheduler_config(**keys): extra keys for the scheduler's config file")


@pytest.fixture
def scheduler(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SchedulerProcess]:
    """A running scheduler on 127.0.0.1 (free port), state in ``tmp_path/sched``.

    Its config file sets short heartbeats so that lost nodes are noticed within seconds;
    ``@pytest.mark.scheduler_config(key=value, ...)`` sets more keys (TOML values).
    """
    settings: dict[str, Any] = dict(TEST_SCHEDULER_CONFIG)
    marker = request.node.get_closest_marker("scheduler_config")
    if marker is not None:
        settings.update(marker.kwargs)
    config_file = tmp_path / "scheduler.toml"
    config_file.write_text("".join(f"{key} = {_toml_value(value)}\n" for key, value in settings.items()))
    process = SchedulerProcess(tmp_path / "sched", log_dir=tmp_path, extra_args=["--config", str(config_file)])
    _register(request, process)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def start_node(scheduler: SchedulerProcess, tmp_path: Path,
               request: pytest.FixtureRequest) -> Iterator[Callable[..., Daemon]]:
    """``start_node(cpus=2, name=None, extra_args=())``: start a node joined to ``scheduler``.

    It returns at once; a test that needs the node to have joined waits for it
    (e.g. ``wait_for(lambda: cluster.nodes())``).
    """
    nodes: list[Daemon] = []

    def start(cpus: int = 2, name: str | None = None, extra_args: Sequence[str] = ()) -> Daemon:
        name = name or f"node{len(nodes) + 1}"
        node = Daemon("node", f"node-{name}", [
            "--scheduler", scheduler.address, "--secret-file", str(scheduler.secret_file),
            "--cpus", str(cpus), "--name", name, "--state-dir", str(tmp_path / f"node-{name}"),
            "--log-level", "debug", *extra_args,
        ], log_dir=tmp_path, name=name)
        _register(request, node)
        nodes.append(node)
        node.start()
        return node

    try:
        yield start
    finally:
        for node in nodes:
            node.send_signal(signal.SIGTERM)  # all at once: their stops overlap
        for node in nodes:
            node.stop()


@pytest.fixture
def cluster_kwargs(scheduler: SchedulerProcess) -> dict[str, str]:
    """``SharedJobCluster(f, **cluster_kwargs)`` connects to the ``scheduler`` fixture."""
    return {"scheduler": scheduler.address, "secret_file": str(scheduler.secret_file)}


@pytest.fixture
def one_node_pool(start_node: Callable[..., Daemon], cluster_kwargs: dict[str, str]) -> dict[str, str]:
    """A node "n1" (2 CPUs) started for ``scheduler``; ``cluster_kwargs`` to reach them.

    It does not wait for the node to join: a job submitted at once waits for it.
    """
    start_node(cpus=2, name="n1")
    return cluster_kwargs


@pytest.fixture
def wait_for_log() -> Callable[..., str]:
    """``wait_for_log(daemon, text, timeout=20)``: wait until ``text`` appears in the daemon's log."""

    def wait(daemon: Daemon, text: str, timeout: float = 20.0) -> str:
        try:
            wait_for(lambda: text in daemon.log(), timeout=timeout)
        except AssertionError:
            raise AssertionError(f"{text!r} did not appear in the {daemon.label} log within {timeout:g}s:\n"
                                 f"{daemon.log_tail()}") from None
        return daemon.log()

    return wait


#: Client settings a developer's shell may set; tests that read credentials must not see them.
FAIRPOOL_ENV_VARS = ("FAIRPOOL_SCHEDULER", "FAIRPOOL_SECRET_FILE", "FAIRPOOL_TENANT", "FAIRPOOL_TOKEN",
                     "FAIRPOOL_TLS_CA", "FAIRPOOL_TLS_CERT", "FAIRPOOL_TLS_KEY")


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the test in ``tmp_path``: clients' recover files (and daemons started after it) land there.

    Use it module-wide with ``pytestmark = pytest.mark.usefixtures("in_tmp_dir")``.
    """
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_fairpool_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every ``FAIRPOOL_*`` client setting (``FAIRPOOL_ENV_VARS``) for the test."""
    for var in FAIRPOOL_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
