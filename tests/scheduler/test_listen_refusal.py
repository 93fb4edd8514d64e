"""A scheduler refuses to listen beyond loopback with a secret others can read; it never logs a credential.

Off loopback the cluster secret is all that stands between the network and
the admin verbs: a scheduler asked to listen there while its secret file is
open to group or others (not mode 0600 / 0400) stops with a clear error,
before it binds anything. These tests never bind a non-loopback address:
the refused ones are checked before binding, and the end-to-end one uses
192.0.2.1 (TEST-NET-1, never a local address), which could not be bound anyway.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trio
from conftest import fairpool_command, wait_for
from jobfunctions import double

from fairpool import SharedJobCluster
from fairpool.address import Address
from fairpool.cli import main
from fairpool.config import SchedulerConfig
from fairpool.scheduler.daemon import ADDRESS_FILE, check_exposure, serve_scheduler
from fairpool.secret import SecretError

pytestmark = pytest.mark.timeout(60)

BEYOND_LOOPBACK = ["0.0.0.0", "::", "192.0.2.1", "2001:db8::1", "scheduler.example.org"]
LOOPBACK = ["127.0.0.1", "127.0.0.2", "::1", "localhost"]


def secret_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "secret"
    path.write_text("a-cluster-secret-for-tests\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("host", BEYOND_LOOPBACK)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_beyond_loopback_a_secret_open_to_group_or_others_is_refused(tmp_path: Path, host: str, mode: int) -> None:
    path = secret_file(tmp_path, mode)
    with pytest.raises(SecretError) as refused:
        check_exposure(Address(host, 51350), path)
    message = str(refused.value)
    assert "refusing to listen" in message and f"{mode:04o}" in message and f"chmod 600 {path}" in message


@pytest.mark.parametrize("host", BEYOND_LOOPBACK)
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_beyond_loopback_a_private_secret_is_accepted(tmp_path: Path, host: str, mode: int) -> None:
    check_exposure(Address(host, 51350), secret_file(tmp_path, mode))


@pytest.mark.parametrize("host", LOOPBACK)
def test_on_loopback_the_secret_file_mode_is_not_checked(tmp_path: Path, host: str) -> None:
    check_exposure(Address(host, 51350), secret_file(tmp_path, 0o644))


async def test_serve_scheduler_refuses_before_binding_or_writing_its_address(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = SchedulerConfig(listen=Address("0.0.0.0", 0), state_dir=state_dir,
                             secret_file=secret_file(tmp_path, 0o644), journal=False)
    with pytest.raises(SecretError, match="refusing to listen on 0.0.0.0:0"):
        await serve_scheduler(config)
    assert not await trio.Path(state_dir / ADDRESS_FILE).exists()


def test_the_scheduler_command_exits_1_with_a_one_line_reason(tmp_path: Path) -> None:
    path = secret_file(tmp_path, 0o644)
    done = subprocess.run([*fairpool_command(), "scheduler", "--listen", "192.0.2.1:0", "--state-dir",
                           str(tmp_path / "state"), "--secret-file", str(path), "--log-format", "json"],
                          capture_output=True, timeout=30, text=True)
    assert done.returncode == 1, done.stderr
    errors = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any("refusing to listen on 192.0.2.1:0" in e["event"] and "chmod 600" in e["event"] for e in errors), \
        done.stderr
    assert "Traceback" not in done.stderr


# --- no credential in the scheduler's log ------------------------------------------------------


def test_the_scheduler_log_never_shows_the_secret_or_a_token(scheduler, start_node, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("FAIRPOOL_SCHEDULER", "FAIRPOOL_SECRET_FILE", "FAIRPOOL_TENANT", "FAIRPOOL_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    start_node(cpus=1)
    capsys.readouterr()
    code = main(["admin", "--scheduler", scheduler.address, "--secret-file", str(scheduler.secret_file),
                 "--json", "tenants", "add", "alice"])
    token = json.loads(capsys.readouterr().out)["token"]
    assert code == 0
    with SharedJobCluster(double, scheduler=scheduler.address, tenant="alice", token=token) as cluster:
        assert cluster.submit(21).result(timeout=30) == 42
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(Exception, match="unknown tenant or wrong token"):
        SharedJobCluster(double, scheduler=scheduler.address, tenant="alice", token=wrong).close()
    # the wrong token was seen and logged (the client hears the refusal before the log line is out)...
    wait_for(lambda: "connection refused" in scheduler.log(), 20, message="the refusal to be logged")
    log = scheduler.log()
    secret = scheduler.secret_file.read_text().strip()
    for credential in (secret, token, wrong):
        assert credential not in log  # ...but no credential ever is
