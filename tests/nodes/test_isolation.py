"""A node started as root with ``run_as`` runs its jobs as that unprivileged user, in private working dirs.

The end-to-end tests start a real ``fairpool node`` as root with ``--run-as
nobody`` and look at what a job can do. They need root; they are skipped
with the reason otherwise. Where Python is installed somewhere ``nobody``
cannot reach (e.g. under /root, mode 0700), the node runs in a private mount
namespace in which that installation is bind-mounted behind a world-searchable
tmpfs: the node sees the same paths, and nothing changes outside the test.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from conftest import Daemon, _register, fairpool_command, wait_for

from fairpool import SharedJobCluster
from fairpool.nodes.isolation import IsolationError, resolve_run_as

pytestmark = pytest.mark.timeout(120)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="switching a node's jobs to another user needs root")

# Run as root in a private mount namespace: $1 (the Python installation) is bind-mounted
# at $2 (a staging dir), a tmpfs (mode 0755) is mounted over $3 (the directory that closes
# it to others), and the installation is bind-mounted back at its own path inside it.
_UNSHARE_SCRIPT = """set -e
mount --bind "$1" "$2"
mount -t tmpfs -o mode=0755 tmpfs "$3"
mkdir -p "$1"
mount --bind "$2" "$1"
umount "$2"
shift 3
exec "$@"
"""


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this host has no user 'nobody'")


def _closed_ancestor(path: str) -> str | None:
    """The first directory on the way to ``path`` that others may not search, if any."""
    current = "/"
    for part in Path(path).parts[1:]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


@pytest.fixture(scope="module")
def node_prefix(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """What to put before ``fairpool node ...`` so that ``nobody`` can run this Python (skip if impossible)."""
    if not IS_ROOT:
        pytest.skip("switching a node's jobs to another user needs root")
    user = _nobody()
    prefix: list[str] = []
    installation = os.path.realpath(sys.base_prefix)
    closed = _closed_ancestor(installation)
    if closed is not None:
        if shutil.which("unshare") is None:
            pytest.skip(f"user nobody cannot reach this Python ({closed} is closed to it) and unshare is missing")
        stage = tmp_path_factory.mktemp("python-stage")
        prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _UNSHARE_SCRIPT, "sh",
                  installation, str(stage), closed]
    check = ("import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-P', '-c', "
             f"'import fairpool.nodes.worker'], user={user.pw_uid}, group={user.pw_gid}, extra_groups=[], "
             "cwd='/').returncode)")
    done = subprocess.run([*prefix, sys.executable, "-c", check], capture_output=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"user nobody cannot run this Python and fairpool here: {done.stderr.decode()[-300:]}")
    return prefix


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A state dir ``nobody`` can pass through (pytest's tmp_path lies under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="fairpool-isolation-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_root_node(scheduler, node_prefix: list[str], tmp_path: Path,
                    request: pytest.FixtureRequest) -> Iterator[Callable[..., Daemon]]:
    """``start_root_node(state_dir, secret_file, extra_args)``: a node run as root, inside ``node_prefix``."""
    started: list[Daemon] = []

    def start(state_dir: Path, secret_file: Path, extra_args: Sequence[str] = ()) -> Daemon:
        args = ["--scheduler", scheduler.address, "--secret-file", str(secret_file), "--cpus", "1",
                "--name", "iso", "--state-dir", str(state_dir), "--log-level", "debug", *extra_args]
        node = _PrefixedDaemon(node_prefix, args, tmp_path)
        _register(request, node)
        started.append(node)
        node.start()
        return node

    try:
        yield start
    finally:
        for node in started:
            node.stop()


class _PrefixedDaemon(Daemon):
    def __init__(self, prefix: list[str], args: list[str], log_dir: Path) -> None:
        super().__init__("node", "node-iso", args, log_dir, name="iso")
        self.prefix = prefix

    def _spawn(self, args: Sequence[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen([*self.prefix, *fairpool_command(), "node", *args],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                            start_new_session=True)


def private_secret(scheduler, directory: Path, mode: int = 0o600) -> Path:
    """A copy of the scheduler's secret in ``directory``, with ``mode``."""
    path = directory / "secret"
    path.write_bytes(scheduler.secret_file.read_bytes())
    path.chmod(mode)
    return path


def look_around(state_dir: str, secret_file: str) -> dict:
    """What a job can see and do on its node."""
    import os

    import fairpool

    attempts = {}
    for target in (os.path.join(state_dir, "planted"), os.path.join(state_dir, "clusters", "planted"),
                   secret_file):
        try:
            with open(target, "a") as f:
                f.write("x")
            attempts[target] = "written"
        except OSError as exc:
            attempts[target] = exc.errno
    try:
        with open(secret_file) as f:
            secret_read = bool(f.read())
    except OSError:
        secret_read = False
    try:
        fairpool.send_file(secret_file, "stolen-secret")
        secret_sent = True
    except OSError:
        secret_sent = False
    with open("mine.txt", "w") as f:  # its own working directory is its to write
        f.write("ok")
    with open("data.txt") as f:
        data = f.read()
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
            "cwd": os.getcwd(), "attempts": attempts, "secret_read": secret_read, "secret_sent": secret_sent, "data": data}


