"""The clusters' working directories on a node: one per cluster, private, removed when it ends.

Layout: ``<state_dir>/clusters/<cluster_id>/``, where the cluster's jobs run
and its ``depends`` files land.

* The parent (``prepare_base``) is the node's: mode 0700, or 0711 when jobs
  run as another user (``run_as``), who may then pass through it to its own
  directories but can neither list it nor create anything in it.
* A cluster's directory (``install_cluster_files``) is created mode 0700 and
  owned by the user jobs run as. Its depends files are plain names (checked
  here again, whatever the layer before checked) written through a descriptor
  of that directory; an existing file of that name is unlinked and the new one
  created with O_EXCL | O_NOFOLLOW, so that neither a symbolic link nor a hard
  link a job left there can redirect the node's write. A symbolic link or a
  directory in a depends file's place is refused with a ``SpecError``: the
  cluster's tasks then fail with that reason.
* ``remove_cluster_dir`` removes it when the cluster ends on this node (the
  ``WorkerPool`` calls it once the cluster's cleanups have run).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import structlog

from fairpool.clusterspec import ClusterSpec, DependFile, SpecError, is_safe_file_name

from .isolation import RunAs

log = structlog.get_logger("fairpool.node")

#: The parent of the clusters' directories when jobs run as the node's own user / as ``run_as``.
BASE_MODE, SHARED_BASE_MODE = 0o700, 0o711
CLUSTER_MODE = 0o700


def prepare_base(base: Path, run_as: RunAs | None) -> None:
    """Create the clusters' parent directory if needed and give it its mode (see the module docstring)."""
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, SHARED_BASE_MODE if run_as is not None else BASE_MODE)


def cluster_dir(base: Path, cluster_id: str) -> Path:
    """Where a cluster's jobs run; SpecError if its id is not a plain file name."""
    if not is_safe_file_name(cluster_id):
        raise SpecError(f"refused cluster id {cluster_id!r}: it must be a plain file name")
    return base / cluster_id


def install_cluster_files(base: Path, cluster_id: str, spec: ClusterSpec, run_as: RunAs | None) -> Path:
    """Create the cluster's directory (if needed) and write its depends files; return the directory.

    SpecError for a refused name or something in a file's place; OSError if it cannot be written.
    """
    directory = cluster_dir(base, cluster_id)
    try:
        os.mkdir(directory, CLUSTER_MODE)
    except FileExistsError:
        pass  # the same cluster again (after a reconnect, or before its removal)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if run_as is not None:
            os.fchown(dir_fd, run_as.uid, run_as.gid)
        os.fchmod(dir_fd, CLUSTER_MODE)
        for depend in spec.files:
            mode = depend.mode & 0o777
            if spec.kind == "program" and depend.name == spec.program:
                mode |= 0o500  # the program must be runnable by its owner, whatever mode it came with
            _write(dir_fd, depend, mode, run_as)
    finally:
        os.close(dir_fd)
    return directory


def _write(dir_fd: int, depend: DependFile, mode: int, run_as: RunAs | None) -> None:
    name = depend.name
    if not is_safe_file_name(name):  # decode_spec checks too: never trust one layer
        raise SpecError(f"refused depends file name {name!r}: it must be a plain file name")
    try:
        existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if stat.S_ISLNK(existing.st_mode):
            raise SpecError(f"refused depends file {name!r}: a symbolic link is in its place in the working directory")
        if not stat.S_ISREG(existing.st_mode):
            raise SpecError(f"refused depends file {name!r}: something other than a file is in its place "
                            "in the working directory")
        os.unlink(name, dir_fd=dir_fd)  # not truncated: it may be a hard link to a file elsewhere
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as f:
        if run_as is not None:
            os.fchown(f.fileno(), run_as.uid, run_as.gid)
        f.write(depend.data)
        os.fchmod(f.fileno(), mode)


def remove_cluster_dir(base: Path, cluster_id: str) -> None:
    """Remove a cluster's directory and everything its jobs left in it (a no-op if it is gone)."""
    if not is_safe_file_name(cluster_id):
        return
    path = base / cluster_id
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path) and os.geteuid() != 0:
        # A job may have taken its owner's permissions away from a directory of its own (root
        # needs none); give them back, without following links, and try again.
        _open_up(path)
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        log.warning("could not remove a cluster's working directory", path=str(path))


def _open_up(path: Path) -> None:
    pending = [str(path)]
    while pending:
        current = pending.pop()
        try:
            fd = os.open(current, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            try:  # no read permission: open it up by path (after checking it is no link), then look inside
                if stat.S_ISDIR(os.lstat(current).st_mode):
                    os.chmod(current, CLUSTER_MODE)
                    fd = os.open(current, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                else:
                    continue
            except OSError:
                continue
        try:
            os.fchmod(fd, CLUSTER_MODE)
            with os.scandir(fd) as entries:
                pending.extend(os.path.join(current, e.name) for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            pass
        finally:
            os.close(fd)
