"""fairpool.sdnotify: systemd notifications over a unix datagram socket, and the watchdog task."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from fairpool import sdnotify

RECEIVE_DEADLINE = 5.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket standing in for systemd's, and the environment that names it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(RECEIVE_DEADLINE)
    try:
        yield sock, {"NOTIFY_SOCKET": str(path)}
    finally:
        sock.close()


def test_notify_without_a_socket_is_a_no_op() -> None:
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False


def test_notify_sends_the_state_as_one_datagram(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    assert sdnotify.notify("READY=1\nSTATUS=up", env) is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"fairpool-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(RECEIVE_DEADLINE)
        assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_to_a_socket_nobody_listens_on_returns_false(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")}) is False


def test_notify_ignores_an_address_that_is_not_a_unix_socket() -> None:
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_notify_reads_the_process_environment_by_default(listener: tuple[socket.socket, dict[str, str]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sock, env = listener
    monkeypatch.setenv("NOTIFY_SOCKET", env["NOTIFY_SOCKET"])
    assert sdnotify.notify("STOPPING=1") is True
    assert sock.recv(4096) == b"STOPPING=1"


def test_ready_carries_a_one_line_status(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    sdnotify.ready("listening on\n127.0.0.1:1", env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=listening on 127.0.0.1:1"


def test_stopping_says_stopping(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    sdnotify.stopping(environ=env)
    assert sock.recv(4096).split(b"\n")[0] == b"STOPPING=1"


def test_reloading_carries_the_monotonic_time(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    sdnotify.reloading("reloading the policy file", env)
    fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n"))
    assert fields["RELOADING"] == "1"
    assert fields["STATUS"] == "reloading the policy file"
    assert int(fields["MONOTONIC_USEC"]) > 0


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({}, None),
    ({"WATCHDOG_USEC": ""}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "me"}, None),
])
def test_watchdog_interval_is_for_this_process_only(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_pid_is_compared_with_the_given_pid() -> None:
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}
    assert sdnotify.watchdog_interval(env, pid=4242) == 1.0
    assert sdnotify.watchdog_interval(env, pid=4243) is None


# --- the watchdog task ---------------------------------------------------------------------------


async def _receive(sock: trio.socket.SocketType, timeout: float) -> bytes | None:
    with trio.move_on_after(timeout):
        return await sock.recv(4096)
    return None


@pytest.fixture
def trio_listener(tmp_path: Path) -> Iterator[tuple[trio.socket.SocketType, dict[str, str]]]:
    path = tmp_path / "notify"
    plain = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    plain.bind(str(path))
    sock = trio.socket.from_stdlib_socket(plain)
    try:
        yield sock, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"}
    finally:
        plain.close()  # (the trio wrapper closes only inside a trio run)


async def test_keep_watchdog_returns_at_once_without_a_watchdog() -> None:
    with trio.fail_after(RECEIVE_DEADLINE):
        await sdnotify.keep_watchdog(lambda: True, {})


async def test_keep_watchdog_pings_while_healthy(
        trio_listener: tuple[trio.socket.SocketType, dict[str, str]]) -> None:
    sock, env = trio_listener
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sdnotify.keep_watchdog, lambda: True, env)
        for _ in range(3):
            assert await _receive(sock, RECEIVE_DEADLINE) == b"WATCHDOG=1"
        nursery.cancel_scope.cancel()


async def test_keep_watchdog_stops_pinging_while_unhealthy_and_resumes(
        trio_listener: tuple[trio.socket.SocketType, dict[str, str]]) -> None:
    sock, env = trio_listener
    healthy = True
    with trio.fail_after(4 * RECEIVE_DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sdnotify.keep_watchdog, lambda: healthy, env)
            assert await _receive(sock, RECEIVE_DEADLINE) == b"WATCHDOG=1"
            healthy = False
            # a ping already on its way may still come; then silence, for 10 periods of 50 ms
            while await _receive(sock, 0.3) is not None:
                pass
            assert await _receive(sock, 0.5) is None
            healthy = True
            assert await _receive(sock, RECEIVE_DEADLINE) == b"WATCHDOG=1"
            nursery.cancel_scope.cancel()