@needs_root
def test_jobs_run_as_the_run_as_user_confined_to_a_private_working_dir(
        scheduler, start_root_node, open_dir, cluster_kwargs, tmp_path, monkeypatch):
    nobody = _nobody()
    client_dir = tmp_path / "client"  # where files jobs send land (dest_path defaults to the working dir)
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)
    state_dir = open_dir / "node"
    state_dir.mkdir()
    secret = private_secret(scheduler, state_dir)
    start_root_node(state_dir, secret, ["--run-as", "nobody"])
    data = tmp_path / "data.txt"
    data.write_text("shipped")
    with SharedJobCluster(look_around, depends=[data], **cluster_kwargs) as cluster:
        seen = cluster.submit(str(state_dir), str(secret)).result(timeout=60)
        workdir = Path(seen["cwd"])
        info = workdir.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (nobody.pw_uid, 0o700)
        assert (workdir / "data.txt").stat().st_uid == nobody.pw_uid
    assert (seen["uid"], seen["euid"], seen["gid"]) == (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid)
    assert 0 not in seen["groups"], "root's supplementary groups must be dropped"
    assert workdir.parent == state_dir / "clusters" and workdir.name == cluster.cluster_id
    assert seen["data"] == "shipped"
    assert set(seen["attempts"].values()) == {13}, seen["attempts"]  # EACCES everywhere outside
    assert not seen["secret_read"] and not seen["secret_sent"]
    assert not (client_dir / "stolen-secret").exists()
    assert not (state_dir / "planted").exists() and not (state_dir / "clusters" / "planted").exists()
    assert secret.read_bytes() == scheduler.secret_file.read_bytes()
    wait_for(lambda: not workdir.exists(), timeout=20, message="the cluster's working dir is removed")


@needs_root
def test_a_node_refuses_run_as_when_the_user_could_read_its_secret(scheduler, start_root_node, open_dir):
    state_dir = open_dir / "node"
    state_dir.mkdir()
    secret = private_secret(scheduler, open_dir, mode=0o644)
    node = start_root_node(state_dir, secret, ["--run-as", "nobody"])
    wait_for(lambda: node.returncode is not None, timeout=30, message="the node exits")
    assert node.returncode == 2
    assert f"can read {secret}" in node.log()


@needs_root
def test_a_node_refuses_run_as_when_the_user_cannot_reach_its_state_dir(scheduler, start_root_node, tmp_path):
    # pytest's tmp_path lies under a directory only root may enter
    state_dir = tmp_path / "node"
    state_dir.mkdir()
    node = start_root_node(state_dir, private_secret(scheduler, tmp_path), ["--run-as", "nobody"])
    wait_for(lambda: node.returncode is not None, timeout=30, message="the node exits")
    assert node.returncode == 2
    assert "cannot reach the clusters' working directories" in node.log()


@needs_root
def test_a_root_node_without_run_as_warns_loudly(scheduler, start_node, wait_for_log):
    node = start_node(cpus=1, name="rooted")
    wait_for_log(node, "THE NODE RUNS AS ROOT")


def test_run_as_on_a_node_that_is_not_root_is_a_clear_error():
    with pytest.raises(IsolationError, match="needs the node to run as root"):
        resolve_run_as("nobody", euid=1000)


@needs_root
def test_run_as_resolves_user_group_and_groups():
    nobody = _nobody()
    identity = resolve_run_as("nobody")
    assert identity is not None
    assert (identity.uid, identity.gid) == (nobody.pw_uid, nobody.pw_gid)
    assert 0 not in identity.groups
    group = grp.getgrgid(nobody.pw_gid).gr_name
    explicit = resolve_run_as(f"{nobody.pw_uid}:{group}")
    assert explicit is not None and (explicit.uid, explicit.gid, explicit.groups) == (
        nobody.pw_uid, nobody.pw_gid, (nobody.pw_gid,))


@needs_root
@pytest.mark.parametrize(("setting", "message"), [
    ("no-such-user-here", "no user 'no-such-user-here'"),
    ("nobody:no-such-group-here", "no group 'no-such-group-here'"),
    ("root", "is root"),
    ("nobody:0", "is root"),
])
def test_unusable_run_as_is_refused(setting, message):
    with pytest.raises(IsolationError, match=message):
        resolve_run_as(setting)
