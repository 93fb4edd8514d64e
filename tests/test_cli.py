"""The ``fairpool`` command: usage errors, runtime errors, clean stops on signals, logs, the demo."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import fairpool_command, wait_for

from fairpool import __version__
from fairpool.cli import main

STOP_WITHIN = 5.0  # seconds from SIGTERM/SIGINT to exit


def run_fairpool(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*fairpool_command(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


# --- usage errors: one line, exit 2 --------------------------------------------------------


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fairpool {__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "scheduler" in capsys.readouterr().err


def test_bad_listen_address_exits_2_with_one_line(capsys):
    assert main(["scheduler", "--listen", "nonsense"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == ("fairpool scheduler: error: bad value for --listen: bad address 'nonsense': no port "
                    "(expected HOST:PORT, e.g. 127.0.0.1:51350)")


def test_node_with_zero_cpus_exits_2(capsys):
    assert main(["node", "--cpus", "0"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "fairpool node: error: bad value for --cpus: expected an integer >= 1, got 0")


def test_unknown_config_key_exits_2(tmp_path, capsys):
    config = tmp_path / "scheduler.toml"
    config.write_text('lisen = "127.0.0.1:0"\n')
    assert main(["scheduler", "--config", str(config)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"fairpool scheduler: error: unknown key 'lisen' in {config} (")


def test_garbage_config_file_exits_2_with_the_line(tmp_path, capsys):
    config = tmp_path / "node.toml"
    config.write_text("cpus = = 2\n")
    assert main(["node", "--config", str(config)]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{config} is not valid TOML" in line and "line 1" in line


def test_unknown_flag_exits_2_with_one_line(capsys):
    assert main(["node", "--cpu", "2"]) == 2
    assert "unrecognized arguments: --cpu" in one_line(capsys.readouterr().err)


def test_bad_log_format_exits_2(capsys):
    assert main(["up", "--log-format", "xml"]) == 2
    assert "--log-format: expected one of console, json" in one_line(capsys.readouterr().err)


def test_scheduler_address_from_the_environment_is_checked_and_named(monkeypatch, capsys):
    monkeypatch.setenv("FAIRPOOL_SCHEDULER", "nonsense")
    assert main(["node"]) == 2
    assert "bad value for FAIRPOOL_SCHEDULER: bad address 'nonsense'" in one_line(capsys.readouterr().err)


def test_unknown_policy_exits_2(tmp_path):
    result = run_fairpool("scheduler", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "s"),
                          "--policy", "no-such-policy")
    assert result.returncode == 2
    assert "unknown policy 'no-such-policy'" in one_line(result.stderr)


def test_demo_refuses_zero_jobs(capsys):
    assert main(["demo", "--jobs", "0"]) == 2
    assert "--jobs" in one_line(capsys.readouterr().err)


# --- runtime errors: one line, exit 1 ----------------------------------------------------------


@pytest.mark.parametrize("command", ["scheduler", "up"])
def test_address_in_use_exits_1_with_one_clear_line(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_fairpool(command, "--listen", address, "--state-dir", str(tmp_path / "s"),
                              "--log-level", "warning")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = one_line(result.stderr)
    assert f"cannot listen on {address}: address already in use" in line


def test_empty_secret_file_exits_1_with_one_clear_line(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("  \n")
    result = run_fairpool("node", "--scheduler", "127.0.0.1:9", "--secret-file", str(secret),
                          "--state-dir", str(tmp_path / "node"), "--log-level", "warning")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"secret file '{secret}' is empty" in one_line(result.stderr)


# --- clean stops -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_scheduler_stops_cleanly_on_signal(scheduler, sig):
    scheduler.send_signal(sig)
    assert scheduler.process is not None
    assert scheduler.process.wait(STOP_WITHIN) == 0
    log = scheduler.log()
    assert "Traceback" not in log
    assert f'"signal": "{sig.name}"' in log  # (JSON: the log is a file, not a terminal)


def test_node_stops_cleanly_on_sigterm(scheduler, start_node, wait_for_log):
    node = start_node(cpus=1, name="n1")
    wait_for_log(scheduler, "node joined")
    node.send_signal(signal.SIGTERM)
    assert node.process is not None
    assert node.process.wait(STOP_WITHIN) == 0
    assert "Traceback" not in node.log()


def test_scheduler_fixture_gives_a_loopback_address_and_a_private_secret(scheduler):
    assert scheduler.address.startswith("127.0.0.1:") and not scheduler.address.endswith(":0")
    assert stat.S_IMODE(scheduler.secret_file.stat().st_mode) == 0o600
    assert (scheduler.state_dir / "scheduler.address").read_text().strip() == scheduler.address


def test_scheduler_restarts_on_the_same_address_after_a_kill(scheduler):
    address, old_pid = scheduler.address, scheduler.pid
    assert scheduler.restart(kill=True) == address
    assert scheduler.pid != old_pid and scheduler.alive()


# --- logs ---------------------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_with_standard_fields(tmp_path):
    proc = subprocess.Popen([*fairpool_command(), "scheduler", "--listen", "127.0.0.1:0", "--state-dir",
                             str(tmp_path), "--log-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / "scheduler.address").exists() or proc.poll() is not None,
                 message="the scheduler listens")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=STOP_WITHIN)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    assert records, "the scheduler logged nothing"
    for record in records:
        assert {"timestamp", "level", "event", "logger"} <= record.keys()
    assert any(r["event"] == "stopping" and r["signal"] == "SIGTERM" for r in records)


# --- the demo --------------------------------------------------------------------------------


def test_demo_runs_three_tenants_and_exits_0(tmp_path):
    started = time.monotonic()
    result = run_fairpool("demo", "--jobs", "3", "--cpus", "2", cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    for tenant in ("alice", "bob", "carol"):
        assert f"{tenant}: [0, 1, 4] correct" in result.stdout
    assert "policy fair-share" in result.stdout
    assert "shares of the pool were" in result.stdout
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir()), "the demo left files in the working directory"
    assert time.monotonic() - started < 30
