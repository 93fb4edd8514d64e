"""FileReceiver: files sent by jobs land under dest_path, whole, and never anywhere else."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from fairpool.clients.files import FileReceiver
from fairpool.messages import FileChunk


def chunks(uid: str, name: str, data: bytes, size: int) -> list[FileChunk]:
    parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [FileChunk(uid, name, i * size, part, i == len(parts) - 1) for i, part in enumerate(parts)]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def test_a_file_lands_under_dest_path_with_its_directories(tmp_path: Path) -> None:
    receiver = FileReceiver(tmp_path / "dest")
    for chunk in chunks("j1", "out/sub/data.bin", b"0123456789", 4):
        receiver.receive(chunk)
    assert (tmp_path / "dest" / "out" / "sub" / "data.bin").read_bytes() == b"0123456789"
    assert leftovers(tmp_path) == []


def test_a_file_appears_only_once_complete(tmp_path: Path) -> None:
    receiver = FileReceiver(tmp_path)
    first, second = chunks("j1", "f.txt", b"abcdef", 3)
    receiver.receive(first)
    assert not (tmp_path / "f.txt").exists()
    receiver.receive(second)
    assert (tmp_path / "f.txt").read_bytes() == b"abcdef"


def test_an_empty_file_is_received(tmp_path: Path) -> None:
    receiver = FileReceiver(tmp_path)
    receiver.receive(FileChunk("j1", "empty", 0, b"", True))
    assert (tmp_path / "empty").read_bytes() == b""


def test_a_file_sent_again_after_a_reconnect_ends_up_right(tmp_path: Path) -> None:
    receiver = FileReceiver(tmp_path)
    parts = chunks("j1", "f.txt", b"abcdefghi", 3)
    receiver.receive(parts[0])
    receiver.receive(parts[1])
    for chunk in parts:  # the node re-sends from the start
        receiver.receive(chunk)
    for chunk in parts[1:]:  # and late duplicates of a file already complete are ignored
        receiver.receive(chunk)
    assert (tmp_path / "f.txt").read_bytes() == b"abcdefghi"
    assert leftovers(tmp_path) == []


def test_a_later_file_of_the_same_name_replaces_the_earlier(tmp_path: Path) -> None:
    receiver = FileReceiver(tmp_path)
    receiver.receive(FileChunk("j1", "f.txt", 0, b"first", True))
    receiver.receive(FileChunk("j1", "f.txt", 0, b"second", True))
    assert (tmp_path / "f.txt").read_bytes() == b"second"


@pytest.mark.parametrize("name", ["/etc/evil", "../evil", "a/../../evil", "..", "", "x\0y"])
def test_names_leaving_dest_path_are_refused_and_logged(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "dest"
    receiver = FileReceiver(dest)
    with caplog.at_level(logging.WARNING, logger="fairpool.clients"):
        receiver.receive(FileChunk("j1", name, 0, b"evil", True))
    assert "refused" in caplog.text
    assert not (tmp_path / "evil").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_symlinked_directory_leading_out_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink(outside, dest / "link")
    receiver = FileReceiver(dest)
    with caplog.at_level(logging.WARNING, logger="fairpool.clients"):
        receiver.receive(FileChunk("j1", "link/new/evil", 0, b"evil", True))
    assert "leads out of dest_path" in caplog.text
    assert list(outside.iterdir()) == []


def test_a_symlinked_directory_inside_dest_path_is_followed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    os.symlink(dest / "real", dest / "alias")
    FileReceiver(dest).receive(FileChunk("j1", "alias/f.txt", 0, b"ok", True))
    assert (dest / "real" / "f.txt").read_bytes() == b"ok"


def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path: Path) -> None:
    dest, victim = tmp_path / "dest", tmp_path / "victim"
    dest.mkdir()
    victim.write_bytes(b"precious")
    os.symlink(victim, dest / "f.txt")
    FileReceiver(dest).receive(FileChunk("j1", "f.txt", 0, b"new", True))
    assert victim.read_bytes() == b"precious"
    assert not (dest / "f.txt").is_symlink() and (dest / "f.txt").read_bytes() == b"new"


def test_close_removes_partial_files(tmp_path: Path) -> None:
    receiver = FileReceiver(tmp_path)
    receiver.receive(FileChunk("j1", "f.txt", 0, b"abc", False))
    assert len(leftovers(tmp_path)) == 1
    receiver.close()
    assert leftovers(tmp_path) == [] and not (tmp_path / "f.txt").exists()
