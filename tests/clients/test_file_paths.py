"""Where a file a job sends may land: under the client's dest_path, never outside it.

Both sides check: the node (``fairpool.nodes.runtime.check_name``) refuses a
name that is absolute or leaves its root, with an error to the job; the
client (``FileReceiver.target``) refuses it again -- a node is not trusted to
have checked -- and also refuses a name that leaves dest_path through a
symbolic link on the client's disk, which the node cannot see.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fairpool.clients.files import FileReceiver, FileRefused
from fairpool.messages import FileChunk
from fairpool.nodes.runtime import check_name, default_name

ESCAPING = ["../evil", "./../evil", "a/../../evil", "a/b/../../../evil", "/tmp/evil", "//tmp/evil", "..", ".", "",
            "evil\0.txt"]


def files_outside(tmp_path: Path, dest: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if not p.is_relative_to(dest) and p.is_file() and p != dest]


@pytest.mark.parametrize("name", ESCAPING)
def test_the_client_refuses_a_name_that_is_absolute_or_leaves_dest_path(tmp_path: Path, name: str) -> None:
    dest = tmp_path / "dest"
    receiver = FileReceiver(dest)
    with pytest.raises(FileRefused):
        receiver.target(name)
    receiver.receive(FileChunk("j1", name, 0, b"evil", True))  # logged, never raised
    assert files_outside(tmp_path, dest) == []
    assert not Path("/tmp/evil").exists()


@pytest.mark.parametrize("name", ESCAPING)
def test_the_node_refuses_the_same_names_before_sending(name: str) -> None:
    with pytest.raises(ValueError, match="dest_path|usable file name"):
        check_name(name)


@pytest.mark.parametrize(("name", "lands"), [
    ("a/./b.txt", "a/b.txt"), ("a//b.txt", "a/b.txt"), ("sub/../c.txt", "c.txt"), ("d/", "d"),
])
def test_names_that_stay_inside_are_normalized_on_both_sides(tmp_path: Path, name: str, lands: str) -> None:
    assert check_name(name) == lands
    dest = tmp_path / "dest"
    FileReceiver(dest).receive(FileChunk("j1", name, 0, b"ok", True))
    assert (dest / lands).read_bytes() == b"ok"


def test_a_link_deep_in_the_path_leading_out_is_refused_and_nothing_is_created_outside(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    (dest / "a").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, dest / "a" / "b")
    with pytest.raises(FileRefused, match="leads out of dest_path"):
        FileReceiver(dest).target("a/b/c/evil")
    assert list(outside.iterdir()) == []  # not even the directory c


def test_a_relative_link_to_the_parent_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink("..", dest / "up")
    with pytest.raises(FileRefused, match="leads out of dest_path"):
        FileReceiver(dest).target("up/evil")


def test_a_link_loop_on_the_way_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(dest / "loop", dest / "loop")
    with pytest.raises(FileRefused):
        FileReceiver(dest).target("loop/evil")


def test_a_file_where_a_directory_is_needed_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "plain").write_text("x")
    with pytest.raises(FileRefused, match="is not a directory"):
        FileReceiver(dest).target("plain/evil")


def test_the_later_chunks_of_a_refused_file_are_ignored(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    receiver = FileReceiver(dest)
    receiver.receive(FileChunk("j1", "../evil", 0, b"first", False))
    receiver.receive(FileChunk("j1", "../evil", 5, b"second", True))
    assert files_outside(tmp_path, dest) == []
    assert receiver.received == []
    receiver.close()


def test_a_refused_file_does_not_stop_the_next_one(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    receiver = FileReceiver(dest)
    receiver.receive(FileChunk("j1", "../evil", 0, b"evil", True))
    receiver.receive(FileChunk("j1", "fine.txt", 0, b"fine", True))
    assert receiver.received == [Path(os.path.realpath(dest)) / "fine.txt"]


def test_the_node_names_a_file_outside_the_working_dir_by_its_base_name(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    workdir, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (workdir / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "f.txt").write_text("x")
    (workdir / "sub" / "g.txt").write_text("y")
    os.symlink(elsewhere / "f.txt", workdir / "link.txt")  # inside by name, outside in fact
    monkeypatch.chdir(workdir)
    assert default_name(str(elsewhere / "f.txt")) == "f.txt"
    assert default_name("../elsewhere/f.txt") == "f.txt"
    assert default_name("link.txt") == "f.txt"
    assert default_name("sub/g.txt") == "sub/g.txt"
