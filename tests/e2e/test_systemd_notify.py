"""The daemons speak systemd's notify protocol: real processes, a fake $NOTIFY_SOCKET bound by the test.

The test plays systemd: it binds a unix datagram socket in ``tmp_path``,
starts a daemon with ``NOTIFY_SOCKET`` naming it and a short
``WATCHDOG_USEC``, and reads what arrives: READY=1 once the daemon serves,
WATCHDOG=1 while it is healthy, RELOADING=1/READY=1 around a SIGHUP reload
of the policy file, STOPPING=1 after SIGTERM. A last test runs the scheduler
in-process with a state task that never turns: its pings must stop.
"""

from __future__ import annotations

import math
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from conftest import (
    TEST_SCHEDULER_CONFIG,
    Daemon,
    SchedulerProcess,
    _register,
    _toml_value,
    admin_json,
)

from fairpool.config import load_scheduler_config
from fairpool.scheduler import daemon as scheduler_daemon
from fairpool.scheduler.daemon import serve_scheduler

DEADLINE = 20.0
WATCHDOG_USEC = "400000"  # pings every 0.2 s
UNIX_PATH_MAX = 107


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: every datagram, parsed into its assignments."""

    def __init__(self, path: Path) -> None:
        if len(str(path)) > UNIX_PATH_MAX:
            pytest.skip(f"tmp_path is too long for a unix socket path: {path}")
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[dict[str, str]] = []

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": WATCHDOG_USEC}

    def _receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
        self.received.append(message)
        return message

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], what: str,
                 timeout: float = DEADLINE) -> dict[str, str]:
        """The next notification that satisfies ``predicate`` (those before it are kept in ``received``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self._receive(left)
            if message is not None and predicate(message):
                return message
        raise AssertionError(f"no {what} within {timeout:g}s; received: {self.received}")

    def silent_for(self, key: str, seconds: float) -> bool:
        """Whether no notification with ``key`` arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self._receive(left)
            if message is not None and key in message:
                return False
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify")
    try:
        yield fake
    finally:
        fake.close()


def ready(message: dict[str, str]) -> bool:
    return message.get("READY") == "1"


def pinged(message: dict[str, str]) -> bool:
    return message.get("WATCHDOG") == "1"


def stopping(message: dict[str, str]) -> bool:
    return message.get("STOPPING") == "1"


def start_scheduler(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                    env: dict[str, str], **settings: object) -> SchedulerProcess:
    """A scheduler process whose environment carries ``env`` (the conftest fixture starts before a test can set it)."""
    config = tmp_path / "scheduler.toml"
    config.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in {**TEST_SCHEDULER_CONFIG, **settings}.items()))
    process = SchedulerProcess(tmp_path / "sched", log_dir=tmp_path, extra_args=["--config", str(config)])
    _register(request, process)
    with monkeypatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        process.start()
    request.addfinalizer(process.stop)
    return process


def policy_show(scheduler: SchedulerProcess) -> dict[str, object]:
    shown: dict[str, object] = admin_json(scheduler, "policy", "show")
    return shown


# --- the scheduler ---------------------------------------------------------------------------------


def test_scheduler_notifies_ready_pings_the_watchdog_and_notifies_stopping(
        systemd: FakeSystemd, tmp_path: Path, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = start_scheduler(tmp_path, request, monkeypatch, systemd.env())
    message = systemd.wait_for(ready, "READY=1")
    assert f"listening on {scheduler.address}" in message["STATUS"]
    for _ in range(3):
        systemd.wait_for(pinged, "WATCHDOG=1")
    scheduler.send_signal(signal.SIGTERM)
    systemd.wait_for(stopping, "STOPPING=1")
    assert scheduler.process is not None and scheduler.process.wait(DEADLINE) == 0


def test_sighup_reloads_the_policy_file(systemd: FakeSystemd, tmp_path: Path, request: pytest.FixtureRequest,
                                        monkeypatch: pytest.MonkeyPatch, wait_for_log: Callable[..., str]) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('policy = "fifo"\n')
    scheduler = start_scheduler(tmp_path, request, monkeypatch, systemd.env(), policy_file=str(policy_file))
    systemd.wait_for(ready, "READY=1")
    assert policy_show(scheduler)["policy"] == "fifo"

    policy_file.write_text('policy = "fair-share"\n\n[tenants.alice]\nweight = 3\n')
    scheduler.send_signal(signal.SIGHUP)
    systemd.wait_for(lambda m: m.get("RELOADING") == "1", "RELOADING=1")
    systemd.wait_for(ready, "READY=1 after the reload")
    shown = policy_show(scheduler)
    assert shown["policy"] == "fair-share"
    assert shown["tenants"]["alice"]["weight"] == 3  # type: ignore[index]
    wait_for_log(scheduler, "policy file reloaded")


def test_sighup_with_a_broken_policy_file_keeps_the_running_policy(
        systemd: FakeSystemd, tmp_path: Path, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, wait_for_log: Callable[..., str]) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('policy = "fair-share"\n')
    scheduler = start_scheduler(tmp_path, request, monkeypatch, systemd.env(), policy_file=str(policy_file))
    systemd.wait_for(ready, "READY=1")
    policy_file.write_text("policy = = nonsense\n")
    scheduler.send_signal(signal.SIGHUP)
    systemd.wait_for(ready, "READY=1 after the refused reload")
    wait_for_log(scheduler, "policy file not reloaded")
    assert scheduler.alive()
    assert policy_show(scheduler)["policy"] == "fair-share"


# --- the node --------------------------------------------------------------------------------------


def test_node_notifies_ready_only_once_connected(systemd: FakeSystemd, scheduler: SchedulerProcess,
                                                 tmp_path: Path, request: pytest.FixtureRequest,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler.stop()  # the node starts while its scheduler is down
    node_config = tmp_path / "node.toml"
    node_config.write_text("reconnect_max_delay = 0.5\nheartbeat_interval = 0.5\n")
    node = Daemon("node", "node-n1", [
        "--config", str(node_config), "--scheduler", scheduler.address, "--secret-file",
        str(scheduler.secret_file), "--cpus", "1", "--name", "n1", "--state-dir", str(tmp_path / "node-n1"),
    ], log_dir=tmp_path, name="n1")
    _register(request, node)
    with monkeypatch.context() as patch:  # the node's environment only: not the scheduler's restart
        for key, value in systemd.env().items():
            patch.setenv(key, value)
        node.start()
    request.addfinalizer(node.stop)
    try:
        assert systemd.silent_for("READY", 1.5), f"READY before the scheduler was up: {systemd.received}"
        scheduler.start()
        message = systemd.wait_for(ready, "READY=1")
        assert "node n1 connected to its scheduler" in message["STATUS"]
        for _ in range(3):
            systemd.wait_for(pinged, "WATCHDOG=1")
        node.send_signal(signal.SIGTERM)
        systemd.wait_for(stopping, "STOPPING=1")
        assert node.process is not None and node.process.wait(DEADLINE) == 0
    finally:
        node.stop()


# --- a wedged scheduler ----------------------------------------------------------------------------


async def test_a_wedged_state_task_stops_the_watchdog_pings(systemd: FakeSystemd, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async def wedged(self: scheduler_daemon.SchedulerServer) -> None:
        await trio.sleep(math.inf)  # never handles a stimulus: not even the ticker's Ticks

    monkeypatch.setattr(scheduler_daemon.SchedulerServer, "run_state", wedged)
    for key, value in systemd.env().items():
        monkeypatch.setenv(key, value)
    config = load_scheduler_config(None, {"listen": "127.0.0.1:0", "state_dir": str(tmp_path / "s"),
                                          "heartbeat_interval": "0.1", "heartbeat_timeout": "1"})
    received = systemd.received
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_scheduler, config)
        # The receiving side blocks: run it in a thread, beside the scheduler's loop.
        assert await trio.to_thread.run_sync(lambda: systemd.wait_for(ready, "READY=1"))
        # Pings for at most STALL_INTERVALS heartbeats after the start, then none at all.
        quiet = await trio.to_thread.run_sync(lambda: any(systemd.silent_for("WATCHDOG", 1.0) for _ in range(5)))
        nursery.cancel_scope.cancel()
    assert quiet, f"the watchdog was still pinged with a wedged state task: {received}"
