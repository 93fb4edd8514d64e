"""Depends files land inside their cluster's working directory, and nowhere else.

The node refuses a depends name with '..', a '/' or an absolute path, and a
symbolic link planted in a file's place; the cluster's tasks then fail with
the reason (checked here against the node daemon, with a fake scheduler).
The client refuses what the node would, before anything connects.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import cloudpickle
import pytest
from nodeharness import function_cluster, task, value
from test_node_daemon import node_and_scheduler

from fairpool.clients.errors import ComputationError
from fairpool.clients.spec import pack_spec
from fairpool.clusterspec import ClusterSpec, DependFile, SpecError
from fairpool.messages import Dispatch
from fairpool.nodes.workdirs import install_cluster_files, remove_cluster_dir

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(60)

UNSAFE_NAMES = ["../escape.txt", "..", "/tmp/escape.txt", "sub/file.txt", "a\\..\\b", "", "."]


def read_text(name):
    with open(name) as f:
        return f.read()


def spec_with(*files: DependFile) -> ClusterSpec:
    return ClusterSpec("function", b"", files=list(files))


# --- the node's installer ------------------------------------------------------------


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_an_unsafe_depends_name_is_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    base = tmp_path / "node" / "clusters"
    base.mkdir(parents=True)
    with pytest.raises(SpecError, match="refused depends file name"):
        install_cluster_files(base, "c1", spec_with(DependFile(name, b"x")), None)
    assert not (tmp_path / "node" / "escape.txt").exists()
    assert not (base / "escape.txt").exists()
    assert [p.name for p in base.rglob("*")] == ["c1"]  # the (empty) working dir only


def test_a_symlink_planted_in_a_depends_file_place_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "clusters"
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    base.mkdir()
    install_cluster_files(base, "c1", spec_with(), None)
    os.symlink(outside, base / "c1" / "data.txt")  # as a job of the cluster could
    with pytest.raises(SpecError, match="symbolic link is in its place"):
        install_cluster_files(base, "c1", spec_with(DependFile("data.txt", b"overwritten")), None)
    assert outside.read_text() == "keep me"


def test_a_hard_link_planted_in_a_depends_file_place_is_replaced_not_written_through(tmp_path: Path) -> None:
    base = tmp_path / "clusters"
    base.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    install_cluster_files(base, "c1", spec_with(), None)
    os.link(outside, base / "c1" / "data.txt")
    install_cluster_files(base, "c1", spec_with(DependFile("data.txt", b"new", 0o640)), None)
    assert outside.read_text() == "keep me"
    assert (base / "c1" / "data.txt").read_bytes() == b"new"


def test_a_directory_in_a_depends_file_place_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "clusters"
    base.mkdir()
    (base / "c1" / "data.txt").mkdir(parents=True)
    with pytest.raises(SpecError, match="other than a file is in its place"):
        install_cluster_files(base, "c1", spec_with(DependFile("data.txt", b"x")), None)


def test_an_unsafe_cluster_id_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "clusters"
    base.mkdir()
    with pytest.raises(SpecError, match="refused cluster id"):
        install_cluster_files(base, "../c1", spec_with(DependFile("data.txt", b"x")), None)
    assert not (tmp_path / "c1").exists()


def test_the_working_dir_is_private_and_files_keep_their_modes(tmp_path: Path) -> None:
    base = tmp_path / "clusters"
    base.mkdir()
    program = ClusterSpec("program", program="run.sh",
                          files=[DependFile("run.sh", b"#!/bin/sh\n", 0o600), DependFile("data.txt", b"d", 0o640)])
    directory = install_cluster_files(base, "c1", program, None)
    assert directory == base / "c1"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "data.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((directory / "run.sh").stat().st_mode) == 0o700  # made runnable by its owner


def test_removal_takes_what_a_job_left_even_without_permissions(tmp_path: Path) -> None:
    base = tmp_path / "clusters"
    base.mkdir()
    directory = install_cluster_files(base, "c1", spec_with(DependFile("data.txt", b"d")), None)
    locked = directory / "locked" / "deeper"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    locked.chmod(0)
    (directory / "locked").chmod(0o500)
    remove_cluster_dir(base, "c1")
    assert not directory.exists()
    remove_cluster_dir(base, "../outside")  # refused quietly: only cluster dirs are removed


# --- through the node daemon: the cluster's tasks fail with the reason --------------------


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/fairpool-escape-test.txt", "sub/../../escape.txt"])
async def test_the_node_fails_a_cluster_whose_depends_name_leaves_its_dir(tmp_path: Path, name: str) -> None:
    async with node_and_scheduler(tmp_path) as (fake, config):
        files = [DependFile(name, b"escaped")]
        await fake.send(Dispatch([function_cluster("c1", read_text, files=files)], [task("j1", "c1", "x")]))
        result = await fake.result("j1")
        assert result.status == "FAILED"
        assert result.reason.startswith("bad cluster spec: refused depends file name"), result.reason
        assert name in result.reason
    assert escaped(config.state_dir) == []


def escaped(state_dir: Path) -> list[Path]:
    """Files the node wrote outside its clusters' working dirs."""
    candidates = [state_dir / "escape.txt", state_dir / "clusters" / "escape.txt", Path("/tmp/fairpool-escape-test.txt")]
    return [p for p in candidates if p.exists()]


