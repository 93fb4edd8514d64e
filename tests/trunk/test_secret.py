"""The cluster secret file (fairpool.secret): created 0600 once, read stripped, errors name the path."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fairpool.secret import SecretError, ensure_secret, read_secret


def test_ensure_secret_creates_the_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    secret = ensure_secret(path)
    assert secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ensure_secret_returns_the_same_secret_on_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert ensure_secret(path) == ensure_secret(path) == read_secret(path)


def test_ensure_secret_makes_a_different_secret_for_each_new_file(tmp_path: Path) -> None:
    assert ensure_secret(tmp_path / "a") != ensure_secret(tmp_path / "b")


def test_ensure_secret_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"chosen by the operator\n")
    assert ensure_secret(path) == b"chosen by the operator"


def test_read_secret_strips_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"\n  s3cret with inner space \t\r\n")
    assert read_secret(path) == b"s3cret with inner space"


@pytest.mark.parametrize("content", [b"", b" \n\t\n"])
def test_empty_secret_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    with pytest.raises(SecretError, match="is empty"):
        read_secret(path)
    with pytest.raises(SecretError, match="is empty"):
        ensure_secret(path)


def test_missing_secret_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "secret"
    with pytest.raises(SecretError, match="does not exist") as info:
        read_secret(path)
    assert str(path) in str(info.value)


def test_unreadable_secret_path_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot read") as info:
        read_secret(tmp_path)  # a directory
    assert str(tmp_path) in str(info.value)
