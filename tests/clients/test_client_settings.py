"""Where a client connects and as whom (fairpool.clients.settings), and the recover file format."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from fairpool.address import Address
from fairpool.clients.errors import ClientConfigError
from fairpool.clients.recover import (
    RecoverInfo,
    read_recover_file,
    recover_path,
    write_recover_file,
)
from fairpool.clients.settings import resolve_settings


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    path.write_text("  the-secret \n")
    return path


def test_arguments_win_over_environment(secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRPOOL_SCHEDULER", "10.0.0.1:1")
    monkeypatch.setenv("FAIRPOOL_TENANT", "env-tenant")
    monkeypatch.setenv("FAIRPOOL_SECRET_FILE", "/nonexistent")
    settings = resolve_settings("127.0.0.1:4000", "arg-tenant", secret)
    assert (settings.scheduler, settings.tenant, settings.secret) == (Address("127.0.0.1", 4000), "arg-tenant", b"the-secret")


def test_defaults_are_local_scheduler_and_os_user(secret: Path) -> None:
    settings = resolve_settings(secret_file=secret)
    assert settings.scheduler == Address("127.0.0.1", 51350)
    assert settings.tenant == getpass.getuser()
    assert settings.secret_file.is_absolute()


def test_bad_scheduler_address_is_a_clear_error(secret: Path) -> None:
    with pytest.raises(ClientConfigError, match="bad scheduler address.*port"):
        resolve_settings("127.0.0.1:notaport", secret_file=secret)


def test_the_secret_never_appears_in_the_settings_repr(secret: Path) -> None:
    assert "the-secret" not in repr(resolve_settings(secret_file=secret))


def test_recover_file_round_trips(tmp_path: Path) -> None:
    info = RecoverInfo("abc123", "127.0.0.1:51350", "alice", "/x/secret", 1700000000.5)
    path = write_recover_file(info, tmp_path)
    assert path == recover_path("abc123", tmp_path) == tmp_path / "fairpool-abc123.recover"
    assert read_recover_file(path) == info
    assert [p.name for p in tmp_path.iterdir()] == ["fairpool-abc123.recover"]  # no temp file left
