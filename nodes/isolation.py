"""Who a node's jobs run as: the ``run_as`` user, and the checks that make dropping to it safe.

Tenant code runs in the node's worker processes. A node started as root
with ``run_as = "USER"`` (or ``"USER:GROUP"``) starts every worker as that
user: ``subprocess`` sets the supplementary groups, the group and the user
in the child after ``fork`` and before ``exec``, so no tenant code -- not even
the interpreter's start -- ever runs as root (``worker_process_options``).

``resolve_run_as`` turns the setting into ids, or refuses it with an
``IsolationError`` (a ``ConfigError``: the CLI prints it in one line, exit 2):

* ``run_as`` on a node that is not root: it could not switch users;
* an unknown user or group, or one that is root (it would drop nothing).

A root node without ``run_as`` runs jobs as root: allowed (dispy allows it
too), but logged loudly at start.

``probe_run_as`` then starts the interpreter once as that user, the way a
worker starts, and refuses to go on if the user cannot run Python and import
fairpool, cannot reach the clusters' directory, or *can* read one of the
node's private files (its secret: a job that read it could connect as a node
or as the admin).
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

from fairpool.config import ConfigError

log = structlog.get_logger("fairpool.node")

#: Run as the user by the probe: exit 0 if it could do what a worker does and read no private file.
_PROBE = """
import os, sys
try:
    import fairpool.nodes.worker
except BaseException as exc:
    print(f"cannot import fairpool ({type(exc).__name__}: {exc})")
    sys.exit(3)
base, private = sys.argv[1], sys.argv[2:]
if not os.access(base, os.X_OK):
    print(f"cannot reach the clusters' working directories under {base}"
          " (a directory on the way is not searchable by it)")
    sys.exit(4)
for path in private:
    if os.access(path, os.R_OK):
        print(f"can read {path}, which jobs must not (chmod 600 it, owned by the node's user)")
        sys.exit(5)
"""

PROBE_TIMEOUT = 60.0


class IsolationError(ConfigError):
    """The node cannot run its jobs as configured (``run_as``); the message says why and what to do."""


@dataclass(frozen=True)
class RunAs:
    """The unprivileged identity jobs run as."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups
    home: str

    def __str__(self) -> str:
        return f"{self.user} (uid {self.uid}, gid {self.gid})"


def resolve_run_as(setting: str | None, *, euid: int | None = None) -> RunAs | None:
    """The identity for ``run_as`` (None: jobs run as the node's own user); IsolationError if unusable."""
    euid = os.geteuid() if euid is None else euid
    if setting is None:
        if euid == 0:
            log.warning(
                "THE NODE RUNS AS ROOT AND SO WILL EVERY JOB: tenant code can take over this host. "
                'Set run_as = "USER" (flag --run-as) to run jobs as an unprivileged user.'
            )
        return None
    if euid != 0:
        raise IsolationError(
            f"run_as = {setting!r} needs the node to run as root, to switch its workers to that user "
            f"(it runs as uid {euid}): start the node as root, or drop run_as to run jobs as uid {euid}"
        )
    user_part, _, group_part = setting.partition(":")
    entry = _user(user_part)
    if group_part:
        gid = _group(group_part)
        groups: tuple[int, ...] = (gid,)
    else:
        gid = entry.pw_gid
        groups = tuple(dict.fromkeys(os.getgrouplist(entry.pw_name, gid)))
    if entry.pw_uid == 0 or gid == 0:
        raise IsolationError(f"run_as = {setting!r} is root: jobs must run as an unprivileged user and group")
    return RunAs(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir)


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise IsolationError(f"run_as: no user {name!r} on this host") from None


def _group(name: str) -> int:
    try:
        return grp.getgrgid(int(name)).gr_gid if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise IsolationError(f"run_as: no group {name!r} on this host") from None


def worker_process_options(run_as: RunAs | None, cwd: Path) -> dict[str, Any]:
    """Extra ``subprocess.Popen`` options that start a worker as ``run_as`` (none without it).

    The working directory is one the user can reach (the node's own may be
    closed to it); HOME and the user names are the user's, not root's.
    """
    if run_as is None:
        return {}
    env = dict(os.environ, HOME=run_as.home, USER=run_as.user, LOGNAME=run_as.user)
    return {
        "user": run_as.uid,
        "group": run_as.gid,
        "extra_groups": list(run_as.groups),
        "env": env,
        "cwd": str(cwd),
    }


async def probe_run_as(run_as: RunAs, base: Path, private: Sequence[Path]) -> None:
    """Start Python as ``run_as`` as a worker would; IsolationError if it fails or could read ``private``."""
    argv = [sys.executable, "-P", "-c", _PROBE, str(base), *(str(p) for p in private)]
    options = worker_process_options(run_as, base)
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            done = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False, stdin=subprocess.DEVNULL, **options
            )
    except OSError as exc:
        raise IsolationError(
            f"run_as user {run_as} cannot run the Python interpreter {sys.executable}: "
            f"{exc.strerror or exc}. Install Python and fairpool where that user can read and run them."
        ) from None
    except trio.TooSlowError:
        raise IsolationError(f"run_as user {run_as}: Python did not start within {PROBE_TIMEOUT:g}s") from None
    if done.returncode == 0:
        return
    said = (done.stdout or b"").decode(errors="replace").strip()
    if not said:
        lines = (done.stderr or b"").decode(errors="replace").strip().splitlines()
        said = f"cannot start Python ({lines[-1] if lines else f'exit code {done.returncode}'})"
    raise IsolationError(f"run_as user {run_as} {said}")