async def test_the_node_fails_a_cluster_whose_depends_file_is_a_planted_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    async with node_and_scheduler(tmp_path) as (fake, config):
        workdir = config.state_dir / "clusters" / "c1"
        workdir.mkdir()
        os.symlink(outside, workdir / "data.txt")
        files = [DependFile("data.txt", b"overwritten")]
        await fake.send(Dispatch([function_cluster("c1", read_text, files=files)], [task("j1", "c1", "data.txt")]))
        result = await fake.result("j1")
        assert result.status == "FAILED"
        assert "symbolic link is in its place" in result.reason, result.reason
        # the node goes on serving other clusters
        await fake.send(Dispatch([function_cluster("c2", read_text, files=files)], [task("j2", "c2", "data.txt")]))
        assert value(await fake.result("j2")) == "overwritten"
    assert outside.read_text() == "keep me"


async def test_depends_files_land_in_the_job_working_dir(tmp_path: Path) -> None:
    def where(name):
        import os

        return os.path.realpath(name), os.getcwd()

    async with node_and_scheduler(tmp_path) as (fake, config):
        files = [DependFile("data.txt", b"d")]
        await fake.send(Dispatch([function_cluster("c1", where, files=files)], [task("j1", "c1", "data.txt")]))
        path, cwd = value(await fake.result("j1"))
    assert same_places(path, cwd, config.state_dir / "clusters" / "c1")


def same_places(path: str, cwd: str, workdir: Path) -> bool:
    expected = os.path.realpath(workdir)
    return (os.path.dirname(path), os.path.realpath(cwd)) == (expected, expected)


# --- the client refuses early ------------------------------------------------------------


def test_the_client_refuses_a_depends_name_the_node_would_refuse(tmp_path: Path) -> None:
    odd = tmp_path / "a\\b.txt"
    odd.write_text("x")
    with pytest.raises(ComputationError, match="plain|cannot name a file"):
        pack_spec(read_text, depends=[odd])


def test_the_client_refuses_a_fifo_in_depends_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # (reading it would block until the test's timeout)
    with pytest.raises(ComputationError, match="not a regular file"):
        pack_spec(read_text, depends=[fifo])


def test_a_symlink_in_depends_ships_its_target_under_the_link_name(tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("content")
    link = tmp_path / "alias.txt"
    link.symlink_to(target)
    spec = pack_spec(read_text, depends=[link])
    assert [(f.name, f.data) for f in spec.files] == [("alias.txt", b"content")]
