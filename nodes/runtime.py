"""What a running job can call: ``provisional_result`` and ``send_file`` (``from fairpool import ...``).

Both talk to the worker process the job runs in (``fairpool.nodes.worker.ACTIVE``)
and send at once, not held in the worker's result batch: a provisional value
or a file chunk leaves before the job goes on, so it always reaches the node
-- and, through the scheduler, the client -- ahead of the job's final result.

``send_file`` reads a file of the node (any file the job can read, inside its
working directory or not) and sends it in chunks of at most ``CHUNK_SIZE``
bytes. The name it lands under on the client is a relative path; the client
places it under its ``dest_path`` and refuses a name that would escape it
(this side refuses the obvious cases early, with a clear error to the job).

Called anywhere but inside a job running on a fairpool node (in the client,
in setup, in a program computation), both raise ``NotInJobError``.
"""

from __future__ import annotations

import os
import posixpath
import time
from typing import Any

from fairpool.messages import FileChunk, JobProvisional, NodeProgress, Task

from . import worker as _worker
from .jobs import dumps_value

#: Bytes per FileChunk message.
CHUNK_SIZE = 1024 * 1024


class NotInJobError(RuntimeError):
    """A job-runtime function was called outside a job running on a fairpool node."""


def _current(what: str) -> tuple[_worker.Worker, Task]:
    active = _worker.ACTIVE
    task = active.current if active is not None else None
    if active is None or task is None:
        raise NotInJobError(
            f"fairpool.{what}() can only be called by a job while it runs on a fairpool node "
            "(a Python computation submitted to a cluster), not here"
        )
    return active, task


def provisional_result(value: Any) -> None:
    """Send ``value`` to the client as the job's latest provisional result (``job.provisional``).

    The client sees the job's status become PROVISIONAL; the job goes on.
    """
    active, task = _current("provisional_result")
    try:
        payload = dumps_value(value)
    except Exception as exc:
        raise TypeError(f"the provisional result cannot be pickled: {exc}") from exc
    active.send_now(NodeProgress([], [], provisional=[JobProvisional(task.uid, payload, time.time())]))


def send_file(path: str | os.PathLike[str], relative_name: str | None = None) -> int:
    """Send a file of this node to the client, where it lands under ``dest_path``; return its size.

    ``relative_name`` is where it lands, relative to the client's ``dest_path``:
    by default the file's path relative to the job's working directory if it
    is inside it, else its base name.
    """
    active, task = _current("send_file")
    source = os.fspath(path)
    name = relative_name if relative_name is not None else default_name(source)
    checked = check_name(name)
    size = 0
    with open(source, "rb") as f:
        offset = 0
        chunk = f.read(CHUNK_SIZE)
        while True:
            following = f.read(CHUNK_SIZE) if chunk else b""
            last = not following
            active.send_now(NodeProgress([], [], files=[FileChunk(task.uid, checked, offset, chunk, last)]))
            offset += len(chunk)
            size = offset
            if last:
                return size
            chunk = following


def default_name(source: str) -> str:
    """The path relative to the working directory if the file is inside it, else its base name."""
    here = os.path.realpath(os.getcwd())
    real = os.path.realpath(source)
    if real.startswith(os.path.join(here, "")):
        return os.path.relpath(real, here).replace(os.sep, "/")
    return os.path.basename(real)


def check_name(name: str) -> str:
    """The name normalized (``a/./b`` -> ``a/b``); ValueError if it is absolute or leaves its root."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"send_file: {name!r} is not a usable file name")
    normal = posixpath.normpath(name)
    if posixpath.isabs(name) or normal in (".", "..") or normal.startswith("../"):
        raise ValueError(
            f"send_file: the name {name!r} must be a relative path that stays under the client's dest_path"
        )
    return normal
