"""fairpool.logs: the default format follows the terminal, and credential fields never reach the output."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from fairpool import cli
from fairpool.config import NodeConfig, SchedulerConfig, default_log_format, load_node_config
from fairpool.logs import REDACTED, configure_logging, is_secret_field, redact_secrets


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("name", ["secret", "token", "password", "key", "admin_token", "tls_key",
                                  "cluster_secret", "Token"])
def test_credential_named_fields_are_secret(name: str) -> None:
    assert is_secret_field(name)


@pytest.mark.parametrize("name", ["secret_file", "tenant", "job", "node", "tokens_issued", "keyboard", "event"])
def test_other_fields_are_not(name: str) -> None:
    assert not is_secret_field(name)


def test_redact_secrets_blanks_only_credential_values() -> None:
    event = {"event": "x", "token": "fp_abc", "secret_file": "/etc/fairpool/secret", "tenant": "alice"}
    assert redact_secrets(None, "info", event) == {"event": "x", "token": REDACTED,
                                                   "secret_file": "/etc/fairpool/secret", "tenant": "alice"}


def test_a_token_logged_by_mistake_does_not_reach_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    structlog.get_logger("fairpool.test").info("tenant added", tenant="alice", token="fp_s3cr3t-value")
    err = capsys.readouterr().err
    assert "fp_s3cr3t-value" not in err
    record = json.loads(err.splitlines()[0])
    assert record["token"] == REDACTED and record["tenant"] == "alice"


def test_default_format_is_json_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert default_log_format() == "json"
    assert SchedulerConfig().log_format == "json" and NodeConfig().log_format == "json"


def test_default_format_is_console_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert default_log_format() == "console"
    assert SchedulerConfig().log_format == "console"


def test_log_format_flag_wins_over_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert load_node_config(None, {"log_format": "json"}).log_format == "json"


def test_auto_format_renders_json_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(None, "info")
    structlog.get_logger("fairpool.test").info("hello", job="c1.0", tenant="alice", node="n1")
    record = json.loads(capsys.readouterr().err)
    assert {k: record[k] for k in ("event", "job", "tenant", "node", "level")} == {
        "event": "hello", "job": "c1.0", "tenant": "alice", "node": "n1", "level": "info"}


def test_console_format_on_a_terminal_is_coloured(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    configure_logging(None, "info")
    structlog.get_logger("fairpool.test").info("hello", tenant="alice")
    line = terminal.getvalue()
    assert "hello" in line and "\x1b[" in line  # ANSI colour codes
    assert not line.lstrip().startswith("{")


def _overflow_deep_in_nurseries() -> BaseException:
    def decide() -> None:
        raise OverflowError("math range error")

    try:
        try:
            decide()
        except OverflowError as exc:
            raise ExceptionGroup("Exceptions from Trio nursery (1 sub-exception)", [exc]) from None
    except ExceptionGroup as group:
        try:
            raise ExceptionGroup("Exceptions from Trio nursery (1 sub-exception)", [group])
        except ExceptionGroup as outer:
            return outer


def test_a_daemon_crash_logged_as_json_names_the_error_and_its_frames(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    assert cli._failure("scheduler", _overflow_deep_in_nurseries(), listen=None, http=None) == cli.EXIT_FAILED
    record = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert record["event"] == "fairpool scheduler crashed"
    assert record["error"] == "OverflowError: math range error"
    [trace] = record["exception"]
    assert trace["exc_type"] == "OverflowError" and trace["frames"][-1]["name"] == "decide"
